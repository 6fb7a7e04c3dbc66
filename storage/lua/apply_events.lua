-- Apply a batch of normalised webhook events atomically (storage/inbound.py builds them).
-- ARGV[1] events (JSON list), ARGV[2] clock skew tolerance (ms),
-- ARGV[3] cap of unmatched opt-ins kept per profile, ARGV[4] webhook event kinds seen (JSON
-- object kind -> count, for /metrics), ARGV[5] how many parked writes to apply first, oldest
-- first (the inbox: storage/inbound.py parks writes there when webhooks crowd in; each is
-- the JSON [events, kinds]), ARGV[6] taking no more once this many of their events are
-- applied, ARGV[7] and ARGV[8] how many set-aside writes to keep, and how long (s).
-- _lib.lua is prepended.
-- Every branch is idempotent, so a webhook delivered twice changes nothing the second time.
-- Returns {applied, unknown_page, foreign_ref, erased, parked writes set aside, parked left}.
local events = cjson.decode(ARGV[1])
local skew = tonumber(ARGV[2])
local unmatched_cap = tonumber(ARGV[3])
local kinds_seen = {}
local function count_kinds(kinds)
  for kind, n in pairs(kinds) do kinds_seen[kind] = (kinds_seen[kind] or 0) + n end
end
count_kinds(cjson.decode(ARGV[4] or '{}'))

local function optin_field(pid) return string.format(T.optin_field, tonumber(pid)) end

local owner_cache = {}
local function profile_of(page)
  local pid = owner_cache[page]
  if pid == nil then
    pid = redis.call('GET', key('page', page))
    owner_cache[page] = pid
  end
  return pid
end

-- Whether a profile has anyone left alone as unreachable, asked once per call: most have
-- nobody, and then the events that make a person reachable need no ZREM each (nothing in this
-- script adds to the set).
local has_unreachable = {}
local function any_unreachable(pid)
  local known = has_unreachable[pid]
  if known == nil then
    known = redis.call('EXISTS', key('unreachable', pid)) == 1
    has_unreachable[pid] = known
  end
  return known
end

-- The person wrote, opted in or answered: the window opens, and they are reachable again.
local function touch_seen(pid, rcpt, ts)
  local k = key('seen', pid)
  local old = tonumber(redis.call('HGET', k, rcpt) or '0')
  if ts > old then redis.call('HSET', k, rcpt, ts) end
  if any_unreachable(pid) then redis.call('ZREM', key('unreachable', pid), rcpt) end
end

-- When the contact behind an opt-in was erased, if it was (erasure fingerprints are kept a
-- few days, so the set is empty most of the time: asked once per call before any lookup).
local erasures_kept = nil
local function erased_at(fp)
  if not fp then return nil end
  if erasures_kept == nil then erasures_kept = redis.call('ZCARD', key('erased')) > 0 end
  return erasures_kept and redis.call('ZSCORE', key('erased'), fp) or nil
end

local handlers = {}

handlers.seen = function(pid, e)
  touch_seen(pid, e.rcpt, e.ts)
end

handlers.unmatched = function(pid, e)
  local k = key('unmatched', pid)
  redis.call('ZADD', k, e.ts, table.concat({e.rcpt, e.ref or '', e.source or ''}, US))
  if redis.call('ZCARD', k) > unmatched_cap then
    redis.call('ZREMRANGEBYRANK', k, 0, -unmatched_cap - 1)
  end
  if e.opens_window then touch_seen(pid, e.rcpt, e.ts) end
end

handlers.optin = function(pid, e)
  if tostring(e.profile) ~= pid then  -- genuinely ours, but signed for another profile's Page
    e.source = 'other_profile'
    handlers.unmatched(pid, e)
    return 'foreign_ref'
  end
  local erased = erased_at(e.fp)
  if erased and tonumber(erased) >= e.ts then return 'erased' end  -- a replay of the past
  local field, ck, idx = optin_field(pid), key('contact', e.contact), key('recipients', pid)
  local _, latest = record_consent(pid, e.contact, e.ts, 'opt_in', e.source or 'plugin', e.rcpt, e.page)
  if not latest then return end  -- already applied, or older than a later withdrawal
  local old = redis.call('HGET', ck, field)
  if old and old ~= e.rcpt and redis.call('HGET', idx, old) == e.contact then
    redis.call('HDEL', idx, old)
  end
  redis.call('HSET', ck, field, e.rcpt)
  redis.call('HSET', idx, e.rcpt, e.contact)
  touch_seen(pid, e.rcpt, e.ts)
