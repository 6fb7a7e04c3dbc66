-- Erase a contact from one run (storage/erasure.py). KEYS: run contacts, run outcomes,
-- run recovered, runs:active. ARGV: contact, run id, tombstone prefix.
-- Each place the contact held in the run's list becomes "<prefix><index>" (a name no contact
-- id can have, so batches keep their slices), and its outcome moves to the first one, without
-- the message id and Facebook's detail. Counts are untouched.
-- Returns the places erased, or -1 (nothing changed) while the run may still send to the
-- contact: an active run where it has no final outcome (its batch may hold it in memory).
local contacts, outcomes, recovered, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local contact, run_id, prefix = ARGV[1], ARGV[2], ARGV[3]
local places = redis.call('LPOS', contacts, contact, 'COUNT', 0)
local raw = redis.call('HGET', outcomes, contact)
if #places == 0 and not raw then return 0 end
local FINAL = {sent = true, warning = true, failed = true}
local outcome = raw and cjson.decode(raw)
if not (outcome and FINAL[outcome.s]) and redis.call('ZSCORE', active, run_id) then return -1 end
for _, i in ipairs(places) do redis.call('LSET', contacts, i, prefix .. i) end
if outcome then
  redis.call('HDEL', outcomes, contact)
  redis.call('HSET', outcomes, prefix .. (places[1] or 'x'),
             cjson.encode({s = outcome.s, r = outcome.r, t = outcome.t, k = outcome.k}))
end
redis.call('HDEL', recovered, contact)
return math.max(#places, 1)
