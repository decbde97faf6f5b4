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
local store = require("tide.store")
local errors = require("tide.errors")

local M = {}

local api = tffi.api
local ffi_string, tonumber = ffi.string, tonumber

local serdes_made = {}
local function serde_of(name)
  local s = serdes_made[name]
  if not s then
    s = serde.new(name, api)
    serdes_made[name] = s
  end
  return s
end

--- Decoders per input topic, and the shared ones when every input has the
--- same serdes ({ same = true, key = fn, value = fn }).
local function input_decoders(spec)
  local by_topic, kname, vname, same = {}, nil, nil, true
  for _, t in ipairs(spec.inputs) do
    local d = spec.serdes[t]
    by_topic[t] = { key = serde_of(d.key).decode, value = serde_of(d.value).decode }
    if kname and (kname ~= d.key or vname ~= d.value) then same = false end
    kname, vname = d.key, d.value
  end
  return by_topic, { same = same, key = serde_of(kname).decode, value = serde_of(vname).decode }
end

--- Encoders per output index.
local function output_encoders(spec)
  local kenc, venc = {}, {}
  for t, o in pairs(spec.out_index) do
    local d = spec.serdes[t]
    kenc[o], venc[o] = serde_of(d.key).encode, serde_of(d.value).encode
  end
  return kenc, venc
end

--- The event time a detector's timestamp function finds in a record; it
--- replaces the record's timestamp for stream time, windows and outputs.
local function event_time(f, rec)
  local t = f(rec.value, rec.key)
  if type(t) ~= "number" or t ~= t or t < 0 then
    error(("the timestamp function returned %s, not a time in ms"):format(tostring(t)), 0)
  end
  return t
end

