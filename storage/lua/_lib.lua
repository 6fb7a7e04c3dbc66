-- Shared by every script that records outcomes (storage/scripts.py prepends this file).
-- `T`, the key templates, and key(name, ...) are put in front of this file by storage/scripts.py,
-- storage/keys.py:lua_templates, so a key's shape is written once, in Python.
local US, RS = '\31', '\30'  -- unit and record separators inside packed values
local FINAL = {sent = true, warning = true, failed = true}

local function nonempty(v) if type(v) == 'string' and v ~= '' then return v end end
-- A count as Redis takes it, a string: formatting a Lua number costs half a command's work.
local function count_arg(n) return n == 1 and '1' or tostring(n) end

-- Outcomes are recorded in two steps, so that what many outcomes share is written once per
-- call rather than once per outcome: `settle` gives each contact its outcome, then
-- `count_outcomes` counts those settled, once per group of outcomes alike (one run, day, state
-- and reason): the run's counts and done check, the metric, the day's counters, days and rows.

-- Keep a sent message awaiting its delivery and read receipts (usually the only one its
-- recipient awaits: one call).
local function await_receipts(pid, rcpt, mid, day, index, sent)
  local k = key('await', pid)
  local entry = table.concat({mid, day, index, sent, 's'}, US)
  if redis.call('HSETNX', k, rcpt, entry) == 1 then return end
  redis.call('HSET', k, rcpt, redis.call('HGET', k, rcpt) .. RS .. entry)
end

-- Count messages Facebook accepted, of one profile and day: the day's counter, their rows in
-- its sent list, and those whose receipts can come awaiting them, with their row's index
-- (delivered and read rows point at it instead of repeating contact and message id).
-- sends: tables with contact, mid, at, rcpt and receipts (as outcomes have them).
local function count_sent(pid, day, score, sends)
  local k, n, rows, no_receipts = key('day', pid, day), #sends, {}, 0
  for i, s in ipairs(sends) do
    rows[i] = s.at .. US .. s.contact .. US .. s.mid
    if not s.receipts then no_receipts = no_receipts + 1 end  -- checkbox user_ref sends
  end
  -- The day joins the profile's days with its first count of a kind (any before added it).
  if redis.call('HINCRBY', k, 'sent', count_arg(n)) == n then
    redis.call('ZADD', key('days', pid), 'NX', score, day)
  end
  if no_receipts > 0 then redis.call('HINCRBY', k, 'no_receipts', count_arg(no_receipts)) end
  local first = redis.call('RPUSH', key('rows', pid, day, 'sent'), unpack(rows)) - n
  for i, s in ipairs(sends) do
    if s.receipts then await_receipts(pid, s.rcpt, s.mid, day, first + i - 1, s.at) end
  end
end

