--- Records written as JSON lines, for `tide produce --json`: one object a
--- line, {"key": ..., "value": ..., "headers": {...}, "partition": n,
--- "timestamp": ms}, every field optional.
---
--- bindings/jsonl.c runs this module in a small Lua state of its own, so
--- that the host's C needs no JSON parser; it needs nothing but lua-cjson.
local cjson = require("cjson")

local M = {}

local null = cjson.null

M.fields = { key = true, value = true, headers = true, partition = true, timestamp = true }

--- The bytes a key, value or header gets: a string as is, null as nil, any
--- other value as its JSON text.
local function text(v)
  if v == nil or v == null then return nil end
  if type(v) == "string" then return v end
  return cjson.encode(v)
end

--- Parse one line. Returns key, value (strings or nil), partition (-1: let
--- the partitioner choose), headers as a flat list { name1, value1, ... }
--- and timestamp (ms since the epoch; -1: none given). Raises a message
--- without a position (the caller adds the line number) on a bad line.
---@param line string
---@return string|nil key, string|nil value, number partition, string[] headers, number timestamp
function M.parse(line)
  local ok, t = pcall(cjson.decode, line)
  if not ok then error("invalid JSON: " .. tostring(t), 0) end
  if type(t) ~= "table" then error("each line must be a JSON object", 0) end
  for k in pairs(t) do
    if not M.fields[k] then
      error('unknown field "' .. tostring(k) .. '" (key, value, headers, partition, timestamp)', 0)
    end
  end
  local h = {}
  if type(t.headers) == "table" then
    for name, v in pairs(t.headers) do
      h[#h + 1] = tostring(name)
      h[#h + 1] = text(v) or ""
    end
  end
  local p = tonumber(t.partition) or -1
  local ts = tonumber(t.timestamp)
  if ts == nil then
    ts = -1
  elseif ts < 0 then
    error("timestamp must be ms since the epoch", 0)
  end
  return text(t.key), text(t.value), p, h, ts
end

return M
