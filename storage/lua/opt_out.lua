-- Withdraw a contact's consent to a profile (the API, the operator, a data deletion).
-- ARGV: profile id, contact, time (ms), source, Page id. _lib.lua is prepended.
-- Returns 1 withdrawn, 0 already withdrawn (nothing recorded again), -1 no such contact.
local pid, contact, at, source, page = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ck = key('contact', contact)
if redis.call('EXISTS', ck) == 0 then return -1 end
local opted_in = redis.call('HEXISTS', ck, string.format(T.optin_field, tonumber(pid))) == 1
if not opted_in and redis.call('SISMEMBER', key('consent_state', pid, 'opted_out'), contact) == 1 then
  return 0
end
return withdraw_consent(pid, contact, at, source, page)
