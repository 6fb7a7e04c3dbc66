-- Claim a run contact as its request is about to leave ("inflight"): only once its Page's send
-- slot has come, so that a worker dying while it waits for the slot leaves the contact unclaimed
-- (sent later by another worker) rather than unknown. Nothing is claimed if the contact already
-- has an outcome or someone else's claim, or while its profile's sending is paused.
-- A first call (ARGV[6] = 0) reserves the Page's next slot (see reserve_slot) and claims at once
-- if that slot is now; else it returns the wait, and the caller calls again when it is over
-- (ARGV[6] = 1) to claim. A Page told to rest meanwhile voids that slot: a new one is reserved.
-- No slot is reserved for a contact that cannot be claimed, nor one further off than ARGV[7].
-- A claim sets no deadline: only a send whose answer is lost needs one, and every inflight
-- claim left without an outcome becomes unknown first (by its sender, or, if the worker died,
-- by the one that takes its batch up), when set_pending_state.lua sets the deadline the
-- inflight JSON carries.
-- KEYS[1] run outcomes, KEYS[2] Page timeline, KEYS[3] Page rest key, KEYS[4] the profile's
-- sending breaker (optional).
-- ARGV: contact, inflight JSON, "run US contact" (the probe's name), interval us (0: no
-- pacing), probe timeout ms, slot held (1/0), longest wait us to reserve; then, recorded first,
-- outcomes of earlier sends that were waiting to be written (finish.lua's ARGV: the breaker's
-- window ms, the sending rules, one outcome JSON each), so that they need no round trip of
-- their own (jobs/sender.py Recorder).
-- Returns 0 once claimed; else the wait in microseconds (a slot reserved unless it is longer
-- than ARGV[7]: then the caller stops), -1 if the contact has an outcome or is someone else's,
-- -2 if sending is paused, -3 if a probe send is testing it (its answer decides). The same call
-- made again (its reply was lost with the connection) finds the claim its own: the inflight
-- JSON carries a claim id.

-- Whether this send may leave (0), or not because sending is paused (-2) or a probe is out
-- (-3); and whether, once a pause's cool-down is over, it would be the one probe (until it
-- ends, or `probe_timeout` passes without an end).
local function may_send(bk, member, probe_timeout)
  local b = redis.call('HMGET', bk, 'state', 'resume_at', 'probe', 'probe_at')
  if not b[1] or b[3] == member then return 0, nil end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if b[1] == 'paused' and (not b[2] or now < tonumber(b[2])) then return -2 end
  if b[1] == 'probing' and now - tonumber(b[4]) < probe_timeout then return -3 end
  return 0, now
end

-- The wait for the Page's next slot, reserved unless it is longer than `longest` (us).
local function slot_wait(interval, longest)
  local now, tat = server_now_us(), tonumber(redis.call('GET', KEYS[2]) or '0')
  if tat - now > longest then return tat - now end
  return reserve_slot(KEYS[2], KEYS[3], interval, 0, now, tat)
end

record_outcomes(8, withdraw_consent)
local contact, record, member = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', KEYS[1], contact)
if cur then return cur == record and 0 or -1 end
local verdict, probe_at = 0, nil
if KEYS[4] then
  verdict, probe_at = may_send(KEYS[4], member, tonumber(ARGV[5]))
  if verdict < 0 then return verdict end
end
local interval = tonumber(ARGV[4])
local slot_held = ARGV[6] == '1' and redis.call('EXISTS', KEYS[3]) == 0
if interval > 0 and not slot_held then
  local wait = slot_wait(interval, tonumber(ARGV[7]))
  if wait > 0 then return wait end
end
if probe_at then redis.call('HSET', KEYS[4], 'state', 'probing', 'probe', member, 'probe_at', probe_at) end
redis.call('HSET', KEYS[1], contact, record)
return 0
