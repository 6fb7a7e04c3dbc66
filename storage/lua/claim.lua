-- Claim a run contact before its send leaves ("inflight"), unless it already has an outcome
-- or its profile's sending is paused; and, in the same round trip, reserve its Page's first
-- send slot (see reserve_slot).
-- KEYS[1] run outcomes, KEYS[2] deadlines, KEYS[3] Page timeline, KEYS[4] Page rest key,
-- KEYS[5] the profile's sending breaker (optional).
-- ARGV: contact, inflight JSON, deadline ms, deadline member, interval us, probe timeout ms.
-- Returns -1 if the contact was not claimed, -2 if sending is paused, -3 if a probe send is
-- testing it (its answer decides), else the wait in microseconds. The same claim made again (its reply was lost with the connection) finds it
-- still its own: the inflight JSON carries a claim id.

-- Whether this send may leave (0), or not because sending is paused (-2) or a probe is out
-- (-3): once a pause's cool-down is over, this send is the one probe (until it ends, or
-- `probe_timeout` passes without an end).
local function may_send(bk, member, probe_timeout)
  local b = redis.call('HMGET', bk, 'state', 'resume_at', 'probe', 'probe_at')
  if not b[1] or b[3] == member then return 0 end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if b[1] == 'paused' and (not b[2] or now < tonumber(b[2])) then return -2 end
  if b[1] == 'probing' and now - tonumber(b[4]) < probe_timeout then return -3 end
  redis.call('HSET', bk, 'state', 'probing', 'probe', member, 'probe_at', now)
  return 0
end

if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 and redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return -1
end
if KEYS[5] then
  local verdict = may_send(KEYS[5], ARGV[4], tonumber(ARGV[6]))
  if verdict < 0 then
    redis.call('HDEL', KEYS[1], ARGV[1])
    return verdict
  end
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if tonumber(ARGV[5]) == 0 then return 0 end  -- no pacing asked for
return reserve_slot(KEYS[3], KEYS[4], tonumber(ARGV[5]), 0)
