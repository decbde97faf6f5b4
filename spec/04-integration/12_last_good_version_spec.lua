-- `tide run DIR` after a refused hot swap: a worker that restarts (kill -9)
-- runs the last version that validated, not the broken file, until a newer
-- file validates; the admin API shows both versions. For a file detector and
-- for a folder detector whose broken part is a module it requires.
local cluster = require("helpers.cluster")
local cjson = require("cjson")
local http = require("socket.http")

local function write(path, text)
  local tmp = path:gsub("([^/]+)$", ".%1.tmp")
  local f = assert(io.open(tmp, "w"))
  f:write(text)
  f:close()
  assert(os.rename(tmp, path))
end

local function api(port)
  local body, code = http.request(("http://127.0.0.1:%d/api/detectors"):format(port))
  assert.equal(200, code)
  local by = {}
  for _, d in ipairs(cjson.decode(body).detectors) do by[d.name] = d end
  return by
end

local function eventually(what, f, timeout)
  return cluster.eventually(f, timeout or 30, { what = what })
end

local function tagger(tag)
  return ([[
return {
  name = "keep", inputs = { "lg-in" }, outputs = { "lg-out" },
  process = function(rec, ctx) ctx:emit("lg-out", nil, %q .. ":" .. rec.value) end,
}
]]):format(tag)
end

local FOLDER_INIT = [[
local tag = require("tag")
return {
  name = "folded", inputs = { "lg-fin" }, outputs = { "lg-fout" },
  process = function(rec, ctx) ctx:emit("lg-fout", nil, tag.of(rec.value)) end,
}
]]

local function tag_module(tag)
  return ("return { of = function(v) return %q .. ':' .. v end }\n"):format(tag)
end

--- Wait until `topic` holds a record of value `want`; returns every value
--- (at least once: a record a killed worker had not committed comes again).
local function until_value(c, topic, want)
  return eventually(topic .. " holding " .. want, function()
    local seen, found = {}, false
    for i, r in ipairs(c:consume(topic, { idle_ms = 500 })) do
      seen[i] = r.value
      found = found or r.value == want
    end
    return found and seen
  end)
end

--- Every value in list starts with one of the prefixes.
local function all_tagged(list, prefixes)
  for _, v in ipairs(list) do
    local ok = false
    for _, p in ipairs(prefixes) do ok = ok or v:sub(1, #p) == p end
    if not ok then return false, v end
  end
  return true
end

describe("integration: the last version that validated", function()
  local c = cluster.suite("last-good", { "lg-in:2", "lg-out:1", "lg-fin:2", "lg-fout:1" })

  it("survives kill -9 after a refused reload, then loads a newer valid file", function()
    local dir = c:path("detectors")
    assert(os.execute("mkdir -p " .. dir .. "/folded"))
    write(dir .. "/keep.lua", tagger("v1"))
    write(dir .. "/folded/init.lua", FOLDER_INIT)
    write(dir .. "/folded/tag.lua", tag_module("f1"))
    local host = c:run(dir, { name = "host", config = {
      ["admin.port"] = 0, ["reload.debounce.ms"] = 50,
      ["consumer.session.timeout.ms"] = 3000, ["consumer.heartbeat.interval.ms"] = 500 } })
    local ev = host:wait_for_log(function(e)
      return e.msg and e.msg:find("admin server listening", 1, true)
    end)
    local port = tonumber(ev.msg:match("127%.0%.0%.1:(%d+)"))
    host:wait_for_log({ detector = "keep", msg = "partitions assigned" })
    host:wait_for_log({ detector = "folded", msg = "partitions assigned" })
    c:produce("lg-in", { "a" })
    c:produce("lg-fin", { "a" })
    until_value(c, "lg-out", "v1:a")
    until_value(c, "lg-fout", "f1:a")
    local v1 = api(port)
    local keep_v1, folded_v1 = v1.keep.version, v1.folded.version

    -- v2 is refused: a syntax error in the file, a runtime error in the module
    write(dir .. "/keep.lua", "return {\n  inputs = { 'lg-in' },,\n}\n")
    write(dir .. "/folded/tag.lua", "local broken = true\nerror('tag v2 is broken')\n")
    local d = eventually("both refusals in the API", function()
      local by = api(port)
      return by.keep and by.keep.refused ~= cjson.null and by.folded
        and by.folded.refused ~= cjson.null and by
    end)
    assert.matches("keep%.lua:2:", d.keep.refused.message)
    assert.matches("tag%.lua:2: tag v2 is broken", d.folded.refused.message)
    -- the refused file version is named where it is known (a file detector's)
    assert.is_string(d.keep.refused.version)
    assert.are_not.equal(keep_v1, d.keep.refused.version)
    for _, name in ipairs({ "keep", "folded" }) do
      assert.equal("running", d[name].state)
      assert.equal(name == "keep" and keep_v1 or folded_v1, d[name].version)
    end

    -- kill -9 both workers: they come back on v1, not failed
    for _, name in ipairs({ "keep", "folded" }) do
      assert.is_true(os.execute("kill -9 " .. d[name].pid) == 0 or true)
    end
    local after = eventually("both restarted and running", function()
      local by = api(port)
      local ok = true
      for _, name in ipairs({ "keep", "folded" }) do
        local x = by[name]
        ok = ok and x and x.restarts == 1 and x.state == "running" and x.pid ~= d[name].pid
      end
      return ok and by
    end, 60)
    for _, name in ipairs({ "keep", "folded" }) do
      assert.equal(name == "keep" and keep_v1 or folded_v1, after[name].version)
      assert.equal(cjson.null, after[name].problem)
      assert.is_table(after[name].refused, name .. ": the refused version is still shown")
      assert.equal(d[name].refused.message, after[name].refused.message)
      assert.matches("killed by signal 9", after[name].last_exit)
    end
    c:produce("lg-in", { "b" })
    c:produce("lg-fin", { "b" })
    -- every record since, reprocessed ones included, went through v1
    assert.is_true(all_tagged(until_value(c, "lg-out", "v1:b"), { "v1:" }))
    assert.is_true(all_tagged(until_value(c, "lg-fout", "f1:b"), { "f1:" }))
    -- no worker ever failed to load: none was started on the broken files
    assert.equal(0, #host:find_events(function(e)
      return e.msg and e.msg:find("^detector .* refused: ")
    end))

    -- v3 validates: it runs, and the refusal is gone
    write(dir .. "/keep.lua", tagger("v3"))
    write(dir .. "/folded/tag.lua", tag_module("f3"))
    local v3 = eventually("both on v3", function()
      local by = api(port)
      return by.keep and by.keep.refused == cjson.null and by.keep.version ~= keep_v1
        and by.folded and by.folded.refused == cjson.null and by.folded.version ~= folded_v1 and by
    end)
    assert.equal(1, v3.keep.restarts)
    c:produce("lg-in", { "c" })
    c:produce("lg-fin", { "c" })
    local out = until_value(c, "lg-out", "v3:c")
    local fout = until_value(c, "lg-fout", "f3:c")
    assert.is_true(all_tagged(out, { "v1:", "v3:c" }))
    assert.is_true(all_tagged(fout, { "f1:", "f3:c" }))
  end)
end)
