--- The dispatcher: the Lua half of the record path.
---
--- C calls `run(batch)` once per batch. It loops over the C array of records
--- through the FFI and calls the detector's process(rec, ctx) on each; this
--- loop is JIT-compiled together with the detector. Before each record it
--- writes the record's index into batch.cursor: when process raises, the batch
--- call fails, C reads the cursor, applies the error policy to that record and
--- calls run again, which resumes after it.
---
--- This file composes one detector's runtime from its parts: the record view
--- (tide.record), ctx (tide.context), tasks and stream time (tide.tasks),
--- stores (tide.store) and the punctuate step (tide.punctuate). Nothing in
--- the loop allocates or calls the C API per record.
local ffi = require("ffi")
local tffi = require("tide.ffi")
local serde = require("tide.serde")
local store = require("tide.store")
local record = require("tide.record")
local context = require("tide.context")
local tasks_of = require("tide.tasks")
local punctuate = require("tide.punctuate")

local M = {}

local api = tffi.api
local tonumber = tonumber

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

--- The batch loop: process the batch from its cursor to its end; `now` is
--- the wall clock (ms).
local function batch_loop(spec, rec, view, ctx, tasks, stamp)
  local process, extract = spec.process, spec.timestamps
  local batch_ptr = tffi.batch_ptr
  local at, advance = view.at, tasks.advance
  return function(batch_lud, now)
    if stamp.get() ~= -1 then stamp.set(-1) end -- after a failed record, no stamp is left over
    local b = ffi.cast(batch_ptr, batch_lud) ---@type any a tide_batch_t *
    tasks.wall = now or tasks.wall
    view.batch(b.recs)
    for i = b.cursor, b.n - 1 do
      b.cursor = i
      local r = at(i)
      local p = r.partition
      tasks.current = p
      if extract then
        local f = extract[rec.topic]
        if f then r.timestamp = event_time(f, rec) end
      end
      advance(p, tonumber(r.timestamp), rec)
      process(rec, ctx)
    end
    b.cursor = b.n
  end
end

--- A task starts (its stores are restored; `st`: its stream time from the
--- last commit, or nil) or stops (revoked).
local function task_hook(spec, ctx, tasks, punct, store_list)
  local on_task = spec.on_task
  return function(p, on, st)
    if on_task then on_task(ctx, p, on) end
    if on then
      tasks.start(p, st)
    else
      tasks.stop(p)
      punct.drop(p)
      for _, e in ipairs(store_list) do
        if e.backend.drop then e.backend.drop(p) end
      end
    end
  end
end

--- The runtime of one validated detector: run(batch, now) for C, its ctx,
--- store list and the hooks the host calls (task, restore, punctuate,
--- stream_time).
---@param spec table a validated detector (tide.detector)
---@param sink_lud userdata the tide_sink_t* (lightuserdata) emits go to
---@param log fun(level: string, msg: string)
---@param opts? { db?: userdata } db: the worker's RocksDB (lightuserdata)
function M.new(spec, sink_lud, log, opts)
  opts = opts or {}
  local sink = ffi.cast(tffi.sink_ptr, sink_lud)
  local rec, view = record.new(api, input_decoders(spec))
  local tasks = tasks_of.new(spec.stream_time_topics)
  local current = function() return tasks.current end
  local stores, store_list = store.open(spec.stores or {}, {
    api = api, db = opts.db, sink = sink, task = current, stream_time = tasks.stream_time,
  })
  local kenc, venc = output_encoders(spec)
  local ctx, stamp = context.new(spec, {
    api = api, sink = sink, rec = rec, view = view, tasks = tasks, stores = stores, log = log,
    out_index = spec.out_index, key_encoders = kenc, value_encoders = venc,
  })
  local punct = punctuate.new(spec.punctuators or {}, {
    tasks = tasks, ctx = ctx, stamp = stamp, log = log, stores = store_list,
  })

  --- Restore one changelog entry into an in-memory store (RocksDB stores
  --- are restored in C).
  local function restore(id, p, k, v)
    local e = store_list[id + 1]
    if e and e.backend.restore then e.backend.restore(p, k, v) end
  end

  --- A commit went through (the host's transaction, or its acknowledged
  --- flush): in-memory stores and punctuators keep what happened since.
  local function commit()
    for _, e in ipairs(store_list) do
      if e.backend.commit then e.backend.commit() end
    end
    punct.commit()
  end

  --- Task p goes back to its last commit: in-memory stores undo their
  --- writes since (RocksDB ones are rolled back in C), stream time is st
  --- again, punctuators are rescheduled, and the detector's on_task hook
  --- hears that the task (re)starts from there.
  local function rollback(p, st)
    for _, e in ipairs(store_list) do
      if e.backend.rollback then e.backend.rollback(p) end
    end
    tasks.rollback(p, st)
    punct.rollback(p)
    if spec.on_task then
      tasks.current = p
      spec.on_task(ctx, p, true)
    end
  end

  return {
    run = batch_loop(spec, rec, view, ctx, tasks, stamp), ctx = ctx, rec = rec, stores = store_list,
    task = task_hook(spec, ctx, tasks, punct, store_list), restore = restore, punctuate = punct.run,
    stream_time = tasks.stream_time, commit = commit, rollback = rollback,
    dropped_late = function() return ctx.drops.late or 0 end,
    set_task = function(p) tasks.current = p end,
  }
end

return M
