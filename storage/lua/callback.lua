-- A run's callback to the program engine (storage/callbacks.py). runs:callbacks_due holds every
-- run whose summary is still to be posted, scored by when its next attempt is due. Taking or
-- beginning an attempt moves the score a lease ahead, so an attempt whose worker died is taken
-- again when the lease is over; and the score an attempt was given is its fence: one whose score
-- has moved on (taken again, rescheduled) neither posts nor reschedules. A delivery is recorded
-- once, whoever records it, and the run leaves the set: nothing posts it again.
-- Times are epoch ms, given by the caller. ARGV[1] names the operation:
--   take    KEYS: due            ARGV: now, lease, limit     -> run ids (their claim: now + lease)
--   begin   KEYS: run hash, due  ARGV: run id, claim, now, lease
--                                                             -> {status, attempt, new claim}
--   settle  KEYS: run hash, due  ARGV: run id, claim, outcome (delivered, retry, failed), now,
--                                      next attempt, error    -> 1 if recorded, else 0
local op = ARGV[1]

if op == 'take' then
  local now, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
  for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', now + lease, id) end
  return due
end

local run, due, id, claim = KEYS[1], KEYS[2], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', run) == 0 then  -- past retention, or its profile was deleted
  redis.call('ZREM', due, id)
  return op == 'begin' and {'gone', 0, 0} or 0
end
local state = redis.call('HGET', run, 'callback_state')
local score = tonumber(redis.call('ZSCORE', due, id) or '-1')

if op == 'begin' then
  if state == 'delivered' or state == 'failed' then
    redis.call('ZREM', due, id)
    return {state, 0, 0}
  end
  if score ~= claim then return {'stale', 0, 0} end
  local now, lease = tonumber(ARGV[4]), tonumber(ARGV[5])
  local fence = now + lease
  if fence == claim then fence = fence + 1 end
  redis.call('ZADD', due, 'XX', fence, id)
  local attempt = redis.call('HINCRBY', run, 'callback_attempts', 1)
  redis.call('HSET', run, 'callback_attempted_at', now)
  return {'go', attempt, fence}
end

-- settle
local outcome, now = ARGV[4], ARGV[5]
if state == 'delivered' then return 0 end
if outcome == 'delivered' then  -- a 2xx is a fact, even from an attempt whose lease lapsed
  redis.call('HSET', run, 'callback_state', 'delivered', 'callback_delivered_at', now)
  redis.call('HDEL', run, 'callback_error')
  redis.call('ZREM', due, id)
  return 1
end
if state == 'failed' or score ~= claim then return 0 end
redis.call('HSET', run, 'callback_error', ARGV[7])
if outcome == 'failed' then
  redis.call('HSET', run, 'callback_state', 'failed', 'callback_failed_at', now)
  redis.call('ZREM', due, id)
else
  redis.call('HSET', run, 'callback_state', 'retrying')
  redis.call('ZADD', due, 'XX', tonumber(ARGV[6]), id)
end
return 1
