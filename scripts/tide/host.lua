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
--- Raises "file:line: reason" when the detector cannot run.
---@return function run, table info, function close
function M.open(path, sink_lud)
  -- The string metatable is shared by the whole state: close the
  -- ("").dump(f) route too, not just the sandbox's string table.
  string.dump = function()
    error("string.dump is not available to detectors (tide sandbox)", 2)
  end
  local spec, err = detector.load(path, {
    print = function(msg) log("info", msg) end,
  })
  if not spec then error(err, 0) end
  local d = dispatch.new(spec, sink_lud, log)
  if spec.init then
    local ok, ierr = xpcall(spec.init, function(e)
      return debug.traceback(tostring(e), 2)
    end, d.ctx)
    if not ok then error("init failed: " .. ierr, 0) end
  end
  local function close()
    if spec.close then spec.close(d.ctx) end
  end
  return d.run, {
    name = spec.name,
    path = spec.path,
    version = spec.version,
    description = spec.description or "",
    inputs = spec.inputs,
    outputs = spec.outputs,
    value_serde = spec.value_serde,
    key_serde = spec.key_serde,
    on_error = spec.on_error,
  }, close
end

return M
