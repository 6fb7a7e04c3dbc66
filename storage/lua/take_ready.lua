-- Take queued batches of other Pages for a worker that is already sending, so that one
-- worker keeps SEND_CONCURRENCY sends in flight over several Pages (each paced on its own).
-- ARGV: now ms, how many, lease ms, lease token, profiles to skip (JSON list).
-- Takes at most one batch per profile; returns {run, batch, run, batch, ...} it now leases.
local now, wanted, lease_ms, token = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local busy = {}
for _, pid in ipairs(cjson.decode(ARGV[5])) do busy[pid] = true end
local taken = {}
if wanted <= 0 then return taken end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', key('ready'), '-inf', now, 'LIMIT', 0, wanted * 8)) do
  local pid, run, batch = string.match(member, '^([^\31]*)\31([^\31]*)\31(.*)$')
  if pid and not busy[pid] and redis.call('SET', key('run_lease', run, batch), token, 'NX', 'PX', lease_ms) then
    redis.call('ZREM', key('ready'), member)
    busy[pid] = true
    taken[#taken + 1] = run
    taken[#taken + 1] = batch
    if #taken >= 2 * wanted then break end
  end
end
return taken
