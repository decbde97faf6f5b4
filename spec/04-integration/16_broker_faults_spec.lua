-- What a real broker does and a quiet development broker hides, made to
-- happen: brokers down and up, slow answers, refused requests, a missing
-- topic with auto-create off, and the transaction paths. A worker must ride
-- each one out (it never ends because the broker is slow or away), lose no
-- record, and say what happened. Duplicates are allowed under
-- at-least-once; each test counts and prints them.
local cluster = require("helpers.cluster")
local cjson = require("cjson")
local http = require("socket.http")

local TRANSFORMER = [[
return { name = "%s", inputs = { "%s" }, outputs = { "%s" },
  process = function(rec, ctx) ctx:emit("%s", rec.key, "out-" .. rec.value) end }
]]

local COUNTER = [[
return { name = "%s", inputs = { "%s" }, outputs = { "%s" },
  stores = { counts = tide.kv() },
  process = function(rec, ctx)
    local n = (ctx.stores.counts:get(rec.key) or 0) + 1
    ctx.stores.counts:put(rec.key, n)
    ctx:emit("%s", rec.key, rec.key .. "=" .. n)
  end }
]]

local function detector(c, template, name, input, output)
  local path = c:path(name .. ".lua")
  local f = assert(io.open(path, "w"))
  f:write(template:format(name, input, output, output))
  f:close()
  return path
end