end

handlers.marketing = function(pid, e)
  redis.call('HSET', key('marketing', pid), e.rcpt, table.concat({e.status or '', e.expiry or '', e.ts}, US))
  if e.stop then  -- the person stopped messages in Messenger: consent withdrawn
    local contact = redis.call('HGET', key('recipients', pid), e.rcpt)
    if contact and redis.call('HGET', key('contact', contact), optin_field(pid)) == e.rcpt then
      withdraw_consent(pid, contact, e.ts, 'messenger_stop', e.page)
    end
  end
end

-- A person who was only known by a checkbox user_ref replied: now we know the PSID.
handlers.link = function(pid, e)
  local idx, old = key('recipients', pid), 'user_ref:' .. e.user_ref
  local contact = redis.call('HGET', idx, old)
  if not contact then return end
  local ck, field = key('contact', contact), optin_field(pid)
  if redis.call('HGET', ck, field) == old then redis.call('HSET', ck, field, e.rcpt) end
  redis.call('HSET', idx, e.rcpt, contact)
  redis.call('HDEL', idx, old)
end

-- Receipts are counted once per (profile, day, kind) at the end of the call, not per event:
-- a 100-event webhook then makes a few HINCRBY and RPUSH calls instead of ~160.
local receipts, receipt_order = {}, {}

-- Time to delivery, send to the receipt's watermark, as a histogram per (profile, day): fields
-- dl_<upper bound in s>, the last one dl_inf. DELIVERY_BUCKETS (storage/stats.py) and
-- DELIVERY_FIELDS, their field names, are put in front of this file by storage/scripts.py.
local latencies, latency_order = {}, {}

