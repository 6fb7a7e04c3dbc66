-- Make a Page rest (see reserve_slot in _lib.lua): its shared timeline moves past the rest, so no
-- worker gets a slot before it ends, and claims whose slot came meanwhile reserve a new one.
-- (Send slots themselves are reserved by the claims, storage/lua/claim.lua.)
-- KEYS[1] timeline, KEYS[2] rest key. ARGV: interval in microseconds (0: only rest), rest in
-- ms. Returns the wait in microseconds.
return reserve_slot(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]))
