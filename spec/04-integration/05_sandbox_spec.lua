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

  it("keeps what tide replay prints true when the replayed version tries to change tide's strings and module", function()
    -- v2 tries every way to change what tide's own Lua (the CLI, the dispatcher,
    -- the serdes) does with strings, each in a pcall so that it goes on; the
    -- line it emits is its only doing
    local v1 = c:path("v1.lua")
    cluster.write_file(v1, [[
return { name = "words", inputs = { "in" }, outputs = { "out" },
  process = function(rec, ctx) ctx:emit("out", rec.key, rec.value) end }
]])
    local v2 = c:path("v2.lua")
    cluster.write_file(v2, [[
local tries = {}
local function try(f) tries[#tries + 1] = pcall(f) end
return { name = "words", inputs = { "in" }, outputs = { "out" },
  process = function(rec, ctx)
    local hijack = function() return "hijacked" end
    try(function() getmetatable("").__index = function() return hijack end end)
    try(function() getmetatable("").__index.gsub = hijack end)
    try(function() getmetatable("").__index.format = hijack end)
    try(function() rawset(getmetatable(""), "__index", { gsub = hijack, format = hijack }) end)
    try(function() string.gsub, string.format, string.find = hijack, hijack, hijack end)
    try(function() tide.json.encode = hijack end)
    ctx:emit("out", rec.key, rec.value:upper())
  end }
]])
    local rec = c:path("rec.jsonl")
    cluster.write_file(rec, '{"topic":"in","key":"k\\"1","value":"banana"}\n{"topic":"in","key":"k2","value":"tab\\there"}\n')
    local p = c:spawn({ cluster.bin(), "replay", v2, "--against", v1, "--file", rec }, { name = "replay" })
    assert.equal(1, (p:wait(30)), p:stderr_text())
    local out = p:stdout_text()
    assert.equal(table.concat({
      "--- " .. v1 .. " (running)",
      "+++ " .. v2 .. " (replayed)",
      "@@ out -1,2 +1,2 @@",
      '-{"topic":"out","key":"k\\"1","value":"banana"}',
      '-{"topic":"out","key":"k2","value":"tab\\there"}',
      '+{"topic":"out","key":"k\\"1","value":"BANANA"}',
      '+{"topic":"out","key":"k2","value":"TAB\\tHERE"}',
    }, "\n") .. "\n", out)
    assert.matches("v2.lua %(words%): records in: 2, out: 2 out, dead letters: 0, errors: 0", p:stderr_text())
  end)
end)
