-- SIGTERM: tide finishes its batch, flushes, commits, leaves the group and exits 0.
local cluster = require("helpers.cluster")

local holding = cluster.holding

describe("integration: shutdown on SIGTERM", function()
  local c = cluster.suite("shutdown", { "text-input:4", "text-output:4", "pass-in:4", "pass-out:4" })

  it("commits on SIGTERM, so a restart adds no duplicate", function()
    local function batch(from, to)
      local values, kept = {}, {}
      for i = from, to do
        local v = (i % 4 == 0) and ("skip " .. i) or ("keep a " .. i)
        values[#values + 1] = v
        if v:find("a", 1, true) then kept[#kept + 1] = v:upper() end
      end
      return values, kept
    end
    local n, m = 600, 400
    local first_values, first_kept = batch(1, n)
    local second_values, second_kept = batch(n + 1, n + m)

    c:produce("text-input", first_values)
    local app = c:app_id("sigterm-commit")
    -- A long commit interval: only the commit at shutdown can save the offsets.
    -- A short session: the mock coordinator holds a join for session.timeout.ms
    -- - 1 s after a member left (44 s by default).
    local config = {
      ["commit.interval.ms"] = 600000,
      ["consumer.session.timeout.ms"] = 3000,
      ["consumer.heartbeat.interval.ms"] = 300,
    }
    local first = c:run(cluster.example("text_transformer.lua"), { app = app, config = config, name = "first" })
    c:wait_for_records("text-output", #first_kept, 60, { watch = first })

    assert.is_true(first:kill("TERM"))
    local code = first:wait(15)
    assert.are.equal(0, code, "exit on SIGTERM: " .. first:status_text() .. "\n" .. first:log_tail(20))
    local stopped = cluster.stopped(first)
    assert.is_table(stopped, "no 'stopped' log line\n" .. first:log_tail(20))
    assert.are.equal(n, tonumber(stopped.records_in))

    c:produce("text-input", second_values)
    local second = c:run(cluster.example("text_transformer.lua"),
      { app = app, config = config, name = "second", idle_timeout_ms = 1500 })
    assert.are.equal(0, second:wait(60), "restart: " .. second:status_text() .. "\n" .. second:log_tail(20))
    local stopped2 = cluster.stopped(second)
    assert.is_table(stopped2, "no 'stopped' log line\n" .. second:log_tail(20))
    assert.are.equal(m, tonumber(stopped2.records_in), "the restart reads only the new records")

    local total = #first_kept + #second_kept
    local out = c:consume("text-output", { max = total + 1, idle_ms = 1500 })
    local counts, duplicates = {}, {}
    for _, r in ipairs(out) do
      counts[r.value] = (counts[r.value] or 0) + 1
      if counts[r.value] == 2 then duplicates[#duplicates + 1] = r.value end
    end
    assert.are.equal(0, #duplicates, "duplicates after a SIGTERM restart: " ..
      table.concat(duplicates, ", ", 1, math.min(10, #duplicates)))
    assert.are.equal(total, #out)
    for _, list in ipairs({ first_kept, second_kept }) do
      for _, v in ipairs(list) do
        assert.are.equal(1, counts[v], "output " .. v)
      end
    end
  end)

  it("exits 0 within a few seconds of SIGTERM and leaves its consumer group", function()
    local values = {}
    for i = 1, 200 do values[i] = "record " .. i end
    c:produce("pass-in", values)

    local app = c:app_id("leave")
    -- The mock coordinator completes a rebalance of a non-empty group only
    -- session.timeout.ms - 1 s after it starts. A member that leaves starts
    -- one at once; a member that vanishes without leaving is noticed only when
    -- its session expires. So after the stopped member's exit the survivor gets
    -- every partition within about (S - 1 s) if it left, and no sooner than
    -- (2 S - 1 s) if it did not; the deadline below sits between the two.
    local session_ms = 4000 * cluster.scale
    local config = {
      ["consumer.session.timeout.ms"] = session_ms,
      ["consumer.heartbeat.interval.ms"] = 250,
    }
    local a = c:run(cluster.fixture("detectors/passthrough.lua"), { app = app, config = config, name = "a" })
    a:wait_for_log("partitions assigned", 30)
    c:wait_for_records("pass-out", #values, 30, { watch = a })

    local b = c:run(cluster.fixture("detectors/passthrough.lua"), { app = app, config = config, name = "b" })
    -- Wait for the group to settle with both members holding partitions.
    cluster.await_split(a, b, nil, 4, 40)

    local t0 = cluster.now()
    assert.is_true(a:kill("TERM"))
    local code = a:wait(15)
    local took = cluster.now() - t0
    assert.are.equal(0, code, "exit on SIGTERM: " .. a:status_text() .. "\n" .. a:log_tail(20))
    assert.is_true(took < 5 * cluster.scale, ("exit took %.1fs after SIGTERM"):format(took))

    local left = a:find_events(function(ev)
      local msg = type(ev.msg) == "string" and ev.msg:lower() or ""
      return msg:find("left", 1, true) ~= nil and msg:find("group", 1, true) ~= nil
    end)
    assert.is_true(#left > 0, "the log does not say the group was left\n" .. a:log_tail(20))
    assert.is_table(cluster.stopped(a), "no 'stopped' log line")

    -- The survivor takes over every partition, sooner than a vanished member
    -- would let it. (A member that left and one that vanished differ only in
    -- when the coordinator starts the rebalance, see above.)
    local limit = (1.5 * session_ms - 500) / 1000
    while holding(b) < 4 do
      assert.is_true(b:running(), "survivor exited\n" .. b:log_tail(20))
      assert.is_true(cluster.now() - t0 < limit, ("survivor holds %d of 4 partitions %.1fs after the other member " ..
        "got SIGTERM: it did not leave the group\n%s"):format(holding(b), cluster.now() - t0, b:log_tail(20)))
      cluster.pause(50)
    end
  end)

  it("exits 0 within a few seconds of SIGTERM while its group is rebalancing", function()
    local values = {}
    for i = 1, 100 do values[i] = "rebalancing " .. i end
    -- pass-in/pass-out may hold records of earlier tests: this member copies
    -- all of pass-in again.
    local out_before = #c:consume("pass-out", { idle_ms = 700 })
    c:produce("pass-in", values)
    local in_total = #c:consume("pass-in", { idle_ms = 700 })

    local app = c:app_id("term-in-rebalance")
    -- The coordinator holds the rebalance that a second member starts for
    -- session.timeout.ms - 1 s (7 s here). A shutdown that waits for it, or
    -- for a commit blocked by it, is too slow. librdkafka's cgrp debug lines
    -- say when the first member has learnt of the rebalance.
    local config = {
      ["consumer.session.timeout.ms"] = 8000 * cluster.scale,
      ["consumer.heartbeat.interval.ms"] = 250,
      ["debug"] = "cgrp",
      ["log.level"] = "debug",
    }
    local a = c:run(cluster.fixture("detectors/passthrough.lua"), { app = app, config = config, name = "a" })
    a:wait_for_log("partitions assigned", 30)
    c:wait_for_records("pass-out", out_before + in_total, 30, { watch = a })

    local b = c:run(cluster.fixture("detectors/passthrough.lua"), { app = app, config = config, name = "b" })
    a:wait_for_log(function(ev)
      return type(ev.msg) == "string" and ev.msg:find("Rejoining group", 1, true) ~= nil
    end, 30)
    assert.is_true(b:running(), "second member exited\n" .. b:log_tail(20))

    local t0 = cluster.now()
    assert.is_true(a:kill("TERM"))
    local code = a:wait(30)
    local took = cluster.now() - t0
    -- While a JoinGroup is pending, the coordinator answers nothing else on
    -- that connection (Kafka handles one request per connection at a time,
    -- and so does the mock): the final commit waits for the rebalance, which
    -- the coordinator holds for session.timeout.ms - 1 s. Exit 0, the group
    -- left, within that hold plus a few seconds.
    local limit = (8 - 1 + 3) * cluster.scale
    assert.is_true(took < limit and code == 0, ("SIGTERM during a rebalance: %s after %.1fs (want exit code 0 " ..
      "within %gs)\n%s"):format(a:status_text(), took, limit, table.concat(cluster.info_lines(a), "\n")))
    assert.is_table(cluster.stopped(a), "no 'stopped' log line")
    assert.is_table(a:find_events("left consumer group")[1], "the log does not say the group was left")
  end)
end)
