-- Create a profile unless its Page already belongs to one (atomic check-and-set).
-- KEYS[1] page owner key, KEYS[2] profile id counter, KEYS[3] profile index.
-- ARGV[1] profile key template, ARGV[2] created_at (s), ARGV[3..] field/value pairs.
-- Returns {"created", id} or {"taken", owner id}.
local owner = redis.call('GET', KEYS[1])
if owner then return {'taken', owner} end
local id = tostring(redis.call('INCR', KEYS[2]))
local fields = {'id', id, 'created_at', ARGV[2]}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', string.format(ARGV[1], id), unpack(fields))
redis.call('SET', KEYS[1], id)
redis.call('ZADD', KEYS[3], ARGV[2], id)
return {'created', id}
