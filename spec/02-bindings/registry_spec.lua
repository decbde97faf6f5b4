-- The schema registry client (scripts/tide/registry.lua) against the
-- fixture that serves Confluent Schema Registry's REST responses, and the
-- schemas folder used offline.
local cluster = require("helpers.cluster")
local fixture = require("helpers.registry")
local registry = require("tide.registry")

local SCHEMA = '{"type":"record","name":"P","fields":[{"name":"a","type":"int"}]}'
local SCHEMA2 = '{"type":"record","name":"P","fields":[{"name":"a","type":"int"},{"name":"b","type":"int","default":0}]}'

describe("schema registry client", function()
  local c = cluster.new("registry")
  after_each(function() c:cleanup() end)

  it("registers, looks up, finds the latest and reads by id, caching ids", function()
    local f = fixture.start(c)
    local reg = registry.http({ url = f.url })
    local id = assert(reg:register("pay-value", SCHEMA))
    assert.equal(id, reg:register("pay-value", SCHEMA)) -- the same schema keeps its id
    assert.equal(id, reg:lookup("pay-value", SCHEMA))
    local id2 = assert(reg:register("pay-value", SCHEMA2))
    assert.are_not.equal(id, id2)
    local latest, text = reg:latest("pay-value")
    assert.equal(id2, latest)
    assert.equal(SCHEMA2, text)
    local fresh = registry.http({ url = f.url })
    assert.equal(SCHEMA, fresh:schema(id))
    assert.equal(SCHEMA, fresh:schema(id))
    local gets = 0
    for _, r in ipairs(f.requests()) do
      if r == ("GET /schemas/ids/%d"):format(id) then gets = gets + 1 end
    end
    assert.equal(1, gets)
  end)

  it("tells an unknown id or subject from a registry that cannot be reached", function()
    local f = fixture.start(c)
    local reg = registry.http({ url = f.url, backoff_max_ms = 200 })
    local v, kind, msg = reg:schema(999)
    assert.is_nil(v)
    assert.equal("unknown", kind)
    assert.matches("unknown schema id 999", msg)
    v, kind = reg:latest("nothing-value")
    assert.equal("unknown", kind)
    v, kind = reg:lookup("nothing-value", SCHEMA)
    assert.equal("unknown", kind)
    f.down()
    v, kind, msg = reg:schema(1)
    assert.equal("unavailable", kind)
    assert.matches("HTTP 503", msg)
    -- within the backoff the registry is not asked again
    local before = #f.requests()
    v, kind = reg:schema(2)
    assert.equal("unavailable", kind)
    assert.equal(before, #f.requests())
    f.up()
    cluster.pause(250)
    assert.equal("unknown", select(2, reg:schema(2)))
    -- nothing listening at all
    local gone = registry.http({ url = "http://127.0.0.1:1", timeout_ms = 500 })
    assert.equal("unavailable", select(2, gone:schema(1)))
  end)

  it("sends basic auth, and a refusal of the credentials is an outage, not an unknown id", function()
    local f = fixture.start(c, "alice:s3cret")
    local ok = registry.http({ url = f.url, user_info = "alice:s3cret" })
    assert.is_number(ok:register("x-value", SCHEMA))
    local bad = registry.http({ url = f.url, user_info = "alice:wrong" })
    local v, kind, msg = bad:schema(1)
    assert.is_nil(v)
    assert.equal("unavailable", kind)
    assert.matches("HTTP 401", msg)
    -- credentials in the URL never show in messages
    local inline = registry.http({ url = "http://bob:pw@127.0.0.1:1", timeout_ms = 300 })
    assert.is_nil(inline:describe():find("pw", 1, true))
  end)

  it("reads schemas/<id>.avsc and schemas/<subject>.avsc offline", function()
    local dir = c:path("schemas")
    os.execute("mkdir -p " .. dir)
    cluster.write_file(dir .. "/12.avsc", SCHEMA)
    cluster.write_file(dir .. "/pay-value.avsc", SCHEMA)
    cluster.write_file(dir .. "/other-value.avsc", SCHEMA2)
    local reg = registry.folder({ dir = dir })
    assert.equal(SCHEMA, reg:schema(12))
    assert.equal("unknown", select(2, reg:schema(13)))
    assert.equal(12, (reg:latest("pay-value"))) -- the same schema: its file's id
    local oid = reg:latest("other-value")
    assert.is_true(oid > 12)
    assert.equal(SCHEMA2, reg:schema(oid))
    assert.equal("unknown", select(2, reg:latest("missing-value")))
  end)
end)
