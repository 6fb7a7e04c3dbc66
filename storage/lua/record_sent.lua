-- Count a message Facebook accepted outside any run (tools, tests, benchmarks): day counter,
-- row, and receipts awaited. ARGV: templates, profile, recipient, message id, day, YYYYMMDD,
-- contact, sent ms, expects receipts (1/0).
record_sent(ARGV[2], ARGV[5], ARGV[6], ARGV[7], ARGV[4], ARGV[8], ARGV[3], ARGV[9] == '1')
return 1
