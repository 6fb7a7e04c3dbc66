-- Count a message Facebook accepted outside any run (tools, tests, benchmarks): day counter,
-- row, and receipts awaited. ARGV: profile, recipient, message id, day, YYYYMMDD,
-- contact, sent ms, expects receipts (1/0).
record_sent(ARGV[1], ARGV[4], ARGV[5], ARGV[6], ARGV[3], ARGV[7], ARGV[2], ARGV[8] == '1')
return 1
