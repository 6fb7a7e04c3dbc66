-- Record a run contact's final outcome (see finish() in _lib.lua). ARGV[2]: the outcome as JSON.
local o = cjson.decode(ARGV[2])
return finish(o)
