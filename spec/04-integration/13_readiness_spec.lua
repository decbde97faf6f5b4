-- `tide run DIR`'s probes: /readyz is 503 while a detector is failed or
-- quarantined, naming it and why, and 200 once every detector runs; /healthz
-- says only that the process is alive, whatever its detectors do.
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

local function get(port, path)
  local body, code = http.request(("http://127.0.0.1:%d%s"):format(port, path))
  return body, code
end

local function eventually(what, f, timeout)
  return cluster.eventually(f, timeout or 30, { what = what })
end

local function passthrough(name, input, output)
  return ([[
return {
  name = %q, inputs = { %q }, outputs = { %q },
  process = function(rec, ctx) ctx:emit(%q, nil, rec.value) end,
}
]]):format(name, input, output, output)
end

describe("integration: health and readiness probes", function()
  local c = cluster.suite("probes", { "rd-in:2", "rd-out:2", "rd-bin:2", "rd-bout:2" })

  it("/readyz is 503 with the reason while a detector is failed or quarantined, /healthz 200", function()
    local dir = c:path("detectors")
    assert(os.execute("mkdir -p " .. dir))
    write(dir .. "/steady.lua", passthrough("steady", "rd-in", "rd-out"))
    write(dir .. "/broken.lua", "return {\n  inputs = { 'rd-bin' },,\n}\n")
    -- one crash quarantines, so that a kill -9 shows the quarantined state
    local host = c:run(dir, { name = "host", config = { ["admin.port"] = 0,
      ["reload.debounce.ms"] = 50, ["detector.quarantine.crashes"] = 1 } })
    local ev = host:wait_for_log(function(e)
      return e.msg and e.msg:find("admin server listening", 1, true)
    end)
    local port = tonumber(ev.msg:match("127%.0%.0%.1:(%d+)"))
    host:wait_for_log({ detector = "steady", msg = "partitions assigned" })

    -- failed: the file does not load
    local body = eventually("/readyz naming the failed detector", function()
      local b, code = get(port, "/readyz")
      return code == 503 and b:find("broken failed: ", 1, true) and b
    end)
    assert.matches("^not ready\n", body)
    assert.matches("broken%.lua:2:", body)
    assert.is_nil(body:find("steady", 1, true), "a running detector is not a reason")
    local health, hcode = get(port, "/healthz")
    assert.equal(200, hcode)
    assert.equal("ok\n", health)
    local api = cjson.decode((get(port, "/api/detectors")))
    assert.is_false(api.ready)

    -- fixed: every detector runs, ready
    write(dir .. "/broken.lua", passthrough("broken", "rd-bin", "rd-bout"))
    eventually("/readyz 200", function()
      local b, code = get(port, "/readyz")
      return code == 200 and b == "ready\n"
    end)
    assert.matches("\ntide_ready 1\n", (get(port, "/metrics")))

    -- quarantined: its worker crashed
    local pid = eventually("the worker's pid", function()
      for _, d in ipairs(cjson.decode((get(port, "/api/detectors"))).detectors) do
        if d.name == "broken" and d.state == "running" and d.pid > 0 then return d.pid end
      end
    end)
    assert.is_true(os.execute("kill -9 " .. pid) == 0 or true)
    body = eventually("/readyz naming the quarantined detector", function()
      local b, code = get(port, "/readyz")
      return code == 503 and b:find("broken quarantined: ", 1, true) and b
    end)
    assert.matches("quarantined after 1 crashes", body)
    assert.equal(200, select(2, get(port, "/healthz")))
    assert.matches("\ntide_ready 0\n", (get(port, "/metrics")))

    -- saving the file starts it again
    write(dir .. "/broken.lua", passthrough("broken", "rd-bin", "rd-bout"))
    eventually("/readyz 200 again", function()
      local _, code = get(port, "/readyz")
      return code == 200
    end)
  end)
end)
