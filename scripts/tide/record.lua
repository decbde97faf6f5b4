--- The record a detector's process(rec, ctx) gets: a view of one record of
--- the batch C laid out, through the FFI.
---
--- `rec` is one reused table whose fields are decoded lazily on first read
--- and forgotten before the next record: a rec is valid only during
--- process(). Keep what you need (`local v = rec.value`) or take
--- `rec:copy()`. The dispatcher points the view at each record in turn with
--- `at(i)`, which allocates nothing.
local ffi = require("ffi")

local M = {}

local ffi_string, tonumber = ffi.string, tonumber

--- The fields a record has, in the order rec:copy() lists them.
M.fields = { "key", "value", "topic", "partition", "offset", "timestamp", "headers" }

-- The methods every rec has (tide.Rec, types/tide.lua).
local Rec = {}

--- A plain table with every field of the current record, safe to keep.
function Rec:copy()
  local t = {}
  for _, k in ipairs(M.fields) do t[k] = self[k] end
  return t
end

--- A view of records through `api` (tide_api_t). `decoders` are the key and
--- value decoders per input topic; `uniform`, when uniform.same, the ones
--- every input shares, used without looking at the topic.
---@return tide.Rec rec the view
---@return table view { batch(recs), at(i) -> cdata, has_headers() -> boolean }
function M.new(api, decoders, uniform)
  local recs, idx = nil, 0 ---@type any, integer the batch's tide_rec_t array
  local rec
  local kdec, vdec = uniform.key, uniform.value
  if not uniform.same then
    kdec = function(p, len, what) return decoders[rec.topic].key(p, len, what) end
    vdec = function(p, len, what) return decoders[rec.topic].value(p, len, what) end
  end

  local name_p = ffi.new("const char *[1]")
  local val_p = ffi.new("const void *[1]")
  local len_p = ffi.new("size_t[1]")

  local getters = {
    key = function() local r = recs[idx]; return kdec(r.key, r.key_len, "key") end,
    value = function() local r = recs[idx]; return vdec(r.val, r.val_len, "value") end,
    topic = function() return ffi_string(recs[idx].topic) end,
    partition = function() return recs[idx].partition end,
    offset = function() return tonumber(recs[idx].offset) end,
    timestamp = function() return tonumber(recs[idx].timestamp) end,
    headers = function()
      local r = recs + idx
      local h = {}
      for j = 0, api.header_count(r) - 1 do
        if api.header_get(r, j, name_p, val_p, len_p) == 0 then
          local v = val_p[0]
          h[ffi_string(name_p[0])] = v ~= nil and ffi_string(v, len_p[0]) or ""
        end
      end
      return h
    end,
  }

  -- Decoded fields of the current record live in `cache`, whose keys always
  -- exist: resetting them is a plain store per field. (Storing nil into absent
  -- keys of `rec` itself would compile to a hash insert per field per record.)
  local NONE, NULL = {}, {}
  local cache = {}
  for k in pairs(getters) do cache[k] = NONE end

  rec = { copy = Rec.copy }
  setmetatable(rec, {
    __index = function(_, k)
      local v = cache[k]
      if v == NONE then
        v = getters[k]()
        if v == nil then v = NULL end
        cache[k] = v
      end
      if v == NULL then return nil end
      return v
    end,
    __newindex = function(_, k)
      error(("rec.%s is read-only; copy the record with rec:copy() to change it"):format(tostring(k)), 2)
    end,
    __metatable = false, -- tide's, not the detector's to change
  })

  local view = {}
  --- The batch's array of records (a tide_rec_t *).
  function view.batch(r) recs = r end
  --- Point the view at record i of the batch; returns its tide_rec_t.
  function view.at(i)
    idx = i
    cache.key, cache.value, cache.topic, cache.partition = NONE, NONE, NONE, NONE
    cache.offset, cache.timestamp, cache.headers = NONE, NONE, NONE
    return recs[i]
  end
  --- Whether the current record has headers (without decoding them).
  function view.has_headers() return api.header_count(recs + idx) > 0 end
  return rec, view
end

return M
