--- Testing a detector without a broker.
---
---   local driver = require("tide.testing").driver("examples/text_transformer.lua")
---   driver:pipe("text-input", "k1", "banana")
---   assert.same({ { key = "k1", value = "BANANA", headers = {} } }, driver:read("text-output"))
---
--- The driver runs the detector on the real runtime: the same sandbox,
--- dispatcher, serdes and error policy loop (tide.core, in C) as the host.
local core = require("tide.core")
local detector = require("tide.detector")
local dispatch = require("tide.dispatch")
local serde = require("tide.serde")
local errors = require("tide.errors")

local format = string.format

local M = {}

--- A detector under test: records in with pipe(), outputs out with read().
---@class tide.testing.Driver
---@field spec table the loaded detector (tide.detector), e.g. spec.name
---@field logs { level: string, msg: string }[] what it logged (ctx.log, print), oldest first
---@field changelog table[] the changelog records its stores wrote ({ output, key, value, ... })
---@field logs_dropped? integer log lines dropped past the first 10000
---@field package guard any its limits: heap owner and call budget (tide.core.guard)
---@field package path string
---@field package memory number
---@field package timeout_ms number
---@field package d table the dispatcher (tide.dispatch)
---@field package sink any a tide.core sink
---@field package on_error tide.OnError
---@field package db? any the RocksDB of RocksDB stores (tide.core.store_open)
---@field package db_dir? string
---@field package tasks table<integer, boolean>
---@field package wall number
---@field package outputs table<string, tide.testing.Output[]>
---@field package dead table[]
---@field package failures tide.testing.Failure[]
---@field package offsets table<string, integer>
---@field package internal table[]
---@field package path string
---@field package opts table
---@field package globals table<string, string> a global table's topic -> its store's name
---@field package global_log table[] the global tables' records piped, for restart()
local Driver = {}
Driver.__index = Driver

--- A record a detector emitted, as read back: key and value decoded with
--- the output's serdes.
---@class tide.testing.Output
---@field key any
---@field value any
---@field headers table<string, string>
---@field timestamp? number ms, when it carries one

--- A record that failed in process().
---@class tide.testing.Failure
---@field index integer
---@field class string DecodeError, ProcessError, MemoryError or TimeoutError
---@field message string with the detector's file:line
---@field traceback string

--- Load a detector file and run its init.
---
--- The detector runs within the limits it has live: opts.memory (bytes of
--- Lua heap its code may hold; default detector.memory.limit.bytes, 128 MiB)
--- and opts.timeout_ms (the budget of each call into it: loading, init, each
--- record, punctuators, close; default detector.batch.timeout.ms, 10 s). A
--- record past either fails with a MemoryError or a TimeoutError at the
--- detector's line (see bindings/guard.h; a call stuck in a C function past
--- the budget and a grace second ends the process instead).
---@param path string a detector file, or a folder with an init.lua
---@param opts? { on_error?: tide.OnError, wall_time?: number, application_id?: string, schemas?: string, memory?: number, timeout_ms?: number }
--- opts.schemas: the folder of Avro schemas (default: schemas/ beside the detector).
---@return tide.testing.Driver
function M.driver(path, opts)
  opts = opts or {}
  local limits = core.limits()
  local memory = opts.memory or limits.memory
  local timeout = opts.timeout_ms or limits.timeout_ms
  local self = setmetatable({ logs = {}, outputs = {}, dead = {}, failures = {}, offsets = {},
    changelog = {}, internal = {}, memory = memory, timeout_ms = timeout,
    guard = core.guard({ memory = memory, timeout_ms = timeout, label = path }) }, Driver)
  self.path, self.opts = path, opts
  local spec, err = self:_guarded_load()
  if not spec then error(err, 2) end
  self.on_error = opts.on_error or spec.on_error
  -- emits live in C, outside the Lua heap: the sink has the same cap
  self.sink = core.sink(memory)
  self:_open_db()
  self.guard:call(self._start, self)
  self.tasks = {}
  self.wall = opts.wall_time or 0
  self:_collect()
  return self
end

--- _load within the driver's guard: a limit broken while the detector loads
--- is raised as it is; a detector that does not load gives nil, reason.
function Driver:_guarded_load()
  local ok, spec, err = pcall(self.guard.call, self.guard, self._load, self)
  if not ok then error(spec, 0) end
  return spec, err
end

