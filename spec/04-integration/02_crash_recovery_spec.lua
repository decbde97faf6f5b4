-- kill -9 in the middle of a run, then a restart: at-least-once means no input
-- record is lost. Duplicates are allowed by at-least-once; they are counted
-- and printed, not asserted away.
local cluster = require("helpers.cluster")

describe("integration: kill -9 and restart", function()
  local c = cluster.suite("crash_recovery", { "text-input:4", "text-output:4" })

  it("loses no input record when tide is killed with SIGKILL mid-run and restarted", function()
    local half = 100000
    local function batch(from, to)
      local values = {}
      for i = from, to do
        -- Two thirds contain an "a"; every value is unique, so every output
        -- names its input.
        values[#values + 1] = (i % 3 == 0) and ("x" .. i) or ("a" .. i)
      end
      return values
    end
    -- records produced while tide is down: the restart always has work,
    -- even when the first run caught up with the feeder before the kill
    local after = 1000
    local expected = {}
    local n_expected = 0
    for i = 1, 2 * half + after do
      if i % 3 ~= 0 then
        expected["A" .. i] = 0
        n_expected = n_expected + 1
      end
    end

    c:produce("text-input", batch(1, half))

    local app = c:app_id("crash")
    -- The killed member holds its partitions until its session times out, and
    -- the mock coordinator waits most of a session timeout before each
    -- rebalance: a short session keeps the restart quick (45 s by default).
    local config = {
      ["commit.interval.ms"] = 200,
      ["consumer.session.timeout.ms"] = 3000,
      ["consumer.heartbeat.interval.ms"] = 300,
    }
    local first = c:run(cluster.example("text_transformer.lua"), { app = app, config = config, name = "first" })
    first:wait_for_log("partitions assigned", 30)

    -- The second half arrives while tide runs, and keeps arriving after the kill.
    local feeder = c:produce_async("text-input", batch(half + 1, 2 * half))

    -- Output has appeared: tide is in the middle of the run. Kill it.
    c:wait_for_records("text-output", 10000, 60, { watch = first })
    assert.is_true(first:kill("KILL"), "tide run was still running at the kill")
    local code, sig = first:wait(10)
    assert.are.equal(9, sig, "first run should die of SIGKILL, " .. first:status_text())
    assert.is_nil(cluster.stopped(first), "a SIGKILLed tide cannot have logged 'stopped'")
    local feeder_running_at_kill = feeder:running()

    assert.are.equal(0, feeder:wait(60), "tide produce: " .. feeder:status_text() .. "\n" .. feeder:log_tail(10))
    c:produce("text-input", batch(2 * half + 1, 2 * half + after))

    -- The killed member keeps its partitions until its session (3 s) ends:
    -- the restart may get its share of them first and the rest after that
    -- (the mock elects the static member with the smallest id leader, here
    -- maybe the live one), so it idles out only after a whole session.
    local second = c:run(cluster.example("text_transformer.lua"),
      { app = app, config = config, name = "second", idle_timeout_ms = 5000 })
    assert.are.equal(0, second:wait(120), "restarted tide run: " .. second:status_text() .. "\n" .. second:log_tail(20))
    local stopped = cluster.stopped(second)
    assert.is_table(stopped, "no 'stopped' log line\n" .. second:log_tail(20))
    -- The restart did work: the kill left records to it.
    assert.is_true(tonumber(stopped.records_in) > 0, "restart processed no record")

    local out = c:consume("text-output", { idle_ms = 2000, timeout = 120 })
    local unexpected, duplicates, dup_sample = {}, 0, {}
    for _, r in ipairs(out) do
      local seen = expected[r.value]
      if seen == nil then
        unexpected[#unexpected + 1] = tostring(r.value)
      else
        expected[r.value] = seen + 1
        if seen >= 1 then
          duplicates = duplicates + 1
          if #dup_sample < 10 then dup_sample[#dup_sample + 1] = r.value end
        end
      end
    end
    local missing = {}
    for v, count in pairs(expected) do
      if count == 0 then missing[#missing + 1] = v end
    end
    table.sort(missing)

    io.stdout:write(("    note: kill -9 recovery: %d inputs, %d expected outputs, %d output records, " ..
      "%d duplicates%s; restart processed %d records; feeder %s at the kill\n"):format(
      2 * half + after, n_expected, #out, duplicates,
      #dup_sample > 0 and (" (e.g. " .. table.concat(dup_sample, ", ") .. ")") or "",
      tonumber(stopped.records_in), feeder_running_at_kill and "still producing" or "done"))

    assert.are.equal(0, #unexpected, "outputs that match no input: " .. table.concat(unexpected, ", ", 1, math.min(10, #unexpected)))
    assert.are.equal(0, #missing, #missing .. " input records lost, e.g. " .. table.concat(missing, ", ", 1, math.min(10, #missing)))
    assert.are.equal(n_expected + duplicates, #out)
  end)
end)
