--- The dispatcher: the Lua half of the record path.
---
--- C calls `run(batch)` once per batch. It loops over the C array of records
--- through the FFI and calls the detector's process(rec, ctx) on each; this
--- loop is JIT-compiled together with the detector. Before each record it
--- writes the record's index into batch.cursor: when process raises, the batch
--- call fails, C reads the cursor, applies the error policy to that record and
--- calls run again, which resumes after it.
---
--- `rec` is one reused table whose fields are decoded lazily on first read and
--- forgotten before the next record: a rec is valid only during process().
--- Keep what you need (`local v = rec.value`) or take `rec:copy()`.
local ffi = require("ffi")
local tffi = require("tide.ffi")
local serde = require("tide.serde")

local M = {}

local api = tffi.api
local ffi_string, tonumber = ffi.string, tonumber

---@param spec table a validated detector (tide.detector)
---@param sink_lud userdata the tide_sink_t* (lightuserdata) emits go to
---@param log fun(level: string, msg: string)
function M.new(spec, sink_lud, log)
  local sink = ffi.cast(tffi.sink_ptr, sink_lud)
  local kser = serde.new(spec.key_serde, api)
  local vser = serde.new(spec.value_serde, api)
  local kdec, vdec = kser.decode, vser.decode
  local kenc, venc = kser.encode, vser.encode
  local out_index = spec.out_index
  local process = spec.process

  -- the record being processed: the batch's array and an index into it
  local recs, idx = nil, 0

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

  local rec = {}
  --- A plain table with every field of the current record, safe to keep.
  function rec.copy(self)
    return {
      key = self.key, value = self.value, topic = self.topic,
      partition = self.partition, offset = self.offset,
      timestamp = self.timestamp, headers = self.headers,
    }
  end
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
  })

  local function forget()
    cache.key, cache.value, cache.topic, cache.partition = NONE, NONE, NONE, NONE
    cache.offset, cache.timestamp, cache.headers = NONE, NONE, NONE
  end

  local ctx = { detector = spec.name, version = spec.version }

  --- Emit a record to one of the detector's declared outputs.
  ---@param output string a name from the detector's `outputs`
  ---@param key any encoded with key_serde (nil: null key)
  ---@param value any encoded with serde (nil: tombstone)
  ---@param headers? table<string, string>
  function ctx.emit(_, output, key, value, headers)
    local o = out_index[output]
    if o == nil then
      local names = {}
      for n in pairs(out_index) do names[#names + 1] = n end
      table.sort(names)
      error(("emit to unknown output '%s' (declared outputs: %s)"):format(
        tostring(output), #names > 0 and table.concat(names, ", ") or "none"), 2)
    end
    local k = kenc(key, "key")
    local v = venc(value, "value")
    if api.emit(sink, o, k, k and #k or -1, v, v and #v or -1) ~= 0 then
      error("out of memory while emitting", 2)
    end
    if headers ~= nil then
      for hn, hv in pairs(headers) do
        hn, hv = tostring(hn), tostring(hv)
        api.emit_header(sink, hn, #hn, hv, #hv)
      end
    end
  end

  local function logger(level)
    return function(msg, ...)
      if select("#", ...) > 0 then msg = msg:format(...) end
      log(level, tostring(msg))
    end
  end
  ctx.log = { debug = logger("debug"), info = logger("info"), warn = logger("warn"), error = logger("error") }

  local batch_ptr = tffi.batch_ptr

  --- Process a batch from its cursor to its end.
  local function run(batch_lud)
    local b = ffi.cast(batch_ptr, batch_lud)
    recs = b.recs
    for i = b.cursor, b.n - 1 do
      b.cursor = i
      idx = i
      forget()
      process(rec, ctx)
    end
    b.cursor = b.n
  end

  return { run = run, ctx = ctx, rec = rec }
end

return M
