-- Forget one person of a profile (a data deletion request): their opt-in values on contacts,
-- the PSID index, interaction times, messages awaiting receipts, marketing opt-in, unmatched
-- opt-ins, the time it is left alone as unreachable. Messages still awaiting a receipt are
-- counted first (age_receipts.lua). ARGV: profile id, recipient. Returns how many records
-- were removed.
local pid, rcpt = ARGV[1], ARGV[2]
local removed = 0
local contact = redis.call('HGET', key('recipients', pid), rcpt)
if contact then
  local field = string.format(T.optin_field, tonumber(pid))
  if redis.call('HGET', key('contact', contact), field) == rcpt then
    removed = removed + redis.call('HDEL', key('contact', contact), field)
  end
end
for _, name in ipairs({'recipients', 'seen', 'await', 'marketing'}) do
  removed = removed + redis.call('HDEL', key(name, pid), rcpt)
end
removed = removed + redis.call('ZREM', key('unreachable', pid), rcpt)
local prefix = rcpt .. '\31'
for _, member in ipairs(redis.call('ZRANGE', key('unmatched', pid), 0, -1)) do
  if string.sub(member, 1, #prefix) == prefix then
    removed = removed + redis.call('ZREM', key('unmatched', pid), member)
  end
end
return removed