function Driver:_load()
  local spec, err = detector.load(self.path, {
    application_id = self.opts.application_id,
    print = function(msg) self:_log("info", msg) end,
  })
  if not spec then return nil, err end
  self.spec = spec
  -- the topics of its global tables: topic -> store name
  self.globals = {}
  for name, decl in pairs(spec.stores) do
    if decl.global then self.globals[decl.global] = name end
  end
  self.global_log = self.global_log or {}
  return spec
end

--- RocksDB stores live in a temporary database, removed by close().
function Driver:_open_db()
  for _, decl in pairs(self.spec.stores) do
    if not decl.memory then
      self.db_dir = os.tmpname()
      os.remove(self.db_dir)
      self.db = assert(core.store_open(self.db_dir))
      break
    end
  end
end

function Driver:_start()
  local function log(level, msg) self:_log(level, msg) end
  self.d = dispatch.new(self.spec, self.sink:ptr(), log, require("tide.host").serde_options(
    self.spec, self.path, { schemas_dir = self.opts.schemas }, log, self.db))
  if self.spec.init then self.spec.init(self.d.ctx) end
end

-- The driver keeps this many log lines; past them it counts what it drops
-- (a detector that logs in a loop), as the host holds it to a rate.
local LOG_MAX = 10000

function Driver:_log(level, msg)
  local logs = self.logs
  if #logs < LOG_MAX then
    logs[#logs + 1] = { level = level, msg = msg }
  else
    self.logs_dropped = (self.logs_dropped or 0) + 1
  end
end

--- Name what the driver runs next in messages (a line of an input file):
--- the watchdog's, and errors raised outside the detector's own code.
function Driver:at(where)
  self.guard:label(where and (self.path .. " (" .. where .. ")") or self.path)
end

--- The detector's Lua heap: bytes in use, the peak, and its limit.
function Driver:heap()
  return self.guard:heap()
end

local number_text = require("tide.json").number_text

--- Encode a Lua value the way a producer would for a serde: a string is
--- taken as the bytes themselves.
local function encode(v, serde_name)
  if v == nil or type(v) == "string" then return v end
  if serde_name == "json" then return serde.json.encode(v) end
  if type(v) == "number" then return number_text(v) end
  return tostring(v)
end

local function decode(v, serde_name)
  if v ~= nil and serde_name == "json" then return serde.json.decode(v) end
  return v
end

--- Avro goes through the dispatcher's serde of the topic (its subject, its
--- schema, the schemas folder): values are encoded as a producer would.
local function avro_encode(self, topic, which, v)
  if type(v) == "string" and string.byte(v, 1) == 0 then return v end -- already in the wire format
  return self.d.serde(topic, which).encode(v, which)
end

