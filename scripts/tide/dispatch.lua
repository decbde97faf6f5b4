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
local avro_serde = require("tide.avro_serde")
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

--- The serdes of every topic, { [topic] = { key =, value = } }: the shared
--- plain ones by name, and for `avro` one per topic and side (its subject
--- and schema are the topic's). opts: registry, auto_register, use_latest.
local function topic_serdes(spec, opts)
  local all = {}
  for t, d in pairs(spec.serdes) do
    local pair = {}
    for _, which in ipairs({ "key", "value" }) do
      if d[which] == "avro" then
        if not opts.registry then
          error(("topic %s: the avro serde needs a schema registry (schema.registry.url) or a schemas folder"):format(t), 0)
        end
        pair[which] = avro_serde.new({ topic = t, which = which, registry = opts.registry,
          schema = which == "key" and d.key_schema_text or d.schema_text,
          auto_register = opts.auto_register, use_latest = opts.use_latest })
      else
        pair[which] = serde_of(d[which])
      end
    end
    all[t] = pair
  end
  return all
end

--- Decoders per input topic, and the shared ones when every input has the
--- same serdes ({ same = true, key = fn, value = fn }).
local function input_decoders(spec, serdes)
  local by_topic, ks, vs, same = {}, nil, nil, true
  for _, t in ipairs(spec.inputs) do
    local d = serdes[t]
    by_topic[t] = { key = d.key.decode, value = d.value.decode }
    if ks and (ks ~= d.key or vs ~= d.value) then same = false end
    ks, vs = d.key, d.value
  end
  return by_topic, { same = same, key = ks.decode, value = vs.decode }
end

--- Encoders per output index.
local function output_encoders(spec, serdes)
  local kenc, venc = {}, {}
  for t, o in pairs(spec.out_index) do
    kenc[o], venc[o] = serdes[t].key.encode, serdes[t].value.encode
  end
  return kenc, venc
end

--- What must be at hand before a record runs (the schema registry's
--- answers): a function(r, rec) raising errors.RETRY when it is not, or
--- nil when no serde needs anything.
local function preparer(spec, serdes)
  local outs, by_topic, any = {}, {}, false
  for t in pairs(spec.out_index) do
    for _, which in ipairs({ "key", "value" }) do
      local f = serdes[t][which].prepare_output
      if f then outs[#outs + 1] = f end
    end
  end
  for _, t in ipairs(spec.inputs) do
    local kp, vp = serdes[t].key.prepare, serdes[t].value.prepare
    if kp or vp then
      any = true
      by_topic[t] = function(r)
        if kp then kp(r.key, r.key_len) end
        if vp then vp(r.val, r.val_len) end
      end
    end
  end
  if not any and #outs == 0 then return nil end
  local outs_ready = #outs == 0
  local single = #spec.inputs == 1 and (by_topic[spec.inputs[1]] or function() end)
  return function(r, rec)
    if not outs_ready then
      for i = 1, #outs do outs[i]() end
      outs_ready = true
    end
    -- one input: no topic name to make per record
    local f = single or by_topic[rec.topic]
    if f then f(r) end
  end
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
local function batch_loop(spec, rec, view, ctx, tasks, stamp, prepare)
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
      if prepare then prepare(r, rec) end
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
---@param opts? { db?: userdata, registry?: table, auto_register?: boolean, use_latest?: boolean }
--- db: the worker's RocksDB (lightuserdata); registry (tide.registry) and the
--- two flags: for the avro serde.
function M.new(spec, sink_lud, log, opts)
  opts = opts or {}
  local sink = ffi.cast(tffi.sink_ptr, sink_lud)
  local serdes = topic_serdes(spec, opts)
  local rec, view = record.new(api, input_decoders(spec, serdes))
  local tasks = tasks_of.new(spec.stream_time_topics)
  local current = function() return tasks.current end
  local stores, store_list = store.open(spec.stores or {}, {
    api = api, db = opts.db, sink = sink, task = current, stream_time = tasks.stream_time,
  })
  local kenc, venc = output_encoders(spec, serdes)
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
    run = batch_loop(spec, rec, view, ctx, tasks, stamp, preparer(spec, serdes)), ctx = ctx,
    rec = rec, stores = store_list,
    task = task_hook(spec, ctx, tasks, punct, store_list), restore = restore, punctuate = punct.run,
    stream_time = tasks.stream_time, commit = commit, rollback = rollback,
    dropped_late = function() return ctx.drops.late or 0 end,
    set_task = function(p) tasks.current = p end,
    --- The serde of one side of a topic (the test driver encodes inputs
    --- and decodes outputs with them).
    serde = function(topic, which) return serdes[topic] and serdes[topic][which] end,
  }
end

return M
