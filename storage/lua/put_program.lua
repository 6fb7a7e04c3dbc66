-- Create, replace (name non-empty) or delete (name empty) a program, keeping
-- p:{pid}:programs in step. ARGV: id, name, status, nodes JSON, updated_at,
-- profile ids JSON. Refuses (writing nothing) a node whose profile is missing or disabled,
-- checked here so that a profile cannot be disabled or deleted between check and save.
-- Returns {existed (0/1)} or {"unavailable", profile id, why}.
local id, name = ARGV[1], ARGV[2]
local pk = key('program', id)
local profile_ids = cjson.decode(ARGV[6])
for _, pid in ipairs(profile_ids) do
  local status = redis.call('HGET', key('profile', pid), 'status')
  if status ~= 'enabled' then return {'unavailable', pid, status or 'missing'} end
end
local old = redis.call('HGET', pk, 'nodes')
if old then
  for _, node in ipairs(cjson.decode(old)) do
    redis.call('SREM', key('profile_programs', tostring(node.profile_id)), id)
  end
end
if name == '' then
  redis.call('DEL', pk)
  redis.call('ZREM', key('programs'), id)
  return {old and 1 or 0}
end
redis.call('HSET', pk, 'name', name, 'status', ARGV[3], 'nodes', ARGV[4], 'updated_at', ARGV[5])
redis.call('ZADD', key('programs'), ARGV[5], id)
for _, pid in ipairs(profile_ids) do
  redis.call('SADD', key('profile_programs', pid), id)
end
return {old and 1 or 0}
