-- Reserve the next send slot of a Page (GCRA without burst): every worker shares one timeline,
-- so a Page never gets more than its rate however many workers send to it.
-- KEYS[1] rate key. ARGV: interval ms (0 = only read), pause ms (push the timeline out).
-- Returns how many ms the caller must wait before sending. Uses the server clock, so workers
-- on machines with different clocks still agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval, pause = tonumber(ARGV[1]), tonumber(ARGV[2])
local start = math.max(tat, now + pause)
local next_free = start + interval
redis.call('SET', KEYS[1], next_free, 'PX', next_free - now + 60000)
return start - now
