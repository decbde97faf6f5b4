-- What a worker carries: librocksdb is loaded only by a worker whose
-- detector keeps RocksDB state (when it opens its database), so that the
-- many stateless workers of a folder never map it.
local cluster = require("helpers.cluster")

--- Does process `pid` map librocksdb? nil when its maps cannot be read.
local function maps_rocksdb(pid)
  local f = io.open(("/proc/%d/maps"):format(pid), "r")
  if not f then return nil end
  local maps = f:read("*a")
  f:close()
  return maps:find("librocksdb", 1, true) ~= nil
end

--- Start `source` as detector `name` on fp-in and wait until it has handled
--- the records already there (its outputs are read back).
local function running(c, name, source, n)
  local path = c:path(name .. ".lua")
  local f = assert(io.open(path, "w"))
  f:write(source)
  f:close()
  -- not under TIDE_TEST_WRAP: the maps read are the detector's own process's
  local run = c:run(path, { app = "fp-" .. name, name = name, no_wrap = true })
  c:wait_for_records("fp-" .. name, n, 60)
  assert.is_true(run:running(), name .. " stopped: " .. run:status_text() .. "\n" .. run:log_tail(20))
  return run
end

describe("integration: a worker's footprint", function()
  -- the changelog exists up front with its input's partitions (the mock
  -- cannot create topics through the Admin API)
  local c = cluster.suite("footprint", { "fp-in:2", "fp-stateless:2", "fp-stateful:2",
    "fp-stateful.stateful-seen-changelog:2" })

  it("loads librocksdb only in a worker whose detector has RocksDB stores", function()
    local values = {}
    for i = 1, 20 do values[i] = "v" .. i end
    c:produce("fp-in", values)

    local stateless = running(c, "stateless", [[
return { name = "stateless", inputs = { "fp-in" }, outputs = { "fp-stateless" },
  process = function(rec, ctx) ctx:emit("fp-stateless", rec.key, rec.value) end }
]], 20)
    assert.are.equal(false, maps_rocksdb(stateless.pid), "a detector without stores mapped librocksdb")

    local stateful = running(c, "stateful", [[
return { name = "stateful", inputs = { "fp-in" }, outputs = { "fp-stateful" },
  stores = { seen = tide.kv() },
  process = function(rec, ctx)
    local n = (ctx.stores.seen:get(rec.value) or 0) + 1
    ctx.stores.seen:put(rec.value, n)
    ctx:emit("fp-stateful", rec.key, tostring(n))
  end }
]], 20)
    assert.are.equal(true, maps_rocksdb(stateful.pid), "a detector with a RocksDB store did not load it")

    for _, run in ipairs({ stateless, stateful }) do
      run:kill("TERM")
      assert.are.equal(0, run:wait(30), run.name .. ": " .. run:status_text())
    end
  end)
end)
