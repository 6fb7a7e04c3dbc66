-- Claim a run contact before its send leaves ("inflight"), unless it already has an outcome.
-- KEYS[1] run outcomes, KEYS[2] deadlines. ARGV: contact, inflight JSON, deadline ms, member.
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
