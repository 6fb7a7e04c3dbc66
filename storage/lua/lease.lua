-- Renew (ARGV[2] = ms) or release (ARGV[2] = 0) a batch lease, only if we still hold it.
-- KEYS[1] lease key. ARGV: token, ttl ms. Returns 1 if we held it.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
