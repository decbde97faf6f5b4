-- Errors in the record path: the failing record goes to the dead-letter topic
-- <application.id>.<detector>-dlq with headers that say what, where and which
-- version; every other record is processed.
local cluster = require("helpers.cluster")

--- Index records by value: { [value] = record }; values must be unique.
local function by_value(records)
  local idx = {}
  for _, r in ipairs(records) do
    assert.is_nil(idx[r.value], "value seen twice: " .. tostring(r.value))
    idx[r.value] = r
  end
  return idx
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

describe("integration: dead letters", function()
  local c = cluster.suite("dead_letters", { "numbers:4", "numbers-out:4", "json-in:4", "json-out:4" })

  it("sends exactly the records process() raised on to the DLQ, with their headers, and processes the rest", function()
    local fixture = cluster.fixture("detectors/raise_every_10th.lua")
    local raise_line = cluster.line_of(fixture, "RAISES HERE")
    local n = 300
    local records = {}
    for i = 1, n do records[i] = { key = "k" .. (i % 7), value = tostring(i) } end
    c:produce("numbers", records)
    local inputs = by_value(c:consume("numbers", { max = n, idle_ms = 1500 }))
    assert.are.equal(n, count(inputs))

    local app = c:app_id("every10th")
    local p = c:run(fixture, { app = app, name = "every10th", idle_timeout_ms = 1500 })
    assert.are.equal(0, p:wait(60), "tide run: " .. p:status_text() .. "\n" .. p:log_tail(20))

    local dlq_topic = app .. ".raise-every-10th-dlq"
    local dead = c:consume(dlq_topic, { max = n / 10 + 1, idle_ms = 1500 })
    assert.are.equal(n / 10, #dead, "dead letters on " .. dlq_topic)
    local version
    for _, d in ipairs(dead) do
      local num = tonumber(d.value)
      assert.is_number(num, "DLQ value is the input value")
      assert.are.equal(0, num % 10, "only multiples of ten fail, got " .. d.value)
      local input = inputs[d.value]
      assert.are.equal(input.key, d.key, "DLQ key is the input key")
      local h = d.headers or {}
      assert.are.equal("ProcessError", h["tide.error.class"])
      local msg = h["tide.error.message"] or ""
      assert.is_truthy(msg:find("raise_every_10th.lua:" .. raise_line, 1, true),
        "message names file and line (raise_every_10th.lua:" .. raise_line .. "): " .. msg)
      assert.is_truthy(msg:find("refusing a multiple of ten: " .. d.value, 1, true), "message: " .. msg)
      local tb = h["tide.error.traceback"] or ""
      assert.is_truthy(tb:find("raise_every_10th.lua", 1, true), "traceback names the fixture: " .. tb)
      assert.are.equal("numbers", h["tide.source.topic"])
      assert.are.equal(tostring(input.partition), h["tide.source.partition"])
      assert.are.equal(tostring(input.offset), h["tide.source.offset"])
      local v = h["tide.detector.version"]
      assert.is_string(v)
      assert.is_true(#v > 0, "tide.detector.version is empty")
      version = version or v
      assert.are.equal(version, v, "one detector, one version")
    end

    local out = c:consume("numbers-out", { max = n, idle_ms = 1500 })
    assert.are.equal(n - n / 10, #out, "outputs (a failed record's own emits are dropped)")
    local got = by_value(out)
    for i = 1, n do
      local v = tostring(i)
      if i % 10 == 0 then
        assert.is_nil(got[v])
        assert.is_nil(got["emitted-before-error " .. v], "emit of a failed record leaked: " .. v)
      else
        assert.is_table(got[v], "record " .. v .. " was not processed")
        assert.are.equal(inputs[v].key, got[v].key)
      end
    end

    local stopped = cluster.stopped(p)
    assert.is_table(stopped, "no 'stopped' log line\n" .. p:log_tail(20))
    assert.are.equal(n, tonumber(stopped.records_in))
    assert.are.equal(n / 10, tonumber(stopped.dlq))
    assert.are.equal(n - n / 10, tonumber(stopped.records_out))
  end)

  it("sends a record that is not JSON to the DLQ as a DecodeError (serde = 'json')", function()
    local n = 60
    local records, raw_bad = {}, {}
    for i = 1, n do
      local value
      if i % 6 == 0 then
        -- Three kinds of broken JSON.
        local kind = (i / 6) % 3
        value = (kind == 0 and '{"n": ' .. i) or (kind == 1 and "n=" .. i) or ("{'n': " .. i .. "}")
        raw_bad[value] = i
      else
        value = '{"n": ' .. i .. '}'
      end
      records[i] = { key = "j" .. i, value = value }
    end
    c:produce("json-in", records)
    local inputs = by_value(c:consume("json-in", { max = n, idle_ms = 1500 }))

    local app = c:app_id("json")
    local p = c:run(cluster.fixture("detectors/json_doubler.lua"), { app = app, name = "json", idle_timeout_ms = 1500 })
    assert.are.equal(0, p:wait(60), "tide run: " .. p:status_text() .. "\n" .. p:log_tail(20))

    local n_bad = count(raw_bad)
    local dead = c:consume(app .. ".json-doubler-dlq", { max = n_bad + 1, idle_ms = 1500 })
    assert.are.equal(n_bad, #dead, "dead letters")
    for _, d in ipairs(dead) do
      assert.is_number(raw_bad[d.value], "DLQ value is the raw invalid input, got " .. tostring(d.value))
      local h = d.headers or {}
      assert.are.equal("DecodeError", h["tide.error.class"])
      assert.is_truthy((h["tide.error.message"] or ""):find("JSON", 1, true),
        "message says what failed to decode: " .. tostring(h["tide.error.message"]))
      assert.are.equal("json-in", h["tide.source.topic"])
      assert.are.equal(tostring(inputs[d.value].offset), h["tide.source.offset"])
      assert.are.equal(tostring(inputs[d.value].partition), h["tide.source.partition"])
      assert.are.equal(inputs[d.value].key, d.key)
    end

    local out = c:consume("json-out", { max = n, idle_ms = 1500 })
    assert.are.equal(n - n_bad, #out)
    local seen = {}
    local cjson = require("cjson")
    for _, r in ipairs(out) do
      local ok, v = pcall(cjson.decode, r.value)
      assert.is_true(ok, "output is JSON: " .. tostring(r.value))
      assert.are.equal(v.n * 2, v.doubled)
      assert.are.equal("j" .. v.n, r.key)
      assert.is_nil(seen[v.n])
      seen[v.n] = true
    end
    for i = 1, n do
      if i % 6 ~= 0 then assert.is_true(seen[i], "record " .. i .. " processed") end
    end
  end)
end)
