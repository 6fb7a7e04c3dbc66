-- Erase a contact from statistics row lists (storage/erasure.py). KEYS: the lists.
-- ARGV: contact. Rows are "time US contact US message id" (sent) or "time US contact US reason
-- US detail" (warning, failed, per reason). A row naming the contact keeps its time and reason,
-- so the counts and the receipts pointing at a sent row by index stay right, and loses the
-- contact, message id and Facebook's detail. Returns the rows erased.
local US = '\31'
local contact = ARGV[1]
local needle = US .. contact .. US

local function split(row)
  local parts, start = {}, 1
  while true do
    local i = string.find(row, US, start, true)
    if not i then
      parts[#parts + 1] = string.sub(row, start)
      return parts
    end
    parts[#parts + 1] = string.sub(row, start, i - 1)
    start = i + 1
  end
end

local erased = 0
for _, list in ipairs(KEYS) do
  for i, row in ipairs(redis.call('LRANGE', list, 0, -1)) do
    if string.find(row, needle, 1, true) then
      local parts = split(row)
      if parts[2] == contact then
        local anonymous = #parts >= 4 and {parts[1], '', parts[3], ''} or {parts[1], '', ''}
        redis.call('LSET', list, i - 1, table.concat(anonymous, US))
        erased = erased + 1
      end
    end
  end
end
return erased
