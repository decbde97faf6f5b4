-- The test driver runs a detector within the limits it has live: its Lua heap
-- (memory) and the budget of each call (timeout_ms). Every case runs in a
-- luajit process of its own under `ulimit -v`, because without the limits
-- the detectors here would take the test runner's memory or never return.
local isolated = require("helpers.isolated")

local LIMITS = "{ memory = 16 * 1024 * 1024, timeout_ms = 200 }"

--- A detector whose process() runs `body` on the record whose value is
--- "go" and passes every other record through.
local function detector(label, body)
  return isolated.file(label .. ".lua", ([[
return {
  inputs = { "in" }, outputs = { "out" },
  process = function(rec, ctx)
    if rec.value == "go" then
%s
    end
    ctx:emit("out", rec.key, rec.value)
  end,
}
]]):format(body))
end

--- Run records through a detector in a child; returns its result lines
--- (one per record, then { rss_kb }) and the child's result.
local function drive(path, records, limits, timeout)
  local res = isolated.lua(isolated.driver_script(path, limits or LIMITS, records), { timeout = timeout or 20 })
  assert.is_false(res.timed_out, "the driver's process did not end:\n" .. res.stderr)
  assert.equal(0, res.code, "the driver's process failed:\n" .. res.stderr)
  return res.lines, res
end

local function line_of(path, needle)
  local n = 0
  for l in io.lines(path) do
    n = n + 1
    if l:find(needle, 1, true) then return n end
  end
  error(needle .. " not in " .. path)
end

describe("the test driver's limits", function()
  after_each(isolated.cleanup)

  it("fails a record that grows a table forever with a MemoryError at the detector's line", function()
    local path = detector("grows", [[
      local t = {}
      while true do t[#t + 1] = { #t } end -- GROWS]])
    local lines = drive(path, '{ "a", "go", "b" }')
    assert.same({}, lines[1].errors)
    local e = lines[2].errors[1]
    assert.equal("MemoryError", e.class)
    assert.matches("grows%.lua:" .. line_of(path, "GROWS") .. ": not enough memory: the detector reached its limit of 16777216 bytes", e.message)
    assert.equal(1, lines[2].dead)
    assert.same({}, lines[3].errors, "the next record runs as usual")
    assert.equal(1, lines[3].out)
    assert.is_true(lines[4].rss_kb < 400 * 1024, "peak RSS " .. lines[4].rss_kb .. " kB")
  end)

  it("fails a record that keeps what every record allocates once the heap is full", function()
    local path = isolated.file("keeps.lua", [[
local kept = {}
return {
  inputs = { "in" }, outputs = { "out" },
  process = function(rec, ctx)
    kept[#kept + 1] = string.rep(rec.value, 1024 * 1024) -- KEEPS
    ctx:emit("out", rec.key, "kept " .. #kept)
  end,
}
]])
    local values = {}
    for i = 1, 40 do values[i] = ("%q"):format(string.char(96 + i % 26)) end
    local lines = drive(path, "{ " .. table.concat(values, ", ") .. " }")
    local first
    for i = 1, 40 do
      if lines[i].errors[1] then
        first = first or i
        assert.equal("MemoryError", lines[i].errors[1].class)
      end
    end
    -- 16 MiB hold about fifteen 1 MiB strings besides the detector's own
    assert.is_number(first, "no record failed")
    assert.is_true(first >= 8 and first <= 17, "first failure at record " .. tostring(first))
  end)

  it("stops a JIT-compiled infinite loop with a TimeoutError at the detector's line", function()
    local path = detector("spins", [[
      local n = 0
      while true do n = n + 1 end -- SPINS]])
    local lines, res = drive(path, '{ "go", "after" }')
    local e = lines[1].errors[1]
    assert.equal("TimeoutError", e.class)
    assert.matches("spins%.lua:" .. line_of(path, "SPINS") .. ": watchdog: the call ran past its budget of 200 ms", e.message)
    assert.is_true(lines[1].cpu < 1.5, "the record ran " .. lines[1].cpu .. " s")
    assert.same({}, lines[2].errors)
    assert.is_true(res.elapsed < 10)
  end)

  it("does not let a detector catch its TimeoutError and go on", function()
    local path = detector("catches", [[
      while true do pcall(function() while true do end end) end -- CATCHES]])
    local lines = drive(path, '{ "go" }')
    assert.equal("TimeoutError", lines[1].errors[1].class)
    assert.matches("catches%.lua:" .. line_of(path, "CATCHES"), lines[1].errors[1].message)
  end)

  it("refuses string.rep of a gigabyte with a MemoryError at the detector's line, before allocating it", function()
    local path = detector("rep", [[
      local s = ("x"):rep(2 ^ 30) -- REP]])
    local lines = drive(path, '{ "go" }')
    local e = lines[1].errors[1]
    assert.equal("MemoryError", e.class)
    assert.matches("rep%.lua:" .. line_of(path, "REP") .. ": not enough memory: string.rep would make 1073741824 bytes", e.message)
    assert.is_true(lines[2].rss_kb < 400 * 1024, "peak RSS " .. lines[2].rss_kb .. " kB")
  end)

  it("applies detector.memory.limit.bytes and detector.batch.timeout.ms by default", function()
    local path = detector("defaults", [[
      local t = {}
      while true do t[#t + 1] = { #t } end]])
    local lines = drive(path, '{ "go" }', "{}", 40)
    assert.equal("MemoryError", lines[1].errors[1].class)
    assert.matches("limit of 134217728 bytes", lines[1].errors[1].message)
  end)

  it("bounds what a record emits, which lives outside the Lua heap", function()
    local path = detector("floods", [[
      while true do ctx:emit("out", "k", "a value of some length") end -- FLOODS]])
    local lines = drive(path, '{ "go", "after" }')
    assert.equal("ProcessError", lines[1].errors[1].class)
    assert.matches("floods%.lua:" .. line_of(path, "FLOODS") .. ": out of memory while emitting", lines[1].errors[1].message)
    assert.equal(1, lines[2].out)
    assert.is_true(lines[3].rss_kb < 400 * 1024, "peak RSS " .. lines[3].rss_kb .. " kB")
  end)

  it("stops a detector that hangs while it loads, naming the line", function()
    local path = isolated.file("loads.lua", "local n = 0\nwhile true do n = n + 1 end -- LOADS\n")
    local lines = drive(path, "{}")
    assert.matches("TimeoutError: .*loads%.lua:2: watchdog", lines[1].load_error)
  end)

  it("ends the process, naming the detector, when a C function runs past the budget", function()
    local path = detector("backtracks", [[
      string.find(string.rep("a", 40), string.rep("a*", 40) .. "b")]])
    local res = isolated.lua(isolated.driver_script(path, LIMITS, '{ "go" }'), { timeout = 20 })
    assert.is_false(res.timed_out)
    assert.equal(3, res.code)
    assert.matches("tide: watchdog: .*backtracks%.lua: still running %d+ ms after its budget of 200 ms ran out", res.stderr)
    assert.is_true(res.elapsed < 5, "took " .. res.elapsed .. " s")
  end)
end)
