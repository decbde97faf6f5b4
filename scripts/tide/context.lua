--- The `ctx` a detector's functions get: emit and forward, stores, time,
--- log, and the current record's context for functions that see only its
--- key and value (the DSL's operators), as Kafka Streams' ProcessorContext.
---
--- One ctx lives as long as the runtime. Emits go through the FFI into the
--- sink C owns; what an emit carries as its timestamp is the record's,
--- unless a stamp is set (a punctuator's time, an operator's result time).
local M = {}

--- A log function per level: ctx.log.info("seen %d", n).
local function loggers(log)
  local function logger(level)
    return function(msg, ...)
      if select("#", ...) > 0 then msg = msg:format(...) end
      log(level, tostring(msg))
    end
  end
  return { debug = logger("debug"), info = logger("info"), warn = logger("warn"), error = logger("error") }
end

--- The error for an emit to an output the detector did not declare.
local function unknown_output(out_index, output)
  local names = {}
  for n in pairs(out_index) do names[#names + 1] = n end
  table.sort(names)
  return ("emit to unknown output '%s' (declared outputs: %s)"):format(
    tostring(output), #names > 0 and table.concat(names, ", ") or "none")
end

--- ctx.emit and ctx.forward.
local function add_emit(ctx, env)
  local api, sink, view, rec = env.api, env.sink, env.view, env.rec
  local out_index, kenc, venc = env.out_index, env.key_encoders, env.value_encoders

  --- Emit a record to one of the detector's declared outputs.
  ---@param output string a name from the detector's `outputs`
  ---@param key any encoded with key_serde (nil: null key)
  ---@param value any encoded with serde (nil: tombstone)
  ---@param headers? table<string, string>
  function ctx.emit(_, output, key, value, headers)
    local o = out_index[output]
    if o == nil then error(unknown_output(out_index, output), 2) end
    local k = kenc[o](key, "key")
    local v = venc[o](value, "value")
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
    if view.has_headers() then headers = rec.headers end
    return ctx.emit(self, output, key, value, headers)
  end
end

--- ctx._stamped and ctx._emit_time, for the DSL's operators; returns the
--- stamp's setter and getter for the dispatcher and the punctuators.
local function add_stamp(ctx, env)
  local api, sink, rec = env.api, env.sink, env.rec
  local stamp = -1
  local function set_stamp(ts)
    stamp = ts
    api.sink_timestamp(sink, ts)
  end
  --- Call fn(...) with what it emits stamped `ts` instead of the record's
  --- timestamp (an operator's result time, as Kafka Streams gives a
  --- session its end). A failing fn leaves the stamp: run() clears it.
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
  return set_stamp, function() return stamp end
end

--- Fields read through ctx rather than kept in it: they change per record.
local function add_live_fields(ctx, tasks, rec)
  local record_fields = { timestamp = true, topic = true, offset = true, headers = true }
  setmetatable(ctx, {
    __index = function(_, k)
      if k == "stream_time" then return tasks.stream_time() end
      if k == "wall_time" then return tasks.wall end
      if k == "partition" then return tasks.current end
      -- the record being processed, for functions that get only its key and
      -- value (the DSL's operators), as Kafka Streams' record context
      if record_fields[k] then return rec[k] end
      return nil
    end,
    __metatable = false, -- tide's, not the detector's to change
  })
end

--- Records a detector drops and counts (Kafka Streams' dropped-records
--- metric): ctx:dropped("late", fmt, ...) counts one under its reason and
--- warns, at most once a second per reason (with how many went unlogged).
local function add_drops(ctx, env)
  local counts, last, quiet = {}, {}, {}
  ctx.drops = counts
  function ctx.dropped(_, reason, msg, ...)
    counts[reason] = (counts[reason] or 0) + 1
    local now = env.tasks.wall or 0
    if last[reason] and now - last[reason] < 1000 then
      quiet[reason] = (quiet[reason] or 0) + 1
      return
    end
    if select("#", ...) > 0 then msg = msg:format(...) end
    local n = quiet[reason]
    if n and n > 0 then msg = ("%s (and %d more not logged)"):format(msg, n) end
    last[reason], quiet[reason] = now, 0
    env.log("warn", msg)
  end
end

--- A detector's ctx.
---@param spec table the validated detector (tide.detector)
---@param env table api, sink (tide_sink_t *), rec and view (tide.record),
---   tasks (tide.tasks), stores (ctx.stores), log(level, msg), out_index,
---   key_encoders and value_encoders (per output index)
---@return tide.Ctx ctx
---@return table stamp { set(ts), get() -> ts }: -1 is no stamp
function M.new(spec, env)
  local ctx = { detector = spec.name, version = spec.version, stores = env.stores,
    log = loggers(env.log) }
  add_emit(ctx, env)
  add_drops(ctx, env)
  local set, get = add_stamp(ctx, env)
  add_live_fields(ctx, env.tasks, env.rec)
  return ctx, { set = set, get = get }
end

return M