--- Values from..to, keyed over 16 keys.
local function numbered(from, to)
  local list = {}
  for i = from, to do list[#list + 1] = { key = "k" .. (i % 16), value = tostring(i) } end
  return list
end

--- How many of values from..to came out, and how many more than once.
local function tally(out, from, to)
  local seen, dups = {}, 0
  for _, r in ipairs(out) do
    local n = tonumber(tostring(r.value):match("^out%-(%d+)$"))
    if n then
      if seen[n] then dups = dups + 1 end
      seen[n] = true
    end
  end
  local lost = {}
  for i = from, to do
    if not seen[i] and #lost < 10 then lost[#lost + 1] = i end
  end
  local n_lost = 0
  for i = from, to do n_lost = n_lost + (seen[i] and 0 or 1) end
  return n_lost, dups, lost
end

local function expect_all(c, output, from, to, what)
  c:wait_for_records(output, to - from + 1, 120)
  local n_lost, dups, lost = tally(c:consume(output, { idle_ms = 1500, timeout = 120 }), from, to)
  io.stdout:write(("    note: %s: %d records, %d lost, %d duplicates\n"):format(what, to - from + 1,
    n_lost, dups))
  assert.are.equal(0, n_lost, what .. ": lost records, e.g. " .. table.concat(lost, ", "))
  return dups
end

local function logged(proc, needle)
  return #proc:find_events(function(e) return tostring(e.msg):find(needle, 1, true) ~= nil end) > 0
end

describe("integration: broker faults", function()
  local c = cluster.suite("faults", {
    "fa-in:4", "fa-out:4", "fb-in:4", "fb-out:4", "fc-in:4", "fc-out:4", "fd-in:4", "fd-out:4",
    "fe-in:4", "fe-out:4", "ff-in:4", "fg-in:4", "fg-out:4", "fh-in:4", "fh-out:4",
    "fi-in:4", "fi-out:4", "fj-in:4", "fj-out:4", "fk-in:4", "fk-out:4" })

  local APIS = { "Produce", "OffsetCommit", "AddOffsetsToTxn", "TxnOffsetCommit", "EndTxn" }

  after_each(function()
    -- Whatever a test did to the broker, the next one starts on a sound one:
    -- its brokers up, answering at once, with no error left queued.
    pcall(c.broker_up, c)
    pcall(c.rtt, c, nil, 0)
    for _, api in ipairs(APIS) do pcall(c.clear_errors, c, api) end
  end)

  it("rides out all brokers down for 15 s mid-run, and loses nothing", function()
    local d = detector(c, TRANSFORMER, "fa", "fa-in", "fa-out")
    local p = c:run(d, { name = "fa", config = { ["commit.interval.ms"] = 500 } })
    p:wait_for_log("partitions assigned", 30)
    c:produce("fa-in", numbered(1, 5000))
    c:wait_for_records("fa-out", 1000, 60, { watch = p })
    local feeder = c:produce_async("fa-in", numbered(5001, 10000))
    c:broker_down()
    local t0 = cluster.now()
    cluster.eventually(function() return cluster.now() - t0 >= 15 end, 30, "the outage (15 s)",
      { watch = p, every = 500 })
    assert.is_true(p:running(), "the worker ended during the outage\n" .. p:log_tail(20))
    c:broker_up()
    assert.are.equal(0, feeder:wait(120), "feeder: " .. feeder:status_text())
    expect_all(c, "fa-out", 1, 10000, "15 s outage")
    assert.is_true(logged(p, "broker unreachable"), "the outage is logged\n" .. p:log_tail(20))
    assert.is_true(logged(p, "broker reachable again"), "its end is logged\n" .. p:log_tail(20))
    p:kill("TERM")
    assert.are.equal(0, p:wait(30), "after the outage: " .. p:status_text() .. "\n" .. p:log_tail(20))
  end)

  it("starts with the brokers down, and works once they come up 10 s later", function()
    local d = detector(c, TRANSFORMER, "fb", "fb-in", "fb-out")
    c:produce("fb-in", numbered(1, 3000))
    c:broker_down()
    local p = c:run(d, { name = "fb" })
    local t0 = cluster.now()
    cluster.eventually(function() return cluster.now() - t0 >= 10 end, 30, "10 s of brokers down",
      { watch = p, every = 500 })
    c:broker_up()
    expect_all(c, "fb-out", 1, 3000, "start while down")
    assert.is_true(p:running(), p:log_tail(20))
    p:kill("TERM")
    assert.are.equal(0, p:wait(30), p:status_text() .. "\n" .. p:log_tail(20))
  end)

  it("works with a 5 s round-trip time", function()
    local d = detector(c, TRANSFORMER, "fc", "fc-in", "fc-out")
    c:produce("fc-in", numbered(1, 300))
    -- Small fetches, so that the records come over several slow answers; a
    -- session that outlasts them. It stops by itself once the 300 records
    -- are processed, and commits them on the way out.
    local p = c:run(d, { name = "fc", count = 300, config = { ["shutdown.timeout.ms"] = 60000,
      ["consumer.max.partition.fetch.bytes"] = 1024, ["consumer.session.timeout.ms"] = 45000,
      ["consumer.heartbeat.interval.ms"] = 3000 } })
    p:wait_for_log("partitions assigned", 30)
    c:rtt(nil, 5000)
    assert.are.equal(0, p:wait(180), p:status_text() .. "\n" .. p:log_tail(20))
    c:rtt(nil, 0)
    local stopped = cluster.stopped(p)
    assert.are.equal("300", tostring(stopped.records_in))
    assert.is_true(tonumber(stopped.commits) >= 1, "it committed on the way out\n" .. p:log_tail(20))
    assert.are.equal("0", tostring(stopped.rollbacks), "a slow broker is no failure")
    expect_all(c, "fc-out", 1, 300, "5 s RTT")
  end)

  it("retries refused OffsetCommit and Produce requests without losing or ending anything", function()
    local d = detector(c, TRANSFORMER, "fd", "fd-in", "fd-out")
    local p = c:run(d, { name = "fd", config = { ["commit.interval.ms"] = 200 } })
    p:wait_for_log("partitions assigned", 30)
    c:push_errors("OffsetCommit", { "REQUEST_TIMED_OUT", "COORDINATOR_LOAD_IN_PROGRESS", "NOT_COORDINATOR" })
    c:push_errors("Produce", { "NOT_ENOUGH_REPLICAS", "LEADER_NOT_AVAILABLE" })
    c:produce("fd-in", numbered(1, 4000))
    expect_all(c, "fd-out", 1, 4000, "refused requests")
    p:kill("TERM")
    assert.are.equal(0, p:wait(30), p:status_text() .. "\n" .. p:log_tail(20))
    -- After the shutdown commit nothing is left uncommitted: a restart reads nothing again.
    local again = c:run(d, { name = "fd-again", app = p.app, idle_timeout_ms = 1500 })
    assert.are.equal(0, again:wait(60), again:status_text())
    assert.are.equal("0", tostring(cluster.stopped(again).records_in))
  end)

  it("names a missing output topic (auto-create off), holds, and resumes once it exists", function()
    local d = detector(c, TRANSFORMER, "fe", "fe-in", "fe-missing-out")
    c:produce("fe-in", numbered(1, 500))
    local p = c:run(d, { name = "fe", config = { ["producer.allow.auto.create.topics"] = "false" } })
    p:wait_for_log(function(e)
      local m = tostring(e.msg)
      return m:find("fe-missing-out", 1, true) and m:find("does not exist", 1, true) and
        m:find("fe", 1, true)
    end, 30)
    assert.is_true(p:running(), "it holds; it does not end\n" .. p:log_tail(20))
    assert.is_nil(c:topic_partitions("fe-missing-out"), "tide did not create the output")
    c:create_topic("fe-missing-out", 4)
    expect_all(c, "fe-missing-out", 1, 500, "missing output")
    assert.is_true(logged(p, "exists now: resuming"), p:log_tail(20))
    p:kill("TERM")
    assert.are.equal(0, p:wait(30), p:status_text())
  end)

  it("dead-letters a bad record into a dead-letter topic it could not create until it exists", function()
    local path = c:path("ff.lua")
    local f = assert(io.open(path, "w"))
    f:write([[return { name = "ff", inputs = { "ff-in" }, outputs = {},
      process = function(rec) if rec.value == "bad" then error("bad record") end end }]])
    f:close()
    c:produce("ff-in", { "ok-1", "bad", "ok-2" })
    local p = c:run(path, { name = "ff", config = { ["producer.allow.auto.create.topics"] = "false" } })
    local dlq = p.app .. ".ff-dlq"
    p:wait_for_log(function(e) return tostring(e.msg):find(dlq, 1, true) ~= nil end, 30)
    assert.is_true(p:running(), p:log_tail(20))
    c:create_topic(dlq, 4)
    c:wait_for_records(dlq, 1, 60, { watch = p })
    local dead = c:consume(dlq, { idle_ms = 1000 })
    assert.are.equal(1, #dead)
    assert.are.equal("bad", dead[1].value)
    p:kill("TERM")
    assert.are.equal(0, p:wait(30), p:status_text())
  end)

  it("commits offsets through transactions only under exactly_once_v2, and through the group otherwise",
    function()
    local d = detector(c, TRANSFORMER, "fg", "fg-in", "fg-out")
    c:produce("fg-in", numbered(1, 1000))
    local function requests(guarantee)
      c:clear_requests()
      c:track_requests(true)
      local p = c:run(d, { name = "fg-" .. guarantee, idle_timeout_ms = 1500,
        config = { ["processing.guarantee"] = guarantee } })
      assert.are.equal(0, p:wait(60), p:status_text() .. "\n" .. p:log_tail(20))
      local r = c:requests()
      c:track_requests(false)
      return r
    end
    local eos = requests("exactly_once_v2")
    assert.is_true((eos.InitProducerId or 0) >= 1, cjson.encode(eos))
    assert.is_true((eos.TxnOffsetCommit or 0) >= 1, cjson.encode(eos))
    assert.is_true((eos.EndTxn or 0) >= 1, cjson.encode(eos))
    assert.is_nil(eos.OffsetCommit, "a consumer commit under exactly_once_v2: " .. cjson.encode(eos))
    local alos = requests("at_least_once")
    assert.is_true((alos.OffsetCommit or 0) >= 1, cjson.encode(alos))
    assert.is_nil(alos.EndTxn, cjson.encode(alos))
  end)

  it("aborts on refused transaction requests and a coordinator down mid-transaction, rolls the state back, " ..
    "and counts exactly", function()
    local d = detector(c, COUNTER, "fh", "fh-in", "fh-out")
    -- A session that outlives the outage: the mock keeps no transactional
    -- offsets, so partitions lost and assigned again would start over.
    local p = c:run(d, { name = "fh", config = { ["processing.guarantee"] = "exactly_once_v2",
      ["consumer.session.timeout.ms"] = 30000, ["consumer.heartbeat.interval.ms"] = 1000 } })
    p:wait_for_log("partitions assigned", 30)
    c:produce("fh-in", numbered(1, 2000))
    c:wait_for_records("fh-out", 500, 60, { watch = p })
    -- A stale group member's offsets cannot join the transaction: it must
    -- abort (twice); the coordinator loading or moving is retried.
    c:push_errors("TxnOffsetCommit", { "UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION" })
    c:push_errors("AddOffsetsToTxn", { "COORDINATOR_LOAD_IN_PROGRESS" })
    c:push_errors("EndTxn", { "NOT_COORDINATOR" })
    c:produce("fh-in", numbered(2001, 4000))
    c:wait_for_records("fh-out", 2500, 60, { watch = p })
    c:broker_down()
    local t0 = cluster.now()
    cluster.eventually(function() return cluster.now() - t0 >= 3 end, 20, "the coordinator down 3 s",
      { watch = p, every = 250 })
    c:broker_up()
    c:produce("fh-in", numbered(4001, 6000))
    -- Every key's last count equals its input count: nothing counted twice
    -- after the aborts (the mock shows aborted records too; the last output
    -- of a key is the one after its last rollback).
    local truth = {}
    for i = 1, 6000 do truth["k" .. (i % 16)] = (truth["k" .. (i % 16)] or 0) + 1 end
    cluster.eventually(function()
      local last = {}
      for _, r in ipairs(c:consume("fh-out", { idle_ms = 700 })) do
        local k, n = tostring(r.value):match("^(.-)=(%d+)$")
        last[k] = math.max(last[k] or 0, tonumber(n))
      end
      for k, n in pairs(truth) do
        if last[k] ~= n then return false end
      end
      return true
    end, 120, "every key's count to reach its input count", { watch = p, every = 1000 })
    p:kill("TERM")
    assert.are.equal(0, p:wait(30), p:status_text() .. "\n" .. p:log_tail(20))
    local stopped = cluster.stopped(p)
    assert.is_true(tonumber(stopped.rollbacks) >= 1, "no transaction was aborted\n" .. p:log_tail(30))
  end)

  it("ends a fenced worker (exit code 6) without committing, and its restart carries on", function()
    local d = detector(c, TRANSFORMER, "fi", "fi-in", "fi-out")
    local p = c:run(d, { name = "fi", config = { ["processing.guarantee"] = "exactly_once_v2" } })
    p:wait_for_log("partitions assigned", 30)
    c:produce("fi-in", numbered(1, 500))
    c:wait_for_records("fi-out", 500, 60, { watch = p })
    -- A newer producer with its transactional.id took over (the mock gives
    -- each InitProducerId a new producer id, so the fence is injected).
    c:push_errors("EndTxn", { "PRODUCER_FENCED" })
    c:produce("fi-in", numbered(501, 1000))
    local code = p:wait(60)
    assert.are.equal(6, code, "the fenced worker: " .. p:status_text() .. "\n" .. p:log_tail(20))
    local again = c:run(d, { name = "fi-again", app = p.app, idle_timeout_ms = 2000,
      config = { ["processing.guarantee"] = "exactly_once_v2" } })
    assert.are.equal(0, again:wait(60), again:status_text() .. "\n" .. again:log_tail(20))
    expect_all(c, "fi-out", 1, 1000, "after a fence")
  end)

  it("under tide run DIR, rides out all brokers down for 15 s: the same worker, not ready meanwhile",
    function()
    local dir = c:path("fj-detectors")
    assert(os.execute("mkdir -p " .. dir))
    local f = assert(io.open(dir .. "/fj.lua", "w"))
    f:write(TRANSFORMER:format("fj", "fj-in", "fj-out", "fj-out"))
    f:close()
    local host = c:run(dir, { name = "fj-host",
      config = { ["admin.port"] = 0, ["commit.interval.ms"] = 500 } })
    local ev = host:wait_for_log(function(e)
      return e.msg and e.msg:find("admin server listening", 1, true)
    end)
    local port = tonumber(ev.msg:match("127%.0%.0%.1:(%d+)"))
    local function get(path)
      local body, code = http.request(("http://127.0.0.1:%d%s"):format(port, path))
      return body, code
    end
    local function fj()
      local body, code = get("/api/detectors")
      if code ~= 200 then return nil end
      for _, d in ipairs(cjson.decode(body).detectors) do
        if d.name == "fj" then return d end
      end
    end
    host:wait_for_log({ detector = "fj", msg = "partitions assigned" })
    c:produce("fj-in", numbered(1, 5000))
    c:wait_for_records("fj-out", 1000, 60, { watch = host })
    local pid = fj().pid
    local feeder = c:produce_async("fj-in", numbered(5001, 10000))
    c:broker_down()
    local t0 = cluster.now()
    local body = cluster.eventually(function()
      local b, code = get("/readyz")
      return code == 503 and b:find("fj running: broker unreachable for", 1, true) and b
    end, 30, "/readyz naming the wait for the broker", { watch = host })
    assert.matches("^not ready\n", body)
    assert.is_number(fj().broker_waiting_since_ms, "/api/detectors says since when")
    assert.matches("\ntide_broker_waiting{detector=\"fj\"} 1\n", (get("/metrics")))
    cluster.eventually(function() return cluster.now() - t0 >= 15 end, 30, "the outage (15 s)",
      { watch = host, every = 500 })
    assert.are.equal(pid, fj().pid, "the worker was restarted during the outage\n" .. host:log_tail(20))
    c:broker_up()
    assert.are.equal(0, feeder:wait(120), "feeder: " .. feeder:status_text())
    expect_all(c, "fj-out", 1, 10000, "15 s outage under tide run DIR")
    cluster.eventually(function()
      local b, code = get("/readyz")
      return code == 200 and b == "ready\n"
    end, 60, "/readyz 200 once the broker is back", { watch = host })
    local d = fj()
    assert.are.equal(pid, d.pid, "the same worker throughout")
    assert.are.equal(cjson.null, d.broker_waiting_since_ms)
    host:kill("TERM")
    assert.are.equal(0, host:wait(30), host:status_text() .. "\n" .. host:log_tail(20))
  end)

  it("restores a task whose changelog's end the broker would not give once it does; nothing ends",
    function()
    local d = detector(c, COUNTER, "fk", "fk-in", "fk-out")
    local p = c:run(d, { name = "fk" })
    p:wait_for_log("partitions assigned", 30)
    c:produce("fk-in", numbered(1, 2000))
    c:wait_for_records("fk-out", 2000, 60, { watch = p })
    p:kill("TERM")
    assert.are.equal(0, p:wait(30), p:status_text() .. "\n" .. p:log_tail(20))
    -- A new state directory: every task restores from its changelog, and
    -- the broker refuses the changelogs' offsets for a while.
    local refusals = {}
    for i = 1, 8 do refusals[i] = "UNKNOWN" end
    c:push_errors("ListOffsets", refusals)
    local again = c:run(d, { name = "fk-again", app = p.app,
      config = { ["state.dir"] = c:path("state-fk-again") } })
    again:wait_for_log(function(e)
      return tostring(e.msg):find("waits for the broker", 1, true) ~= nil
    end, 60)
    again:wait_for_log(function(e)
      return tostring(e.msg):find("started: the broker answered", 1, true) ~= nil
    end, 60)
    c:produce("fk-in", numbered(2001, 2400))
    -- Every key counts on from its restored count: a task that ran
    -- unrestored would count from zero.
    cluster.eventually(function()
      local last = {}
      for _, r in ipairs(c:consume("fk-out", { idle_ms = 700 })) do
        local k, n = tostring(r.value):match("^(.-)=(%d+)$")
        last[k] = math.max(last[k] or 0, tonumber(n))
      end
      for k = 0, 15 do
        if last["k" .. k] ~= 150 then return false end
      end
      return true
    end, 60, "every key's count to reach 150", { watch = again, every = 1000 })
    assert.is_true(again:running(), "the worker ended\n" .. again:log_tail(20))
    again:kill("TERM")
    assert.are.equal(0, again:wait(30), again:status_text() .. "\n" .. again:log_tail(20))
  end)
end)