local function avro_decode(self, topic, which, bytes)
  if bytes == nil then return nil end
  return self.d.serde(topic, which).decode(require("ffi").cast("const char *", bytes), #bytes, which)
end

function Driver:_collect()
  for _, e in ipairs(self.sink:entries()) do
    if e.output <= -2 then
      -- a changelog record: the driver keeps them for tests of the changelog
      local list = self.changelog
      list[#list + 1] = e
    elseif e.output < 0 then
      self.dead[#self.dead + 1] = e
    elseif self.spec.inputs_set[self.spec.outputs[e.output + 1]] then
      -- an internal (repartition) topic: read back by the detector itself
      local q = self.internal
      q[#q + 1] = e
    else
      local name = self.spec.outputs[e.output + 1]
      local list = self.outputs[name] or {}
      self.outputs[name] = list
      local sd = self.spec.serdes[name]
      local k, v
      if sd.key == "avro" then k = avro_decode(self, name, "key", e.key) else k = decode(e.key, sd.key) end
      if sd.value == "avro" then v = avro_decode(self, name, "value", e.value) else v = decode(e.value, sd.value) end
      list[#list + 1] = { key = k, value = v, headers = e.headers,
        timestamp = e.timestamp >= 0 and e.timestamp or nil }
    end
  end
  self.sink:clear()
end

--- Feed one record to the detector.
---@param topic string one of the detector's inputs
---@param key any
---@param value any tables are JSON-encoded for a json topic
--- meta.raw: key and value are the record's bytes, passed unencoded.
---@param meta? { timestamp?: number, partition?: integer, headers?: table<string, string>, raw?: boolean }
function Driver:pipe(topic, key, value, meta)
  meta = meta or {}
  if self.globals[topic] then return self:_pipe_global(topic, key, value, meta) end
  local sd = self.spec.serdes[topic]
  if not sd or not self.spec.inputs_set[topic] then
    error(format("'%s' is not an input of %s (inputs: %s)",
      tostring(topic), self.spec.name, table.concat(self.spec.inputs, ", ")), 2)
  end
  if not meta.raw then
    key = sd.key == "avro" and avro_encode(self, topic, "key", key) or encode(key, sd.key)
    value = sd.value == "avro" and avro_encode(self, topic, "value", value) or encode(value, sd.value)
  end
  self:_dispatch(topic, key, value, meta)
  -- Records written to the detector's repartition topics are read back at
  -- once, in order, as Kafka Streams' TopologyTestDriver does; they go to
  -- partition 0.
  local q = self.internal
  while #q > 0 do
    local e = table.remove(q, 1)
    self:_dispatch(self.spec.outputs[e.output + 1], e.key, e.value, { timestamp = e.timestamp })
  end
end

function Driver:_dispatch(topic, key, value, meta)
  local partition = meta.partition or 0
  local slot = topic .. "/" .. partition
  local offset = self.offsets[slot] or 0
  self.offsets[slot] = offset + 1
  local headers
  if meta.headers then
    headers = {}
    for n, v in pairs(meta.headers) do headers[#headers + 1] = { n, v } end
  end
  local batch = core.batch({ {
    topic = topic, partition = partition, offset = offset,
    timestamp = meta.timestamp or -1, headers = headers,
    key = key, value = value,
  } })
  local guard = self.guard
  if not self.tasks[partition] then
    self.tasks[partition] = true
    guard:call(self.d.task, partition, true)
  end
  local failures, stopped = guard:call(core.dispatch, self.d.run, batch, self.sink, self.on_error,
    self.spec.name, self.spec.version, self.wall)
  batch:close()
  self:_punctuate() -- stream-time punctuators see the new record
  for _, f in ipairs(failures) do self.failures[#self.failures + 1] = f end
  self:_collect()
  if stopped then
    error(format("detector stopped (on_error = \"stop\"): %s", failures[1].message), 3)
  end
end

--- Fire the punctuators that are due. A punctuator's failure is logged (as
--- live); so is a limit the detector broke around them (a heap it keeps past
--- its cap fails every call, as live).
function Driver:_punctuate()
  local ok, err = pcall(self.guard.call, self.guard, self.d.punctuate, self.wall)
  if ok then return end
  if not errors.is(err) then error(err, 0) end
  self:_log("error", "punctuators: " .. errors.describe(err))
end

--- A record of a global table's topic goes into its store, as the host
--- puts it there from the topic: before the records that come after it.
function Driver:_pipe_global(topic, key, value, meta)
  local name = self.globals[topic]
  local decl = self.spec.stores[name]
  if not meta.raw then key, value = encode(key, decl.key_serde), encode(value, decl.value_serde) end
  self.global_log[#self.global_log + 1] = { topic, key, value }
  self:_apply_global(topic, key, value)
end

function Driver:_apply_global(topic, key, value)
  self.d.set_task(0)
  self.d.ctx.stores[self.globals[topic]]:_apply(key, value)
  self.sink:clear() -- (no changelog: the topic is the global table's log)
end

--- Restart the detector as the host does after a crash or a redeploy: its
--- file is loaded again, its stores are rebuilt from their changelogs (all
--- that is left of them unless opts.wipe is false, which keeps the local
--- RocksDB state as a restart on the same machine does) and its global
--- tables from their topics; each task resumes at the stream time it had.
---@param opts? { wipe?: boolean }
function Driver:restart(opts)
  local wipe = not (opts and opts.wipe == false)
  local old = self.d
  local spec, err = self:_guarded_load()
  if not spec then error(err, 2) end
  if wipe and self.db then
    core.store_close(self.db)
    os.execute("rm -rf '" .. self.db_dir .. "'")
    self.db = nil
    self:_open_db()
  end
  self.guard:call(self._start, self)
  for _, e in ipairs(self.changelog) do
    local entry = self.d.stores[-2 - e.output + 1]
    if entry.backend.restore then
      entry.backend.restore(e.partition, e.key, e.value)
    elseif wipe then
      if e.value == nil then entry.backend.delete(e.partition, e.key) else entry.backend.put(e.partition, e.key, e.value) end
    end
  end
  if wipe then
    for _, g in ipairs(self.global_log) do self:_apply_global(g[1], g[2], g[3]) end
  end
  self.sink:clear() -- restoring writes no changelog
  for p in pairs(self.tasks) do self.guard:call(self.d.task, p, true, old.stream_time(p)) end
  self:_collect()
end

--- Move the wall clock forward (ms or a duration like "10s") and fire the
--- wall-clock punctuators that are due.
---@param d tide.Duration
function Driver:advance_wall_clock(d)
  self.wall = self.wall + require("tide.store").duration(d, "advance_wall_clock")
  self:_punctuate()
  self:_collect()
end

--- A store of the detector, for assertions: driver:store("counts"):get("k")
--- reads the store of `partition` (default 0).
---@param name string
---@param partition? integer
---@return tide.KvStore|tide.WindowStore
function Driver:store(name, partition)
  local s = self.d.ctx.stores[name]
  if not s then error("no store named '" .. tostring(name) .. "'", 2) end
  local d, guard = self.d, self.guard
  return setmetatable({}, {
    __index = function(_, method)
      return function(_, ...)
        d.set_task(partition or 0)
        return guard:call(s[method], s, ...)
      end
    end,
  })
end

--- Read a store as the admin API's interactive queries do
--- (`GET /api/detectors/NAME/stores/STORE?...`), with the same answer:
---   d:query("counts", { key = "k" })               --> { key, found, value, partition }
---   d:query("counts", { prefix = "card-", limit = 10 }) --> { entries = {...}, more, next }
---   d:query("per_minute", { key = "k", time_from = 0, time_to = 60000 }) --> { windows = {...} }
---   d:query("counts", { count = true })             --> { count }
--- A key is looked up in `q.partition`, else in every partition the
--- driver has seen (it has no partitioner): the first that holds it answers.
--- A query the API would refuse raises its reason.
---@param store string
---@param q table
---@return table
function Driver:query(store, q)
  local query = require("tide.query")
  local ok, res = pcall(function()
    local e = query.entry(self.d.stores, store)
    local parts = {}
    if q.partition then
      parts[1] = q.partition
    else
      for p in pairs(self.tasks) do parts[#parts + 1] = p end
      table.sort(parts)
      if #parts == 0 then parts[1] = 0 end
    end
    local set_task = self.d.set_task
    if q.key == nil or #parts == 1 then return query.answer(e, parts, q, set_task) end
    local first
    for _, p in ipairs(parts) do
      local r = query.answer(e, { p }, q, set_task)
      if r.found then return r end
      first = first or r
    end
    return first
  end)
  if not ok then
    error(type(res) == "table" and res.message or res, 2)
  end
  return res
end

--- Put a changelog record into store `store` of partition `partition`, as
--- a restore does (nothing is emitted): value nil deletes the key. For
--- seeding a detector with real state (`tide replay --with-state`); key and
--- value are the changelog's bytes.
---@param store string
---@param partition integer
---@param key string
---@param value? string
function Driver:restore(store, partition, key, value)
  local e = require("tide.query").entry(self.d.stores, store)
  local b = e.backend
  if b.restore then
    b.restore(partition, key, value)
  elseif value == nil then
    b.delete(partition, key)
  else
    b.put(partition, key, value)
  end
  -- the rocks backend wrote the change to the changelog too: not an output
  self.sink:clear()
end

--- Records emitted to `output` since the last read, oldest first.
---@param output string
---@return tide.testing.Output[]
function Driver:read(output)
  local list = self.outputs[output] or {}
  self.outputs[output] = {}
  return list
end

--- Dead-lettered records since the last call ({ key, value, headers }).
---@return { key: string?, value: string?, headers: table<string, string> }[]
function Driver:dead_letters()
  local list = self.dead
  self.dead = {}
  return list
end

--- Records that failed ({ index, class, message, traceback }).
---@return tide.testing.Failure[]
function Driver:errors()
  local list = self.failures
  self.failures = {}
  return list
end

--- Call the detector's close(ctx).
function Driver:close()
  if self.spec.close then self.guard:call(self.spec.close, self.d.ctx) end
  self:_collect()
  self.sink:close()
  if self.db then
    core.store_close(self.db)
    self.db = nil
    os.execute("rm -rf '" .. self.db_dir .. "'")
  end
end

--- The offset the next record piped to `topic` and `partition` gets; later
--- ones follow it. For replays of recorded traffic (`tide replay`), so the
--- detector and its dead letters see the records' own offsets.
---@param topic string
---@param partition? integer
---@param offset integer
function Driver:seek(topic, partition, offset)
  self.offsets[topic .. "/" .. (partition or 0)] = offset
end

return M
