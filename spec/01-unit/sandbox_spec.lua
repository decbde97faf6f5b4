local sandbox = require("tide.sandbox")

local function run(code)
  local env = sandbox.env({ null = "NULL" })
  local f = assert(load(code, "=detector", "t", env))
  return pcall(f)
end

describe("the detector sandbox", function()
  it("offers the pure standard library", function()
    local ok, v = run("return string.upper('a') .. table.concat({1,2}) .. math.floor(1.5) .. os.time{year=2020,month=1,day=1,hour=0}")
    assert.is_true(ok)
    assert.matches("^A121", v)
  end)

  for _, case in ipairs({
    { "os.execute('true')", "os.execute is not available" },
    { "io.open('/etc/passwd')", "io is not available" },
    { "require('ffi')", "require%('ffi'%) is not available" },
    { "local f = function() end; load(string.dump(f))", "string.dump is not available" },
    { "package.loadlib('x', 'y')", "package is not available" },
    { "debug.getinfo(1)", "debug is not available" },
    { "collectgarbage()", "collectgarbage is not available" },
    { "dofile('/etc/passwd')", "dofile is not available" },
    { "load('\\27LJ')", "loading bytecode is not available" },
  }) do
    it("refuses " .. case[1] .. " with a clear message", function()
      local ok, err = run(case[1])
      assert.is_false(ok)
      assert.matches(case[2], err)
      assert.matches("tide sandbox", err)
    end)
  end

  it("loads text chunks into the sandbox, not the real globals", function()
    local ok, v = run("return load('return io')()")
    assert.is_false(ok)
    assert.matches("io is not available", v)
  end)

  it("keeps globals a detector sets to itself", function()
    local env = sandbox.env({})
    assert(load("x = 1", "=d", "t", env))()
    assert.equal(1, env.x)
    assert.is_nil(rawget(_G, "x"))
  end)

  describe("what detectors share with tide", function()
    local detector = require("tide.detector")

    --- Run `code` in a fresh detector environment; pcall's results.
    local function attempt(code)
      local env = sandbox.env(require("tide"))
      return pcall(assert(load(code, "=detector", "t", env)))
    end

    it("keeps string methods tide's, whatever a detector does to the string metatable", function()
      for _, code in ipairs({
        "getmetatable('').__index = function() return function() return 'hijacked' end end",
        "getmetatable('').__index.upper = function() return 'hijacked' end",
        "getmetatable('').__index.format = nil",
        "getmetatable('').__newindex = print",
        "string.gsub = function() return 'hijacked' end; string.format = string.gsub",
      }) do
        local ok, err = attempt(code)
        if not ok then assert.matches("tide sandbox", err, 1, true) end
        -- the detector's own string table may change; strings' methods do not
        assert.equal("A", ("a"):upper())
        assert.equal("x=1", ("x=%d"):format(1))
        assert.equal("b", (("a"):gsub("a", "b")))
      end
    end)

    it("gives each detector its own stand-in for the string metatable", function()
      local ok = attempt("rawset(getmetatable(''), '__index', { upper = function() return 'hijacked' end })")
      assert.is_true(ok)
      assert.equal("A", ("a"):upper())
      local env = sandbox.env(require("tide"))
      local mt = assert(load("return getmetatable('')", "=d", "t", env))()
      assert.equal("A", mt.__index.upper("a"))
      assert.has_error(function() assert(load("return ('x'):dump()", "=d", "t", env))() end)
    end)

    it("gives each detector its own copy of the tide module", function()
      assert.is_true((attempt("tide.kv = nil; tide.json.encode = function() return 'hijacked' end; tide.null = 1")))
      local tide = require("tide")
      assert.is_function(tide.kv)
      assert.equal('{"a":1}', tide.json.encode({ a = 1 }))
      local env = sandbox.env(tide)
      assert.is_function(env.tide.kv)
      assert.equal("[1]", env.tide.json.encode({ 1 }))
    end)

    it("hides the metatables of tide's classes and errors", function()
      local spec, err = detector.load_source([[
local ok, e = pcall(tide.json.decode, "{")
local c = tide.cache(4)
local results = {
  setmetatable_ok = pcall(setmetatable, c, {}),
  cache_mt = getmetatable(c),
}
local s = tide.stream("in")
results.stream_mt = getmetatable(s)
assert(results.stream_mt == false and results.cache_mt == false and not results.setmetatable_ok)
s:to("out")
return s
]], "hides.lua")
      assert.is_table(spec, err)
      -- and the DSL still works for the next detector
      assert.is_table((detector.load_source("tide.stream('in'):filter(function() return true end):to('out')\nreturn tide.topology{}", "next.lua")))
    end)

    it("lets a detector neither see nor yield tide's own coroutine", function()
      local ok, err = attempt("assert(coroutine.running() == nil); coroutine.yield()")
      assert.is_false(ok)
      assert.matches("attempt to yield from outside a coroutine", err)
      assert.is_true((attempt([[
local co = coroutine.create(function(a) local b = coroutine.yield(a + 1); return b * 2 end)
assert(select(2, coroutine.resume(co, 1)) == 2)
assert(select(2, coroutine.resume(co, 5)) == 10)
local gen = coroutine.wrap(function() assert(coroutine.running()); coroutine.yield(7) end)
assert(gen() == 7)
]])))
    end)

    it("loads text under a chunk name that cannot pass for a file", function()
      local ok, err = attempt("load('error(\"x\")', '@scripts/tide/dispatch.lua')()")
      assert.is_false(ok)
      assert.matches("^%(load%) scripts/tide/dispatch%.lua:1: x", err)
    end)

    it("keeps what tide reads of a detector's table after it ran from the detector's reach", function()
      local spec = assert(detector.load_source([[
local outputs = { "out" }
local stores = { seen = tide.kv({ memory = true }) }
return { inputs = { "in" }, outputs = outputs, stores = stores,
  process = function() outputs[1] = "elsewhere"; stores.seen.kind = "window" end }
]], "mutates.lua"))
      spec.process()
      assert.same({ "out" }, spec.outputs)
      assert.equal("kv", spec.stores.seen.kind)
    end)
  end)
end)
