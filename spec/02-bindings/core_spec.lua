-- tide.core, the C module, under plain busted: sinks, batches and the
-- dispatch loop that applies a detector's error policy.
local core = require("tide.core")
local detector = require("tide.detector")
local dispatch = require("tide.dispatch")

local function runner(src, name)
  local spec = assert(detector.load_source(src, name or "spec-detector.lua"))
  local sink = core.sink()
  local d = dispatch.new(spec, sink:ptr(), function() end)
  return spec, sink, d
end

local function records(n, f)
  local t = {}
  for i = 1, n do t[i] = f(i) end
  return t
end

describe("tide.core", function()
  it("exposes the FFI header and an api pointer", function()
    assert.matches("tide_rec_t", core.cdef)
    assert.equal("userdata", type(core.api()))
  end)

  it("sets every member of its default api that the FFI header declares", function()
    -- bindings/core.c names each member: a member added to core/tide_ffi.h
    -- and not set there would be NULL, and called from Lua.
    local ffi = require("ffi")
    local api = require("tide.ffi").api
    local body = assert(core.cdef:match("typedef struct tide_api {(.-)} tide_api_t;"))
    local members = {}
    for name in body:gmatch("%(%*([%w_]+)%)") do members[#members + 1] = name end
    assert.is_true(#members >= 12, "members found: " .. #members)
    for _, name in ipairs(members) do
      assert.is_false(ffi.cast("void *", api[name]) == nil, "tide_default_api." .. name .. " is NULL")
    end
  end)

  it("hashes deterministically", function()
    assert.equal(core.hash("abc"), core.hash("abc"))
    assert.are_not.equal(core.hash("abc"), core.hash("abd"))
    assert.matches("^%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x$", core.hash(""))
  end)

  it("runs a batch through the dispatcher and collects emits in order", function()
    local spec, sink, d = runner([[
return { inputs = {"in"}, outputs = {"a", "b"},
  process = function(rec, ctx)
    ctx:emit(rec.offset % 2 == 0 and "a" or "b", rec.key, rec.value .. "!", { n = tostring(rec.offset) })
  end }]])
    local b = core.batch(records(4, function(i) return { key = "k" .. i, value = "v" .. i, offset = i - 1, topic = "in" } end))
    local failures, stopped = core.dispatch(d.run, b, sink, "dlq", spec.name, spec.version)
    assert.same({}, failures)
    assert.is_false(stopped)
    local e = sink:entries()
    assert.equal(4, #e)
    -- (the records have no timestamp: -1, which the producer stamps when it sends;
    -- partition -1: the producer's partitioner chooses)
    assert.same({ output = 0, source = 0, partition = -1, key = "k1", value = "v1!", headers = { n = "0" },
      timestamp = -1 }, e[1])
    assert.same({ output = 1, source = 1, partition = -1, key = "k2", value = "v2!", headers = { n = "1" },
      timestamp = -1 }, e[2])
    assert.equal(4, b:cursor())
  end)

  it("drops a failed record's emits, dead-letters it with headers, and resumes after it", function()
    local spec, sink, d = runner([[
return { inputs = {"in"}, outputs = {"out"},
  process = function(rec, ctx)
    ctx:emit("out", rec.key, "before")
    if rec.value == "bad" then error("boom on " .. rec.key) end
    ctx:emit("out", rec.key, "after")
  end }]], "failing.lua")
    local b = core.batch({
      { key = "1", value = "ok", topic = "in", partition = 3, offset = 10, timestamp = 1000 },
      { key = "2", value = "bad", topic = "in", partition = 3, offset = 11, timestamp = 2000,
        headers = { { "trace-id", "t-2" } } },
      { key = "3", value = "ok", topic = "in", partition = 3, offset = 12, timestamp = 3000 },
    })
    local failures = core.dispatch(d.run, b, sink, "dlq", spec.name, spec.version)
    assert.equal(1, #failures)
    assert.equal(1, failures[1].index)
    assert.equal("ProcessError", failures[1].class)
    assert.matches("failing%.lua:4: boom on 2", failures[1].message)
    assert.matches("stack traceback", failures[1].traceback)
    local e = sink:entries()
    local got = {}
    for i, x in ipairs(e) do got[i] = { x.output, x.key, x.value } end
    assert.same({ { 0, "1", "before" }, { 0, "1", "after" }, { -1, "2", "bad" }, { 0, "3", "before" }, { 0, "3", "after" } }, got)
    local h = e[3].headers
    assert.equal("ProcessError", h["tide.error.class"])
    assert.matches("boom on 2", h["tide.error.message"])
    assert.matches("failing%.lua:4", h["tide.error.traceback"])
    assert.equal("in", h["tide.source.topic"])
    assert.equal("3", h["tide.source.partition"])
    assert.equal("11", h["tide.source.offset"])
    assert.equal("2000", h["tide.source.timestamp"])
    assert.equal(spec.version, h["tide.detector.version"])
    assert.equal("t-2", h["trace-id"])
  end)

  it("skip drops the record, stop halts at it", function()
    local src = [[
return { inputs = {"in"}, outputs = {"out"},
  process = function(rec, ctx)
    if rec.value == "bad" then error("no") end
    ctx:emit("out", nil, rec.value)
  end }]]
    local recs = { { value = "a" }, { value = "bad" }, { value = "c" } }
    local spec, sink, d = runner(src)
    local b = core.batch(recs)
    local failures, stopped = core.dispatch(d.run, b, sink, "skip", spec.name, spec.version)
    assert.equal(1, #failures)
    assert.is_false(stopped)
    assert.equal(2, #sink:entries())

    local spec2, sink2, d2 = runner(src)
    local b2 = core.batch(recs)
    local _, stopped2 = core.dispatch(d2.run, b2, sink2, "stop", spec2.name, spec2.version)
    assert.is_true(stopped2)
    assert.equal(1, b2:cursor())
    assert.equal(1, #sink2:entries())
  end)

  it("classifies decode failures as DecodeError", function()
    local spec, sink, d = runner([[
return { inputs = {"in"}, serde = "json", process = function(rec, ctx) local _ = rec.value end }]])
    local b = core.batch({ { value = "{broken" } })
    local failures = core.dispatch(d.run, b, sink, "dlq", spec.name, spec.version)
    assert.equal("DecodeError", failures[1].class)
    assert.equal("{broken", sink:entries()[1].value)
  end)

  it("reads every record field lazily and keeps rec valid only for one record", function()
    local seen = {}
    local spec = assert(detector.load_source([[
return { inputs = {"in"}, process = function(rec, ctx) SEEN(rec) end }]], "fields.lua"))
    -- reach the test's table from the sandboxed detector through its env
    local sink = core.sink()
    local d = dispatch.new(spec, sink:ptr(), function() end)
    getfenv(spec.process).SEEN = function(rec)
      seen[#seen + 1] = rec:copy()
      seen[#seen].again = rec.value
      seen[#seen].missing = rec.nothing
    end
    local b = core.batch({
      { key = "k", value = "v1", topic = "t", partition = 2, offset = 7, timestamp = 99, headers = { { "h", "x" } } },
      { value = "v2", topic = "t", partition = 2, offset = 8 },
    })
    core.dispatch(d.run, b, sink, "dlq", spec.name, spec.version)
    assert.same({ key = "k", value = "v1", topic = "t", partition = 2, offset = 7, timestamp = 99,
      headers = { h = "x" }, again = "v1" }, seen[1])
    assert.is_nil(seen[2].key)
    assert.equal("v2", seen[2].value)
    assert.equal(8, seen[2].offset)
    assert.same({}, seen[2].headers)
  end)

  it("refuses writes to rec and emits to undeclared outputs at the caller's line", function()
    local spec, sink, d = runner([[
return { inputs = {"in"}, outputs = {"out"},
  process = function(rec, ctx)
    if rec.value == "w" then rec.value = "x" end
    local name = "nowhere"
    ctx:emit(name, nil, "v")
  end }]], "misuse.lua")
    local b = core.batch({ { value = "w" }, { value = "e" } })
    local failures = core.dispatch(d.run, b, sink, "skip", spec.name, spec.version)
    assert.matches("misuse%.lua:3: rec%.value is read%-only", failures[1].message)
    assert.matches("misuse%.lua:5: emit to unknown output 'nowhere'", failures[2].message)
  end)

  describe("how a failed record is reported", function()
    --- The failures of one record run through `src` (its process raises).
    local function fail_with(src, name)
      local spec, sink, d = runner(src, name)
      local b = core.batch({ { key = "k", value = "v", topic = "in" } })
      local failures = core.dispatch(d.run, b, sink, "dlq", spec.name, spec.version)
      return failures[1], sink:entries()
    end

    it("reports deep recursion as a stack overflow at the detector's line", function()
      -- LuaJIT compiles the recursion; a handler run at the point of the
      -- error found no stack left and the record said "error in error handling"
      local f = fail_with([[
local function depth(n) return 1 + depth(n + 1) end -- RECURSES
return { inputs = { "in" },
  process = function()
    for _ = 1, 3 do depth(1) end
  end }]], "recurses.lua")
      assert.equal("ProcessError", f.class)
      assert.equal("recurses.lua:1: stack overflow", f.message)
      assert.matches("recurses%.lua:1: in function", f.traceback)
    end)

    it("believes the class only of tide's own errors", function()
      local f, entries = fail_with([[
return { inputs = { "in" },
  process = function()
    error({ class = "MemoryError", message = "pretending" })
  end }]])
      assert.equal("ProcessError", f.class)
      assert.equal("ProcessError", entries[1].headers["tide.error.class"])
      f = fail_with([[
return { inputs = { "in" }, serde = "json", process = function(rec) return rec.value end }]])
      assert.equal("DecodeError", f.class)
    end)

    it("describes an error object whose __tostring fails, and one that works", function()
      local f = fail_with([[
return { inputs = { "in" },
  process = function()
    error(setmetatable({}, { __tostring = function() error("no text for you") end,
      __index = function() error("nor fields") end }))
  end }]])
      assert.equal("ProcessError", f.class)
      assert.equal("(error object is a table value)", f.message)
      f = fail_with([[
return { inputs = { "in" },
  process = function() error(setmetatable({}, { __tostring = function() return "described" end })) end }]])
      assert.equal("described", f.message)
    end)

    it("cuts a huge error message and says how long it was", function()
      local f, entries = fail_with([[
return { inputs = { "in" }, process = function() error(string.rep("x", 1e6), 0) end }]])
      assert.equal(8192 + #"... (cut at 8192 of 1000000 bytes)", #f.message)
      assert.matches("%.%.%. %(cut at 8192 of 1000000 bytes%)$", f.message)
      assert.equal(f.message, entries[1].headers["tide.error.message"])
    end)

    it("fails a record that yields to tide, at the line that yields", function()
      local f = fail_with([[
return { inputs = { "in" },
  process = function()
    assert(coroutine.running() == nil, "tide's coroutine is not the detector's")
    coroutine.yield("out") -- YIELDS
  end }]], "yields.lua")
      assert.equal("ProcessError", f.class)
      assert.matches("yields%.lua:4: attempt to yield from outside a coroutine", f.message)
    end)
  end)
end)
