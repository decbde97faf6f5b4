-- processing.guarantee=exactly_once_v2 against the development broker, and
-- what both guarantees do when Kafka refuses an output.
--
-- librdkafka's mock cluster runs the transactional producer protocol (it
-- writes commit and abort markers), but its readers see aborted records and
-- it stores no transactional offsets. So these tests check what it can show:
-- transactions are used (and offsets go only through them), a rollback
-- restores the state exactly, and a refused record is dead-lettered once.
-- That a read_committed reader sees each result once needs a real Kafka; so
-- does fencing by transactional.id (the mock gives every InitProducerId a
-- new producer id instead of bumping the epoch of the old one).
local cluster = require("helpers.cluster")

local SIZED = cluster.fixture("detectors/oversized.lua")

--- n records over ten keys, with a "big" key every 40th.
local function sized_records(n)
  local records = {}
  for i = 1, n do
    local key = i % 40 == 0 and ("big-" .. i) or ("k" .. (i % 10))
    records[i] = { key = key, value = tostring(i) }
  end
  return records
end

local function true_counts(records)
  local counts = {}
  for _, r in ipairs(records) do counts[r.key] = (counts[r.key] or 0) + 1 end
  return counts
end

--- The last "<key>=<rocksdb count>/<memory count>" output per key, in the
--- order the partition holds them.
local function last_counts(out)
  table.sort(out, function(a, b)
    if a.partition ~= b.partition then return a.partition < b.partition end
    return a.offset < b.offset
  end)
  local last = {}
  for _, r in ipairs(out) do
    local k, db, mem = tostring(r.value):match("^(.-)=(%d+)/(%d+)$")
    if k then last[k] = { tonumber(db), tonumber(mem) } end
  end
  return last
end

describe("integration: exactly-once and refused outputs", function()
  local c = cluster.suite("exactly_once", { "sized-in:4", "sized-out:4", "eos-in:4", "eos-out:4" })

  local records = sized_records(400)
  local truth = true_counts(records)
  local produced = false

  for _, guarantee in ipairs({ "at_least_once", "exactly_once_v2" }) do
    it(("dead-letters a record whose output Kafka refuses, once, and rolls the state back (%s)")
      :format(guarantee), function()
      if not produced then
        c:produce("sized-in", records)
        produced = true
      end
      local app = c:app_id("sized-" .. guarantee)
      local p = c:run(SIZED, { app = app, name = guarantee, idle_timeout_ms = 2000, config = {
        ["processing.guarantee"] = guarantee, ["producer.message.max.bytes"] = 10000,
        ["commit.interval.ms"] = 200 } })
      assert.are.equal(0, p:wait(120), "tide run: " .. p:status_text() .. "\n" .. p:log_tail(30))
      local stopped = cluster.stopped(p)
      assert.is_table(stopped, "no 'stopped' line\n" .. p:log_tail(20))
      assert.is_true(tonumber(stopped.rollbacks) >= 1, "no rollback was counted")

      -- Each big record is dead-lettered exactly once, with the reason.
      local dead = c:consume(app .. ".oversized-dlq", { idle_ms = 1500 })
      local per = {}
      for _, d in ipairs(dead) do
        assert.are.equal("ProductionError", d.headers["tide.error.class"])
        local msg = d.headers["tide.error.message"] or ""
        assert.is_truthy(msg:find("sized-out", 1, true), "the reason names the topic: " .. msg)
        assert.is_truthy(msg:lower():find("too large", 1, true), "the reason says why: " .. msg)
        per[d.key] = (per[d.key] or 0) + 1
      end
      local n_big = 0
      for k in pairs(truth) do
        if k:sub(1, 3) == "big" then
          n_big = n_big + 1
          assert.are.equal(1, per[k], "dead letters of " .. k)
        end
      end
      assert.are.equal(n_big, #dead, "only the big records are dead letters")

      -- The counts of every other key are exact: what was processed before
      -- the rollback was undone in both stores, then processed once again.
      local last = last_counts(c:consume("sized-out", { idle_ms = 1500 }))
      for k, n in pairs(truth) do
        if k:sub(1, 3) ~= "big" then
          assert.are.same({ n, n }, last[k], "final counts of " .. k .. " (rocksdb/memory)")
        end
      end
    end)
  end

  it("commits input offsets only inside transactions (the mock keeps none: a restart reads from the start)",
    function()
    local n = 2000
    local values = {}
    for i = 1, n do values[i] = "a" .. i end
    c:produce("eos-in", values)
    local detector = c:path("eos_transformer.lua")
    local f = assert(io.open(detector, "w"))
    f:write([[return { name = "eos-t", inputs = { "eos-in" }, outputs = { "eos-out" },
      process = function(rec, ctx) ctx:emit("eos-out", rec.key, rec.value:upper()) end }]])
    f:close()
    local function run(guarantee, app, name)
      local p = c:run(detector, { app = app, name = name, idle_timeout_ms = 1500,
        config = { ["processing.guarantee"] = guarantee } })
      assert.are.equal(0, p:wait(60), name .. ": " .. p:status_text() .. "\n" .. p:log_tail(20))
      return cluster.stopped(p)
    end
    local eos_app, alos_app = c:app_id("eos"), c:app_id("alos")
    local first = run("exactly_once_v2", eos_app, "eos-1")
    assert.are.equal(n, tonumber(first.records_in))
    assert.is_true(tonumber(first.commits) >= 1, "no transaction committed")
    -- The consumer's own commit would have stored them; TxnOffsetCommit on
    -- the mock stores nothing, so all are read again.
    assert.are.equal(n, tonumber(run("exactly_once_v2", eos_app, "eos-2").records_in))
    -- At-least-once commits through the consumer: a restart reads none again.
    assert.are.equal(n, tonumber(run("at_least_once", alos_app, "alos-1").records_in))
    assert.are.equal(0, tonumber(run("at_least_once", alos_app, "alos-2").records_in))
  end)

end)
