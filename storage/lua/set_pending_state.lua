-- Move claimed contacts between the non-final states, never touching final outcomes. A send
-- becoming unknown (its answer was lost) gets its deadline, the one its claim was given (the
-- inflight JSON's "e": claims set none, most sends never need one), and counts as
-- "unconfirmed" on `day` until it settles (finish() in _lib.lua takes it off that day's count
-- and the deadline set again).
-- KEYS[1] run outcomes, KEYS[2] deadlines. ARGV: from state, to state ("" = release the claim),
-- run id, day, YYYYMMDD, contacts... Returns how many changed.
local from, to, run, day, score = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local changed = 0
for i = 6, #ARGV do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur then
    local o = cjson.decode(cur)
    if o.s == from then
      if to == '' then
        redis.call('HDEL', KEYS[1], ARGV[i])
        redis.call('ZREM', KEYS[2], run .. US .. ARGV[i])  -- claims made before 2026-12-06 had one
      else
        o.s = to
        if to == 'unknown' then
          o.u = day
          -- A claim made before 2026-12-06 has no "e": its deadline was set with the claim.
          if o.e then redis.call('ZADD', KEYS[2], o.e, run .. US .. ARGV[i]) end
        end
        redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(o))
      end
      changed = changed + 1
    end
  end
end
if to == 'unknown' and changed > 0 then
  local pid = redis.call('HGET', key('run', run), 'profile_id')
  if pid then
    redis.call('HINCRBY', key('day', pid, day), 'unconfirmed', changed)
    redis.call('ZADD', key('days', pid), 'NX', score, day)
  end
end
return changed
