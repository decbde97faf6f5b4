-- `tide run DIR`: detectors dropped in, hot-swapped, broken, removed, hung and
-- reloaded many times, each in its own worker, against a broker in its own
-- process.
local cluster = require("helpers.cluster")
local cjson = require("cjson")
local http = require("socket.http")

local function write(path, text)
  -- Write beside and rename into place, as deploy tools do.
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

local function api(port)
  local body, code = get(port, "/api/detectors")
  assert.equal(200, code)
  local by = {}
  for _, d in ipairs(cjson.decode(body).detectors) do by[d.name] = d end
  return by
end

local function passthrough(name, input, output, tag, busy_s)
  return ([[
return {
  name = %q, inputs = { %q }, outputs = { %q },
  process = function(rec, ctx)
    local t = os.clock() + %s -- per-record cost, so that a swap lands mid-stream
    while os.clock() < t do end
    ctx:emit(%q, tostring(rec.partition), %q .. ":" .. rec.partition .. ":" .. rec.offset)
  end,
}
]]):format(name, input, output, tostring(busy_s or 0), output, tag)
end

local function proc_count(pid, what)
  local p = io.popen("ls /proc/" .. pid .. "/" .. what .. " 2>/dev/null | wc -l")
  local n = tonumber(p:read("*a"))
  p:close()
  return n
end

