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
end)
