-- Shared by every script that records outcomes (storage/scripts.py prepends this file).
-- ARGV[1] is always the key templates of storage/keys.py:lua_templates, so a key's shape is
-- written once, in Python.
local T = cjson.decode(ARGV[1])
local US, RS = '\31', '\30'  -- unit and record separators inside packed values
local FINAL = {sent = true, warning = true, failed = true}

local function key(name, ...) return string.format(T[name], ...) end

-- Count one outcome on its day: the counter, the per-reason counter, the row behind them.
local function count_day(pid, day, score, kind, reason, contact, mid, at, detail)
  local k = key('day', pid, day)
  redis.call('HINCRBY', k, kind, 1)
  if reason ~= '' then redis.call('HINCRBY', k, kind .. ':' .. reason, 1) end
  redis.call('RPUSH', key('rows', pid, day, kind), table.concat({at, contact, mid, reason, detail}, US))
  redis.call('ZADD', key('days', pid), 'NX', score, day)
end

-- Keep a sent message awaiting its delivery and read receipts.
local function await_receipts(pid, rcpt, mid, day, contact, sent)
  local k = key('await', pid)
  local entry = table.concat({mid, day, contact, sent, 's'}, US)
  local packed = redis.call('HGET', k, rcpt)
  redis.call('HSET', k, rcpt, packed and (packed .. RS .. entry) or entry)
end

-- Give a run's contact its final outcome, once, and count it.
-- o: run, contact, state (sent/warning/failed), reason, mid, at, detail, day, score, rcpt, receipts
local function finish(o)
  local meta = key('run', o.run)
  local pid = redis.call('HGET', meta, 'profile_id')
  if not pid then return 0 end  -- the run expired or never existed
  local hk = key('run_outcomes', o.run)
  local cur = redis.call('HGET', hk, o.contact)
  if cur and FINAL[cjson.decode(cur).s] then return 0 end
  redis.call('HSET', hk, o.contact, cjson.encode({s = o.state, r = o.reason, m = o.mid, t = o.at, d = o.detail}))
  redis.call('ZREM', key('deadlines'), o.run .. US .. o.contact)
  redis.call('HINCRBY', meta, o.state, 1)
  local c = redis.call('HMGET', meta, 'sent', 'warning', 'failed', 'total')
  local final = (tonumber(c[1]) or 0) + (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0)
  if final >= tonumber(c[4]) then
    redis.call('HSET', meta, 'state', 'done', 'done_at', o.at)
    redis.call('ZREM', key('runs_active'), o.run)
  end
  count_day(pid, o.day, o.score, o.state, o.reason, o.contact, o.mid, o.at, o.detail)
  if o.state == 'sent' and o.receipts then
    await_receipts(pid, o.rcpt, o.mid, o.day, o.contact, o.at)
  end
  return 1
end