-- Count contacts not sent (warning) or refused (failed), of one profile, day, kind and reason,
-- in the per-kind and per-reason lists.
local function count_not_sent(pid, day, score, kind, reason, outcomes)
  local k, n, rows = key('day', pid, day), count_arg(#outcomes), {}
  for i, o in ipairs(outcomes) do rows[i] = o.at .. US .. o.contact .. US .. reason .. US .. o.detail end
  if redis.call('HINCRBY', k, kind, n) == #outcomes then  -- as in count_sent
    redis.call('ZADD', key('days', pid), 'NX', score, day)
  end
  redis.call('HINCRBY', k, kind .. ':' .. reason, n)
  redis.call('RPUSH', key('rows', pid, day, kind), unpack(rows))
  redis.call('RPUSH', key('rows', pid, day, kind .. ':' .. reason), unpack(rows))
end

-- Count settled outcomes alike (one run, day, state and reason): run counts, metric, day.
local function count_alike(alike)
  local o, n = alike[1], count_arg(#alike)
  local meta = o.meta
  redis.call('HINCRBY', meta, o.state, n)
  if o.state == 'failed' then redis.call('HINCRBY', meta, 'failed:' .. o.reason, n) end
  redis.call('HINCRBY', key('metric', 'sends'), o.state .. '|' .. o.reason, n)
  if o.state == 'sent' then
    count_sent(o.pid, o.day, o.score, alike)
  else
    count_not_sent(o.pid, o.day, o.score, o.state, o.reason, alike)
  end
end

-- A run whose every contact has its outcome is done, and due for its callback if it has one.
local function check_done(run, meta, at)
  local c = redis.call('HMGET', meta, 'sent', 'warning', 'failed', 'total', 'callback_url')
  local final = (tonumber(c[1]) or 0) + (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0)
  if final < tonumber(c[4]) then return end
  redis.call('HSET', meta, 'state', 'done', 'done_at', at)
  redis.call('ZREM', key('runs_active'), run)
  if nonempty(c[5]) then redis.call('ZADD', key('callbacks_due'), 'NX', at, run) end
end

-- Count the outcomes `settle` recorded (in order), then see whether their runs are done.
local function count_outcomes(settled)
  if #settled <= 1 then  -- the usual case: nothing to group
    local o = settled[1]
    if o then count_alike(settled) check_done(o.run, o.meta, o.at) end
    return
  end
  local groups, order, last = {}, {}, {}
  for _, o in ipairs(settled) do
    local g = o.run .. US .. o.day .. US .. o.state .. US .. o.reason
    if not groups[g] then groups[g], order[#order + 1] = {}, g end
    table.insert(groups[g], o)
    last[o.run] = o
  end
  for _, g in ipairs(order) do count_alike(groups[g]) end
  for run, o in pairs(last) do check_done(run, o.meta, o.at) end
end

-- Give a run's contact its final outcome unless it has one (a send whose answer was lost then
-- is no longer unconfirmed, and loses its deadline); `count_outcomes` counts it. Returns the
-- run's profile id if recorded (o.pid holds it too, o.meta the run's key), nil if the contact
-- already had its outcome or the run expired. pids: run -> profile id (false: no run), read
-- once per call.
-- o: run, contact, state (sent/warning/failed), reason, mid, at, detail, day, score, rcpt, receipts,
-- k (what a sent message went out as; an echo has none: the claim's own is kept)
local function settle(o, pids)
  o.meta = key('run', o.run)
  local pid = pids[o.run]
  if pid == nil then
    pid = redis.call('HGET', o.meta, 'profile_id') or false
    pids[o.run] = pid
  end
  if not pid then return nil end
  local hk = key('run_outcomes', o.run)
  local cur = redis.call('HGET', hk, o.contact)
  local state = cur and string.match(cur, '"s": ?"(%a+)"')  -- cheaper than decoding it all
  if FINAL[state] then return nil end
  local prev = nil  -- the contact's record, decoded only when more of it is needed
  if state == 'unknown' then
    prev = cjson.decode(cur)
    if prev.u then redis.call('HINCRBY', key('day', pid, prev.u), 'unconfirmed', -1) end
    redis.call('ZREM', key('deadlines'), o.run .. US .. o.contact)
  end
  local sent_as = nil
  if o.state == 'sent' then
    sent_as = nonempty(o.k)
    if not sent_as and cur then sent_as = nonempty((prev or cjson.decode(cur)).k) end
  end
  redis.call('HSET', hk, o.contact, cjson.encode({s = o.state, r = o.reason, m = o.mid, t = o.at, d = o.detail,
                                                  k = sent_as}))
  o.pid = pid
  return pid
end

-- Give a run's contact its final outcome, once, and count it (see settle).
-- Returns 1 and the run's profile id if recorded, 0 if the contact already had its outcome.
local function finish(o)
  local pid = settle(o, {})
  if not pid then return 0 end
  count_outcomes({o})
  return 1, pid
end

-- Count a sent message outside any run and, if receipts can come, keep it awaiting them.
local function record_sent(pid, day, score, contact, mid, at, rcpt, receipts)
  count_sent(pid, day, score, {{contact = contact, mid = mid, at = at, rcpt = rcpt, receipts = receipts}})
end

-- The profile's sending breaker (p:{pid}:sending, present only while sending is paused) and
-- its window of recent send results (p:{pid}:sendwin): the rules come from the caller
-- (bot/policy.py SENDING_RULES), this is only the mechanism.
-- Pause a profile's sending: `resume_at` nil means until Facebook lifts it or the owner resumes.
local function pause_sending(pid, reason, detail, since, resume_at, cooldown, counted)
  local bk = key('sending', pid)
  redis.call('DEL', bk, key('sendwin', pid))
  redis.call('HSET', bk, 'state', 'paused', 'reason', reason, 'detail', detail or '', 'since', since,
             'cooldown', cooldown or 0)
  if resume_at then redis.call('HSET', bk, 'resume_at', resume_at) end
  if counted then redis.call('HINCRBY', key('metric', 'breaker_trips'), reason, 1) end
end

-- Learning from the results of sends that called Facebook, one call's worth (L): the rules (the
-- window's length; the rest, JSON, decoded only for a result that needs it, which an accepted
-- send while sending is open does not), the profile's breaker as last read, and accepted sends
-- not yet in the window (those of one profile and bucket in a row are counted together).
local BUCKETS = 10  -- the window is ten buckets, each a tenth of it

local function new_learner(window_ms, rules_json, withdraw_consent)
  return {window_ms = window_ms, width = math.floor(window_ms / BUCKETS), json = rules_json,
          withdraw_consent = withdraw_consent}
end

local function rules_of(L)
  L.rules = L.rules or cjson.decode(L.json)
  return L.rules
end

local function counts_in_window(wk, bucket)
  local h = redis.call('HGETALL', wk)
  local fields = {}
  for i = 1, #h, 2 do fields[h[i]] = tonumber(h[i + 1]) end
  local n, bad = 0, 0
  for s = 0, BUCKETS - 1 do
    local b = fields['m' .. s]
    if b and b > bucket - BUCKETS then
      n, bad = n + (fields['n' .. s] or 0), bad + (fields['b' .. s] or 0)
    end
  end
  return n, bad
end

-- Add n results, `bad` of them refusals, to their bucket of the window (started afresh if it
-- still holds an older bucket's).
local function add_results(L, pid, bucket, n, bad)
  local wk, s = key('sendwin', pid), tostring(bucket % BUCKETS)
  if tonumber(redis.call('HGET', wk, 'm' .. s)) ~= bucket then
    redis.call('HSET', wk, 'm' .. s, bucket, 'n' .. s, '0', 'b' .. s, '0')
    redis.call('PEXPIRE', wk, L.window_ms + L.width)
  end
  redis.call('HINCRBY', wk, 'n' .. s, count_arg(n))
  if bad > 0 then redis.call('HINCRBY', wk, 'b' .. s, count_arg(bad)) end
end

local function write_accepted(L)
  if L.accepted then add_results(L, L.accepted_pid, L.accepted_bucket, L.accepted, 0) end
  L.accepted = nil
end

local function count_accepted(L, pid, at)
  local bucket = math.floor(at / L.width)
  if L.accepted and (L.accepted_pid ~= pid or L.accepted_bucket ~= bucket) then write_accepted(L) end
  L.accepted, L.accepted_pid, L.accepted_bucket = (L.accepted or 0) + 1, pid, bucket
end

-- Count a send result; trip the breaker when refusals reach the share the rules allow.
local function count_result(L, pid, o, is_bad)
  local bucket = math.floor(o.at / L.width)
  add_results(L, pid, bucket, 1, is_bad and 1 or 0)
  if not is_bad then return end
  local rules = rules_of(L)
  local n, bad = counts_in_window(key('sendwin', pid), bucket)
  if n >= rules.min_sends and bad * 100 >= rules.bad_percent * n then
    pause_sending(pid, 'error_rate', bad .. ' of the last ' .. n .. ' sends refused', o.at,
                  o.at + rules.cooldown_ms, rules.cooldown_ms, true)
  end
end

-- The probe's result: success resumes sending; a refusal pauses again for twice as long; an
-- answer that says nothing about the Page (Facebook unavailable) lets the next send probe.
local function probe_result(L, pid, bk, o, is_bad, trips)
  local rules = rules_of(L)
  if o.state == 'sent' then
    redis.call('DEL', bk, key('sendwin', pid))
  elseif is_bad or trips then
    local b = redis.call('HMGET', bk, 'reason', 'cooldown')
    local cooldown = math.min(2 * (tonumber(b[2]) or rules.cooldown_ms), rules.max_cooldown_ms)
    cooldown = math.max(cooldown, rules.cooldown_ms)
    pause_sending(pid, trips and o.reason or b[1], o.detail, o.at, o.at + cooldown, cooldown, false)
  else
    redis.call('HSET', bk, 'state', 'paused', 'resume_at', o.at)
    redis.call('HDEL', bk, 'probe', 'probe_at')
  end
end

local function learn(L, pid, o)
  if L.breaker_pid ~= pid then
    L.breaker_pid, L.breaker = pid, redis.call('HMGET', key('sending', pid), 'state', 'probe')
  end
  local b = L.breaker
  if o.state == 'sent' and not b[1] then return count_accepted(L, pid, o.at) end  -- most results
  write_accepted(L)  -- the results before this one count first: it may pause sending
  L.breaker_pid = nil  -- read again: this result may change it
  local rules, withdraw_consent = rules_of(L), L.withdraw_consent
  local failed = o.state == 'failed'
  if failed and rules.unreachable[o.reason] and nonempty(o.rcpt) then
    redis.call('ZADD', key('unreachable', pid), o.at + rules.unreachable_ms, o.rcpt)
  end
  local source = failed and rules.withdraws[o.reason]
  if source and nonempty(o.rcpt)
     and redis.call('HGET', key('contact', o.contact), string.format(T.optin_field, tonumber(pid))) == o.rcpt then
    withdraw_consent(pid, o.contact, o.at, source, redis.call('HGET', key('profile', pid), 'page_id'))
  end
  local is_bad, trips = failed and rules.bad[o.reason] ~= nil, failed and rules.trip[o.reason] ~= nil
  local bk = key('sending', pid)
  if b[1] == 'probing' and b[2] == o.run .. US .. o.contact then
    probe_result(L, pid, bk, o, is_bad, trips)
  elseif trips then
    if b[1] ~= 'paused' then
      pause_sending(pid, o.reason, o.detail, o.at, o.at + rules.cooldown_ms, rules.cooldown_ms, true)
    end
  elseif not b[1] then  -- results of sends that left before a pause teach nothing more
    count_result(L, pid, o, is_bad)
  end
end

-- Record run contacts' final outcomes, ARGV[first + 2 ..] (one JSON each, see settle), and
-- learn from the ones that called Facebook (o.fb): the profile's sending breaker and its
-- unreachable recipients. ARGV[first]: the breaker's window in ms (0: no rules, nothing to
-- learn); ARGV[first + 1]: the sending rules (JSON: min_sends, bad_percent, cooldown_ms,
-- max_cooldown_ms, unreachable_ms, and the reason sets bad, trip, unreachable, withdraws).
-- withdraw_consent: the consent ledger's, defined further down this file. Returns how many
-- outcomes were recorded.
local function record_outcomes(first, withdraw_consent)
  if #ARGV < first + 2 then return 0 end
  local settled, pids = {}, {}
  for i = first + 2, #ARGV do
    local o = cjson.decode(ARGV[i])
    if settle(o, pids) then settled[#settled + 1] = o end
  end
  count_outcomes(settled)
  local window_ms = tonumber(ARGV[first]) or 0
  if window_ms > 0 and #settled > 0 then
    local L = new_learner(window_ms, ARGV[first + 1], withdraw_consent)
    for _, o in ipairs(settled) do
      if o.fb then learn(L, o.pid, o) end
    end
    write_accepted(L)
  end
  return #settled
end

-- Reserve the next send slot on a Page's shared timeline (GCRA without burst), in
-- microseconds on the server clock; a rest pushes the timeline out and marks the Page resting
-- so that senders holding earlier slots wait too. Returns the wait in microseconds.
-- `now` and `tat` (the clock and the timeline, us) are read here unless the caller has them.
local function server_now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function reserve_slot(timeline, rest_key, interval, rest_ms, now, tat)
  now = now or server_now_us()
  tat = tat or tonumber(redis.call('GET', timeline) or '0')
  if rest_ms > 0 and redis.call('PTTL', rest_key) < rest_ms then
    redis.call('SET', rest_key, '1', 'PX', rest_ms)
  end
  local start = math.max(tat, now + rest_ms * 1000)
  local next_free = start + interval
  redis.call('SET', timeline, string.format('%d', next_free), 'PX', math.floor((next_free - now) / 1000) + 60000)
  return start - now
end

-- The consent ledger of a (profile, contact) (storage/consent.py): events oldest first, packed
-- "time US type US source US verified US recipient US page". CONSENT_KEPT is put in front of
-- this file by storage/scripts.py. Returns two booleans: recorded (false: this very event is
-- already there, e.g. a retried webhook) and latest (it is newer than every event recorded, so
-- it sets the contact's state; an older one arriving late is history only).
local function record_consent(pid, contact, at, kind, source, rcpt, page)
  local k = key('consent', pid, contact)
  local row = table.concat({at, kind, source, '1', rcpt or '', page or ''}, US)
  -- Appended first: a contact's first event (the usual case) then needs no read.
  local length = redis.call('RPUSH', k, row)
  local last = length > 1 and redis.call('LINDEX', k, -2) or nil
  local last_at = last and tonumber(string.match(last, '^(%d+)'))
  if last_at and last_at >= tonumber(at) then  -- a retry, or history arriving late: find its place
    redis.call('RPOP', k)
    local later = nil
    for _, old in ipairs(redis.call('LRANGE', k, 0, -1)) do
      if old == row then return false, false end
      if not later and tonumber(string.match(old, '^(%d+)')) > tonumber(at) then later = old end
    end
    if later then redis.call('LINSERT', k, 'BEFORE', later, row) else redis.call('RPUSH', k, row) end
    redis.call('LTRIM', k, -CONSENT_KEPT, -1)
    return true, false
  end
  if length > CONSENT_KEPT then redis.call('LPOP', k) end
  if not last or string.match(last, '^%d+\31([^\31]*)') ~= kind then  -- the state changes
    local now = key('consent_state', pid, kind == 'opt_in' and 'opted_in' or 'opted_out')
    local before = key('consent_state', pid, kind == 'opt_in' and 'opted_out' or 'opted_in')
    if not last or redis.call('SMOVE', before, now, contact) == 0 then
      redis.call('SADD', now, contact)
    end
  end
  return true, true
end

-- Withdraw a contact's consent to a profile: the opt-in value goes (the PSID index stays, so
-- receipts, a Messenger stop or a data deletion still find the contact). Returns 1 if recorded.
local function withdraw_consent(pid, contact, at, source, page)
  local ck, field = key('contact', contact), string.format(T.optin_field, tonumber(pid))
  local rcpt = redis.call('HGET', ck, field)
  local recorded, latest = record_consent(pid, contact, at, 'opt_out', source, rcpt, page)
  if latest then redis.call('HDEL', ck, field) end
  if recorded then redis.call('HINCRBY', key('metric', 'consent_withdrawn'), source, 1) end
  return recorded and 1 or 0
end
