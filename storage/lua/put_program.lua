-- Create, replace (name non-empty) or delete (name empty) a program, keeping
-- p:{pid}:programs in step. ARGV: templates, id, name, status, nodes JSON, updated_at,
-- profile ids JSON. Returns 1 if the program existed before.
local T = cjson.decode(ARGV[1])
local function key(name, ...) return string.format(T[name], ...) end
local id, name = ARGV[2], ARGV[3]
local pk = key('program', id)
local old = redis.call('HGET', pk, 'nodes')
if old then
  for _, node in ipairs(cjson.decode(old)) do
    redis.call('SREM', key('profile_programs', tostring(node.profile_id)), id)
  end
end
if name == '' then
  redis.call('DEL', pk)
  redis.call('ZREM', key('programs'), id)
  return old and 1 or 0
end
redis.call('HSET', pk, 'name', name, 'status', ARGV[4], 'nodes', ARGV[5], 'updated_at', ARGV[6])
redis.call('ZADD', key('programs'), ARGV[6], id)
for _, pid in ipairs(cjson.decode(ARGV[7])) do
  redis.call('SADD', key('profile_programs', pid), id)
end
return old and 1 or 0
