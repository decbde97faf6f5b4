--- `tide produce --avro SCHEMA` and `tide consume --avro`: one topic's
--- values between JSON text and Avro in the wire format, with the same
--- serde and registry client as detectors (bindings/avro_tool.c calls it).
local ffi = require("ffi")
local cjson = require("cjson").new()
local avro_serde = require("tide.avro_serde")
local json = require("tide.json")
local registry = require("tide.registry")

cjson.decode_invalid_numbers(false)

local M = {}

local encode_json = json.new()

--- reg: { url, user_info, timeout_ms, auto_register, use_latest } (no url:
--- the folder ./schemas); schema_path: the writer schema (produce), or nil.
--- Returns encode(json_text) -> bytes and decode(bytes) -> json_text.
function M.new(reg, topic, schema_path)
  local r
  if reg.url and reg.url ~= "" then
    r = registry.http({ url = reg.url, user_info = reg.user_info, timeout_ms = reg.timeout_ms,
      backoff_max_ms = 100 })
  else
    r = registry.folder({ dir = "schemas", same = avro_serde.same_schema })
  end
  local text
  if schema_path then
    local f, err = io.open(schema_path, "rb")
    if not f then error("cannot read the schema: " .. tostring(err), 0) end
    text = f:read("*a")
    f:close()
  end
  local s = avro_serde.new({ topic = topic, which = "value", schema = text, registry = r,
    auto_register = reg.auto_register ~= false, use_latest = reg.use_latest })
  local function message(e)
    if type(e) == "table" then return e.message end
    return tostring(e)
  end
  local function encode(line)
    local ok, v = pcall(cjson.decode, line)
    if not ok then error("not JSON: " .. tostring(v), 0) end
    local eok, bytes = pcall(s.encode, v, "value")
    if not eok then error(message(bytes), 0) end
    return bytes
  end
  local function decode(bytes)
    local ok, v = pcall(s.decode, ffi.cast("const char *", bytes), #bytes, "value")
    if not ok then error(message(v), 0) end
    return encode_json(v)
  end
  return encode, decode
end

return M
