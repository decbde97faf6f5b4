-- What a real Kafka shows and a quiet development broker hides: a backlog
-- replayed in record time across partitions (so windows downstream of a
-- repartition see no late record), and lag as the broker's group tool shows
-- it after a restart at the end of a topic.
local cluster = require("helpers.cluster")
local cjson = require("cjson")
local http = require("socket.http")

local BIG_SPENDER = [[
tide.stream("bs-payments", "json")
  :group_by(function(_, payment) return payment.card end, { name = "by-card" })
  :windowed_by(tide.tumbling{ size = "10m", grace = "1m" })
  :aggregate(0, function(total, payment) return total + payment.amount end, { name = "spent" })
  :to_stream()
  :filter(function(card, window) return window.value > 1000 end)
  :to("bs-alerts", "json")

return tide.topology{ name = "big-spender" }
]]

--- n payments over `cards` cards, one a second from t0, amounts from a
--- fixed pseudo-random sequence; each is put on a partition of its own
--- choosing (not the card's), so a partition read ahead of the others is
--- ahead in record time too.
local function payments(n, cards, partitions, t0)
  local list, seed = {}, 12345
  for i = 1, n do
    seed = (seed * 1103515245 + 12345) % 2147483648
    local card = "card-" .. (seed % cards)
    local amount = 1 + math.floor(seed / 7) % 300
    list[i] = { key = card, value = cjson.encode({ card = card, amount = amount }),
      timestamp = t0 + i * 1000, partition = math.floor(seed / 13) % partitions }
  end
  return list
end

--- Alerts as a sorted list of "card start end total" lines.
local function alert_lines(records)
  local lines = {}
  for _, r in ipairs(records) do
    local v = type(r.value) == "string" and cjson.decode(r.value) or r.value
    lines[#lines + 1] = ("%s %d %d %d"):format(r.key, v.start, v["end"], v.value)
  end
  table.sort(lines)
  return lines
end

describe("integration: production behaviour", function()
  -- The mock has no CreateTopics and auto-creates with 4 partitions: the
  -- detector's internal topics exist up front, with its inputs' 8.
  local c = cluster.suite("production", { "bs-payments:8", "bs-alerts:8", "lag-in:4", "lag-out:4",
    "bs.big-spender-by-card-repartition:8", "bs.big-spender-spent-changelog:8", "bs.big-spender-dlq:8" })

  it("replays a backlog in record time across partitions: every window as `tide test` gives it", function()
    local t0 = (math.floor(os.time() / 3600) - 48) * 3600 * 1000
    local list = payments(20000, 200, 8, t0)
    -- The backlog, each partition's records written together: partition 0
    -- first, then 1, and so on.
    local by_partition = {}
    for _, r in ipairs(list) do
      by_partition[r.partition] = by_partition[r.partition] or {}
      table.insert(by_partition[r.partition], r)
    end
    for p = 0, 7 do c:produce("bs-payments", by_partition[p] or {}) end

    local detector = c:path("big_spender.lua")
    local f = assert(io.open(detector, "w"))
    f:write(BIG_SPENDER)
    f:close()
    local run = c:run(detector, { app = "bs", name = "bs", idle_timeout_ms = 3000 })
    assert.are.equal(0, run:wait(180), "tide run: " .. run:status_text() .. "\n" .. run:log_tail(20))
    local stopped = cluster.stopped(run)
    assert.is_table(stopped, "no 'stopped' line")
    assert.are.equal("0", tostring(stopped.dropped_late), "records dropped as late\n" .. run:log_tail(20))
    local live = alert_lines(c:consume("bs-alerts", { idle_ms = 2000, timeout = 120 }))

    -- The same records, sorted by time, through `tide test`.
    local input = c:path("payments.jsonl")
    local jf = assert(io.open(input, "w"))
    for _, r in ipairs(list) do
      jf:write(cjson.encode({ topic = "bs-payments", key = r.key, value = cjson.decode(r.value),
        timestamp = r.timestamp }), "\n")
    end
    jf:close()
    local test = c:spawn({ cluster.bin(), "test", detector, "--input", input }, { name = "tide-test" })
    assert.are.equal(0, test:wait(120), "tide test: " .. test:status_text() .. "\n" .. test:log_tail(20))
    local expected = {}
    for line in test:stdout_text():gmatch("[^\n]+") do expected[#expected + 1] = cjson.decode(line) end
    expected = alert_lines(expected)
    assert.is_true(#expected > 100, "the load makes alerts: " .. #expected)
    assert.are.same(expected, live)
  end)

  it("shows no lag after a restart at the end of its input (the committed offset, not the log's start)",
    function()
    local values = {}
    for i = 1, 4000 do values[i] = "lag-" .. i end
    c:produce("lag-in", values)
    local dir = c:path("lag-detectors")
    assert(os.execute("mkdir -p " .. dir))
    local f = assert(io.open(dir .. "/lagger.lua", "w"))
    f:write([[return { name = "lagger", inputs = { "lag-in" }, outputs = { "lag-out" },
      process = function(rec, ctx) ctx:emit("lag-out", rec.key, rec.value) end }]])
    f:close()
    local app = c:app_id("lag")
    local function start(name)
      local host = c:run(dir, { app = app, name = name, config = { ["admin.port"] = 0 } })
      local ev = host:wait_for_log(function(e)
        return e.msg and e.msg:find("admin server listening", 1, true)
      end)
      return host, tonumber(ev.msg:match("127%.0%.0%.1:(%d+)"))
    end
    local function lag(port)
      local body = http.request(("http://127.0.0.1:%d/metrics"):format(port))
      return body and tonumber(body:match('tide_consumer_lag_records{detector="lagger"} (%-?%d+)'))
    end
    local first, port = start("first")
    cluster.eventually(function() return lag(port) == 0 end, 60, "the first run to catch up (lag 0)")
    first:kill("TERM")
    assert.are.equal(0, first:wait(30), "first: " .. first:status_text())

    -- Restarted at the end: nothing to read, and nothing behind.
    local second, port2 = start("second")
    second:wait_for_log("partitions assigned", 30)
    local seen = cluster.eventually(function()
      local l = lag(port2)
      return l and l >= 0 and l
    end, 20, "a lag figure")
    assert.are.equal(0, seen, "lag right after the restart")
    -- New records show as lag until read, then it is 0 again.
    c:produce("lag-in", { "lag-more-1", "lag-more-2" })
    cluster.eventually(function() return lag(port2) == 0 end, 30, "lag back to 0")
    second:kill("TERM")
    assert.are.equal(0, second:wait(30), "second: " .. second:status_text())
  end)
end)
