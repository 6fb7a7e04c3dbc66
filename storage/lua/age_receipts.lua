-- Stop awaiting receipts for messages sent before a cutoff (RECEIPT_WAIT_DAYS ago): a message
-- never delivered counts as "no receipt" on the day it was sent, one delivered but never read
-- just stops waiting. Keeps p:{pid}:await bounded by what was sent in the wait.
-- ARGV[1] profile id, ARGV[2] cutoff ms, then recipients (a page of an HSCAN).
-- Returns {undelivered counted, entries dropped}.
local pid, cutoff = ARGV[1], tonumber(ARGV[2])
local k = key('await', pid)
local undelivered, dropped = 0, 0
local per_day = {}
for i = 3, #ARGV do
  local rcpt = ARGV[i]
  local packed = redis.call('HGET', k, rcpt)
  if packed then
    local keep, changed = {}, false
    for entry in string.gmatch(packed, '[^' .. RS .. ']+') do
      local day, sent, state = string.match(entry, '^[^\31]*\31([^\31]*)\31[^\31]*\31([^\31]*)\31([^\31]*)$')
      if sent and tonumber(sent) < cutoff then
        dropped, changed = dropped + 1, true
        if state == 's' then
          per_day[day] = (per_day[day] or 0) + 1
          undelivered = undelivered + 1
        end
      else
        keep[#keep + 1] = entry
      end
    end
    if #keep == 0 then
      redis.call('HDEL', k, rcpt)
    elseif changed then
      redis.call('HSET', k, rcpt, table.concat(keep, RS))
    end
  end
end
for day, n in pairs(per_day) do
  redis.call('HINCRBY', key('day', pid, day), 'no_receipts', n)
end
return {undelivered, dropped}
