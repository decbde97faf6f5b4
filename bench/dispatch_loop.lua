--- bench/dispatch_loop.lua: the Lua half of the record path alone, in one
--- process, without a broker: a bench/ detector (or any detector with no
--- RocksDB store) runs over one batch of 1000 records (100 random lowercase
--- letters each, 4 partitions), again and again, through tide.core's
--- dispatch loop as the host calls it. Prints the median rate of `rounds`
--- rounds of `batches` batches, in CPU time (os.clock), which a busy shared
--- machine disturbs less than the wall clock. For comparing two trees'
--- dispatchers (run each in turn, a few times): it is not `make bench`.
---
---   LUA_PATH="scripts/?.lua;scripts/?/init.lua;;" LUA_CPATH="build/lua/?.so;;" \
---     luajit bench/dispatch_loop.lua bench/transform.lua [batches 2000] [rounds 5]
local core = require("tide.core")
local detector = require("tide.detector")
local dispatch = require("tide.dispatch")
local ffi = require("ffi")
local tffi = require("tide.ffi")

local file, batches, rounds = arg[1], tonumber(arg[2] or 2000), tonumber(arg[3] or 5)
if not file then
  io.stderr:write("usage: luajit bench/dispatch_loop.lua DETECTOR.lua [batches] [rounds]\n")
  os.exit(2)
end
local spec = assert(detector.load(file, { print = function() end }))
local sink = core.sink()
local d = dispatch.new(spec, sink:ptr(), function() end, {})
if spec.init then spec.init(d.ctx) end

math.randomseed(42)
local recs = {}
for i = 1, 1000 do
  local t = {}
  for j = 1, 100 do t[j] = string.char(96 + math.random(26)) end
  recs[i] = { topic = spec.inputs[1], partition = i % 4, offset = i, timestamp = 1000 + i,
    key = tostring(i), value = table.concat(t) }
end
local batch = core.batch(recs)
local b = ffi.cast(tffi.batch_ptr, batch:ptr())
for p = 0, 3 do d.task(p, true) end

local rates = {}
for r = 1, rounds do
  local t0 = os.clock()
  for _ = 1, batches do
    b.cursor = 0
    core.dispatch(d.run, batch, sink, "dlq", spec.name, spec.version, 0)
    sink:clear()
  end
  rates[r] = batches * 1000 / (os.clock() - t0) / 1e6
end
table.sort(rates)
print(("%-28s median %.2f M records/s of CPU time (%.2f-%.2f over %d rounds)"):format(
  file:match("[^/]+$"), rates[math.ceil(#rates / 2)], rates[1], rates[#rates], rounds))
batch:close()
sink:close()
