-- Count a message Facebook accepted outside any run (tools, tests): day counters, row, receipts.
-- ARGV: templates, profile, recipient, message id, day, YYYYMMDD, contact, sent ms, expects receipts.
local pid, rcpt, mid, day, score, contact, sent = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
count_day(pid, day, score, 'sent', '', contact, mid, sent, '')
if ARGV[9] == '1' then await_receipts(pid, rcpt, mid, day, contact, sent) end
return 1
