-- `tide reset DETECTOR_OR_FILE` against the development broker: a stopped
-- detector is reset (input offsets, changelog, local state) and its rerun
-- gives the outputs of its first run; a dry run changes nothing; a detector
-- running on this host is not reset.
--
-- What the development broker (librdkafka's mock cluster) cannot show: it has
-- no DescribeGroups (members elsewhere go unseen: only this host is checked),
-- no DeleteTopics (changelogs are emptied with tombstones instead) and no
-- timestamp lookups (--to-datetime and --by-duration resolve to the end).
local cluster = require("helpers.cluster")

local COUNTER = [[
return {
  name = "counter", inputs = { "rs-in" }, outputs = { "rs-out" },
  stores = { counts = tide.kv() },
  process = function(rec, ctx)
    local n = (ctx.stores.counts:get(rec.key) or 0) + 1
    ctx.stores.counts:put(rec.key, n)
    ctx:emit("rs-out", rec.key, tostring(n))
  end,
}
]]

local N = 60

local function dir_exists(path)
  local f = io.open(path .. "/.", "rb")
  if f then f:close() return true end
  return false
end

--- The values of records per key, in partition then offset order.
local function by_key(records)
  table.sort(records, function(a, b)
    if a.partition ~= b.partition then return a.partition < b.partition end
    return a.offset < b.offset
  end)
  local out = {}
  for _, r in ipairs(records) do
    out[r.key] = out[r.key] or {}
    table.insert(out[r.key], r.value)
  end
  return out
end

describe("integration: tide reset", function()
  local c = cluster.suite("reset", { "rs-in:2", "rs-out:2", "rst.counter-counts-changelog:2",
    "rst2.counter-counts-changelog:2" })
  local file

  local function config(state_dir)
    return { ["state.dir"] = state_dir, ["commit.interval.ms"] = 200,
      ["consumer.session.timeout.ms"] = 3000, ["consumer.heartbeat.interval.ms"] = 500 }
  end

  --- `tide reset file ...` with the detector's own configuration: exit
  --- code, stdout, stderr.
  local function reset(app, state_dir, extra)
    local argv = { cluster.bin(), "reset", file, "-b", c.addr, "-D", "application.id=" .. app }
    for k, v in pairs(config(state_dir)) do
      argv[#argv + 1] = "-D"
      argv[#argv + 1] = k .. "=" .. v
    end
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    local p = c:spawn(argv, { name = "reset" })
    local code = p:wait(90)
    return code, p:stdout_text(), p:stderr_text()
  end

  lazy_setup(function()
    file = c:path("counter.lua")
    cluster.write_file(file, COUNTER)
  end)

  it("resets a stopped detector: its rerun gives the first run's outputs", function()
    local keyed = {}
    for i = 1, N do keyed[i] = ("k%d:v%d"):format(i % 7, i) end
    c:produce("rs-in", keyed, { key_separator = ":" })
    local state_dir = c:path("state")
    local first = c:run(file, { app = "rst", name = "first", count = N, config = config(state_dir) })
    assert.equal(0, first:wait(60), first:log_tail(20))
    local out1 = c:wait_for_records("rs-out", N, 30)
    assert.equal(N, #out1)
    assert.is_true(dir_exists(state_dir .. "/rst/counter/rocksdb"))

    -- a dry run says what it would do and changes nothing
    local code, text = reset("rst", state_dir, { "--dry-run" })
    assert.equal(0, code, text)
    assert.matches("dry run", text)
    assert.matches("rs%-in%[0%]: %d+ %-> 0", text)
    assert.matches("rst%.counter%-counts%-changelog: would be deleted", text)
    assert.matches("would be removed", text)
    assert.is_true(dir_exists(state_dir .. "/rst/counter/rocksdb"), "a dry run removed the state")

    -- the other targets, shown by dry runs: the end, given offsets (clamped
    -- to what the partition holds), a time (the mock has no timestamp
    -- lookup: it answers "none", which resets to the end, as Kafka's tool)
    local ends = {}
    for p, from in text:gmatch("rs%-in%[(%d)%]: (%d+) %-> 0") do ends[tonumber(p)] = tonumber(from) end
    code, text = reset("rst", state_dir, { "--dry-run", "--to-latest" })
    assert.equal(0, code, text)
    for p = 0, 1 do assert.matches(("rs%%-in%%[%d%%]: %d %%-> %d\n"):format(p, ends[p], ends[p]), text) end
    code, text = reset("rst", state_dir, { "--dry-run", "--to-offsets", "rs-in:0:5,rs-in:1:100000" })
    assert.equal(0, code, text)
    assert.matches(("rs%%-in%%[0%%]: %d %%-> 5\n"):format(ends[0]), text)
    assert.matches(("rs%%-in%%[1%%]: %d %%-> %d\n"):format(ends[1], ends[1]), text)
    code, text = reset("rst", state_dir, { "--dry-run", "--by-duration", "1h" })
    assert.equal(0, code, text)
    assert.matches(("rs%%-in%%[0%%]: %d %%-> %d\n"):format(ends[0], ends[0]), text)
    assert.equal(2, (reset("rst", state_dir, { "--to-datetime", "2024-13-99T00:00:00Z" })))
    assert.equal(2, (reset("rst", state_dir, { "--by-duration", "5x" })))

    code, text = reset("rst", state_dir)
    assert.equal(0, code, text)
    local moved = 0
    for p, from in text:gmatch("rs%-in%[(%d)%]: (%d+) %-> 0") do moved = moved + tonumber(from) end
    assert.equal(N, moved, "the committed offsets before the reset add up to the records read:\n" .. text)
    assert.matches("rst%.counter%-counts%-changelog: emptied", text)
    assert.matches("dead%-letter topic rst%.counter%-dlq: kept", text)
    assert.matches("local state .* removed", text)
    assert.matches("\ndone\n$", text)
    assert.is_false(dir_exists(state_dir .. "/rst/counter"))

    local second = c:run(file, { app = "rst", name = "second", count = N, config = config(state_dir) })
    assert.equal(0, second:wait(60), second:log_tail(20))
    local all = c:wait_for_records("rs-out", 2 * N, 30)
    assert.equal(2 * N, #all, "the rerun emitted once per input record")
    -- the rerun's outputs, told apart by their offsets: per key, the same counts
    local firsts, seconds = {}, {}
    local per_part = {}
    for _, r in ipairs(out1) do per_part[r.partition] = (per_part[r.partition] or 0) + 1 end
    for _, r in ipairs(all) do
      if r.offset < (per_part[r.partition] or 0) then firsts[#firsts + 1] = r
      else seconds[#seconds + 1] = r end
    end
    assert.same(by_key(firsts), by_key(seconds))
    -- and counts from 1: the state was empty (k1 is keyed 9 times in 1..60)
    assert.same({ "1", "2", "3", "4", "5", "6", "7", "8", "9" }, by_key(seconds).k1)
  end)

  it("refuses to reset a detector that runs on this host, and changes nothing", function()
    local state_dir = c:path("state-running")
    local running = c:run(file, { app = "rst2", name = "running", config = config(state_dir) })
    running:wait_for_log({ detector = "counter", msg = "partitions assigned" })
    local code, text, err = reset("rst2", state_dir)
    assert.equal(1, code, text .. err)
    assert.matches("a worker of counter runs on this host %(process %d+ holds .*LOCK%)", err)
    assert.is_nil(text:find("\ndone\n", 1, true))
    assert.is_true(dir_exists(state_dir .. "/rst2/counter/rocksdb"), "the state was removed")
    assert.is_true(running:running(), "the detector was stopped")
  end)
end)
