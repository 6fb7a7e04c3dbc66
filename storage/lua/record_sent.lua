-- Record one message Facebook accepted: count it on its day and, when receipts can come
-- (a PSID recipient, not a checkbox user_ref), keep it awaiting delivery and read.
-- KEYS[1] await hash, KEYS[2] day counters, KEYS[3] sent rows, KEYS[4] days index.
-- ARGV: recipient, message id, day, contact, sent ms, YYYYMMDD, expects receipts (1/0).
local US, RS = '\31', '\30'
local rcpt, mid, day, contact, sent = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if ARGV[7] == '1' then
  local entry = table.concat({mid, day, contact, sent, 's'}, US)
  local packed = redis.call('HGET', KEYS[1], rcpt)
  redis.call('HSET', KEYS[1], rcpt, packed and (packed .. RS .. entry) or entry)
end
redis.call('HINCRBY', KEYS[2], 'sent', 1)
redis.call('RPUSH', KEYS[3], table.concat({sent, contact, mid, ''}, US))
redis.call('ZADD', KEYS[4], 'NX', ARGV[6], day)
return 1
