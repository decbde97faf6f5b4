-- The rockspec must list every module in scripts/, or `luarocks make` users
-- get a driver that fails on a missing require.
describe("tide-scm-1.rockspec", function()
  it("installs every module of scripts/tide and tide.core", function()
    local env = {}
    local f = assert(loadfile("tide-scm-1.rockspec"))
    setfenv(f, env)()
    local listed = {}
    for mod, path in pairs(env.build.install.lua) do listed[path] = mod end
    local p = assert(io.popen("ls scripts/tide/*.lua"))
    local n = 0
    for path in p:lines() do
      n = n + 1
      local want = path:match("scripts/(.-)%.lua$"):gsub("/init$", ""):gsub("/", ".")
      assert.equal(want, listed[path], path .. " is not in the rockspec")
    end
    p:close()
    assert.is_true(n > 5)
    assert.equal("build/lua/tide/core.so", env.build.install.lib["tide.core"])
  end)
end)
