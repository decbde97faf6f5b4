local detector = require("tide.detector")

local function load_src(src, path)
  return detector.load_source(src, path or "d.lua")
end

describe("loading a detector", function()
  it("normalises a valid detector", function()
    local spec = assert(load_src([[
return {
  inputs = { "in" }, outputs = { "out" },
  process = function(rec, ctx) ctx:emit("out", rec.key, rec.value) end,
}]], "dir/my-detector.lua"))
    assert.equal("my-detector", spec.name)
    assert.same({ "in" }, spec.inputs)
    assert.equal(0, spec.out_index.out)
    assert.equal("string", spec.value_serde)
    assert.equal("dlq", spec.on_error)
    assert.matches("^%x+$", spec.version)
  end)

  it("gives different versions to different sources", function()
    local a = assert(load_src('return { inputs = {"a"}, process = function() end }'))
    local b = assert(load_src('return { inputs = {"b"}, process = function() end }'))
    assert.are_not.equal(a.version, b.version)
  end)

  it("reports a syntax error with file and line", function()
    local spec, err = load_src("local x = 1\nlocal y = = 2\n", "broken.lua")
    assert.is_nil(spec)
    assert.matches("^broken%.lua:2:", err)
  end)

  it("reports a runtime error in top-level code with file and line", function()
    local spec, err = load_src("local t = nil\nlocal x = t.field\nreturn {}", "top.lua")
    assert.is_nil(spec)
    assert.matches("top%.lua:2:", err)
  end)

  it("refuses a detector without process, pointing at its return", function()
    local spec, err = load_src("local M = {}\n\nreturn { inputs = { 'a' } }\n", "noproc.lua")
    assert.is_nil(spec)
    assert.matches("^noproc%.lua:3: detector has no 'process' function", err)
  end)

  it("refuses an emit to an undeclared output, at the emit's line", function()
    local spec, err = load_src([[
return {
  inputs = { "in" }, outputs = { "out" },
  process = function(rec, ctx)
    ctx:emit("elsewhere", rec.key, rec.value)
  end,
}]], "emit.lua")
    assert.is_nil(spec)
    assert.matches("^emit%.lua:4: emit to unknown output 'elsewhere' %(declared outputs: out%)", err)
  end)

  it("refuses unknown fields, bad serdes, bad policies and empty inputs", function()
    for src, pattern in pairs({
      ['return { inputs = {"a"}, process = function() end, proccess = 1 }'] = "unknown detector field 'proccess'",
      ['return { inputs = {"a"}, process = function() end, serde = "xml" }'] = "serde 'xml' is not one of",
      ['return { inputs = {"a"}, process = function() end, on_error = "retry" }'] = "on_error 'retry' is not one of",
      ['return { inputs = {}, process = function() end }'] = "'inputs' must be a non%-empty list",
      ['return 42'] = "must return a table",
    }) do
      local spec, err = load_src(src)
      assert.is_nil(spec, src)
      assert.matches(pattern, err, 1, false)
    end
  end)
end)

describe("a folder detector", function()
  local dir
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. "/shouter/lib"))
    local function write(p, s)
      local f = assert(io.open(dir .. "/shouter/" .. p, "w"))
      f:write(s)
      f:close()
    end
    write("init.lua", [[
local util = require("util")
local more = require("lib.more")
return { inputs = { "in" }, outputs = { "out" },
  process = function(rec, ctx) ctx:emit("out", nil, more.twice(util.shout(rec.value))) end }]])
    write("util.lua", 'return { shout = function(s) return s:upper() end }')
    write("lib/more.lua", 'return { twice = function(s) return s .. s end }')
  end)
  after_each(function()
    os.execute("rm -rf " .. dir)
  end)

  it("loads init.lua and requires its own modules, named after the folder", function()
    local spec = assert(detector.load(dir .. "/shouter"))
    assert.equal("shouter", spec.name)
    local d = require("tide.testing").driver(dir .. "/shouter")
    d:pipe("in", nil, "ab")
    assert.same({ { value = "ABAB", headers = {} } }, d:read("out"))
  end)

  it("versions the modules too", function()
    local v1 = assert(detector.load(dir .. "/shouter")).version
    local f = assert(io.open(dir .. "/shouter/util.lua", "w"))
    f:write('return { shout = function(s) return s:lower() end }')
    f:close()
    assert.are_not.equal(v1, assert(detector.load(dir .. "/shouter")).version)
  end)

  it("refuses modules outside the folder and unknown ones", function()
    local f = assert(io.open(dir .. "/shouter/init.lua", "w"))
    f:write('local x = require("../etc")\nreturn {}')
    f:close()
    local spec, err = detector.load(dir .. "/shouter")
    assert.is_nil(spec)
    assert.matches("may only require their own modules", err)
    f = assert(io.open(dir .. "/shouter/init.lua", "w"))
    f:write('local x = require("missing")\nreturn {}')
    f:close()
    spec, err = detector.load(dir .. "/shouter")
    assert.is_nil(spec)
    assert.matches("module 'missing' not found", err)
  end)
end)

describe("a detector read from a copy (source_copy)", function()
  local dir
  local function write(p, s)
    local f = assert(io.open(dir .. "/" .. p, "w"))
    f:write(s)
    f:close()
  end
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. "/live/shouter " .. dir .. "/copy/one " .. dir .. "/copy/two"))
    -- the files on disk are broken; the copies hold the version to run
    write("live/x.lua", "return {,}\n")
    write("live/shouter/init.lua", 'return require("util")')
    write("live/shouter/util.lua", "error('broken util')")
    write("copy/one/x.lua", 'return { inputs = { "in" }, description = "copy", process = function() end }')
    write("copy/two/init.lua", [[
local util = require("util")
return { inputs = { "in" }, description = util.what, process = function() end }]])
    write("copy/two/util.lua", "return { what = 'copied util' }\n")
  end)
  after_each(function()
    os.execute("rm -rf " .. dir)
  end)

  it("loads the copy of a file detector under the file's own name", function()
    assert.is_nil(detector.load(dir .. "/live/x.lua"))
    local spec = assert(detector.load(dir .. "/live/x.lua", { source_copy = dir .. "/copy/one" }))
    assert.equal("copy", spec.description)
    assert.equal("x", spec.name)
    assert.equal(dir .. "/live/x.lua", spec.path)
  end)

  it("loads a folder detector's modules from the copy, and names errors after the folder", function()
    local spec = assert(detector.load(dir .. "/live/shouter", { source_copy = dir .. "/copy/two" }))
    assert.equal("copied util", spec.description)
    assert.equal("shouter", spec.name)
    write("copy/two/util.lua", "local x = 1\nerror('copy is broken too')\n")
    local bad, err = detector.load(dir .. "/live/shouter", { source_copy = dir .. "/copy/two" })
    assert.is_nil(bad)
    -- the chunk is named after the detector's own file, not the copy
    assert.matches(dir:gsub("%p", "%%%0") .. "/live/shouter/util%.lua:2: copy is broken too", err)
    assert.is_nil(err:find("/copy/", 1, true))
  end)
end)
