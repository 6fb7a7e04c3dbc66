-- Shared by every script that records outcomes (storage/scripts.py prepends this file).
-- `T`, the key templates, is put in front of this file by storage/scripts.py, generated from
-- storage/keys.py:lua_templates, so a key's shape is written once, in Python.
local US, RS = '\31', '\30'  -- unit and record separators inside packed values
local FINAL = {sent = true, warning = true, failed = true}

local function key(name, ...) return string.format(T[name], ...) end
local function nonempty(v) if type(v) == 'string' and v ~= '' then return v end end

-- Count a message Facebook accepted on its day; returns its row's index in the day's sent
-- list (delivered and read rows point at it instead of repeating contact and message id).
local function count_sent(pid, day, score, contact, mid, at, receipts)
  local k = key('day', pid, day)
  redis.call('HINCRBY', k, 'sent', 1)
  if not receipts then redis.call('HINCRBY', k, 'no_receipts', 1) end  -- checkbox user_ref sends
  redis.call('ZADD', key('days', pid), 'NX', score, day)
  return redis.call('RPUSH', key('rows', pid, day, 'sent'), table.concat({at, contact, mid}, US)) - 1
end

-- Count a contact not sent (warning) or refused (failed), in the per-kind and per-reason lists.
local function count_not_sent(pid, day, score, kind, reason, contact, at, detail)
  local k = key('day', pid, day)
  redis.call('HINCRBY', k, kind, 1)
  redis.call('HINCRBY', k, kind .. ':' .. reason, 1)
  local row = table.concat({at, contact, reason, detail}, US)
  redis.call('RPUSH', key('rows', pid, day, kind), row)
  redis.call('RPUSH', key('rows', pid, day, kind .. ':' .. reason), row)
  redis.call('ZADD', key('days', pid), 'NX', score, day)
end

-- Keep a sent message awaiting its delivery and read receipts.
local function await_receipts(pid, rcpt, mid, day, index, sent)
  local k = key('await', pid)
  local entry = table.concat({mid, day, index, sent, 's'}, US)
  local packed = redis.call('HGET', k, rcpt)
  redis.call('HSET', k, rcpt, packed and (packed .. RS .. entry) or entry)
end

-- Count a sent message and, if receipts can come, keep it awaiting them.
local function record_sent(pid, day, score, contact, mid, at, rcpt, receipts)
  local index = count_sent(pid, day, score, contact, mid, at, receipts)
  if receipts then await_receipts(pid, rcpt, mid, day, index, at) end
end

-- Give a run's contact its final outcome, once, and count it.
-- o: run, contact, state (sent/warning/failed), reason, mid, at, detail, day, score, rcpt, receipts,
-- k (what a sent message went out as; an echo has none: the claim's own is kept)
-- Returns 1 and the run's profile id if recorded, 0 if the contact already had its outcome.
local function finish(o)
  local meta = key('run', o.run)
  local pid = redis.call('HGET', meta, 'profile_id')
  if not pid then return 0 end  -- the run expired or never existed
  local hk = key('run_outcomes', o.run)
  local cur = redis.call('HGET', hk, o.contact)
  local prev = cur and cjson.decode(cur)
  if prev and FINAL[prev.s] then return 0 end
  if prev and prev.s == 'unknown' and prev.u then  -- settled: no longer unconfirmed on its day
    redis.call('HINCRBY', key('day', pid, prev.u), 'unconfirmed', -1)
  end
  local sent_as = nil
  if o.state == 'sent' then sent_as = nonempty(o.k) or (prev and nonempty(prev.k)) end
  redis.call('HSET', hk, o.contact, cjson.encode({s = o.state, r = o.reason, m = o.mid, t = o.at, d = o.detail,
                                                  k = sent_as}))
  redis.call('ZREM', key('deadlines'), o.run .. US .. o.contact)
  redis.call('HINCRBY', meta, o.state, 1)
  if o.state == 'failed' then redis.call('HINCRBY', meta, 'failed:' .. o.reason, 1) end
  redis.call('HINCRBY', key('metric', 'sends'), o.state .. '|' .. o.reason, 1)
  local c = redis.call('HMGET', meta, 'sent', 'warning', 'failed', 'total', 'callback_url')
  local final = (tonumber(c[1]) or 0) + (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0)
  if final >= tonumber(c[4]) then
    redis.call('HSET', meta, 'state', 'done', 'done_at', o.at)
    redis.call('ZREM', key('runs_active'), o.run)
    if nonempty(c[5]) then redis.call('ZADD', key('callbacks_due'), 'NX', o.at, o.run) end
  end
  if o.state == 'sent' then
    record_sent(pid, o.day, o.score, o.contact, o.mid, o.at, o.rcpt, o.receipts)
  else
    count_not_sent(pid, o.day, o.score, o.state, o.reason, o.contact, o.at, o.detail)
  end
  return 1, pid
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

-- Reserve the next send slot on a Page's shared timeline (GCRA without burst), in
-- microseconds on the server clock; a rest pushes the timeline out and marks the Page resting
-- so that senders holding earlier slots wait too. Returns the wait in microseconds.
local function reserve_slot(timeline, rest_key, interval, rest_ms)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local tat = tonumber(redis.call('GET', timeline) or '0')
  if rest_ms > 0 and redis.call('PTTL', rest_key) < rest_ms then
    redis.call('SET', rest_key, '1', 'PX', rest_ms)
  end
  local start = math.max(tat, now + rest_ms * 1000)
  local next_free = start + interval
  redis.call('SET', timeline, string.format('%d', next_free), 'PX', math.floor((next_free - now) / 1000) + 60000)
  return start - now
end
