-- Interactive queries through the test driver: d:query reads a store as the
-- admin API does (scripts/tide/query.lua answers both), RocksDB and
-- in-memory stores, key-value and window stores.
local cjson = require("cjson")
local query = require("tide.query")
local testing = require("tide.testing")
local cluster = require("helpers.cluster")
local _, driver = require("helpers.scripts").temporary()

for _, memory in ipairs({ false, true }) do
  local kind = memory and "in-memory" or "RocksDB"
  describe("d:query on a " .. kind .. " key-value store", function()
    local src = ([[
return {
  name = "q", inputs = { "in" }, outputs = { "out" },
  stores = { counts = tide.kv{ memory = %s }, totals = tide.kv{ memory = %s } },
  process = function(rec, ctx)
    local c = ctx.stores.counts
    c:put(rec.key, (c:get(rec.key) or 0) + 1)
    if rec.value ~= "" then ctx.stores.totals:put(rec.key, { last = rec.value }) end
  end,
}]]):format(tostring(memory), tostring(memory))

    local d
    before_each(function()
      d = driver(src)
      for i = 1, 30 do
        d:pipe("in", ("k%02d"):format(i % 10), "v" .. i, { partition = (i % 10) % 3 })
      end
    end)
    after_each(function() d:close() end)

    it("reads one key, found or not, from the partition that holds it", function()
      local r = d:query("counts", { key = "k03" })
      assert.same({ key = "k03", found = true, value = 3, partition = 0 }, r)
      r = d:query("totals", { key = "k03" })
      assert.same({ last = "v23" }, r.value)
      r = d:query("counts", { key = "nope" })
      assert.is_false(r.found)
      assert.is_nil(r.value)
      -- a partition named explicitly is the only one read
      assert.is_false(d:query("counts", { key = "k03", partition = 1 }).found)
    end)

    it("scans in key order over every partition, with a limit and a cursor", function()
      local r = d:query("counts", { limit = 4 })
      local keys = {}
      for i, e in ipairs(r.entries) do keys[i] = e.key end
      assert.same({ "k00", "k01", "k02", "k03" }, keys)
      assert.is_true(r.more)
      assert.are.equal("k03", r.next)
      r = d:query("counts", { after = r.next, limit = 100 })
      assert.are.equal(6, #r.entries)
      assert.are.equal("k04", r.entries[1].key)
      assert.is_false(r.more)
      for _, e in ipairs(r.entries) do assert.are.equal(3, e.value) end
    end)

    it("scans a range and a prefix", function()
      local r = d:query("counts", { from = "k02", to = "k05" })
      assert.are.equal(3, #r.entries)
      assert.are.equal("k02", r.entries[1].key)
      assert.are.equal("k04", r.entries[3].key)
      r = d:query("counts", { prefix = "k0" })
      assert.are.equal(10, #r.entries)
      r = d:query("counts", { prefix = "x" })
      assert.are.equal(0, #r.entries)
    end)

    it("counts the entries", function()
      assert.same({ count = 10 }, d:query("counts", { count = true }))
    end)

    it("refuses a store it does not have, and queries that mix a key with a scan", function()
      assert.has_error(function() d:query("nope", { key = "a" }) end,
        "no store named nope (stores: counts, totals)")
      assert.has_error(function() d:query("counts", { key = "a", prefix = "b" }) end,
        "key goes alone (or with time_from, time_to for a window store)")
      assert.has_error(function() d:query("counts", { limit = 0 }) end,
        "limit must be an integer from 1 to 10000")
      assert.has_error(function() d:query("counts", { key = "a", time_from = 1 }) end,
        "time_from and time_to are for window stores; counts is a key-value store")
    end)
  end)
end

describe("d:query on a window store", function()
  local d
  before_each(function()
    d = testing.driver(cluster.fixture("detectors/window_counts.lua"))
    for _, ts in ipairs({ 1000, 2000, 15000, 31000 }) do
      d:pipe("win-in", "a", "x", { timestamp = ts })
    end
    d:pipe("win-in", "b", "x", { timestamp = 32000 })
  end)
  after_each(function() d:close() end)

  it("fetches a key's windows in a time range", function()
    local r = d:query("windows", { key = "a" })
    assert.is_true(r.found)
    assert.same({ { start = 0, ["end"] = 10000, value = 2 }, { start = 10000, ["end"] = 20000, value = 1 },
      { start = 30000, ["end"] = 40000, value = 1 } }, r.windows)
    r = d:query("windows", { key = "a", time_from = 5000, time_to = 30000 })
    assert.same({ 10000, 30000 }, { r.windows[1].start, r.windows[2].start })
    assert.is_false(d:query("windows", { key = "zz" }).found)
  end)

  it("lists every window by key then start", function()
    local r = d:query("windows", {})
    local got = {}
    for i, e in ipairs(r.entries) do got[i] = e.key .. "@" .. e.start end
    assert.same({ "a@0", "a@10000", "a@30000", "b@30000" }, got)
    -- the cursor of a window store is a key and a window start
    r = d:query("windows", { limit = 2 })
    assert.same({ "a", "a" }, { r.entries[1].key, r.entries[2].key })
    assert.same({ "a", 10000 }, { r.next, r.next_start })
    r = d:query("windows", { limit = 2, after = r.next, after_start = r.next_start })
    assert.same({ "a", 30000, "b", 30000 }, { r.entries[1].key, r.entries[1].start, r.entries[2].key,
      r.entries[2].start })
    assert.is_false(r.more)
    assert.same({ count = 4 }, d:query("windows", { count = true }))
  end)
end)

describe("tide.query's JSON", function()
  it("writes empty lists as arrays and a missing value as null", function()
    assert.are.equal('{"entries":[],"more":false}', query.encode({ entries = {}, more = false }))
    local t = cjson.decode(query.encode({ key = "k", found = false, partition = 2 }))
    assert.are.equal(cjson.null, t.value)
  end)
end)
