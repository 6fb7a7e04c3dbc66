-- Reserve the next send slot of a Page (GCRA without burst): every worker shares one timeline,
-- so a Page never gets more than its rate however many workers send to it.
-- KEYS[1] timeline key, KEYS[2] rest key. ARGV: interval ms (0 = only rest), rest ms.
-- A rest (rate-limit error, high usage) pushes the timeline out and marks the Page resting, so
-- senders that reserved earlier slots wait too. Returns ms to wait before sending.
-- Uses the server clock, so workers on machines with different clocks still agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval, rest = tonumber(ARGV[1]), tonumber(ARGV[2])
if rest > 0 and redis.call('PTTL', KEYS[2]) < rest then
  redis.call('SET', KEYS[2], '1', 'PX', rest)
end
local start = math.max(tat, now + rest)
local next_free = start + interval
redis.call('SET', KEYS[1], next_free, 'PX', next_free - now + 60000)
return start - now
