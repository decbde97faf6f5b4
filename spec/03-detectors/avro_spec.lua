-- A detector over Avro topics through the test driver and `tide test`,
-- offline: schemas from the folder beside it, values given as tables (or
-- JSON) encoded with the topic's schema, outputs decoded back.
local cluster = require("helpers.cluster")
local testing = require("tide.testing")
local cjson = require("cjson").new()

local DIR = cluster.fixture("detectors/avro_big")

describe("an Avro detector", function()
  it("reads Avro with its own (newer) schema and writes Avro alerts", function()
    local d = testing.driver(DIR)
    d:pipe("payments", "c1", { card = "c1", amount = 2500 })
    d:pipe("payments", "c2", { card = "c2", amount = 5, country = "FR" })
    assert.same({ { key = "c1", value = { card = "c1", amount = 2500, channel = "web" }, headers = {} } },
      d:read("alerts"))
    assert.same({}, d:dead_letters())
    d:close()
  end)

  it("reads bytes written with the producers' schema (by id) through the detector's schema", function()
    local d = testing.driver(DIR)
    -- what a producer wrote with schemas/7.avsc: wire header, then card, amount, country
    local avro = require("tide.avro")
    local w = avro.schema(cluster.read_file(DIR .. "/schemas/7.avsc"))
    local bytes = avro.encoder(w)({ card = "c9", amount = 1500.5, country = "DE" }, 7)
    d:pipe("payments", "c9", bytes, { raw = true })
    local out = d:read("alerts")
    assert.equal(1, #out)
    assert.same({ card = "c9", amount = 1500.5, channel = "web" }, out[1].value)
    d:close()
  end)

  it("dead-letters what is not Avro in the wire format, saying why", function()
    local d = testing.driver(DIR)
    d:pipe("payments", "k", "plain", { raw = true })
    d:pipe("payments", "k", "\0\0\0\0\99abc", { raw = true })
    d:pipe("payments", "k", "\0\0\0\0\7\2", { raw = true })
    local dead = d:dead_letters()
    assert.equal(3, #dead)
    local msgs = {}
    for i, r in ipairs(dead) do
      assert.equal("DecodeError", r.headers["tide.error.class"])
      msgs[i] = r.headers["tide.error.message"]
    end
    assert.matches("unknown magic byte 112", msgs[1])
    assert.matches("unknown schema id 99", msgs[2])
    assert.matches("schema id 7%): the bytes do not match the schema", msgs[3])
    assert.equal("plain", dead[1].value) -- unchanged
    d:close()
  end)

  it("refuses a detector whose schema file is missing or invalid, naming its line", function()
    local dir = cluster.new("avro-refuse").dir
    cluster.write_file(dir .. "/bad.lua", 'tide.stream("p", "avro", { schema = "nope.avsc" }):to("o", "avro")\n'
      .. 'return tide.topology{ name = "bad" }\n')
    local ok, err = pcall(testing.driver, dir .. "/bad.lua")
    assert.is_false(ok)
    assert.matches("bad.lua:2: schema of topic 'p': cannot read .*nope.avsc", err)
    cluster.write_file(dir .. "/nope.avsc", '{"type": "record"}')
    ok, err = pcall(testing.driver, dir .. "/bad.lua")
    assert.is_false(ok)
    assert.matches("bad.lua:2: schema of topic 'p' .*not a valid Avro schema", err)
    cluster.write_file(dir .. "/plain.lua", 'return { inputs = { "p" }, serdes = { p = { value = "json", schema = "x.avsc" } },'
      .. ' process = function() end }\n')
    ok, err = pcall(testing.driver, dir .. "/plain.lua")
    assert.is_false(ok)
    assert.matches("a schema goes with the avro serde", err)
  end)

  it("runs under `tide test` with values given as JSON", function()
    local dir = cluster.new("avro-cli").dir
    cluster.write_file(dir .. "/in.jsonl",
      '{"key": "c1", "value": {"card": "c1", "amount": 2500}, "timestamp": 1000}\n'
      .. '{"key": "c2", "value": {"card": "c2", "amount": 1}, "timestamp": 2000}\n')
    local p = io.popen(("%s test %s --input %s/in.jsonl 2>/dev/null"):format(cluster.bin(), DIR, dir))
    local out = p:read("*a")
    p:close()
    local line = cjson.decode(out:match("[^\n]+"))
    assert.same({ topic = "alerts", key = "c1", value = { card = "c1", amount = 2500, channel = "web" },
      timestamp = 1000 }, line)
    -- and with the schemas elsewhere
    assert(os.execute(("cp -r %s/schemas %s/elsewhere"):format(DIR, dir)))
    p = io.popen(("%s test %s --input %s/in.jsonl --schemas %s/elsewhere 2>&1"):format(cluster.bin(), DIR, dir, dir))
    out = p:read("*a")
    p:close()
    assert.matches('"card":"c1"', out)
  end)
end)
