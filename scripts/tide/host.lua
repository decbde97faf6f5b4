--- The host's way into a detector runtime: bindings/runtime.c calls open()
--- once, in a fresh lua_State that belongs to this one detector.
local core = require("tide.core")
local detector = require("tide.detector")
local dispatch = require("tide.dispatch")
local errors = require("tide.errors")

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
  -- (the sandbox locks the string metatable, ("").dump included)
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
    local ok, ierr, trace = errors.call(spec.init, d.ctx)
    if not ok then error("init failed: " .. errors.describe(ierr) .. "\n" .. trace, 0) end
  end
  local function close()
    if spec.close then spec.close(d.ctx) end
  end
  local stores = {}
  for i, e in ipairs(d.stores) do
    stores[i] = { name = e.name, memory = e.decl.memory, kind = e.decl.kind }
  end
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
  }, close, { task = d.task, punctuate = d.punctuate, restore = d.restore,
    stream_time = d.stream_time }
end

return M
