-- The schema registry fixture (spec/avro/registry.mjs, Node) in a process
-- of its own, for the specs: start(cluster [, user_info]) -> { url, proc,
-- down(), up(), requests() }.
local cluster = require("helpers.cluster")
local cjson = require("cjson").new()

local M = {}

local function call(url, method)
  local p = io.popen(("curl -s -X %s %s"):format(method, url))
  local out = p:read("*a")
  p:close()
  return out
end

function M.start(c, user_info)
  local argv = { "node", cluster.spec_dir .. "/avro/registry.mjs" }
  if user_info then
    argv[#argv + 1] = "--user"
    argv[#argv + 1] = user_info
  end
  local p = c:spawn(argv, { name = "registry" })
  local deadline = cluster.now() + 15 * cluster.scale
  local addr
  while not addr do
    addr = (cluster.read_file(p.stdout) or ""):match("^(127%.0%.0%.1:%d+)\n")
    if not addr then
      assert(not p:poll(), "the registry fixture exited: " .. p:log_tail(20))
      assert(cluster.now() < deadline, "the registry fixture printed no address")
      cluster.pause(20)
    end
  end
  local url = "http://" .. addr
  return {
    url = url, proc = p,
    down = function() call(url .. "/_fixture/down", "PUT") end,
    up = function() call(url .. "/_fixture/up", "PUT") end,
    requests = function() return cjson.decode(call(url .. "/_fixture/requests", "GET")) end,
  }
end

return M
