-- Static membership (KIP-345): each worker joins its group with a
-- group.instance.id derived from the process id kept in its state.dir, so
-- that a restart on the same host is the same member. A static member
-- stopped as asked leaves its group (leave.group.on.close, default true: the
-- shutdown spec's survivor takes over at once); with false it stays, as
-- librdkafka and Kafka Streams leave a static member, and its partitions
-- wait for it until its session ends.
--
-- What the development broker cannot show: librdkafka's mock implements
-- static membership only for the KIP-848 protocol, not for the classic one
-- tide uses, so a restart within the session is a new member there (a
-- rebalance); a real Kafka (2.3 and later) hands the restarted member its
-- partitions with no rebalance.
local cluster = require("helpers.cluster")

local holding = cluster.holding

local function static_id(p)
  local ev = p:wait_for_log(function(e)
    return type(e.msg) == "string" and e.msg:find("^joining consumer group ") ~= nil
  end, 30)
  return ev.msg:match(" as static member (%S+)$"), ev.msg
end

describe("integration: static membership", function()
  local c = cluster.suite("static", { "st-in:4", "st-out:4", "pass-in:4", "pass-out:4" })
  local PASS = cluster.fixture("detectors/passthrough.lua")

  it("joins with an id from the process id in state.dir: the same after a restart, another elsewhere", function()
    local app = c:app_id("static-id")
    local dir = c:path("state-kept")
    local first = c:run(PASS, { app = app, name = "first", config = { ["state.dir"] = dir } })
    local id = static_id(first)
    local process_id = cluster.read_file(dir .. "/" .. app .. "/tide.process.id")
    assert.matches("^%x+$", process_id)
    assert.are.equal(app .. ".passthrough-" .. process_id, id)
    assert.is_true(first:kill("TERM"))
    assert.are.equal(0, first:wait(20))

    local again = c:run(PASS, { app = app, name = "again", config = { ["state.dir"] = dir } })
    assert.are.equal(id, static_id(again))
    local other = c:run(PASS, { app = app, name = "other" })
    local other_id = static_id(other)
    assert.is_string(other_id)
    assert.are_not.equal(id, other_id)
  end)

  it("joins as a dynamic member with group.instance.id=none, and with a given id as is", function()
    local none = c:run(PASS, { name = "none", config = { ["group.instance.id"] = "none" } })
    local id, msg = static_id(none)
    assert.is_nil(id, msg)
    local given = c:run(PASS, { name = "given", config = { ["group.instance.id"] = "host-7" } })
    assert.are.equal("host-7", (static_id(given)))
  end)

  it("refuses consumer.group.instance.id: tide sets it", function()
    local p = c:run(PASS, { name = "refused", config = { ["consumer.group.instance.id"] = "x" } })
    assert.are.equal(2, p:wait(20))
    assert.matches("group.instance.id is managed by tide", p:stderr_text())
  end)

  it("stays in the group when stopped with leave.group.on.close=false: its partitions wait", function()
    c:produce("st-in", { "one", "two", "three", "four" })
    local app = c:app_id("stay")
    local session_ms = 4000 * cluster.scale
    local config = { ["leave.group.on.close"] = "false", ["consumer.session.timeout.ms"] = session_ms,
      ["consumer.heartbeat.interval.ms"] = 250 }
    local src = c:path("st.lua")
    cluster.write_file(src, [[
return { name = "st", inputs = { "st-in" }, outputs = { "st-out" },
  process = function(rec, ctx) ctx:emit("st-out", rec.key, rec.value) end }
]])
    local a = c:run(src, { app = app, config = config, name = "a" })
    a:wait_for_log("partitions assigned", 30)
    local b = c:run(src, { app = app, config = config, name = "b" })
    cluster.await_split(a, b, nil, 4, 40)

    local t0 = cluster.now()
    assert.is_true(a:kill("TERM"))
    assert.are.equal(0, a:wait(15), a:log_tail(20))
    assert.is_table(a:find_events(function(ev)
      return type(ev.msg) == "string" and ev.msg:find("^closed without leaving the consumer group") ~= nil
    end)[1], "the log says it stayed in the group\n" .. a:log_tail(10))
    -- A member that left would be replaced within about session - 1 s (the
    -- shutdown spec); this one is still a member until its session ends,
    -- and the rebalance after that takes most of another session.
    local limit = (1.5 * session_ms - 500) / 1000
    while cluster.now() - t0 < limit do
      assert.is_true(holding(b) < 4, ("the survivor took every partition %.1fs after the other member "
        .. "stopped: it left the group"):format(cluster.now() - t0))
      assert.is_true(b:running(), "survivor exited\n" .. b:log_tail(20))
      cluster.pause(50)
    end
    -- and once its session is over, the survivor takes everything
    cluster.eventually(function() return holding(b) == 4 end, 3 * session_ms / 1000,
      { what = "the survivor to hold every partition", watch = { b } })
  end)
end)