local function count_latency(pid, day, seconds)
  local field = 'dl_inf'
  for i, upper in ipairs(DELIVERY_BUCKETS) do
    if seconds <= upper then field = DELIVERY_FIELDS[i] break end
  end
  local k = pid .. US .. day
  local h = latencies[k]
  if not h then
    h = {pid = pid, day = day, n = {}}
    latencies[k] = h
    latency_order[#latency_order + 1] = h
  end
  h.n[field] = (h.n[field] or 0) + 1
end

-- A receipt for the message at `index` of the day's sent list.
local function count_receipt(pid, day, kind, index, at)
  local k = pid .. US .. day .. US .. kind
  local r = receipts[k]
  if not r then
    r = {pid = pid, day = day, kind = kind, rows = {}}
    receipts[k] = r
    receipt_order[#receipt_order + 1] = r
  end
  r.rows[#r.rows + 1] = at .. US .. index
end

local function write_receipts()
  for _, h in ipairs(latency_order) do
    local dk = key('day', h.pid, h.day)
    for field, n in pairs(h.n) do redis.call('HINCRBY', dk, field, n) end
  end
  for _, r in ipairs(receipt_order) do
    redis.call('HINCRBY', key('day', r.pid, r.day), r.kind, #r.rows)
    for i = 1, #r.rows, 1000 do  -- unpack() has a stack limit
      redis.call('RPUSH', key('rows', r.pid, r.day, r.kind), unpack(r.rows, i, math.min(i + 999, #r.rows)))
    end
  end
end

local AWAITING = '[^' .. RS .. ']+'  -- each message a recipient awaits receipts of

local function receipt(pid, e, is_read)
  local k = key('await', pid)
  local packed = redis.call('HGET', k, e.rcpt)
  if not packed then return end
  local mids = {}
  if e.mids then for _, m in ipairs(e.mids) do mids[m] = true end end
  local keep = {}
  for entry in string.gmatch(packed, AWAITING) do
    local mid, day, index, sent, state = string.match(entry,
      '^([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)$')
    local covered = mids[mid] or tonumber(sent) <= e.wm + skew
    if covered and state == 's' then
      count_receipt(pid, day, 'delivered', index, e.ts)
      count_latency(pid, day, math.max(0, e.wm - tonumber(sent)) / 1000)
      state = 'd'
    end
    if covered and is_read then
      count_receipt(pid, day, 'read', index, e.ts)  -- read: nothing more to wait for
    else
      keep[#keep + 1] = table.concat({mid, day, index, sent, state}, US)
    end
  end
  if #keep == 0 then
    redis.call('HDEL', k, e.rcpt)
  else
    redis.call('HSET', k, e.rcpt, table.concat(keep, RS))
  end
end

handlers.delivery = function(pid, e) receipt(pid, e, false) end
handlers.read = function(pid, e) receipt(pid, e, true) end

-- Our own message echoed back: settles a send whose answer we lost (metadata names run and contact).
handlers.echo = function(pid, e)
  if redis.call('HGET', key('run', e.run), 'profile_id') ~= pid then return end
  local cur = redis.call('HGET', key('run_outcomes', e.run), e.contact)
  if not cur then return end  -- never claimed: not a send of this run
  finish({run = e.run, contact = e.contact, state = 'sent', reason = '', mid = e.mid, at = e.ts,
          detail = '', day = e.day, score = e.score, rcpt = e.rcpt, receipts = true})
end

-- Facebook blocked the Page for its policies: sending pauses, with no probe, until Facebook
-- lifts the block (or the owner resumes by hand).
handlers.block = function(pid, e)
  if redis.call('HGET', key('sending', pid), 'reason') == 'policy_block' then return end  -- again
  pause_sending(pid, 'policy_block', e.reason, e.ts, nil, 0, true)
end

handlers.unblock = function(pid, e)
  local bk = key('sending', pid)
  if redis.call('HGET', bk, 'reason') == 'policy_block' then redis.call('DEL', bk) end
  local k = key('profile', pid)  -- profiles marked "blocked" before 2026-12-06 held their block here
  if redis.call('HGET', k, 'health') == 'blocked' then
    redis.call('HSET', k, 'health', 'ok', 'health_reason', '', 'health_checked_at', math.floor(e.ts / 1000))
  end
end

local applied, unknown_page, foreign, erased = 0, 0, 0, 0
local function apply(list)
  for _, e in ipairs(list) do
    local pid = profile_of(e.page)
    if not pid then
      unknown_page = unknown_page + 1
    else
      local result = handlers[e.k](pid, e)
      if result == 'foreign_ref' then
        foreign = foreign + 1
      elseif result == 'erased' then
        erased = erased + 1
      else
        applied = applied + 1
      end
    end
  end
end

-- Parked writes, each on its own: one that fails is set aside (inbox_failed, for the operator)
-- instead of failing every later call. Webhooks parked them before these events arrived.
local set_aside, parked_left = 0, 0
local take = tonumber(ARGV[5] or '0')
if take > 0 then
  local inbox, events_cap, taken, counted = key('inbox'), tonumber(ARGV[6]), 0, 0
  local writes = redis.call('LRANGE', inbox, 0, take - 1)
  for _, write in ipairs(writes) do
    if counted >= events_cap then break end
    taken = taken + 1
    local ok = pcall(function()
      local decoded = cjson.decode(write)
      counted = counted + #decoded[1]
      apply(decoded[1])
      count_kinds(decoded[2])
    end)
    if not ok then
      set_aside = set_aside + 1
      local failed = key('inbox_failed')
      redis.call('RPUSH', failed, write)
      redis.call('LTRIM', failed, -tonumber(ARGV[7]), -1)
      redis.call('EXPIRE', failed, ARGV[8])
    end
  end
  if taken > 0 then redis.call('LTRIM', inbox, taken, -1) end
  if taken == take or taken < #writes then parked_left = redis.call('LLEN', inbox) end
end

local ok, err = pcall(apply, events)
write_receipts()  -- even after an error: the receipts of the events already applied are counted
for kind, n in pairs(kinds_seen) do
  redis.call('HINCRBY', key('metric', 'webhook_events'), kind, n)
end
if not ok then error(err) end
return {applied, unknown_page, foreign, erased, set_aside, parked_left}
