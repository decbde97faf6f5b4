-- tide.jsonl: the lines `tide produce --json` reads (bindings/jsonl.c runs
-- this module in a Lua state of its own).
local jsonl = require("tide.jsonl")

local function parse(line)
  return { jsonl.parse(line) }
end

local function failure(line)
  local ok, err = pcall(jsonl.parse, line)
  assert.is_false(ok, "accepted: " .. line)
  return err
end

describe("tide.jsonl", function()
  it("reads key, value, partition, headers and timestamp", function()
    local r = parse('{"key":"k1","value":"v1","partition":2,"timestamp":1700000000000,"headers":{"h":"x"}}')
    assert.same({ "k1", "v1", 2, { "h", "x" }, 1700000000000 }, r)
  end)

  it("gives every field a default: null key and value, any partition, no timestamp", function()
    local k, v, p, h, ts = jsonl.parse("{}")
    assert.is_nil(k)
    assert.is_nil(v)
    assert.equal(-1, p)
    assert.same({}, h)
    assert.equal(-1, ts)
  end)

  it("sends a value that is not a string as its JSON text, and null as null", function()
    local k, v = jsonl.parse('{"key":42,"value":{"n":[1,true]}}')
    assert.equal("42", k)
    assert.same({ n = { 1, true } }, require("cjson").decode(v))
    k, v = jsonl.parse('{"key":null,"value":null}')
    assert.is_nil(k)
    assert.is_nil(v)
  end)

  it("flattens headers into name, value pairs; a null header value is empty", function()
    local _, _, _, h = jsonl.parse('{"headers":{"a":"1","b":null,"c":7}}')
    local got = {}
    for i = 1, #h, 2 do got[h[i]] = h[i + 1] end
    assert.same({ a = "1", b = "", c = "7" }, got)
    assert.equal(6, #h)
  end)

  it("refuses what is not a JSON object, with the reason", function()
    assert.matches("^invalid JSON: ", failure("not json"))
    assert.equal("each line must be a JSON object", failure('"a string"'))
    assert.equal("each line must be a JSON object", failure("12"))
  end)

  it("refuses an unknown field, naming it and the known ones", function()
    assert.equal('unknown field "vaule" (key, value, headers, partition, timestamp)',
      failure('{"vaule":"typo"}'))
  end)

  it("refuses a timestamp before the epoch; 0 is a time", function()
    assert.equal("timestamp must be ms since the epoch", failure('{"timestamp":-5}'))
    assert.equal(0, select(5, jsonl.parse('{"timestamp":0}')))
  end)
end)
