-- Record run contacts' final outcomes (see finish() in _lib.lua), many per round trip.
-- ARGV: one outcome as JSON each. Returns how many were recorded (not already final).
local recorded = 0
for i = 1, #ARGV do
  recorded = recorded + finish(cjson.decode(ARGV[i]))
end
return recorded
