-- The memory cap, configuration refused at start, secrets kept out of logs,
-- and the embedded development broker.
local cluster = require("helpers.cluster")

local function values(records)
  local v = {}
  for _, r in ipairs(records) do v[#v + 1] = r.value end
  table.sort(v)
  return v
end

describe("integration: limits and configuration", function()
  local c = cluster.suite("limits", { "hog-in:2", "hog-out:2", "text-input:2" })

  it("fails a record that exceeds the Lua heap cap with a MemoryError and keeps processing", function()
    c:produce("hog-in", { "a", "hog", "b", "hog", "c" })
    local p = c:run(cluster.fixture("detectors/memory_hog.lua"), {
      config = { ["detector.memory.limit.bytes"] = 16 * 1024 * 1024 }, count = 5,
    })
    assert.equal(0, (p:wait(60)))
    assert.same({ "a", "b", "c" }, values(c:consume("hog-out")))
    local dead = c:consume(p.app .. ".memory_hog-dlq")
    assert.equal(2, #dead)
    for _, d in ipairs(dead) do
      assert.equal("hog", d.value)
      assert.equal("MemoryError", d.headers["tide.error.class"])
      assert.matches("limit of 16777216 bytes", d.headers["tide.error.message"])
    end
    local stopped = p:wait_for_log("stopped", 1)
    assert.is_true(stopped.lua_heap_peak_bytes <= 16 * 1024 * 1024)
  end)

  it("refuses an unknown key in the properties file, naming file and line", function()
    local props = c:path("bad.properties")
    local f = assert(io.open(props, "w"))
    f:write("# tide\napplication.id=x\ncommit.interval.ms=100\nnot.a.real.setting=1\n")
    f:close()
    local p = c:run(cluster.example("text_transformer.lua"), { args = { "-c", props } })
    assert.equal(2, (p:wait(20)))
    assert.matches("bad%.properties:4: unknown configuration key 'not%.a%.real%.setting'", p:stderr_text())
  end)

  it("refuses an invalid value, naming where it came from", function()
    local p = c:run(cluster.example("text_transformer.lua"), { config = { ["commit.interval.ms"] = "soon" } })
    assert.equal(2, (p:wait(20)))
    assert.matches("flag %-D: commit%.interval%.ms must be an integer", p:stderr_text())
  end)

  it("writes a refused configuration as a JSON log line, like every other line on stderr", function()
    for _, opts in ipairs({ { config = { ["commit.interval.ms"] = "soon" } },
      { args = { "-D", "no-equals-sign" } } }) do
      local p = c:run(cluster.example("text_transformer.lua"), opts)
      assert.equal(2, (p:wait(20)))
      assert.same({}, cluster.bad_log_lines(p))
      local ev = p:find_events(function(e) return e.level == "error" end)[1]
      assert.is_table(ev, p:stderr_text())
    end
  end)

  it("never writes a password to its logs", function()
    local p = c:run(cluster.example("text_transformer.lua"), {
      config = { ["sasl.password"] = "hunter2-secret-value", ["sasl.username"] = "someone" },
      idle_timeout_ms = 300,
    })
    p:wait_for_log("configuration")
    assert.equal(0, (p:wait(30)))
    local log = p:stderr_text()
    assert.is_nil(log:find("hunter2-secret-value", 1, true))
    assert.matches('"sasl.password":"%[redacted%]"', log)
    assert.matches('"sasl.username":"someone"', log)
  end)

  it("starts a development broker in-process when no bootstrap.servers is set, and says so", function()
    local p = c:run(cluster.example("text_transformer.lua"), { bootstrap = false, idle_timeout_ms = 300 })
    local ev = p:wait_for_log(function(e)
      return e.msg and e.msg:find("started a development broker at 127.0.0.1:", 1, true) ~= nil
    end)
    assert.equal("warn", ev.level)
    p:wait_for_log("partitions assigned")
    assert.equal(0, (p:wait(30)))
  end)
end)
