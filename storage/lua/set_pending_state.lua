-- Move claimed contacts between the non-final states, never touching final outcomes.
-- KEYS[1] run outcomes, KEYS[2] deadlines. ARGV: from state, to state ("" = release the claim),
-- run id, contacts... Returns how many changed.
local from, to, run = ARGV[1], ARGV[2], ARGV[3]
local changed = 0
for i = 4, #ARGV do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur then
    local o = cjson.decode(cur)
    if o.s == from then
      if to == '' then
        redis.call('HDEL', KEYS[1], ARGV[i])
        redis.call('ZREM', KEYS[2], run .. '\31' .. ARGV[i])
      else
        o.s = to
        redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(o))
      end
      changed = changed + 1
    end
  end
end
return changed
