-- Fault injection through `tide broker --control`: each command changes what a
-- real client (`tide produce`, `tide consume`, librdkafka underneath) meets on
-- the mock cluster, and the helper returns only once the broker has applied
-- it. The cluster has two brokers and starts with both down.
local cluster = require("helpers.cluster")

--- A running `tide produce` that reports a refused connection in its log
--- (librdkafka's own lines): it has tried the brokers and failed.
local function wait_refused(p, timeout)
  local deadline = cluster.now() + timeout * cluster.scale
  while not p:stderr_text():find("Connection refused", 1, true) do
    if p:poll() then
      error("tide produce ended (" .. p:status_text() .. ") before meeting a refused connection\n"
        .. p:log_tail(10), 2)
    end
    if cluster.now() >= deadline then
      error("tide produce met no refused connection within " .. timeout .. " s\n" .. p:log_tail(10), 2)
    end
    cluster.pause(20)
  end
end

--- Values of `records` in offset order per partition, and how often each came.
local function tally(records)
  local seen, dups = {}, 0
  for _, r in ipairs(records) do
    seen[r.value] = (seen[r.value] or 0) + 1
    if seen[r.value] == 2 then dups = dups + 1 end
  end
  return seen, dups
end

local function numbered(tag, n)
  local list = {}
  for i = 1, n do list[i] = tag .. i end
  return list
end

describe("integration: fault injection into the broker", function()
  local c = cluster.new("broker_faults")

  lazy_setup(function()
    c:start_broker({ "fault-in:1", "split:2" }, { brokers = 2, down = true })
  end)
  lazy_teardown(function() c:shutdown() end)
  after_each(function() c:cleanup() end)

  it("starts with every broker down: nothing reaches it until they are up, then all once", function()
    c:track_requests(true)
    local p = c:produce_async("fault-in", numbered("early-", 200))
    wait_refused(p, 20)
    assert.is_true(p:running(), "tide produce gave up while the brokers were down")
    assert.is_nil(c:requests().Produce, "a Produce request reached a broker that is down")

    c:broker_up("all")
    assert.are.equal(0, p:wait(60), p:log_tail(10))
    assert.is_true((c:requests().Produce or 0) >= 1)
    local got = c:consume("fault-in")
    local seen, dups = tally(got)
    assert.are.equal(200, #got)
    assert.are.equal(0, dups)
    for i = 1, 200 do assert.are.equal(1, seen["early-" .. i], "early-" .. i) end
  end)

  it("fails the next Produce requests with injected errors; the client retries and writes each record once", function()
    c:clear_requests()
    assert.are.equal(2, c:push_errors("Produce", { "NOT_ENOUGH_REPLICAS", "LEADER_NOT_AVAILABLE" }))
    local before = #c:consume("fault-in")
    c:produce("fault-in", numbered("retried-", 50))
    -- One batch: the two failed attempts and the one that was written.
    assert.is_true(c:requests().Produce >= 3, "Produce requests: " .. tostring(c:requests().Produce))
    local got = c:consume("fault-in")
    assert.are.equal(before + 50, #got)
    local seen, dups = tally(got)
    assert.are.equal(0, dups)
    for i = 1, 50 do assert.are.equal(1, seen["retried-" .. i], "retried-" .. i) end
  end)

  it("fails a produce with a permanent injected error", function()
    c:push_errors("Produce", { "TOPIC_AUTHORIZATION_FAILED" })
    local p = c:produce_async("fault-in", { "refused-1" })
    assert.are.equal(1, p:wait(30))
    assert.truthy(p:stderr_text():find("Topic authorization failed", 1, true), p:log_tail(5))
  end)

  it("queues errors on one broker, each answer delayed, and says how many are left", function()
    c:set_leader("fault-in", 0, 1) -- the Produce requests go to broker 1
    assert.are.equal(2, c:broker_errors(1, "Produce", { "NOT_ENOUGH_REPLICAS:1000", "REQUEST_TIMED_OUT" }))
    assert.are.equal(2, c:pending_errors(1, "Produce"))
    assert.are.equal(0, c:pending_errors(2, "Produce"))
    local t0 = cluster.now()
    c:produce("fault-in", { "delayed-1" })
    assert.is_true(cluster.now() - t0 >= 1, "the delayed error answered at once")
    assert.are.equal(0, c:pending_errors(1, "Produce"))
  end)

  it("delays every answer by the round-trip time set", function()
    c:rtt("all", 1000)
    local t0 = cluster.now()
    c:produce("fault-in", { "slow-1" })
    local slow = cluster.now() - t0
    c:rtt("all", 0)
    -- Connect, metadata, producer id, produce: each answer waits a second.
    assert.is_true(slow >= 2, ("a produce took %.2f s with a 1 s round trip"):format(slow))
  end)

  it("serves the partitions of the brokers that are up while another is down", function()
    c:set_leader("split", 0, 1)
    c:set_leader("split", 1, 2)
    c:broker_down(2)
    c:produce("split", { { key = "k", value = "on-one", partition = 0 } })
    local got = c:consume("split")
    assert.are.equal(1, #got)
    assert.are.same({ 0, "on-one" }, { got[1].partition, got[1].value })
    c:broker_up(2)
    c:produce("split", { { key = "k", value = "on-two", partition = 1 } })
    assert.are.equal(2, #c:consume("split"))
  end)

  it("refuses a command it cannot apply, with the reason", function()
    local ok, err = pcall(c.broker_down, c, 7)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("no broker 7 (brokers are 1..2, or all)", 1, true), err)
    ok, err = pcall(c.push_errors, c, "Produce", { "NO_SUCH_ERROR" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("unknown error NO_SUCH_ERROR", 1, true), err)
  end)

  it("creates and deletes topics; only a client that asks for it creates one again", function()
    assert.is_nil(c:topic_partitions("made"))
    c:create_topic("made", 3)
    assert.are.equal(3, c:topic_partitions("made"))
    c:produce("made", numbered("m-", 10))
    assert.are.equal(10, #c:consume("made"))

    c:delete_topic("made")
    -- Asked by a client that does not allow auto-creation: gone, and stays gone.
    assert.is_nil(c:topic_partitions("made"))
    assert.is_nil(c:topic_partitions("made"))
    -- tide consume allows auto-creation: the mock makes an empty topic with
    -- its default of 4 partitions, and none of the old records.
    assert.are.equal(0, #c:consume("made", { idle_ms = 800 }))
    assert.are.equal(4, c:topic_partitions("made"))
  end)

  it("answers Metadata with a topic error until it is cleared", function()
    c:topic_error("fault-in", "TOPIC_AUTHORIZATION_FAILED")
    local p = c:spawn({ cluster.bin(), "consume", "fault-in", "-b", c.addr, "--from-beginning",
      "--idle-timeout-ms", "800" }, { name = "consume-denied" })
    assert.are.equal(1, p:wait(30))
    assert.truthy(p:stderr_text():find("topic fault-in not found", 1, true), p:log_tail(5))
    c:topic_error("fault-in", "NO_ERROR")
    assert.is_true(#c:consume("fault-in") > 0)
  end)
end)
