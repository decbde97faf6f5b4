-- `tide test` (a detector on records from a file, no broker) and `tide replay`
-- (a detector over recorded traffic, compared with the running version),
-- through the tide binary; replay reads from a broker in its own process.
local cluster = require("helpers.cluster")
local cjson = require("cjson").new()

local null = cjson.null

local function decode_lines(text)
  local list = {}
  for line in text:gmatch("[^\n]+") do
    local ok, v = pcall(cjson.decode, line)
    assert(ok and type(v) == "table", "not a JSON object: " .. line)
    list[#list + 1] = v
  end
  return list
end

local function jsonl(records)
  local lines = {}
  for i, r in ipairs(records) do lines[i] = type(r) == "string" and r or cjson.encode(r) end
  return table.concat(lines, "\n") .. "\n"
end

--- The changed records of a diff: { "-key value", "+key value", ... } sorted.
local function changes(diff)
  local list = {}
  for line in diff:gmatch("[^\n]+") do
    local sign, json = line:match("^([-+])({.*)$")
    if sign then
      local r = cjson.decode(json)
      list[#list + 1] = ("%s%s %s"):format(sign, tostring(r.key), tostring(r.value))
    end
  end
  table.sort(list)
  return list
end

-- The text transformer's next version: keeps "e" words too, and shouts.
local V2 = [[
return {
  name = "text-transformer",
  inputs = { "text-input" },
  outputs = { "text-output" },
  process = function(rec, ctx)
    local v = rec.value
    if v and (v:find("a", 1, true) or v:find("e", 1, true)) then
      ctx:emit("text-output", rec.key, v:upper() .. "!")
    end
  end,
}
]]

-- A JSON detector with two outputs.
local SPLITTER = [[
return {
  name = "splitter",
  inputs = { "words" },
  outputs = { "long", "short" },
  serde = "json",
  process = function(rec, ctx)
    local w = rec.value.word
    ctx:emit(#w > 4 and "long" or "short", rec.key, { word = w, n = #w })
  end,
}
]]

describe("integration: tide test and tide replay", function()
  local c = cluster.suite("cli", { "text-input:2", "text-output:2", "stamped:1" })

  local function write(label, text)
    local path = c:path(label)
    cluster.write_file(path, text)
    return path
  end

  --- Run `tide ARGS...` to its end: exit code, stdout, stderr.
  local function tide(...)
    local argv = { cluster.bin(), ... }
    local p = c:spawn(argv, { name = argv[2] })
    local code = p:wait(60)
    return code, p:stdout_text(), p:stderr_text()
  end

  local transformer = cluster.example("text_transformer.lua")

  it("tide test prints what the detector emitted as JSON lines, and a summary on stderr", function()
    local input = write("in.jsonl", jsonl({
      { key = "k1", value = "banana", timestamp = 1000 },
      { key = "k2", value = "kiwi" },
      { key = null, value = "apple", headers = { h = "v" } },
      { topic = "text-input", key = "k3", value = "tab\tand \"quote\"" },
    }))
    local code, out, err = tide("test", transformer, "--input", input)
    assert.are.equal(0, code, err)
    assert.are.same({
      { topic = "text-output", key = "k1", value = "BANANA", timestamp = 1000 },
      { topic = "text-output", key = null, value = "APPLE", headers = { h = "v" } }, -- carried through
      { topic = "text-output", key = "k3", value = "TAB\tAND \"QUOTE\"" },
    }, decode_lines(out))
    assert.is_truthy(err:find("records in: 4", 1, true), err)
    assert.is_truthy(err:find("text-output: 3 out", 1, true), err)
  end)

  --- `tide test` of the splitter on four words, with an --expect file of
  --- `expect_lines` when given.
  local function test_splitter(expect_lines)
    local args = { "test", write("splitter.lua", SPLITTER), "--input", write("words.jsonl", jsonl({
      { key = "1", value = { word = "banana" } }, { key = "2", value = { word = "fig" } },
      { key = "3", value = { word = "cherry" } }, { key = "4", value = { word = "kiwi" } },
    })) }
    if expect_lines then
      args[#args + 1] = "--expect"
      args[#args + 1] = write("words-expect.jsonl", jsonl(expect_lines))
    end
    return tide(unpack(args))
  end

  it("tide test --expect exits 0 when the records are equal as JSON, whatever the order across topics", function()
    local code, out, err = test_splitter()
    assert.are.equal(0, code, err)
    local topics = {}
    for i, r in ipairs(decode_lines(out)) do topics[i] = r.topic end
    assert.are.same({ "long", "long", "short", "short" }, topics)
    -- Topics interleaved, keys in other orders, other spacing: still equal.
    code, out, err = test_splitter({
      '{"topic":"short","key":"2","value":{"n":3,"word":"fig"}}',
      '{ "value": {"word": "banana", "n": 6}, "topic": "long", "key": "1" }',
      '{"topic":"short","key":"4","value":{"word":"kiwi","n":4}}',
      '{"key":"3","topic":"long","value":{"n":6,"word":"cherry"}}',
    })
    assert.are.equal(0, code, out .. err)
    assert.are.equal("", out)
  end)

  it("tide test --expect exits 1 with a -expected/+got diff naming the records that differ", function()
    local code, out = test_splitter({
      '{"topic":"long","key":"1","value":{"n":6,"word":"banana"}}',
      '{"topic":"long","key":"3","value":{"n":7,"word":"cherry"}}',
      '{"topic":"short","key":"2","value":{"n":3,"word":"fig"}}',
      '{"topic":"short","key":"4","value":{"n":4,"word":"kiwi"}}',
    })
    assert.are.equal(1, code, out)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.is_truthy(lines[1]:find("^%-%-%- expected"), out)
    assert.is_truthy(lines[2]:find("^%+%+%+ got"), out)
    local minus, plus = {}, {}
    for _, l in ipairs(lines) do
      if l:find("^%-{") then minus[#minus + 1] = l end
      if l:find("^%+{") then plus[#plus + 1] = l end
    end
    assert.are.same({ '-{"topic":"long","key":"3","value":{"n":7,"word":"cherry"}}' }, minus)
    assert.are.same({ '+{"topic":"long","key":"3","value":{"n":6,"word":"cherry"}}' }, plus)
    assert.is_nil(out:find("@@ short", 1, true), "the short topic is equal: " .. out)

    -- Order within a topic matters.
    code, out = test_splitter({
      '{"topic":"long","key":"3","value":{"n":6,"word":"cherry"}}',
      '{"topic":"long","key":"1","value":{"n":6,"word":"banana"}}',
      '{"topic":"short","key":"2","value":{"n":3,"word":"fig"}}',
      '{"topic":"short","key":"4","value":{"n":4,"word":"kiwi"}}',
    })
    assert.are.equal(1, code, out)
    assert.is_truthy(out:find("@@ long", 1, true), out)
  end)

  it("tide test reports a detector's error with its file:line and prints the record in the dead letters", function()
    local fixture = cluster.fixture("detectors/raise_every_10th.lua")
    local line = cluster.line_of(fixture, "RAISES HERE")
    local input = write("numbers.jsonl", jsonl({
      { value = "9" }, { key = "x", value = "10", timestamp = 5 }, { value = "11" },
    }))
    local code, out, err = tide("test", fixture, "--input", input)
    assert.are.equal(0, code, err)
    local where = "raise_every_10th.lua:" .. line .. ": refusing a multiple of ten: 10"
    assert.is_truthy(err:find(input .. ":2", 1, true), "names the input line: " .. err)
    assert.is_truthy(err:find(where, 1, true), "names the detector's line: " .. err)
    local recs = decode_lines(out)
    assert.are.equal(3, #recs, out)
    assert.are.same({ topic = "numbers-out", key = null, value = "9" }, recs[1])
    assert.are.same({ topic = "numbers-out", key = null, value = "11" }, recs[2])
    local dead = recs[3]
    assert.are.equal("dead-letters", dead.topic)
    assert.are.equal("x", dead.key)
    assert.are.equal("10", dead.value)
    assert.are.equal("ProcessError", dead.headers["tide.error.class"])
    assert.is_truthy(dead.headers["tide.error.message"]:find(where, 1, true), dead.headers["tide.error.message"])
    assert.are.equal("1", dead.headers["tide.source.offset"])

    -- The output, saved, is its own expectation (dead letters included).
    local saved = write("numbers-expect.jsonl", out)
    code, out = tide("test", fixture, "--input", input, "--expect", saved)
    assert.are.equal(0, code, out)
  end)

  it("tide test exits 2 for a detector refused at load (with file:line) and for a bad command line", function()
    local fixture = cluster.fixture("detectors/syntax_error.lua")
    local input = write("one.jsonl", jsonl({ { value = "x" } }))
    local code, out, err = tide("test", fixture, "--input", input)
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    local line = cluster.line_of(fixture, "  end,")
    assert.is_truthy(err:find("syntax_error.lua:" .. line .. ":", 1, true), err)

    code, _, err = tide("test", transformer)
    assert.are.equal(2, code, err)
    assert.is_truthy(err:find("--input", 1, true), err)
    code, _, err = tide("test", transformer, "--input", c:path("missing.jsonl"))
    assert.are.equal(2, code, err)
    local bad = write("bad.jsonl", '{"value":"ok"}\nnot json\n')
    code, _, err = tide("test", transformer, "--input", bad)
    assert.are.equal(2, code, err)
    assert.is_truthy(err:find(bad .. ":2", 1, true), err)
  end)

  -- Records on text-input, produced once for the replay tests:
  -- partition 0 offsets 0-3, partition 1 offsets 0-2.
  local produced = false
  local function produce_input()
    if produced then return end
    c:produce("text-input", {
      { key = "k0", value = "banana", partition = 0 }, { key = "k1", value = "apple", partition = 0 },
      { key = "k2", value = "cherry", partition = 0 }, { key = "k3", value = "melon", partition = 0 },
      { key = "k4", value = "date", partition = 1 }, { key = "k5", value = "fig", partition = 1 },
      { key = "k6", value = "pear", partition = 1 },
    })
    produced = true
  end

  it("tide replay --from --offsets diffs a new version against the running one and produces nothing", function()
    produce_input()
    local v2 = write("v2.lua", V2)
    local code, out, err = tide("replay", v2, "--against", transformer, "--from", "text-input",
      "--offsets", "0:1-2,1:1-", "-b", c.addr)
    assert.are.equal(1, code, out .. err)
    assert.is_truthy(err:find("read 4 records of text-input", 1, true), err)
    assert.is_truthy(out:find("--- " .. transformer, 1, true), out)
    assert.is_truthy(out:find("+++ " .. v2, 1, true), out)
    -- Only offsets 1-2 of partition 0 and 1- of partition 1: apple, cherry, fig, pear.
    assert.are.same({ "+k1 APPLE!", "+k2 CHERRY!", "+k6 PEAR!", "-k1 APPLE", "-k6 PEAR" }, changes(out))

    -- The same version against itself: no difference.
    code, out, err = tide("replay", transformer, "--against", transformer, "--from", "text-input",
      "-b", c.addr)
    assert.are.equal(0, code, out .. err)
    assert.are.equal("", out)

    assert.are.same({}, c:consume("text-output", { idle_ms = 1000 }), "replay produced to the output topic")
  end)

  it("tide replay --from reads every partition to its end, and --file replays a `tide consume --json` recording", function()
    produce_input()
    local v2 = write("v2.lua", V2)
    local code, out, err = tide("replay", v2, "--from", "text-input", "-b", c.addr)
    assert.are.equal(0, code, err)
    local got = {}
    for i, r in ipairs(decode_lines(out)) do got[i] = r.key .. " " .. r.value end
    -- In (partition, offset) order.
    assert.are.same({ "k0 BANANA!", "k1 APPLE!", "k2 CHERRY!", "k3 MELON!", "k4 DATE!", "k6 PEAR!" }, got)

    local recording = c:path("recording.jsonl")
    local consume = c:spawn({ cluster.bin(), "consume", "text-input", "-b", c.addr, "--from-beginning",
      "--json", "--max-messages", "7", "--idle-timeout-ms", "5000" }, { name = "consume", stdout = recording })
    assert.are.equal(0, consume:wait(60), consume:log_tail(10))
    code, out, err = tide("replay", v2, "--against", transformer, "--file", recording)
    assert.are.equal(1, code, out .. err)
    assert.are.same({
      "+k0 BANANA!", "+k1 APPLE!", "+k2 CHERRY!", "+k3 MELON!", "+k4 DATE!", "+k6 PEAR!",
      "-k0 BANANA", "-k1 APPLE", "-k4 DATE", "-k6 PEAR",
    }, changes(out))

    -- A hand-written recording: "raw" values are the record's bytes.
    local raw = write("raw.jsonl", jsonl({
      { topic = "json-in", key = "a", value = '{"n": 2}', raw = true },
      { topic = "json-in", key = "b", value = { n = 5 } },
    }))
    code, out, err = tide("replay", cluster.fixture("detectors/json_doubler.lua"), "--file", raw)
    assert.are.equal(0, code, err)
    assert.are.same({
      { topic = "json-out", key = "a", value = { n = 2, doubled = 4 } },
      { topic = "json-out", key = "b", value = { n = 5, doubled = 10 } },
    }, decode_lines(out))
  end)

  it("tide replay keeps the recorded offsets, and two versions that fail alike compare equal", function()
    local fixture = cluster.fixture("detectors/raise_every_10th.lua")
    -- Another file, another version (a hash of the source), the same lines.
    -- Its name is longer than Lua shows in a message ("..." and the tail),
    -- wherever the checkout is.
    local copy = write(("a-long-name-"):rep(6) .. "raise_copy.lua",
      cluster.read_file(fixture) .. "-- a new version\n")
    local recording = write("numbers-rec.jsonl", jsonl({
      { topic = "numbers", partition = 1, offset = 41, key = "a", value = "7" },
      { topic = "numbers", partition = 1, offset = 42, key = "b", value = "20" },
    }))
    local code, out, err = tide("replay", copy, "--file", recording)
    assert.are.equal(0, code, err)
    local recs = decode_lines(out)
    assert.are.equal(2, #recs, out)
    assert.are.same({ topic = "numbers-out", key = "a", value = "7" }, recs[1])
    assert.are.equal("dead-letters", recs[2].topic)
    assert.are.equal("42", recs[2].headers["tide.source.offset"])
    assert.are.equal("1", recs[2].headers["tide.source.partition"])

    code, out, err = tide("replay", copy, "--against", fixture, "--file", recording)
    assert.are.equal(0, code, out .. err)
    assert.are.equal("", out)
  end)

  it("tide produce --json keeps a record's timestamp, and warns once that 0 means now", function()
    local input = write("stamped.jsonl", table.concat({
      '{"key":"given","value":"a","timestamp":5000}',
      '{"key":"none","value":"b"}',
      '{"key":"zero","value":"c","timestamp":0}',
      '{"key":"zero-again","value":"d","timestamp":0}',
    }, "\n") .. "\n")
    local before = os.time() * 1000
    local p = c:spawn({ cluster.bin(), "produce", "stamped", "-b", c.addr, "--json" },
      { name = "produce", stdin = input })
    assert.are.equal(0, p:wait(60), p:log_tail(10))
    local err = p:stderr_text()
    local _, warnings = err:gsub('timestamp 0 means "now"', "")
    assert.are.equal(1, warnings, err)
    assert.is_truthy(err:find("stdin:3:", 1, true), err)
    local code, out = tide("consume", "stamped", "-b", c.addr, "--from-beginning", "--json",
      "--max-messages", "4", "--idle-timeout-ms", "5000")
    assert.are.equal(0, code, out)
    local ts = {}
    for _, r in ipairs(decode_lines(out)) do ts[r.key] = r.timestamp end
    assert.are.equal(5000, ts.given)
    for _, k in ipairs({ "none", "zero", "zero-again" }) do
      assert.is_true(ts[k] >= before - 1000, k .. " " .. tostring(ts[k]))
    end
  end)

  it("tide replay exits 2 on a bad --offsets and on a partition the topic does not have", function()
    produce_input()
    local code, _, err = tide("replay", transformer, "--from", "text-input", "--offsets", "0:5", "-b", c.addr)
    assert.are.equal(2, code, err)
    assert.is_truthy(err:find("0:5", 1, true), err)
    code, _, err = tide("replay", transformer, "--from", "text-input", "--offsets", "7:0-", "-b", c.addr)
    assert.are.equal(2, code, err)
    assert.is_truthy(err:find("no partition 7", 1, true), err)
  end)
end)
