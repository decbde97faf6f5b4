--- JSON text of Lua values, with numbers that survive the round trip.
---
--- lua-cjson, which decodes for tide, encodes numbers with at most 14
--- significant digits: a microsecond timestamp or an id of 16 digits came
--- back changed from an output topic or a store. Here an integer is written
--- exactly (up to 2^63) and any other number with the fewest digits that read
--- back as the same double. The rest follows cjson as tide configures it, so
--- that decoding what this writes gives the same value:
---   - a table whose keys are 1..n is an array; holes become null, unless the
---     table is "sparse" (largest index > 10 and more than twice its number of
---     keys), which is written as an object with string keys, as is any table
---     with other keys; an empty table is {};
---   - keys must be strings or numbers; NaN and infinities are refused;
---   - `null` (cjson.null) is null; nesting deeper than 1000 is refused.
--- One difference: "/" is not escaped (cjson writes "\/"; both read back alike).
local buffer = require("string.buffer")
local ffi = require("ffi")

local M = {}

local type, pairs, next, tonumber, tostring = type, pairs, next, tonumber, tostring
local floor, huge = math.floor, math.huge
local format, gsub = string.format, string.gsub
local cast, u8p = ffi.cast, ffi.typeof("const uint8_t *")

local MAX_DEPTH = 1000
local SPARSE_RATIO, SPARSE_SAFE = 2, 10

--- The text of a finite number: integers exactly, others in the fewest digits
--- that read back as the same double.
local function number_text(v)
  if v == floor(v) and v > -9.2233720368547758e18 and v < 9.2233720368547758e18 then
    return format("%d", v)
  end
  local s = tostring(v) -- 14 digits: most numbers, and the JIT compiles it
  if tonumber(s) == v then return s end
  s = format("%.15g", v)
  if tonumber(s) == v then return s end
  s = format("%.16g", v)
  if tonumber(s) == v then return s end
  return format("%.17g", v)
end
M.number_text = number_text

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}
for c = 0, 31 do
  local ch = string.char(c)
  if not escapes[ch] then escapes[ch] = format("\\u%04x", c) end
end
escapes["\127"] = "\\u007f"

-- Whether s needs escaping: a byte loop the JIT compiles (a pattern
-- search would run in the interpreter, and cost more than the rest).
local function plain(s)
  local p = cast(u8p, s)
  for i = 0, #s - 1 do
    local c = p[i]
    if c < 32 or c == 34 or c == 92 or c == 127 then return false end
  end
  return true
end

local function put_string(buf, s)
  if plain(s) then
    buf:put('"', s, '"')
  else
    buf:put('"', (gsub(s, '[%c"\\\127]', escapes)), '"')
  end
end

local function fail(what)
  error("Cannot serialise " .. what, 0)
end

local null = require("cjson").null -- one value for every cjson instance

local put_value

--- "array" and its length, or "object".
local function shape(t)
  -- A table with a key that is not a number is an object; next() gives the
  -- array part first, so one look settles it for records.
  if type((next(t))) ~= "number" then return "object" end
  local n, max = 0, 0
  for k in pairs(t) do
    if type(k) == "number" and k > 0 and k == floor(k) then
      if k > max then max = k end
      n = n + 1
    else
      return "object"
    end
  end
  if max > SPARSE_SAFE and max > n * SPARSE_RATIO then return "object" end
  return "array", max
end

local function put_table(buf, t, depth)
  if depth > MAX_DEPTH then fail(("table: excessive nesting (%d)"):format(depth)) end
  if next(t) == nil then
    buf:put("{}")
    return
  end
  local kind, n = shape(t)
  if kind == "array" then
    buf:put("[")
    for i = 1, n do
      if i > 1 then buf:put(",") end
      put_value(buf, t[i], depth)
    end
    buf:put("]")
    return
  end
  buf:put("{")
  local first = true
  for k, v in pairs(t) do
    local kt = type(k)
    if not first then buf:put(",") end
    first = false
    if kt == "string" then
      put_string(buf, k)
    elseif kt == "number" then
      if k ~= k or k == huge or k == -huge then fail("number: must not be NaN or Infinity") end
      buf:put('"', number_text(k), '"')
    else
      fail(kt .. ": table key must be a number or string")
    end
    buf:put(":")
    put_value(buf, v, depth)
  end
  buf:put("}")
end

function put_value(buf, v, depth)
  local t = type(v)
  if t == "string" then
    put_string(buf, v)
  elseif t == "number" then
    if v ~= v or v == huge or v == -huge then fail("number: must not be NaN or Infinity") end
    buf:put(number_text(v))
  elseif t == "table" then
    put_table(buf, v, depth + 1)
  elseif t == "boolean" then
    buf:put(v and "true" or "false")
  elseif v == nil or v == null then
    buf:put("null")
  else
    fail(t)
  end
end

--- An encoder: encode(v) -> JSON text; errors name what cannot be written.
function M.new()
  local buf = buffer.new(256)
  return function(v)
    buf:reset()
    put_value(buf, v, 0)
    return buf:tostring()
  end
end

return M
