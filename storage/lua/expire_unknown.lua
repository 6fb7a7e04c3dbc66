-- Sends whose fate we never learnt (in flight when a worker died, or timed out after leaving),
-- made unknown with a deadline (set_pending_state.lua): past it they become failed/interrupted.
-- They are never resent.
-- ARGV: now ms, day, YYYYMMDD, max to settle. Returns how many were settled.
local now, day, score, limit = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', key('deadlines'), '-inf', now, 'LIMIT', 0, limit)
local settled, pids = {}, {}
for _, member in ipairs(due) do
  local run, contact = string.match(member, '^([^\31]*)\31(.*)$')
  local o = {run = run, contact = contact, state = 'failed', reason = 'interrupted', mid = '',
             at = now, detail = '', day = day, score = score}
  if settle(o, pids) then settled[#settled + 1] = o end
  redis.call('ZREM', key('deadlines'), member)
end
count_outcomes(settled)
return #settled
