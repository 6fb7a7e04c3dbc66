-- Record run contacts' final outcomes, many per round trip, and learn from the ones that called
-- Facebook (the profile's sending breaker, its unreachable recipients): record_outcomes in
-- _lib.lua. Sends record theirs with their claims (claim.lua); this script records the rest.
-- ARGV: the breaker's window ms (0: nothing to learn), the sending rules (JSON), then one
-- outcome as JSON each. Returns how many were recorded.
return record_outcomes(1, withdraw_consent)
