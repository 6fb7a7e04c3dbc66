-- Claim a run contact before its send leaves ("inflight"), unless it already has an outcome;
-- and, in the same round trip, reserve its Page's first send slot (see reserve_slot).
-- KEYS[1] run outcomes, KEYS[2] deadlines, KEYS[3] Page timeline, KEYS[4] Page rest key.
-- ARGV: contact, inflight JSON, deadline ms, deadline member, interval us.
-- Returns -1 if the contact was not claimed, else the wait in microseconds. The same claim
-- made again (its reply was lost with the connection) finds it still its own: the inflight
-- JSON carries a claim id.
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 and redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return -1
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if tonumber(ARGV[5]) == 0 then return 0 end  -- no pacing asked for
return reserve_slot(KEYS[3], KEYS[4], tonumber(ARGV[5]), 0)