local function rss_kb(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

describe("integration: a folder of detectors", function()
  local host, port, dir
  local c = cluster.suite("folder", { "f-in:4", "f-out-a:4", "f-out-b:4", "swap-in:4", "swap-out:4",
    "loop-in:1", "loop-out:1", "steady-in:4", "steady-out:4", "hog-in:2", "hog-out:2",
    "crash-in:2", "crash-out:2" })

  before_each(function()
    dir = c:path("detectors-" .. tostring(math.random(1e9)))
    assert(os.execute("mkdir -p " .. dir))
  end)

  local function start(config)
    config = config or {}
    config["admin.port"] = 0
    config["reload.debounce.ms"] = config["reload.debounce.ms"] or 50
    host = c:run(dir, { config = config, name = "host" })
    local ev = host:wait_for_log(function(e)
      return e.msg and e.msg:find("admin server listening", 1, true)
    end)
    port = tonumber(ev.msg:match("127%.0%.0%.1:(%d+)"))
    assert.is_number(port)
    return host
  end

  it("starts a dropped-in detector without touching the others, and serves it", function()
    write(dir .. "/a.lua", passthrough("a", "f-in", "f-out-a", "a"))
    start()
    host:wait_for_log({ detector = "a", msg = "partitions assigned" })
    c:produce("f-in", { "1", "2", "3" })
    c:wait_for_records("f-out-a", 3, 30)
    local assigned_a = #host:find_events({ detector = "a", msg = "partitions assigned" })

    local t0 = cluster.now()
    write(dir .. "/b.lua", passthrough("b", "f-in", "f-out-b", "b"))
    local out = c:wait_for_records("f-out-b", 3, 30)
    local took = cluster.now() - t0
    print(("  (dropped-in detector: first outputs read back after %.2fs)"):format(took))
    assert.equal(3, #out)
    -- a was not restarted or rebalanced by b's arrival
    assert.equal(assigned_a, #host:find_events({ detector = "a", msg = "partitions assigned" }))
    local by = cluster.eventually(function()
      local d = api(port)
      return d.a and d.b and d.a.state == "running" and d.b.state == "running" and d
    end, 30, { what = "both detectors running", watch = host })
    assert.is_true(by.b.counters.records_in >= 3)
    local metrics = get(port, "/metrics")
    assert.matches('tide_records_in_total{detector="b"} %d', metrics)
    local _, ready = get(port, "/readyz")
    assert.equal(200, ready)
  end)

  it("hot-swaps under load with no gap and no repeat, keeps a broken edit out, and stops a removed detector", function()
    local path = dir .. "/swap.lua"
    write(path, passthrough("swap", "swap-in", "swap-out", "v1", 0.0001))
    start()
    host:wait_for_log({ detector = "swap", msg = "partitions assigned" })
    local n = 20000
    local lines = {}
    for i = 1, n do lines[i] = tostring(i) end
    local producer = c:produce_async("swap-in", lines)
    -- swap once records are flowing
    cluster.eventually(function()
      local d = api(port).swap
      return d and d.counters.records_in > 0
    end, 30, { what = "records flowing", watch = host })
    write(path, passthrough("swap", "swap-in", "swap-out", "v2", 0.0001))
    host:wait_for_log({ detector = "swap", msg = "detector reloaded" })
    assert.equal(0, (producer:wait(60)))
    local out = c:wait_for_records("swap-out", n, 60)
    assert.equal(n, #out)
    -- per input partition: offsets 0..k-1 each exactly once, v1 then v2
    local seen = {}
    for _, r in ipairs(out) do
      local tag, p, off = r.value:match("^(v%d):(%d+):(%d+)$")
      p, off = tonumber(p), tonumber(off)
      seen[p] = seen[p] or {}
      seen[p][#seen[p] + 1] = { tag = tag, off = off }
    end
    local versions = {}
    for p, list in pairs(seen) do
      table.sort(list, function(x, y) return x.off < y.off end)
      for i, e in ipairs(list) do
        assert.equal(i - 1, e.off, ("partition %d: gap or repeat at %d"):format(p, i - 1))
        if i > 1 and list[i - 1].tag == "v2" then
          assert.equal("v2", e.tag, ("partition %d went back to v1 at offset %d"):format(p, e.off))
        end
        versions[e.tag] = true
      end
    end
    assert.is_true(versions.v1 and versions.v2, "both versions processed records")
    -- no rebalance: one assignment only
    assert.equal(1, #host:find_events({ detector = "swap", msg = "partitions assigned" }))

    -- a broken edit changes nothing: v2 goes on, the failure is visible
    write(path, "return {\n  inputs = { 'swap-in' },,\n}\n")
    local d = cluster.eventually(function()
      local s = api(port).swap
      return s and s.reloads and #s.reloads >= 2 and not s.reloads[#s.reloads].ok and s
    end, 30, { what = "the failed reload in the API", watch = host })
    assert.matches("swap%.lua:2:", d.reloads[#d.reloads].message)
    assert.equal("running", d.state)
    c:produce("swap-in", { "after-broken-edit" })
    local after = c:wait_for_records("swap-out", n + 1, 30)
    local last_tag = nil
    for _, r in ipairs(after) do
      if r.value:match("^v2:") then last_tag = "v2" end
    end
    assert.equal("v2", last_tag)
    local metrics = get(port, "/metrics")
    assert.matches('tide_reload_failures_total{detector="swap"} 1', metrics)

    -- removing the file stops the detector: commit, leave the group
    os.remove(path)
    host:wait_for_log({ detector = "swap", msg = "left consumer group" })
    cluster.eventually(function() return api(port).swap == nil end, 30,
      { what = "the detector gone from the API", watch = host })
  end)

  it("kills a detector stuck in a loop, quarantines its poison record, and the others keep going", function()
    write(dir .. "/looper.lua", [[
return {
  inputs = { "loop-in" }, outputs = { "loop-out" },
  process = function(rec, ctx)
    if rec.value == "loop" then while true do end end
    ctx:emit("loop-out", nil, rec.value)
  end,
}
]])
    write(dir .. "/steady.lua", passthrough("steady", "steady-in", "steady-out", "s"))
    -- a killed worker's successor rejoins once the dead member's session ends
    start({ ["detector.batch.timeout.ms"] = 1000, ["detector.poison.kills"] = 2,
      ["consumer.session.timeout.ms"] = 3000, ["consumer.heartbeat.interval.ms"] = 500 })
    host:wait_for_log({ detector = "looper", msg = "partitions assigned" })
    host:wait_for_log({ detector = "steady", msg = "partitions assigned" })
    c:produce("loop-in", { "ok-1", "loop", "ok-2" })
    local steady = {}
    for i = 1, 5000 do steady[i] = tostring(i) end
    c:produce("steady-in", steady)
    -- the other detector is not held up by the loop
    assert.equal(5000, #c:wait_for_records("steady-out", 5000, 30))
    -- killed twice on the same record, then it is dead-lettered unrun
    local dead = c:wait_for_records(host.app .. ".looper-dlq", 1, 60)
    assert.equal("loop", dead[1].value)
    assert.equal("PoisonPill", dead[1].headers["tide.error.class"])
    local out = c:wait_for_records("loop-out", 2, 30)
    local got = {}
    for _, r in ipairs(out) do got[r.value] = true end
    assert.is_true(got["ok-1"] and got["ok-2"])
    assert.is_true(#host:find_events(function(e)
      return e.msg and e.msg:find("killing worker", 1, true) and e.msg:find("looper", 1, true)
    end) >= 2)
    local d = api(port).looper
    assert.is_true(d.watchdog_kills >= 2)
    assert.is_true(d.restarts >= 2)
  end)

  it("loads a file once it is complete, once per burst of saves, and ignores editor files", function()
    write(dir .. "/burst.lua", passthrough("burst", "f-in", "f-out-a", "b0"))
    start({ ["reload.debounce.ms"] = 300 })
    host:wait_for_log({ detector = "burst", msg = "partitions assigned" })
    -- editor droppings: none of these is a detector
    for _, name in ipairs({ ".burst.lua.swp", "#burst.lua#", "burst.lua~", ".hidden.lua", "notes.txt" }) do
      local f = assert(io.open(dir .. "/" .. name, "w"))
      f:write("this is not lua {{{")
      f:close()
    end
    -- a burst of ten saves in place (no rename), as an editor writes
    for i = 1, 10 do
      local f = assert(io.open(dir .. "/burst.lua", "w"))
      f:write(passthrough("burst", "f-in", "f-out-a", "b" .. i))
      f:close()
    end
    local d = cluster.eventually(function()
      local x = api(port).burst
      return x and x.counters.reloads >= 1 and x
    end, 30, { what = "one reload", watch = host })
    -- a half-written file, still open: nothing happens until it is closed
    local f = assert(io.open(dir .. "/half.lua", "w"))
    f:write("return {\n  inputs = { 'f-in' },\n")
    f:flush()
    local settle_ms = 1000
    local t0 = cluster.now()
    while cluster.now() - t0 < settle_ms / 1000 do
      assert.is_nil(api(port).half, "a half-written file was loaded")
      cluster.pause(100)
    end
    f:write("  outputs = { 'f-out-b' },\n  process = function(rec, ctx) ctx:emit('f-out-b', nil, 'half') end,\n}\n")
    f:close()
    cluster.eventually(function()
      local x = api(port)["half"]
      return x and x.state == "running"
    end, 30, { what = "the completed file running", watch = host })
    d = api(port)
    assert.equal(1, d.burst.counters.reloads, "one reload for the burst")
    assert.equal(0, d.burst.counters.reload_failures)
    local names = {}
    for name in pairs(d) do names[#names + 1] = name end
    table.sort(names)
    assert.same({ "burst", "half" }, names)
  end)

  it("stops every worker cleanly on SIGTERM: each commits and leaves its group", function()
    write(dir .. "/one.lua", passthrough("one", "f-in", "f-out-a", "1"))
    write(dir .. "/two.lua", passthrough("two", "f-in", "f-out-b", "2"))
    start()
    host:wait_for_log({ detector = "one", msg = "partitions assigned" })
    host:wait_for_log({ detector = "two", msg = "partitions assigned" })
    local pids = {}
    for name, d in pairs(api(port)) do pids[name] = d.pid end
    assert.is_true(host:kill("TERM"))
    assert.equal(0, (host:wait(30)))
    for _, name in ipairs({ "one", "two" }) do
      assert.is_table(host:find_events({ detector = name, msg = "left consumer group" })[1],
        name .. " did not leave its group")
      assert.is_nil(io.open("/proc/" .. pids[name] .. "/stat"), name .. "'s worker outlived the host")
    end
  end)

  it("caps a memory-hungry detector without harming its neighbour", function()
    local hog = io.open(cluster.fixture("detectors/memory_hog.lua")):read("*a")
    write(dir .. "/memory_hog.lua", hog)
    write(dir .. "/steady.lua", passthrough("steady", "steady-in", "steady-out", "m"))
    start({ ["detector.memory.limit.bytes"] = 16 * 1024 * 1024 })
    host:wait_for_log({ detector = "memory_hog", msg = "partitions assigned" })
    host:wait_for_log({ detector = "steady", msg = "partitions assigned" })
    local before = #c:consume("steady-out", { idle_ms = 500 })
    c:produce("hog-in", { "a", "hog", "b" })
    local lines = {}
    for i = 1, 2000 do lines[i] = tostring(i) end
    c:produce("steady-in", lines)
    assert.equal(before + 2000, #c:wait_for_records("steady-out", before + 2000, 30))
    local dead = c:wait_for_records(host.app .. ".memory_hog-dlq", 1, 30)
    assert.equal("MemoryError", dead[1].headers["tide.error.class"])
    assert.equal(2, #c:wait_for_records("hog-out", 2, 30))
    local d = api(port)
    assert.equal(0, d.memory_hog.restarts)
    assert.equal("running", d.steady.state)
    assert.is_true(d.memory_hog.lua_heap_bytes < 16 * 1024 * 1024)
  end)

  it("restarts a worker killed from outside, and only that one", function()
    write(dir .. "/crashy.lua", passthrough("crashy", "crash-in", "crash-out", "k"))
    write(dir .. "/steady.lua", passthrough("steady", "steady-in", "steady-out", "s2"))
    start({ ["consumer.session.timeout.ms"] = 3000, ["consumer.heartbeat.interval.ms"] = 500 })
    host:wait_for_log({ detector = "crashy", msg = "partitions assigned" })
    local d0 = cluster.eventually(function()
      local d = api(port)
      return d.crashy and d.steady and d.crashy.state == "running" and d.steady.state == "running" and d
    end, 30, { what = "both running", watch = host })
    assert.is_true(os.execute("kill -SEGV " .. d0.crashy.pid) == 0 or true)
    local d1 = cluster.eventually(function()
      local d = api(port)
      return d.crashy and d.crashy.restarts == 1 and d.crashy.state == "running" and d
    end, 30, { what = "crashy restarted", watch = host })
    assert.are_not.equal(d0.crashy.pid, d1.crashy.pid)
    assert.equal(d0.steady.pid, d1.steady.pid)
    assert.matches("signal 11", d1.crashy.last_exit)
    c:produce("crash-in", { "after-the-crash" })
    local out = c:wait_for_records("crash-out", 1, 30)
    assert.matches("^k:", out[#out].value)
  end)

  it("stays flat over 100 reloads: descriptors, threads and RSS", function()
    local path = dir .. "/churn.lua"
    write(path, passthrough("churn", "f-in", "f-out-a", "c0"))
    start()
    host:wait_for_log({ detector = "churn", msg = "partitions assigned" })
    local worker = cluster.eventually(function()
      local d = api(port).churn
      return d and d.pid > 0 and d.pid
    end, 30, { what = "the churn worker", watch = host })
    --- The supervisor's descriptors once the status server has let go of
    --- the last API call's connection (it keeps it until the client's close
    --- reaches it): the fewest seen over half a second. A leak still shows.
    local function supervisor_fds()
      local fewest = math.huge
      for _ = 1, 10 do
        fewest = math.min(fewest, proc_count(host.pid, "fd"))
        cluster.pause(50)
      end
      return fewest
    end
    local function measure()
      return {
        sv_fd = supervisor_fds(), sv_threads = proc_count(host.pid, "task"),
        sv_rss = rss_kb(host.pid),
        w_fd = proc_count(worker, "fd"), w_threads = proc_count(worker, "task"),
      }
    end
    -- warm up, then measure
    local count = 0
    local function reload_once()
      count = count + 1
      local tag = "c" .. count
      write(path, passthrough("churn", "f-in", "f-out-a", tag))
      -- The counter and the history come from the same pass of the
      -- supervisor: once it counts the reload, its last entry is this one.
      cluster.eventually(function()
        local d = api(port).churn
        local last = d and d.reloads[#d.reloads]
        return d and d.counters.reloads == count and last and last.ok
      end, 20, { what = "reload " .. count, watch = host })
    end
    for _ = 1, 5 do reload_once() end
    local before = measure()
    for _ = 1, 100 do reload_once() end
    local after = measure()
    print(("  (100 reloads: supervisor fds %d->%d threads %d->%d rss %d->%d kB; worker fds %d->%d threads %d->%d)")
      :format(before.sv_fd, after.sv_fd, before.sv_threads, after.sv_threads, before.sv_rss, after.sv_rss,
        before.w_fd, after.w_fd, before.w_threads, after.w_threads))
    assert.equal(worker, api(port).churn.pid, "hot swaps, not restarts")
    assert.equal(before.sv_fd, after.sv_fd)
    assert.equal(before.sv_threads, after.sv_threads)
    assert.is_true(after.sv_rss - before.sv_rss < 4096, "supervisor RSS grew by more than 4 MB")
    assert.equal(before.w_fd, after.w_fd)
    assert.equal(before.w_threads, after.w_threads)
  end)
end)
