--- Serdes: how record keys and values become Lua values and back.
---
--- `string` (default): a Lua string, valid UTF-8 (checked both ways).
--- `bytes`: a Lua string with the raw bytes, unchecked.
--- `json`: decoded with lua-cjson (NaN, Infinity, numbers too large for a
---         double such as 1e999, and hex numbers refused);
---         JSON null is `tide.null`. On output any Lua value is encoded, by
---         tide.json: numbers exactly (cjson would keep 14 digits).
--- `avro`: Avro in the schema registry's wire format (tide.avro_serde).
--- A null key or value (Kafka tombstone) is `nil` with every serde.
local ffi = require("ffi")
local errors = require("tide.errors")
local json = require("tide.json")
local cjson = require("cjson").new()
local api = require("tide.ffi").api

cjson.decode_invalid_numbers(false)

local M = {}

local encode_json = json.new()
local number_text = json.number_text

local cjson_decode, huge, type, next = cjson.decode, math.huge, type, next

--- Does the decoded value hold an infinity?
local function infinite(v)
  local t = type(v)
  if t == "number" then return v == huge or v == -huge end
  if t ~= "table" then return false end
  for _, x in next, v do
    if infinite(x) then return true end
  end
  return false
end

--- cjson.decode, refusing numbers too large for a double: cjson reads 1e999
--- as Infinity, which JSON does not have and tide refuses as it refuses the
--- literal (as JavaScript's JSON.stringify would write it back as null, and a
--- store or an output could not keep it). The decoded value is walked only
--- when the text holds a number that could overflow, which a scan in C says
--- (a Lua pattern would keep a detector's loop out of the JIT). `p, len`: the
--- text's bytes when the caller has them (a record's), else those of s.
local TOO_LARGE = "Expected a finite number: a number too large for a double (such as 1e999) is refused"

local function decode(s, p, len)
  local v = cjson_decode(s)
  if api.json_may_overflow(p or s, len or #s) ~= 0 and infinite(v) then error(TOO_LARGE, 0) end
  return v
end

M.null = cjson.null
M.json = {
  encode = encode_json,
  decode = decode,
}

local decode_error = errors.DECODE

--- Build the serde `name`; `api` is the tide_api_t (for the UTF-8 check).
--- Each serde has decode(ptr, len, what) and encode(value, what) -> string|nil.
---@param name string
function M.new(name, api)
  if name == "bytes" then
    return {
      name = name,
      decode = function(p, len)
        if len < 0 then return nil end
        return ffi.string(p, len)
      end,
      encode = function(v, what)
        if v == nil then return nil end
        local t = type(v)
        if t == "string" then return v end
        error(what .. " must be a string (serde 'bytes'), got " .. t, 3)
      end,
    }
  elseif name == "string" then
    return {
      name = name,
      decode = function(p, len, what)
        if len < 0 then return nil end
        if api.utf8_valid(p, len) == 0 then
          errors.raise(decode_error, what .. " is not valid UTF-8 (serde 'string'; use 'bytes' for binary data)")
        end
        return ffi.string(p, len)
      end,
      encode = function(v, what)
        if v == nil then return nil end
        local t = type(v)
        if t == "string" then
          -- what a 'string' input would refuse is not sent on either: a
          -- reader of this topic would dead-letter it
          if api.utf8_valid(v, #v) == 0 then
            error(what .. " is not valid UTF-8 (serde 'string'; a byte slice of a"
              .. " multi-byte character? use 'bytes' for binary data)", 3)
          end
          return v
        end
        if t == "number" then return number_text(v) end
        error(what .. " must be a string (serde 'string'), got " .. t .. "; declare serde = 'json' to emit tables", 3)
      end,
    }
  elseif name == "json" then
    local encode = encode_json
    return {
      name = name,
      decode = function(p, len, what)
        if len < 0 then return nil end
        local ok, v = pcall(decode, ffi.string(p, len), p, len)
        if not ok then
          errors.raise(decode_error, what .. " is not valid JSON: " .. tostring(v))
        end
        return v
      end,
      encode = function(v, what)
        if v == nil then return nil end
        local ok, s = pcall(encode, v)
        if not ok then error(what .. " cannot be encoded as JSON: " .. tostring(s), 3) end
        return s
      end,
    }
  end
  return nil
end

--- Every serde a detector may name; `avro` is tide.avro_serde's, made per
--- topic by the dispatcher.
M.names = { string = true, bytes = true, json = true, avro = true }

return M
