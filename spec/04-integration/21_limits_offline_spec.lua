-- `tide test` and `tide replay` run a detector within the limits it has live
-- (detector.memory.limit.bytes, detector.batch.timeout.ms), set like every
-- other setting: -D, -c FILE, TIDE_* variables. Each run is a process of its
-- own under `ulimit -v`, bounded in time.
local cluster = require("helpers.cluster")
local isolated = require("helpers.isolated")
local cjson = require("cjson").new()

-- One record per way to break a limit, and a healthy one after them.
local BOMBS = [[
local kept = {}
return {
  inputs = { "in" }, outputs = { "out" },
  process = function(rec, ctx)
    local v = rec.value
    if v == "table" then
      local t = {}
      while true do t[#t + 1] = { v } end -- TABLE
    elseif v == "loop" then
      local n = 0
      while true do n = n + 1 end -- LOOP
    elseif v == "rep" then
      local s = string.rep("x", 2 ^ 30) -- REP
    elseif v == "kept" then
      kept[#kept + 1] = string.rep(rec.key, 1024 * 1024) -- KEPT
    end
    ctx:emit("out", rec.key, v)
  end,
}
]]

local LIMITS = { "-D", "detector.memory.limit.bytes=16777216", "-D", "detector.batch.timeout.ms=200" }

local function jsonl(records)
  local lines = {}
  for i, r in ipairs(records) do lines[i] = cjson.encode(r) end
  return table.concat(lines, "\n") .. "\n"
end

--- `tide ARGS...` with the limits, bounded; returns the result.
local function tide(args, opts)
  local argv = { cluster.bin() }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local res = isolated.command(argv, { timeout = (opts and opts.timeout) or 30, env = opts and opts.env })
  assert.is_false(res.timed_out, "tide did not end:\n" .. res.stderr)
  return res
end

--- The "error at ..." lines of a report: { [where] = "Class: message" }.
local function errors_of(stderr)
  local by = {}
  for where, rest in stderr:gmatch("\n  error at ([^:]+:%d+): ([^\n]*)") do by[where] = rest end
  return by
end

describe("integration: limits under tide test and tide replay", function()
  after_each(isolated.cleanup)

  local bombs = isolated.file("bombs.lua", BOMBS)
  local function line(needle) return cluster.line_of(bombs, needle) end
  local input = isolated.file("bombs.jsonl", jsonl({
    { key = "a", value = "table" }, { key = "b", value = "loop" }, { key = "c", value = "rep" },
    { key = "d", value = "healthy" },
  }))

  it("fails each record that breaks a limit, at the detector's line, and exits 3", function()
    local args = { "test", bombs, "--input", input }
    for _, a in ipairs(LIMITS) do args[#args + 1] = a end
    local res = tide(args)
    assert.equal(3, res.code, res.stderr)
    local errs = errors_of(res.stderr)
    assert.matches("^MemoryError: .*bombs%.lua:" .. line("TABLE") .. ": not enough memory: the detector reached its limit of 16777216 bytes", errs[input .. ":1"])
    assert.matches("^TimeoutError: .*bombs%.lua:" .. line("LOOP") .. ": watchdog: the call ran past its budget of 200 ms", errs[input .. ":2"])
    assert.matches("^MemoryError: .*bombs%.lua:" .. line("REP") .. ": not enough memory: string.rep", errs[input .. ":3"])
    assert.is_nil(errs[input .. ":4"])
    assert.matches('{"topic":"out","key":"d","value":"healthy"', res.stdout, 1, true)
    local classes = {}
    for class in res.stdout:gmatch('"tide.error.class":"(%a+)"') do classes[#classes + 1] = class end
    assert.same({ "MemoryError", "TimeoutError", "MemoryError" }, classes)
    assert.is_true(res.elapsed < 10, "took " .. res.elapsed .. " s")
  end)

  it("fails a record once what the detector keeps across records passes the heap cap", function()
    local records = {}
    for i = 1, 30 do records[i] = { key = string.char(96 + i % 26), value = "kept" } end
    local res = tide({ "test", bombs, "--input", isolated.file("kept.jsonl", jsonl(records)),
      "-D", "detector.memory.limit.bytes=16777216" })
    assert.equal(3, res.code, res.stderr)
    assert.matches("MemoryError: .*bombs%.lua:" .. line("KEPT"), res.stderr)
  end)

  it("takes the limits from a properties file and from the environment too", function()
    local props = isolated.file("limits.properties", "detector.batch.timeout.ms=200\n")
    local loop = isolated.file("loop.jsonl", jsonl({ { key = "b", value = "loop" } }))
    local res = tide({ "test", bombs, "--input", loop, "-c", props })
    assert.equal(3, res.code, res.stderr)
    assert.matches("TimeoutError: .*budget of 200 ms", res.stderr)
    res = tide({ "test", bombs, "--input", loop }, { env = { TIDE_DETECTOR_BATCH_TIMEOUT_MS = "300" } })
    assert.equal(3, res.code, res.stderr)
    assert.matches("TimeoutError: .*budget of 300 ms", res.stderr)
  end)

  it("applies the live defaults without any setting", function()
    local res = tide({ "test", bombs, "--input", isolated.file("table.jsonl", jsonl({ { key = "a", value = "table" } })) },
      { timeout = 60 })
    assert.equal(3, res.code, res.stderr)
    assert.matches("MemoryError: .*limit of 134217728 bytes", res.stderr)
  end)

  it("refuses a limit out of range, with where it came from", function()
    local res = tide({ "test", bombs, "--input", input, "-D", "detector.batch.timeout.ms=soon" })
    assert.equal(2, res.code)
    assert.matches("tide test: flag %-D: detector%.batch%.timeout%.ms must be an integer", res.stderr)
  end)

  it("holds replay --file to the same limits, for both versions", function()
    local args = { "replay", bombs, "--against", bombs, "--file", input }
    for _, a in ipairs(LIMITS) do args[#args + 1] = a end
    local res = tide(args)
    assert.equal(3, res.code, res.stderr)
    local _, reports = res.stderr:gsub("TimeoutError: [^\n]*bombs%.lua:" .. line("LOOP"), "")
    assert.equal(2, reports, res.stderr)
    assert.equal("", res.stdout, "both versions fail alike: no difference")
  end)

  it("ends the run with exit 3 and a message when a C function runs past the budget", function()
    local d = isolated.file("backtracks.lua", [[
return { inputs = { "in" }, process = function(rec)
  string.find(string.rep("a", 40), string.rep("a*", 40) .. "b")
end }
]])
    local args = { "test", d, "--input", isolated.file("one.jsonl", jsonl({ { value = "x" } })) }
    for _, a in ipairs(LIMITS) do args[#args + 1] = a end
    local res = tide(args)
    assert.equal(3, res.code)
    assert.matches("tide: watchdog: .*backtracks%.lua %(.*one%.jsonl:1%): still running %d+ ms after its budget of 200 ms ran out", res.stderr)
    assert.is_true(res.elapsed < 5, "took " .. res.elapsed .. " s")
  end)
end)
