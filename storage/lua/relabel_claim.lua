-- A claimed send changed form (a text Facebook refused outside the window goes as the utility
-- template): keep the new form with the claim, so that an echo settling it says what went out.
-- KEYS[1] run outcomes. ARGV: contact, sent-as code. Returns 1 if the claim was still in flight.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local o = cjson.decode(cur)
if o.s ~= 'inflight' then return 0 end
o.k = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(o))
return 1
