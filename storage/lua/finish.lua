-- Record run contacts' final outcomes (see finish() in _lib.lua), many per round trip, and
-- learn from the ones that called Facebook: the profile's sending breaker and its unreachable
-- recipients.
-- ARGV[1] the sending rules (JSON: window_ms, min_sends, bad_percent, cooldown_ms,
-- max_cooldown_ms, unreachable_ms, and the reason sets bad, trip, unreachable);
-- ARGV[2..] one outcome as JSON each (o.fb: Facebook was called). Returns how many were recorded.
local rules = cjson.decode(ARGV[1])
local BUCKETS = 10  -- the window is ten buckets, each a tenth of it

local function counts_in_window(wk, bucket)
  local h = redis.call('HGETALL', wk)
  local fields = {}
  for i = 1, #h, 2 do fields[h[i]] = tonumber(h[i + 1]) end
  local n, bad = 0, 0
  for s = 0, BUCKETS - 1 do
    local b = fields['m' .. s]
    if b and b > bucket - BUCKETS then
      n, bad = n + (fields['n' .. s] or 0), bad + (fields['b' .. s] or 0)
    end
  end
  return n, bad
end

-- Count a send result; trip the breaker when refusals reach the share the rules allow.
local function count_result(pid, o, is_bad)
  local wk = key('sendwin', pid)
  local width = math.floor(rules.window_ms / BUCKETS)
  local bucket = math.floor(o.at / width)
  local s = bucket % BUCKETS
  if tonumber(redis.call('HGET', wk, 'm' .. s)) ~= bucket then
    redis.call('HSET', wk, 'm' .. s, bucket, 'n' .. s, 0, 'b' .. s, 0)
    redis.call('PEXPIRE', wk, rules.window_ms + width)
  end
  redis.call('HINCRBY', wk, 'n' .. s, 1)
  if not is_bad then return end
  redis.call('HINCRBY', wk, 'b' .. s, 1)
  local n, bad = counts_in_window(wk, bucket)
  if n >= rules.min_sends and bad * 100 >= rules.bad_percent * n then
    pause_sending(pid, 'error_rate', bad .. ' of the last ' .. n .. ' sends refused', o.at,
                  o.at + rules.cooldown_ms, rules.cooldown_ms, true)
  end
end

-- The probe's result: success resumes sending; a refusal pauses again for twice as long; an
-- answer that says nothing about the Page (Facebook unavailable) lets the next send probe.
local function probe_result(pid, bk, o, is_bad, trips)
  if o.state == 'sent' then
    redis.call('DEL', bk, key('sendwin', pid))
  elseif is_bad or trips then
    local b = redis.call('HMGET', bk, 'reason', 'cooldown')
    local cooldown = math.min(2 * (tonumber(b[2]) or rules.cooldown_ms), rules.max_cooldown_ms)
    cooldown = math.max(cooldown, rules.cooldown_ms)
    pause_sending(pid, trips and o.reason or b[1], o.detail, o.at, o.at + cooldown, cooldown, false)
  else
    redis.call('HSET', bk, 'state', 'paused', 'resume_at', o.at)
    redis.call('HDEL', bk, 'probe', 'probe_at')
  end
end

local function learn(pid, o)
  local failed = o.state == 'failed'
  if failed and rules.unreachable[o.reason] and nonempty(o.rcpt) then
    redis.call('ZADD', key('unreachable', pid), o.at + rules.unreachable_ms, o.rcpt)
  end
  local is_bad, trips = failed and rules.bad[o.reason] ~= nil, failed and rules.trip[o.reason] ~= nil
  local bk = key('sending', pid)
  local b = redis.call('HMGET', bk, 'state', 'probe')
  if b[1] == 'probing' and b[2] == o.run .. US .. o.contact then
    probe_result(pid, bk, o, is_bad, trips)
  elseif trips then
    if b[1] ~= 'paused' then
      pause_sending(pid, o.reason, o.detail, o.at, o.at + rules.cooldown_ms, rules.cooldown_ms, true)
    end
  elseif not b[1] then  -- results of sends that left before a pause teach nothing more
    count_result(pid, o, is_bad)
  end
end

local recorded = 0
for i = 2, #ARGV do
  local o = cjson.decode(ARGV[i])
  local n, pid = finish(o)
  recorded = recorded + n
  if n == 1 and o.fb and rules.bad then learn(pid, o) end  -- no rules given: nothing to learn
end
return recorded
