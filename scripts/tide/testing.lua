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

local M = {}

local Driver = {}
Driver.__index = Driver

--- Load a detector file and run its init.
---@param path string
---@param opts? { on_error?: string }
function M.driver(path, opts)
  opts = opts or {}
  local self = setmetatable({ logs = {}, outputs = {}, dead = {}, failures = {}, offsets = {} }, Driver)
  local spec, err = detector.load(path, {
    print = function(msg) self.logs[#self.logs + 1] = { level = "info", msg = msg } end,
  })
  if not spec then error(err, 2) end
  self.spec = spec
  self.on_error = opts.on_error or spec.on_error
  self.sink = core.sink()
  self.d = dispatch.new(spec, self.sink:ptr(), function(level, msg)
    self.logs[#self.logs + 1] = { level = level, msg = msg }
  end)
  self.value_serde = spec.value_serde
  if spec.init then spec.init(self.d.ctx) end
  self:_collect()
  return self
end

--- Encode a Lua value the way a producer would for this detector's serde.
function Driver:_encode(v, which)
  if v == nil or type(v) == "string" then return v end
  if which == "json" then return serde.json.encode(v) end
  return tostring(v)
end

function Driver:_collect()
  for _, e in ipairs(self.sink:entries()) do
    if e.output < 0 then
      self.dead[#self.dead + 1] = e
    else
      local name = self.spec.outputs[e.output + 1]
      local list = self.outputs[name] or {}
      self.outputs[name] = list
      local value = e.value
      if value ~= nil and self.value_serde == "json" then value = serde.json.decode(value) end
      local key = e.key
      if key ~= nil and self.spec.key_serde == "json" then key = serde.json.decode(key) end
      list[#list + 1] = { key = key, value = value, headers = e.headers }
    end
  end
  self.sink:clear()
end

--- Feed one record to the detector.
---@param topic string one of the detector's inputs
---@param key any
---@param value any tables are JSON-encoded for a json detector
---@param meta? { timestamp?: number, partition?: number, headers?: table }
function Driver:pipe(topic, key, value, meta)
  meta = meta or {}
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
    key = self:_encode(key, self.spec.key_serde),
    value = self:_encode(value, self.value_serde),
  } })
  local failures, stopped = core.dispatch(self.d.run, batch, self.sink, self.on_error,
    self.spec.name, self.spec.version)
  batch:close()
  for _, f in ipairs(failures) do self.failures[#self.failures + 1] = f end
  self:_collect()
  if stopped then
    error(("detector stopped (on_error = \"stop\"): %s"):format(failures[1].message), 2)
  end
end

--- Records emitted to `output` since the last read, oldest first.
function Driver:read(output)
  local list = self.outputs[output] or {}
  self.outputs[output] = {}
  return list
end

--- Dead-lettered records since the last call ({ key, value, headers }).
function Driver:dead_letters()
  local list = self.dead
  self.dead = {}
  return list
end

--- Records that failed ({ index, class, message, traceback }).
function Driver:errors()
  local list = self.failures
  self.failures = {}
  return list
end

--- Call the detector's close(ctx).
function Driver:close()
  if self.spec.close then self.spec.close(self.d.ctx) end
  self:_collect()
  self.sink:close()
end

return M
