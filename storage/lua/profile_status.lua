-- Change a profile's status, refusing to disable or delete one used by an active program.
-- ARGV: profile id, new status (enabled / disabled / deleting).
-- Returns {"ok"}, {"missing"} or {"in_use", program id, program name, ...}.
-- "deleting" also frees the Page and hides the profile; the purge job removes the rest.
local pid, status = ARGV[1], ARGV[2]
local pk = key('profile', pid)
local current = redis.call('HGET', pk, 'status')
if not current or current == 'deleting' then return {'missing'} end
if status ~= 'enabled' then
  local blockers = {'in_use'}
  for _, prog in ipairs(redis.call('SMEMBERS', key('profile_programs', pid))) do
    local p = redis.call('HMGET', key('program', prog), 'status', 'name')
    if p[1] == 'active' then
      blockers[#blockers + 1] = prog
      blockers[#blockers + 1] = p[2]
    end
  end
  if #blockers > 1 then return blockers end
end
redis.call('HSET', pk, 'status', status)
if status == 'deleting' then
  redis.call('DEL', key('page', redis.call('HGET', pk, 'page_id')))
  redis.call('ZREM', key('profiles'), pid)
end
return {'ok'}
