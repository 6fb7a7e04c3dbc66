-- A recovery sends these contacts of a run again: remember which run does (once per contact),
-- and count them on the day each originally failed, so no statistics row shows a contact as
-- not sent and then sent without saying so.
-- KEYS[1] the original run's recovered hash. ARGV[1] profile id, ARGV[2] the recovering run,
-- ARGV[3] seconds the hash is kept, then (contact, day, day score) triples.
-- Returns how many were newly marked.
local marked = 0
for i = 4, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[2]) == 1 then
    local day = ARGV[i + 1]
    redis.call('HINCRBY', key('day', ARGV[1], day), 'recovered', 1)
    redis.call('ZADD', key('days', ARGV[1]), 'NX', ARGV[i + 2], day)
    marked = marked + 1
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return marked
