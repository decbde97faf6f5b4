-- Stores, windows, stream time and punctuators, through the test driver:
-- the same dispatcher and store code as the host, RocksDB included.
local _, driver = require("helpers.scripts").temporary()

local function values(list)
  local v = {}
  for i, r in ipairs(list) do v[i] = r.value end
  return v
end


for _, memory in ipairs({ false, true }) do
  local kind = memory and "in-memory" or "RocksDB"
  describe(kind .. " key-value stores", function()
    local src = ([[
return {
  inputs = { "in" }, outputs = { "out" }, serde = "json",
  stores = { kv = tide.kv{ memory = %s } },
  process = function(rec, ctx)
    local s, v = ctx.stores.kv, rec.value
    if v.op == "put" then s:put(rec.key, v.value)
    elseif v.op == "delete" then s:delete(rec.key)
    elseif v.op == "get" then ctx:emit("out", rec.key, { value = s:get(rec.key) or tide.null })
    elseif v.op == "range" then
      local got = {}
      for k, x in s:range(v.from, v.to) do got[#got + 1] = { k, x } end
      ctx:emit("out", nil, got)
    elseif v.op == "prefix" then
      local got = {}
      for k in s:prefix(v.prefix) do got[#got + 1] = k end
      ctx:emit("out", nil, got)
    end
  end,
}]]):format(tostring(memory))

    it("puts, gets and deletes strings and tables", function()
      local d = driver(src)
      d:pipe("in", "a", { op = "put", value = "text" })
      d:pipe("in", "b", { op = "put", value = { n = 2, tags = { "x" } } })
      d:pipe("in", "a", { op = "get" })
      d:pipe("in", "b", { op = "get" })
      d:pipe("in", "a", { op = "delete" })
      d:pipe("in", "a", { op = "get" })
      local out = values(d:read("out"))
      assert.same({ value = "text" }, out[1])
      assert.same({ value = { n = 2, tags = { "x" } } }, out[2])
      assert.equal(require("tide").null, out[3].value)
      assert.same({ n = 2, tags = { "x" } }, d:store("kv"):get("b"))
      d:close()
    end)

    it("changelogs the store writes of a record that then fails, as the store keeps them", function()
      local d = driver(([[
return {
  inputs = { "in" }, outputs = { "out" },
  stores = { n = tide.kv{ memory = %s } },
  process = function(rec, ctx)
    local n = (ctx.stores.n:get(rec.key) or 0) + 1
    ctx.stores.n:put(rec.key, n)
    ctx:emit("out", rec.key, tostring(n))
    if rec.value == "boom" then error("boom") end
  end,
}]]):format(tostring(memory)))
      d:pipe("in", "x", "ok")
      d:pipe("in", "x", "boom")
      d:pipe("in", "x", "ok")
      assert.same({ "1", "3" }, values(d:read("out")))  -- the failed record's emit is dropped
      assert.equal(1, #d:dead_letters())
      assert.equal(3, d:store("n"):get("x"))             -- its store write is not rolled back
      local logged = {}
      for _, e in ipairs(d.changelog) do logged[#logged + 1] = e.value end
      assert.same({ "j1", "j2", "j3" }, logged)          -- so the changelog has it too
      d:close()
    end)

    it("keeps every digit of numbers inside stored tables and JSON outputs", function()
      local d = driver(src)
      local v = { us = 1732233600123456, big = 2 ^ 60, frac = 1 / 3, list = { 9007199254740991 } }
      d:pipe("in", "n", { op = "put", value = v })
      d:pipe("in", "n", { op = "get" })
      assert.same(v, d:store("kv"):get("n"))
      assert.same({ value = v }, values(d:read("out"))[1])
      d:close()
    end)

    it("keeps partitions (tasks) apart", function()
      local d = driver(src)
      d:pipe("in", "k", { op = "put", value = "p0" }, { partition = 0 })
      d:pipe("in", "k", { op = "put", value = "p1" }, { partition = 1 })
      assert.equal("p0", d:store("kv", 0):get("k"))
      assert.equal("p1", d:store("kv", 1):get("k"))
      d:close()
    end)

    it("iterates ranges and prefixes in byte order", function()
      local d = driver(src)
      for _, k in ipairs({ "b", "a", "ab", "ac", "c" }) do d:pipe("in", k, { op = "put", value = k:upper() }) end
      d:pipe("in", nil, { op = "range", from = "ab", to = "c" })
      d:pipe("in", nil, { op = "prefix", prefix = "a" })
      local out = values(d:read("out"))
      assert.same({ { "ab", "AB" }, { "ac", "AC" }, { "b", "B" } }, out[1])
      assert.same({ "a", "ab", "ac" }, out[2])
      d:close()
    end)

    it("frees an iterator left before its end", function()
      local d = driver(src)
      for i = 1, 50 do d:pipe("in", ("k%02d"):format(i), { op = "put", value = i }) end
      local s = d:store("kv")
      for _ = 1, 200 do
        for _ in s:range() do break end
      end
      local core = require("tide.core")
      if not memory then assert.is_true(core.store_iterators(d.db) > 0) end
      collectgarbage()
      collectgarbage()
      if not memory then assert.equal(0, core.store_iterators(d.db)) end
      local n = 0
      for _ in s:range() do n = n + 1 end
      assert.equal(50, n)
      d:close()
    end)

    it("changelogs every write to the task's partition, tombstones for deletes", function()
      local d = driver(src)
      d:pipe("in", "k", { op = "put", value = 7 }, { partition = 3 })
      d:pipe("in", "k", { op = "delete" }, { partition = 3 })
      local cl = d.changelog
      assert.equal(2, #cl)
      assert.equal(-2, cl[1].output)
      assert.equal("k", cl[1].key)
      assert.equal("j7", cl[1].value)
      assert.is_nil(cl[2].value)
      d:close()
    end)
  end)
end

describe("windowed stores", function()
  local template = [[
return {
  inputs = { "in" }, outputs = { "out" },
  stores = { w = tide.window{ size = "10s", grace = "2s"%s } },
  process = function(rec, ctx)
    local w = ctx.stores.w
    local ok = w:put(rec.key, (w:get(rec.key, rec.timestamp - rec.timestamp %% 10000) or 0) + 1, rec.timestamp)
    if not ok then ctx:emit("out", rec.key, "late") end
  end,
}]]
  -- closed windows stay queryable for a minute here; by default (retention =
  -- size + grace) a window goes as soon as it closes
  local src = template:format(', retention = "1m"')

  local function counts(d, key)
    local got = {}
    for start, n in d:store("w"):fetch(key, 0, 1e12) do got[#got + 1] = { start, n } end
    return got
  end

  it("counts per tumbling window across window boundaries", function()
    local d = driver(src)
    for _, ts in ipairs({ 1000, 9999, 10000, 15000, 25000 }) do d:pipe("in", "k", "x", { timestamp = ts }) end
    assert.same({ { 0, 2 }, { 10000, 2 }, { 20000, 1 } }, counts(d, "k"))
    d:close()
  end)

  it("takes late records within grace and refuses them after", function()
    local d = driver(src)
    d:pipe("in", "k", "x", { timestamp = 5000 })
    d:pipe("in", "k", "x", { timestamp = 11000 }) -- stream time 11 s: window [0,10) closes at 12 s
    d:pipe("in", "k", "x", { timestamp = 9000 }) -- late, within grace
    d:pipe("in", "k", "x", { timestamp = 12500 }) -- stream time 12.5 s
    d:pipe("in", "k", "x", { timestamp = 8000 }) -- too late
    assert.same({ { 0, 2 }, { 10000, 2 } }, counts(d, "k"))
    assert.same({ "late" }, values(d:read("out")))
    d:close()
  end)

  it("drops windows older than retention as stream time passes", function()
    local d = driver(template:format(""))
    d:pipe("in", "k", "x", { timestamp = 1000 })
    d:pipe("in", "j", "x", { timestamp = 50000 }) -- 50 s: window [0,10) is past retention (12 s)
    assert.same({}, counts(d, "k"))
    assert.same({ { 50000, 1 } }, counts(d, "j"))
    d:close()
  end)

  it("hides a window past retention at once, before the sweep removes it", function()
    local d = driver(template:format(""))         -- retention: size + grace = 12 s
    d:pipe("in", "k", "x", { timestamp = 1000 })
    d:pipe("in", "j", "x", { timestamp = 11999 })
    assert.equal(1, d:store("w"):get("k", 0))     -- still within retention
    d:pipe("in", "j", "x", { timestamp = 12000 }) -- [0, 10 s) is past retention now
    assert.is_nil(d:store("w"):get("k", 0))
    assert.same({}, counts(d, "k"))
    d:close()
  end)

  it("refuses a put without a timestamp with the reason", function()
    local d = driver(src)
    d:pipe("in", "k", "x") -- piped without a timestamp: -1
    local dead = d:dead_letters()
    assert.equal(1, #dead)
    assert.matches("timestamp %-1 is before 1970", dead[1].headers["tide.error.message"])
    assert.same({}, counts(d, "k"))
    d:close()
  end)
end)

describe("time and punctuators", function()
  it("fires stream-time punctuators from record timestamps, per task", function()
    local d = driver([[
return {
  inputs = { "in" }, outputs = { "ticks" },
  stores = { seen = tide.kv{ memory = true } },
  punctuate = { every = "10s", on = "stream", fn = function(ctx, now)
    ctx:emit("ticks", tostring(ctx.partition), tostring(now) .. "/" .. tostring(ctx.stream_time))
  end },
  process = function(rec, ctx) ctx.stores.seen:put(rec.key, rec.timestamp) end,
}]])
    d:pipe("in", "a", "x", { timestamp = 1000 }) -- the task's first stream time: a tick
    assert.same({ "1000/1000" }, values(d:read("ticks")))
    d:pipe("in", "a", "x", { timestamp = 9000 })
    assert.same({}, d:read("ticks"))
    d:pipe("in", "a", "x", { timestamp = 10000 }) -- then on multiples of 10 s, not at 11 s
    d:pipe("in", "a", "x", { timestamp = 12000 })
    d:pipe("in", "a", "x", { timestamp = 35000 }) -- one tick, not one per missed interval
    d:pipe("in", "a", "x", { timestamp = 39999 })
    d:pipe("in", "a", "x", { timestamp = 40000 })
    local ticks = d:read("ticks")
    assert.same({ "10000/10000", "35000/35000", "40000/40000" }, values(ticks))
    -- what a punctuator emits carries the time it fired for, not the clock
    assert.equal(10000, ticks[1].timestamp)
    assert.equal(35000, ticks[2].timestamp)
    d:close()
  end)

  it("fires wall-clock punctuators as the clock advances, not as records come", function()
    local d = driver([[
return {
  inputs = { "in" }, outputs = { "ticks" },
  punctuate = { every = "10s", on = "wall", fn = function(ctx, now) ctx:emit("ticks", nil, tostring(now)) end },
  process = function(rec, ctx) end,
}]])
    d:pipe("in", "a", "x", { timestamp = 999999 }) -- a task, and the first schedule (at 10 s)
    d:advance_wall_clock("5s")
    assert.same({}, d:read("ticks"))
    d:advance_wall_clock("5s")
    d:advance_wall_clock("10s")
    assert.same({ "10000", "20000" }, values(d:read("ticks")))
    d:close()
  end)

  it("refuses a bad punctuate or store declaration at load, with its line", function()
    local ok, err = pcall(driver, [[
return {
  inputs = { "in" },
  punctuate = { every = "often", fn = function() end },
  process = function() end,
}]])
    assert.is_false(ok)
    assert.matches("every must be a positive duration", err)
    ok, err = pcall(driver, [[
return { inputs = { "in" }, stores = { s = {} }, process = function() end }]])
    assert.is_false(ok)
    assert.matches("store 's' must be declared with tide.kv", err)
  end)
end)
