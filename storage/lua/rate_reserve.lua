-- Reserve a send slot of a Page, or make it rest (see reserve_slot in _lib.lua): every worker
-- shares one timeline, so a Page never gets more than its rate however many workers send.
-- KEYS[1] timeline, KEYS[2] rest key. ARGV: interval in microseconds (0 = only
-- rest), rest in ms. Returns the wait in microseconds.
return reserve_slot(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]))
