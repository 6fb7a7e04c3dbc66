-- Record a run contact's final outcome (see finish() in _lib.lua). ARGV[1]: the outcome as JSON.
local o = cjson.decode(ARGV[1])
return finish(o)
