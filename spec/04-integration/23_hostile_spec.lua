-- The hostile detectors of spec/fixtures/hostile, each run where people check
-- a detector before it goes live (`tide test`, `tide replay --file` beside a
-- healthy detector, the busted driver) and some of them live, in a `tide run`
-- folder beside the healthy one. Whatever each tries, none may hang past its
-- budget, take the machine's memory (each run is under `ulimit -v`), change
-- what tide prints about another record or detector, or end without saying
-- why.
local cluster = require("helpers.cluster")
local isolated = require("helpers.isolated")
local cjson = require("cjson").new()

local BUDGET_MS, HEAP = 300, 16 * 1024 * 1024
local LIMITS = { "-D", "detector.batch.timeout.ms=" .. BUDGET_MS, "-D", "detector.memory.limit.bytes=" .. HEAP }
-- A run that ends in time: the process start, a few budgets, the grace of a
-- call stuck in C (bindings/guard.h), and room for a busy machine.
local RUN_BOUND_S = 8

-- What becomes of each detector's record "go" (the others pass), and of the
-- record after it when that is not a plain pass:
--   emit = value it emits; dead = class it is dead-lettered with;
--   refused = it does not load (exit 2), its reason; watchdog = the process
--   ends (exit 3) naming it; close = class of the error of close().
local CORPUS = {
  escape_io = { emit = "contained" },
  escape_os = { emit = "contained" },
  escape_debug = { emit = "contained" },
  escape_bytecode = { emit = "contained" },
  escape_fenv = { emit = "contained" },
  escape_metatables = { emit = "contained" },
  loop = { dead = "TimeoutError" },
  loop_catching = { dead = "TimeoutError" },
  loop_callback = { dead = "TimeoutError" },
  loop_coroutine = { dead = "TimeoutError" },
  loop_clock = { dead = "TimeoutError" },
  tostring_hang = { dead = "TimeoutError" },
  log_flood = { dead = "TimeoutError", log = "dropped %d+ log lines past the first 10000" },
  backtrack = { watchdog = true },
  load_hang = { refused = "TimeoutError: .*load_hang%.lua:%d+: watchdog" },
  init_hang = { refused = "TimeoutError: .*init_hang%.lua:%d+: watchdog" },
  punctuate_hang = { log = "punctuator .*TimeoutError: .*punctuate_hang%.lua:%d+: watchdog" },
  close_hang = { close = "TimeoutError" },
  table_bomb = { dead = "MemoryError" },
  rep_bomb = { dead = "MemoryError" },
  concat_bomb = { dead = "MemoryError" },
  gsub_bomb = { dead = "MemoryError" },
  keep_bomb = { dead = "MemoryError", after = "MemoryError" },
  coroutine_bomb = { dead = "MemoryError" },
  emit_flood = { dead = "ProcessError", message = "out of memory while emitting" },
  load_bomb = { refused = "MemoryError: .*load_bomb%.lua" },
  stack_bomb = { dead = "ProcessError", message = "stack overflow" },
  error_objects = { dead = "ProcessError", message = "%(error object is a table value%)", extra = { "go2", "go3" } },
  forge_output = { dead = "ProcessError", message = "^\n  error at forged:1: ProcessError: forged\n$" },
  -- (its own ctx.emit it replaced: it emits nothing more, which is its doing)
  tide_module = { after = "nothing" },
  -- (only tide test prints dead letters under that name: the driver loads it)
  dead_letters_output = { refused = "cannot be told apart from the dead letters", cli_only = true },
}

local function fixture(name) return cluster.fixture("hostile/" .. name .. ".lua") end

