--- The host's way into a detector runtime: bindings/runtime.c calls open()
--- once, in a fresh lua_State that belongs to this one detector.
local core = require("tide.core")
local detector = require("tide.detector")
local dispatch = require("tide.dispatch")

local M = {}

local function log(level, msg)
  core.log(level, msg)
end

--- Load, validate and init the detector at `path`; emits go to `sink_lud`.
--- application_id names a DSL detector's internal (repartition) topics.
--- open_db(name) opens the worker's store database (a lightuserdata), called
--- only when the detector declares RocksDB stores.
--- Raises "file:line: reason" when the detector cannot run.
---@return function run, table info, function close, table hooks
function M.open(path, sink_lud, open_db, application_id)
  -- The string metatable is shared by the whole state: close the
  -- ("").dump(f) route too, not just the sandbox's string table.
  string.dump = function()
    error("string.dump is not available to detectors (tide sandbox)", 2)
  end
  local spec, err = detector.load(path, {
    print = function(msg) log("info", msg) end,
    application_id = application_id,
  })
  if not spec then error(err, 0) end
  local db
  for _, decl in pairs(spec.stores) do
    if not decl.memory then
      db = open_db(spec.name)
      break
    end
  end
  local d = dispatch.new(spec, sink_lud, log, { db = db })
  if spec.init then
    local ok, ierr = xpcall(spec.init, function(e)
      return debug.traceback(tostring(e), 2)
    end, d.ctx)
    if not ok then error("init failed: " .. ierr, 0) end
  end
  local function close()
    if spec.close then spec.close(d.ctx) end
  end
  local stores = {}
  for i, e in ipairs(d.stores) do
    stores[i] = { name = e.name, memory = e.decl.memory, kind = e.decl.kind, global = e.decl.global }
  end
  -- what the status page draws: the DSL's topology, or a hand-written
  -- detector's one processor
  local describe = require("tide.describe")
  local topology = spec.dsl and spec.dsl.topology or describe.of_detector(spec, function(store)
    return ("%s.%s-%s-changelog"):format(application_id or "tide", spec.name, store)
  end)
  return d.run, {
    stores = stores,
    punctuators = #spec.punctuators,
    name = spec.name,
    path = spec.path,
    version = spec.version,
    description = spec.description or "",
    inputs = spec.inputs,
    outputs = spec.outputs,
    value_serde = spec.value_serde,
    key_serde = spec.key_serde,
    on_error = spec.on_error,
    topology = require("tide.serde").json.encode(topology),
  }, close, { task = d.task, punctuate = d.punctuate, restore = d.restore,
    stream_time = d.stream_time }
end

return M
