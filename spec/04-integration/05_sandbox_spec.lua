-- The detector sandbox seen from outside, and scripts tide must refuse to run.
local cluster = require("helpers.cluster")

describe("integration: sandbox", function()
  local c = cluster.suite("sandbox", { "escape-in:2", "escape-out:2" })

  it("refuses each escape inside process() with a message naming what is not available", function()
    local fixture = cluster.fixture("detectors/sandbox_escapes.lua")
    -- attempt -> names the message may use for what is refused
    local attempts = {
      ["os.execute"] = { "os.execute" },
      ["io.open"] = { "io.open", "'io'", "io " },
      ["require-ffi"] = { "ffi" },
      ["load-dump"] = { "string.dump", "bytecode", "binary chunk" },
      ["package.loadlib"] = { "package.loadlib", "package" },
    }
    local records = {}
    for name in pairs(attempts) do records[#records + 1] = { key = name, value = name } end
    table.sort(records, function(a, b) return a.key < b.key end)
    records[#records + 1] = { key = "control", value = "harmless" }
    c:produce("escape-in", records)

    local app = c:app_id("escapes")
    local p = c:run(fixture, { app = app, name = "escapes", idle_timeout_ms = 1500 })
    assert.are.equal(0, p:wait(60), "tide run: " .. p:status_text() .. "\n" .. p:log_tail(20))

    local out = c:consume("escape-out", { max = #records + 1, idle_ms = 1500 })
    local escaped = {}
    for _, r in ipairs(out) do
      if r.value ~= "plain: harmless" then escaped[#escaped + 1] = r.value end
    end
    assert.are.same({}, escaped, "sandbox escapes that worked")
    assert.are.equal(1, #out, "the control record is processed")

    local dead = c:consume(app .. ".sandbox-escapes-dlq", { max = #records + 1, idle_ms = 1500 })
    local by_attempt = {}
    for _, d in ipairs(dead) do by_attempt[d.value] = d end
    for name, names in pairs(attempts) do
      local d = by_attempt[name]
      assert.is_table(d, "no dead letter for the " .. name .. " attempt")
      local h = d.headers or {}
      local msg = h["tide.error.message"] or ""
      assert.are.equal("ProcessError", h["tide.error.class"], name)
      assert.is_truthy(msg:find("not available", 1, true), name .. ": message should say it is not available: " .. msg)
      local named = false
      for _, what in ipairs(names) do
        if msg:find(what, 1, true) then named = true end
      end
      assert.is_true(named, name .. ": message should name what is refused (" .. table.concat(names, " or ") .. "): " .. msg)
      local line = cluster.line_of(fixture, "ATTEMPT " .. name)
      assert.is_truthy(msg:find("sandbox_escapes.lua:" .. line, 1, true),
        name .. ": message should point at sandbox_escapes.lua:" .. line .. ": " .. msg)
    end
    assert.are.equal(5, #dead, "one dead letter per attempt")
  end)

  it("refuses a detector that opens a file at load time, naming file and line", function()
    local fixture = cluster.fixture("detectors/toplevel_io.lua")
    local line = cluster.line_of(fixture, "TOP-LEVEL io.open")
    local p = c:run(fixture, { name = "toplevel-io", idle_timeout_ms = 1000 })
    local code = p:wait(30)
    assert.is_number(code, p:status_text())
    assert.are_not.equal(0, code, "tide run must fail\n" .. p:log_tail(20))
    local err = p:stderr_text()
    assert.is_truthy(err:find("toplevel_io.lua:" .. line, 1, true),
      "stderr should name toplevel_io.lua:" .. line .. "\n" .. cluster.read_file(p.stderr))
    assert.is_truthy(err:find("not available", 1, true), "stderr should say io is not available")
    assert.is_nil(p:find_events("partitions assigned")[1], "a refused detector must not join its group")
  end)

  it("refuses a script with a syntax error, naming file and line", function()
    local fixture = cluster.fixture("detectors/syntax_error.lua")
    -- Where Lua itself places the error.
    local _, lua_err = loadfile(fixture)
    local line = assert(tostring(lua_err):match("syntax_error%.lua:(%d+):"), lua_err)
    local p = c:run(fixture, { name = "syntax-error", idle_timeout_ms = 1000 })
    local code = p:wait(30)
    assert.is_number(code, p:status_text())
    assert.are_not.equal(0, code, "tide run must fail\n" .. p:log_tail(20))
    local err = p:stderr_text()
    assert.is_truthy(err:find("syntax_error.lua:" .. line, 1, true),
      "stderr should name syntax_error.lua:" .. line .. "\n" .. err)
    assert.is_nil(p:find_events("partitions assigned")[1], "a refused detector must not join its group")
  end)
end)