local function input_records(expect)
  local values = { "before", "go" }
  for _, v in ipairs(expect.extra or {}) do values[#values + 1] = v end
  values[#values + 1] = "after"
  local recs = {}
  for i, v in ipairs(values) do recs[i] = { key = "k" .. i, value = v } end
  return recs
end

local function jsonl(records)
  local lines = {}
  for i, r in ipairs(records) do lines[i] = cjson.encode(r) end
  lines[#lines + 1] = '{"advance_wall_clock": "2s"}'
  return table.concat(lines, "\n") .. "\n"
end

--- Every stdout line of `tide test`, decoded: records by value, dead
--- letters by value.
local function outputs_of(stdout)
  local out, dead = {}, {}
  for line in stdout:gmatch("[^\n]+") do
    local ok, r = pcall(cjson.decode, line)
    assert(ok and type(r) == "table", "stdout line is not a JSON record: " .. line:sub(1, 200))
    if r.topic == "dead-letters" then dead[r.value] = r.headers
    else out[r.value] = (out[r.value] or 0) + 1 end
  end
  return out, dead
end

local function tide(args)
  local argv = { cluster.bin() }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  for _, a in ipairs(LIMITS) do argv[#argv + 1] = a end
  return isolated.command(argv, { timeout = 30 })
end

--- The checks every run shares: it ended, in time, with a code that says
--- what happened and words on stderr.
local function ended_well(res, name, expect)
  assert.is_false(res.timed_out, name .. ": did not end:\n" .. res.stderr:sub(1, 2000))
  assert.is_nil(res.signal, name .. ": killed by a signal")
  assert.is_true(res.elapsed < RUN_BOUND_S, name .. ": took " .. res.elapsed .. " s")
  if expect.refused then
    assert.equal(2, res.code, name .. "\n" .. res.stderr)
    assert.matches(expect.refused, res.stderr)
  elseif expect.watchdog then
    assert.equal(3, res.code, name .. "\n" .. res.stderr)
    assert.matches("tide: watchdog: [^\n]*" .. name .. "%.lua[^\n]*still running", res.stderr)
  end
end

describe("integration: hostile detectors", function()
  after_each(isolated.cleanup)

  local names = {}
  for name in pairs(CORPUS) do names[#names + 1] = name end
  table.sort(names)

  it("covers every fixture of spec/fixtures/hostile", function()
    local p = assert(io.popen("ls " .. cluster.spec_dir .. "/fixtures/hostile/*.lua"))
    for path in p:lines() do
      local name = path:match("([%w_]+)%.lua$")
      assert.is_true(name == "healthy" or CORPUS[name] ~= nil, name .. " has no expectation here")
    end
    p:close()
  end)

  it("holds each under tide test", function()
    for _, name in ipairs(names) do
      local expect = CORPUS[name]
      local input = isolated.file(name .. ".jsonl", jsonl(input_records(expect)))
      local res = tide({ "test", fixture(name), "--input", input })
      ended_well(res, name, expect)
      if not (expect.refused or expect.watchdog) then
        local out, dead = outputs_of(res.stdout)
        local limits = expect.dead == "MemoryError" or expect.dead == "TimeoutError" or expect.close
        assert.equal(limits and 3 or 0, res.code, name .. "\n" .. res.stderr)
        assert.equal(1, out.before, name .. ": the record before")
        if expect.emit then assert.equal(1, out[expect.emit], name) end
        if expect.dead then
          local h = assert(dead.go, name .. ": no dead letter for go\n" .. res.stdout)
          assert.equal(expect.dead, h["tide.error.class"], name)
          assert.matches(expect.message or ("%.lua"), h["tide.error.message"], nil, name)
        end
        if expect.after == nil then assert.equal(1, out.after, name .. ": the record after\n" .. res.stderr)
        elseif expect.after == "nothing" then assert.is_nil(out.after, name)
        else assert.equal(expect.after, dead.after["tide.error.class"], name) end
        if expect.close then assert.matches("error at close: " .. expect.close, res.stderr) end
        if expect.log then assert.matches(expect.log, res.stderr) end
        -- what the detector said stays on its own lines: no forged report line
        for line in res.stderr:gmatch("[^\n]+") do
          assert.is_nil(line:match("^healthy%.lua"), name .. ": forged line " .. line)
          assert.is_nil(line:match("^  error at forged"), name .. ": forged line " .. line)
        end
      end
    end
  end)

  it("holds each under tide replay --file beside a healthy detector, whose report stays true", function()
    local healthy = fixture("healthy")
    for _, name in ipairs(names) do
      local expect = CORPUS[name]
      local recs = input_records(expect)
      local input = isolated.file(name .. ".jsonl", jsonl(recs))
      local res = tide({ "replay", fixture(name), "--against", healthy, "--file", input })
      ended_well(res, name, expect)
      if not (expect.refused or expect.watchdog) then
        assert.matches("\n" .. healthy:gsub("%p", "%%%0") .. (" %%(healthy%%): records in: %d, out: %d out, "
          .. "dead letters: 0, errors: 0\n"):format(#recs, #recs), "\n" .. res.stderr, nil, name)
        -- the running version's records, as printed, are exactly the healthy ones
        local want = {}
        for _, r in ipairs(recs) do want[r.value:upper()] = true end
        for line in res.stdout:gmatch("[^\n]+") do
          local sign, json = line:match("^([-+ ])({.*)$")
          if sign then
            local r = cjson.decode(json)
            if sign == "-" then assert.is_true(want[r.value], name .. ": " .. line) end
          end
        end
      end
    end
  end)

  it("holds each under the busted test driver", function()
    for _, name in ipairs(names) do
      local expect = CORPUS[name]
      local values = {}
      for i, r in ipairs(input_records(expect)) do values[i] = ("%q"):format(r.value) end
      local res = isolated.lua(([[
local cjson = require("cjson")
local testing = require("tide.testing")
local ok, d = pcall(testing.driver, %q, { memory = %d, timeout_ms = %d })
if not ok then print(cjson.encode({ load_error = tostring(d) })) return end
for _, v in ipairs({ %s }) do
  local pok, perr = pcall(d.pipe, d, "in", "k", v)
  local errs = d:errors()
  print(cjson.encode({ value = v, class = errs[1] and errs[1].class or cjson.null,
    message = errs[1] and errs[1].message or cjson.null, raised = not pok and tostring(perr) or cjson.null,
    out = #d:read("out") }))
end
local aok = pcall(d.advance_wall_clock, d, "2s")
local cok, cerr = pcall(d.close, d)
print(cjson.encode({ close = cok and cjson.null or tostring(cerr), advanced = aok }))
]]):format(fixture(name), HEAP, BUDGET_MS, table.concat(values, ", ")), { timeout = 30 })
      assert.is_false(res.timed_out, name .. ": did not end")
      assert.is_true(res.elapsed < RUN_BOUND_S, name .. ": took " .. res.elapsed .. " s")
      if expect.watchdog then
        assert.equal(3, res.code, name .. "\n" .. res.stderr)
        assert.matches("tide: watchdog: [^\n]*" .. name .. "%.lua", res.stderr)
      else
        assert.equal(0, res.code, name .. "\n" .. res.stderr)
        local lines = res.lines
        if expect.cli_only then
          assert.equal("before", lines[1].value, name)
        elseif expect.refused then
          assert.matches(expect.refused:gsub("^[%a]+: ", ""), lines[1].load_error, nil, name)
        else
          local by = {}
          for _, l in ipairs(lines) do if l.value then by[l.value] = l end end
          assert.equal(1, by.before.out, name)
          if expect.dead then
            assert.equal(expect.dead, by.go.class, name .. ": " .. tostring(by.go.message))
          else
            assert.equal(cjson.null, by.go.class, name .. ": " .. tostring(by.go.message))
          end
          if expect.after == nil then assert.equal(1, by.after.out, name) end
          if expect.close then assert.matches(expect.close, lines[#lines].close, nil, name) end
        end
      end
    end
  end)
end)

describe("integration: hostile detectors in a tide run folder", function()
  local c = cluster.suite("hostile", { "in:2", "out:2" })

  it("keep the healthy detector beside them producing", function()
    local dir = c:path("detectors")
    assert(os.execute("mkdir -p " .. dir))
    for _, name in ipairs({ "healthy", "loop", "table_bomb", "backtrack", "escape_metatables",
      "error_objects", "forge_output", "tide_module", "emit_flood", "log_flood" }) do
      assert(os.execute(("cp %s %s/%s.lua"):format(fixture(name), dir, name)))
    end
    local host = c:run(dir, { name = "host", config = { ["admin.port"] = 0,
      ["detector.batch.timeout.ms"] = 500, ["detector.memory.limit.bytes"] = HEAP } })
    host:wait_for_log({ detector = "healthy", msg = "partitions assigned" }, 60)
    local values = { "before", "go", "go2", "go3", "after" }
    for i = 1, 20 do values[#values + 1] = "n" .. i end
    local records = {}
    for i, v in ipairs(values) do records[i] = { key = "k" .. i, value = v } end
    c:produce("in", records)
    -- the healthy detector's outputs are the upper-cased values
    local deadline = cluster.now() + 60
    local seen
    repeat
      seen = {}
      for _, r in ipairs(c:consume("out", { idle_ms = 700 })) do
        if r.value and r.value == r.value:upper() and r.value:match("%u") then seen[r.value] = true end
      end
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      if n == #values then break end
      assert.is_true(host:running(), "the host ended:\n" .. host:log_tail(30))
      cluster.pause(200)
    until cluster.now() > deadline
    for _, v in ipairs(values) do assert.is_true(seen[v:upper()], "healthy never produced " .. v:upper()) end
    assert.is_true(host:running(), host:log_tail(30))
    -- what the hostile ones logged is in JSON lines like the rest, and a
    -- detector that logs in a loop is held to a rate
    assert.same({}, cluster.bad_log_lines(host))
    local flood = #host:find_events(function(e) return e.detector == "log_flood" and type(e.msg) == "string"
      and e.msg:find("^flood") end)
    assert.is_true(flood > 0 and flood < 20000, "log_flood logged " .. flood .. " lines")
    assert.is_table(host:find_events(function(e) return e.detector == "log_flood" and type(e.msg) == "string"
      and e.msg:find("^the detector logs more than 1000 lines a second") end)[1])
  end)
end)