---@param spec table a validated detector (tide.detector)
---@param sink_lud userdata the tide_sink_t* (lightuserdata) emits go to
---@param log fun(level: string, msg: string)
---@param opts? { db?: userdata } db: the worker's RocksDB (lightuserdata)
function M.new(spec, sink_lud, log, opts)
  opts = opts or {}
  local sink = ffi.cast(tffi.sink_ptr, sink_lud)
  local out_index = spec.out_index
  local process = spec.process
  local in_dec, uniform = input_decoders(spec)
  local out_kenc, out_venc = output_encoders(spec)

  -- the record being processed: the batch's array and an index into it
  local recs, idx = nil, 0
  local rec
  -- Inputs that share serdes decode without looking at the topic.
  local kdec, vdec = uniform.key, uniform.value
  if not uniform.same then
    kdec = function(p, len, what) return in_dec[rec.topic].key(p, len, what) end
    vdec = function(p, len, what) return in_dec[rec.topic].value(p, len, what) end
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

  rec = {}
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
    __metatable = false,
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
    local k = out_kenc[o](key, "key")
    local v = out_venc[o](value, "value")
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

  --- Emit with the headers of the record being processed, as Kafka Streams
  --- carries a record's headers through its topology (the DSL's to()).
  function ctx.forward(self, output, key, value)
    local headers
    if api.header_count(recs + idx) > 0 then headers = rec.headers end
    return ctx.emit(self, output, key, value, headers)
  end

  local function logger(level)
    return function(msg, ...)
      if select("#", ...) > 0 then msg = msg:format(...) end
      log(level, tostring(msg))
    end
  end
  ctx.log = { debug = logger("debug"), info = logger("info"), warn = logger("warn"), error = logger("error") }

  -- Tasks (input partitions) and their stream time: the largest record
  -- timestamp seen. Stores and ctx.stream_time work on the current task.
  local current, wall_now = 0, 0
  local stream_times, active = {}, {}
  local function task() return current end
  local function stream_time() return stream_times[current] or -1 end

  local stores, store_list = store.open(spec.stores or {}, {
    api = api, db = opts.db, sink = sink, task = task, stream_time = stream_time,
  })
  ctx.stores = stores
  setmetatable(ctx, {
    __index = function(_, k)
      if k == "stream_time" then return stream_time() end
      if k == "wall_time" then return wall_now end
      if k == "partition" then return current end
      -- the record being processed, for functions that get only its key and
      -- value (the DSL's operators), as Kafka Streams' record context
      if k == "timestamp" or k == "topic" or k == "offset" or k == "headers" then return rec[k] end
      return nil
    end,
    __metatable = false,
  })

  local batch_ptr = tffi.batch_ptr
  local timed = spec.stream_time_topics
  local extract = spec.timestamps

  --- Call fn(...) with what it emits stamped `ts` instead of the record's
  --- timestamp (an operator's result time, as Kafka Streams gives a
  --- session its end). A failing fn leaves the stamp: run() clears it.
  local stamp = -1
  local function set_stamp(ts)
    stamp = ts
    api.sink_timestamp(sink, ts)
  end
  function ctx._stamped(_, ts, fn, ...)
    local outer = stamp
    set_stamp(ts)
    fn(...)
    set_stamp(outer)
  end
  --- The timestamp an emit made now would carry.
  function ctx._emit_time()
    if stamp >= 0 then return stamp end
    return rec.timestamp
  end

  --- Process a batch from its cursor to its end; `now` is the wall clock (ms).
  local function run(batch_lud, now)
    if stamp ~= -1 then set_stamp(-1) end -- after a failed record, no stamp is left over
    local b = ffi.cast(batch_ptr, batch_lud)
    wall_now = now or wall_now
    recs = b.recs
    for i = b.cursor, b.n - 1 do
      b.cursor = i
      idx = i
      forget()
      local r = recs[i]
      local p = r.partition
      current = p
      if extract then
        local f = extract[rec.topic]
        if f then r.timestamp = event_time(f, rec) end
      end
      local ts = tonumber(r.timestamp)
      local st = stream_times[p]
      if (st == nil or ts > st) and (timed == nil or timed[rec.topic]) then stream_times[p] = ts end
      process(rec, ctx)
    end
    b.cursor = b.n
  end

  local punctuators = spec.punctuators or {}
  for _, pu in ipairs(punctuators) do pu.next = {} end

  --- A task starts (its stores are restored; `st`: its stream time from the
  --- last commit, or nil) or stops (revoked).
  local on_task = spec.on_task
  local function task_state(p, on, st)
    if on_task then on_task(ctx, p, on) end
    if on then
      active[p] = true
      if st and st > (stream_times[p] or -1) then stream_times[p] = st end
    else
      active[p] = nil
      stream_times[p] = nil
      for _, pu in ipairs(punctuators) do pu.next[p] = nil end
      for _, e in ipairs(store_list) do
        if e.backend.drop then e.backend.drop(p) end
      end
    end
  end

  --- Restore one changelog entry into an in-memory store (RocksDB stores
  --- are restored in C).
  local function restore(id, p, k, v)
    local e = store_list[id + 1]
    if e and e.backend.restore then e.backend.restore(p, k, v) end
  end

  local swept = {}

  --- Fire due punctuators, per active task, and expire old windows. Errors
  --- in a punctuator are logged and counted; they do not stop the others.
  local function punctuate(now)
    wall_now = now
    local failures = 0
    for _, pu in ipairs(punctuators) do
      for p in pairs(active) do
        local wall = pu.on == "wall"
        local t = wall and now or stream_times[p]
        if t ~= nil and t >= 0 then
          local due = pu.next[p]
          if due == nil and wall then
            pu.next[p] = t + pu.every
          elseif due == nil or t >= due then
            current = p
            set_stamp(t) -- what it emits carries the time it fired for
            local ok, err, trace = errors.call(pu.fn, ctx, t)
            set_stamp(-1)
            if not ok then
              failures = failures + 1
              log("error", ("punctuator (%s, every %d ms) failed for partition %d: %s\n%s"):format(
                pu.on, pu.every, p, errors.describe(err), trace))
            end
            -- A wall-clock timer keeps its own beat; a stream-time one falls
            -- on multiples of its interval (as Kafka Streams' do), after a
            -- first call at the task's first stream time. Either way one
            -- call covers the intervals that records skipped.
            local from = wall and due or 0
            pu.next[p] = from + pu.every * (math.floor((t - from) / pu.every) + 1)
          end
        end
      end
    end
    for _, e in ipairs(store_list) do
      if e.decl.kind == "window" then
        for p in pairs(active) do
          local st = stream_times[p]
          local key = e.name .. "/" .. p
          if st and st - (swept[key] or -math.huge) >= e.decl.retention / 2 then
            current = p
            e.store:expire(st)
            swept[key] = st
          end
        end
      end
    end
    return failures
  end

  return {
    run = run, ctx = ctx, rec = rec, stores = store_list,
    task = task_state, restore = restore, punctuate = punctuate,
    stream_time = function(p) return stream_times[p] or -1 end,
    set_task = function(p) current = p end,
  }
end

return M
