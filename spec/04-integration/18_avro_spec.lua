-- Avro in the schema registry's wire format end to end: `tide produce
-- --avro`, a detector reading and writing Avro through the registry (the
-- fixture that serves Confluent's REST responses), `tide consume --avro`,
-- dead letters for what is not Avro, and a registry outage that makes
-- records wait (lag grows) instead of dead-lettering them.
local cluster = require("helpers.cluster")
local fixture = require("helpers.registry")
local cjson = require("cjson").new()
local http = require("socket.http")

local PAYMENT = [[{"type":"record","name":"Payment","namespace":"shop","fields":[
  {"name":"card","type":"string"},{"name":"amount","type":"double"},
  {"name":"country","type":["null","string"],"default":null}]}]]
local ALERT = [[{"type":"record","name":"Alert","namespace":"shop","fields":[
  {"name":"card","type":"string"},{"name":"amount","type":"double"},{"name":"reason","type":"string"}]}]]

local function detector(input, output)
  return ([[
tide.stream(%q, "avro", { schema = "schemas/payment.avsc" })
  :filter(function(_, p) return p.amount > 1000 end)
  :map_values(function(p) return { card = p.card, amount = p.amount, reason = "large" } end)
  :to(%q, "avro", { schema = "schemas/alert.avsc" })
return tide.topology{ name = "big" }
]]):format(input, output)
end

local PAYMENTS = {
  '{"card": "c1", "amount": 2500}',
  '{"card": "c2", "amount": 3, "country": "FR"}',
  '{"card": "c3", "amount": 1200.5, "country": "DE"}',
}

local function eventually(what, f, timeout)
  local deadline = cluster.now() + (timeout or 30) * cluster.scale
  while true do
    local v = f()
    if v then return v end
    if cluster.now() >= deadline then error("timed out waiting for " .. what, 2) end
    cluster.pause(100)
  end
end

describe("integration: Avro and the schema registry", function()
  local c = cluster.suite("avro", { "av-pay:2", "av-alerts:2", "av-pay2:2", "av-alerts2:2" })
  local AUTH = "alice:s3cret-pw"

  local function detector_dir(input, output)
    local dir = c:path("detectors")
    assert(os.execute("mkdir -p " .. dir .. "/schemas"))
    cluster.write_file(dir .. "/schemas/payment.avsc", PAYMENT)
    cluster.write_file(dir .. "/schemas/alert.avsc", ALERT)
    cluster.write_file(dir .. "/big.lua", detector(input, output))
    return dir
  end

  local function produce_avro(f, topic, dir)
    local input = c:path("payments.in")
    cluster.write_file(input, table.concat(PAYMENTS, "\n") .. "\n")
    local p = c:spawn({ cluster.bin(), "produce", topic, "-b", c.addr, "--avro", dir .. "/schemas/payment.avsc" },
      { stdin = input, env = { TIDE_SCHEMA_REGISTRY_URL = f.url, TIDE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO = AUTH } })
    assert.equal(0, p:wait(60), p:log_tail(10))
  end

  local function consume_avro(f, topic)
    local p = c:spawn({ cluster.bin(), "consume", topic, "-b", c.addr, "--from-beginning", "--json",
      "--avro", "-r", f.url, "--idle-timeout-ms", "1500" },
      { env = { TIDE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO = AUTH } })
    assert.equal(0, p:wait(60), p:log_tail(10))
    local out = {}
    for line in p:stdout_text():gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
    table.sort(out, function(a, b) return a.value.card < b.value.card end)
    return out
  end

  it("reads and writes Avro through the registry, and dead-letters what is not Avro", function()
    local f = fixture.start(c, AUTH)
    local dir = detector_dir("av-pay", "av-alerts")
    produce_avro(f, "av-pay", dir)
    c:produce("av-pay", { "plain text, not Avro" })
    local run = c:run(dir .. "/big.lua", { count = 4, config = {
      ["schema.registry.url"] = f.url, ["schema.registry.basic.auth.user.info"] = AUTH } })
    assert.equal(0, run:wait(60), run:log_tail(20))
    local alerts = consume_avro(f, "av-alerts")
    assert.equal(2, #alerts)
    assert.same({ card = "c1", amount = 2500, reason = "large" }, alerts[1].value)
    assert.same({ card = "c3", amount = 1200.5, reason = "large" }, alerts[2].value)
    -- the detector registered its output's schema under the topic's subject
    local registered = false
    for _, r in ipairs(f.requests()) do
      if r == "POST /subjects/av-alerts-value/versions" then registered = true end
    end
    assert.is_true(registered)
    local dead = c:consume(run.app .. ".big-dlq")
    assert.equal(1, #dead)
    assert.equal("DecodeError", dead[1].headers["tide.error.class"])
    assert.matches("unknown magic byte 112", dead[1].headers["tide.error.message"])
    assert.equal("plain text, not Avro", dead[1].value)
    -- the registry's password never shows in the log
    assert.is_nil(cluster.read_file(run.stderr):find("s3cret-pw", 1, true))
    assert.truthy(cluster.read_file(run.stderr):find("[redacted]", 1, true))
  end)

  it("makes records wait while the registry is down, and lag shows it; none is dead-lettered", function()
    local f = fixture.start(c)
    local dir = detector_dir("av-pay2", "av-alerts2")
    local env = { TIDE_SCHEMA_REGISTRY_URL = f.url }
    local input = c:path("payments2.in")
    cluster.write_file(input, table.concat(PAYMENTS, "\n") .. "\n")
    local p = c:spawn({ cluster.bin(), "produce", "av-pay2", "-b", c.addr, "--avro",
      dir .. "/schemas/payment.avsc" }, { stdin = input, env = env })
    assert.equal(0, p:wait(60), p:log_tail(10))
    f.down()
    local host = c:run(dir, { name = "host", config = { ["admin.port"] = 0,
      ["schema.registry.url"] = f.url, ["schema.registry.retry.backoff.max.ms"] = 400 } })
    local ev = host:wait_for_log(function(e) return e.msg and e.msg:find("admin server listening", 1, true) end)
    local port = tonumber(ev.msg:match("127%.0%.0%.1:(%d+)"))
    host:wait_for_log(function(e) return e.msg and e.msg:find("is unavailable", 1, true) end, 60)
    local function metric(name)
      local body = http.request(("http://127.0.0.1:%d/metrics"):format(port)) or ""
      return tonumber(body:match(name .. '{detector="big"[^}]*} (%d+)'))
    end
    eventually("lag while the registry is down", function()
      local lag = metric("tide_consumer_lag_records")
      return lag and lag >= 3
    end)
    assert.equal(0, metric("tide_dlq_records_total") or 0)
    assert.equal(0, metric("tide_records_in_total") or 0)
    f.up()
    local out = c:wait_for_records("av-alerts2", 2, 60, { watch = host })
    assert.equal(2, #out)
    eventually("lag back to 0", function() return metric("tide_consumer_lag_records") == 0 end)
    assert.equal(0, metric("tide_dlq_records_total") or 0)
    assert.equal(3, metric("tide_records_in_total"))
    host:wait_for_log(function(e) return e.msg and e.msg:find("is back after", 1, true) end)
    assert.is_false(host:poll()) -- the worker never ended
  end)
end)
