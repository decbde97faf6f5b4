-- A DSL detector gives the same outputs under the test driver (no broker)
-- and under the host against the development broker, for the same input:
-- the driver runs the code that runs in production.
local cluster = require("helpers.cluster")
local testing = require("tide.testing")

local APP = "dsl-eq"

--- Lines of words drawn so that some words are frequent and some rare.
local function input_lines(n)
  local vocab = { "tide", "kafka", "lua", "stream", "table", "window", "join", "count", "c", "fast" }
  local lines = {}
  for i = 1, n do
    local words = {}
    for j = 1, (i % 5) + 1 do words[j] = vocab[(i * j * 7 + j) % #vocab + 1] end
    lines[i] = { key = "line-" .. i, value = table.concat(words, " ") }
  end
  return lines
end

--- (key, value) pairs, sorted: the driver and the host may interleave
--- different keys differently, never one key's records.
local function sorted_pairs(list)
  local out = {}
  for i, r in ipairs(list) do out[i] = r.key .. "=" .. tostring(r.value) end
  table.sort(out)
  return out
end

describe("integration: the DSL under the host and under the driver", function()
  local c = cluster.suite("dsl", {
    "lines:3", "word-counts:3", "clicks:1", "sessions:1",
    APP .. ".sessions-per-user-changelog:1", APP .. ".sessions-per-user-suppress-changelog:1",
    "orders:3", "users:3", "receipts:3", "cojoin.receipts-users-changelog:3",
    "bare-lines:4", "bare-counts:4",
    "ij1-auths:4", "ij1-clearings:4", "ij1-matches:4", "ij2-auths:4", "ij2-clearings:4", "ij2-matches:4",
    "fk-orders:4", "fk-customers:4", "fk-enriched:4",
    "gt-rates:2", "gt-payments:4", "gt-priced:4",
    APP .. ".word-count-words-repartition:3",
    APP .. ".word-count-counts-changelog:3",
  })

  it("word count: identical outputs, repartition topic included", function()
    local lines = input_lines(300)
    local d = testing.driver(cluster.example("word_count.lua"), { application_id = APP })
    local expected = {}
    for _, r in ipairs(lines) do d:pipe("lines", r.key, r.value) end
    for _, r in ipairs(d:read("word-counts")) do expected[#expected + 1] = r end
    d:close()
    assert.is_true(#expected > 600)

    c:produce("lines", lines)
    local p = c:run(cluster.example("word_count.lua"), { app = APP, name = "wc" })
    local out = c:wait_for_records("word-counts", #expected, 60, { watch = p })
    p:kill("TERM")
    assert.equal(0, p:wait(30), p:log_tail(20))
    -- nothing more than the driver made
    out = c:consume("word-counts", { max = #expected + 1, idle_ms = 1000 })
    assert.same(sorted_pairs(expected), sorted_pairs(out))
    -- every word went through the repartition topic, keyed by the word
    local rep = c:consume(APP .. ".word-count-words-repartition", { idle_ms = 1000 })
    assert.equal(#expected, #rep)
  end)

  it("windowed aggregation with suppress: the same final windows, late records dropped alike", function()
    local path = c:path("sessions.lua")
    local f = assert(io.open(path, "w"))
    f:write([[
tide.stream("clicks")
  :group_by_key()
  :windowed_by(tide.session{ gap = "30s" }, "10s")
  :count({ name = "per-user" })
  :suppress()
  :to_stream()
  :to("sessions", "json")
return tide.topology{ name = "sessions" }
]])
    f:close()
    -- one partition: the order of records, hence stream time, is the same
    local clicks, t = {}, 1000000
    for i = 1, 400 do
      t = t + ((i % 13 == 0) and 45000 or (i % 7) * 1000)
      local ts = t
      if i % 17 == 0 then ts = t - 50000 end -- late, some beyond grace
      clicks[i] = { key = "user-" .. (i % 5), value = "click", timestamp = ts }
    end
    local d = testing.driver(path, { application_id = APP })
    for _, r in ipairs(clicks) do d:pipe("clicks", r.key, r.value, { timestamp = r.timestamp }) end
    local expected = d:read("sessions")
    d:close()
    assert.is_true(#expected > 20, "sessions closed: " .. #expected)

    c:produce("clicks", clicks)
    local p = c:run(path, { app = APP, name = "sessions" })
    c:wait_for_records("sessions", #expected, 60, { watch = p })
    p:kill("TERM")
    assert.equal(0, p:wait(30), p:log_tail(20))
    local out = c:consume("sessions", { max = #expected + 1, idle_ms = 1000 })
    local function rows(list)
      local r = {}
      for i, x in ipairs(list) do
        local v = type(x.value) == "string" and require("cjson").decode(x.value) or x.value
        r[i] = ("%s [%d,%d] %d"):format(x.key, v.start, v["end"], v.value)
      end
      return r
    end
    assert.same(rows(expected), rows(out))
  end)

  it("two instances of a stream-table join hold the same partitions of both inputs", function()
    local path = c:path("receipts.lua")
    local f = assert(io.open(path, "w"))
    f:write([[
local users = tide.table("users", { value = "json" })
tide.stream("orders", "json")
  :join(users, function(order, user) return user.name .. " bought " .. order.item end)
  :to("receipts")
return tide.topology{ name = "receipts" }
]])
    f:close()
    local N = 60
    local users = {}
    for i = 1, N do users[i] = { key = "u" .. i, value = ('{"name":"user %d"}'):format(i) } end
    c:produce("users", users)
    local a = c:run(path, { app = "cojoin", name = "a" })
    a:wait_for_log("partitions assigned", 30)
    local b = c:run(path, { app = "cojoin", name = "b" })
    cluster.await_split(a, b, "orders", 3, 40)
    for _, p in ipairs({ a, b }) do
      local _, orders = cluster.holding(p, "orders")
      local _, tables = cluster.holding(p, "users")
      assert.same(orders, tables, p.name .. " holds other partitions of users than of orders")
    end
    -- every user is in a table before the orders come
    c:wait_for_records("cojoin.receipts-users-changelog", N, 60, { watch = a })
    local orders = {}
    for i = 1, N do orders[i] = { key = "u" .. i, value = ('{"item":"item %d"}'):format(i) } end
    c:produce("orders", orders)
    local out = c:wait_for_records("receipts", N, 60, { watch = b })
    local got = {}
    for _, r in ipairs(out) do got[r.key] = r.value end
    for i = 1, N do assert.equal(("user %d bought item %d"):format(i, i), got["u" .. i]) end
  end)

  it("runs on a broker without its internal topics: the broker is asked to create them", function()
    local path = c:path("bare.lua")
    cluster.write_file(path, [[
tide.stream("bare-lines")
  :flat_map_values(function(line) local w = {} for x in line:gmatch("%a+") do w[#w + 1] = x end return w end)
  :group_by(function(_, word) return word end, { name = "words" })
  :count({ name = "counts" })
  :to_stream():to("bare-counts")
return tide.topology{ name = "bare" }
]])
    local lines = input_lines(200)
    local truth, total = {}, 0
    for _, r in ipairs(lines) do
      for w in r.value:gmatch("%a+") do
        truth[w] = (truth[w] or 0) + 1
        total = total + 1
      end
    end
    c:produce("bare-lines", lines)
    local p = c:run(path, { app = "bare", name = "bare" })
    p:wait_for_log(function(e) return e.msg and e.msg:find("created by the broker itself", 1, true) end, 30)
    local out = c:wait_for_records("bare-counts", total, 60, { watch = p })
    local last = {}
    for _, r in ipairs(out) do
      local n = tonumber(r.value)
      if n > (last[r.key] or 0) then last[r.key] = n end
    end
    assert.same(truth, last)
    p:kill("TERM")
    assert.equal(0, p:wait(30), p:log_tail(20))
  end)

  ------------------------------------------------------------------------------
  -- Joins across partitions and instances

  local T0 = 1700000000000

  --- Poll `topic` until what it holds, made distinct by `key_of`, has `n`
  --- entries (at-least-once may repeat some); returns that set.
  local function wait_for_distinct(topic, n, key_of, timeout, watch)
    local deadline = cluster.now() + timeout * cluster.scale
    while true do
      local set, count = {}, 0
      for _, r in ipairs(c:consume(topic, { idle_ms = 700 })) do
        local k = key_of(r)
        if not set[k] then
          set[k] = true
          count = count + 1
        end
      end
      if count >= n then return set end
      for _, p in ipairs(watch or {}) do
        if p:poll() then error(("%s exited (%s)\n%s"):format(p.name, p:status_text(), p:log_tail(30)), 2) end
      end
      if cluster.now() >= deadline then
        error(("%s holds %d distinct records, awaited %d"):format(topic, count, n), 2)
      end
      cluster.pause(200)
    end
  end

  local join_script = [[
tide.stream("%s-auths", "json")
  :left_join(tide.stream("%s-clearings", "json"),
    function(a, c) return { auth = a.id, clearing = c and c.id } end,
    tide.join_window{ before = "0s", after = "10m", grace = "1d" }, { name = "m" })
  :to("%s-matches", "json")
return tide.topology{ name = "ij" }
]]

  --- Authorizations over 4 partitions (by key), clearings of two thirds of
  --- them (some twice) within their 10 minutes, a few for no authorization;
  --- and, to produce last, one authorization per partition 3 days later,
  --- which closes every window. Returns them, and what the driver makes of
  --- them: the matched pairs (before the ticks) and all results.
  local function join_data(n, t)
    local auths, clearings, ticks = {}, {}, {}
    for i = 1, n do
      local id = ("A%03d"):format(i)
      auths[#auths + 1] = { key = id, value = ('{"id":"%s"}'):format(id), timestamp = T0 + i * 1000 }
      if i % 3 ~= 0 then
        clearings[#clearings + 1] = { key = id, value = ('{"id":"C%03d"}'):format(i), timestamp = T0 + i * 1000 + 60500 }
      end
      if i % 7 == 0 then
        clearings[#clearings + 1] = { key = id, value = ('{"id":"D%03d"}'):format(i), timestamp = T0 + i * 1000 + 300500 }
      end
      if i % 11 == 0 then
        clearings[#clearings + 1] = { key = "X" .. i, value = ('{"id":"X%03d"}'):format(i), timestamp = T0 + i * 1000 + 500 }
      end
    end
    for p = 0, 3 do
      ticks[#ticks + 1] = { key = "tick-" .. p, value = '{"id":"tick"}', partition = p, timestamp = T0 + 3 * 86400000 + p }
    end
    local path = c:path(t .. ".lua")
    cluster.write_file(path, join_script:format(t, t, t))
    local d = testing.driver(path)
    local all = {}
    for _, r in ipairs(auths) do all[#all + 1] = { t .. "-auths", r } end
    for _, r in ipairs(clearings) do all[#all + 1] = { t .. "-clearings", r } end
    table.sort(all, function(a, b) return a[2].timestamp < b[2].timestamp end)
    local cjson = require("cjson")
    for _, e in ipairs(all) do d:pipe(e[1], e[2].key, cjson.decode(e[2].value), { timestamp = e[2].timestamp }) end
    local matched = #d:read(t .. "-matches")
    for _, r in ipairs(ticks) do d:pipe(t .. "-auths", r.key, cjson.decode(r.value), { timestamp = r.timestamp }) end
    local expected = {}
    for _, r in ipairs(d:read(t .. "-matches")) do expected[#expected + 1] = r end
    d:close()
    return path, auths, clearings, ticks, matched, matched + #expected
  end

  local function match_key(r)
    local v = type(r.value) == "string" and require("cjson").decode(r.value) or r.value
    return r.key .. "=" .. tostring(v.clearing)
  end

  it("a stream-stream left join passes on its waiting records after a kill -9 and a restore from the changelogs", function()
    local path, auths, clearings, ticks, matched, total = join_data(90, "ij1")
    assert.is_true(matched > 50 and total > matched, ("matched %d of %d"):format(matched, total))
    c:produce("ij1-auths", auths)
    c:produce("ij1-clearings", clearings)
    local a = c:run(path, { app = "ij1", name = "a" })
    wait_for_distinct("ij1-matches", matched, match_key, 60, { a })
    a:kill("KILL")
    a:wait(10)
    -- a new machine: no local state, every store comes back from its changelog
    local b = c:run(path, { app = "ij1", name = "b", config = { ["state.dir"] = c:path("state-ij1-b") } })
    b:wait_for_log("task restored", 60)
    c:produce("ij1-auths", ticks)
    local set = wait_for_distinct("ij1-matches", total, match_key, 60, { b })
    -- every authorization that no clearing matched, once its window closed
    local unmatched = 0
    for k in pairs(set) do if k:find("=nil$") then unmatched = unmatched + 1 end end
    assert.equal(total - matched, unmatched)
    b:kill("TERM")
    assert.equal(0, b:wait(30), b:log_tail(20))
  end)

  it("two instances of a stream-stream join hold the same partitions of both sides and give the driver's results", function()
    local path, auths, clearings, ticks, matched, total = join_data(60, "ij2")
    local a = c:run(path, { app = "ij2", name = "a" })
    a:wait_for_log("partitions assigned", 30)
    local b = c:run(path, { app = "ij2", name = "b" })
    cluster.await_split(a, b, "ij2-auths", 4, 40 * cluster.scale)
    for _, p in ipairs({ a, b }) do
      local _, left = cluster.holding(p, "ij2-auths")
      local _, right = cluster.holding(p, "ij2-clearings")
      assert.same(left, right, p.name .. " holds other partitions of clearings than of authorizations")
    end
    c:produce("ij2-auths", auths)
    c:produce("ij2-clearings", clearings)
    wait_for_distinct("ij2-matches", matched, match_key, 60, { a, b })
    c:produce("ij2-auths", ticks)
    local set = wait_for_distinct("ij2-matches", total, match_key, 60, { a, b })
    local n = 0
    for _ in pairs(set) do n = n + 1 end
    assert.equal(total, n)
  end)

  it("a foreign-key join across partitions and two instances ends where the driver does", function()
    local path = c:path("fk.lua")
    cluster.write_file(path, [[
local orders = tide.table("fk-orders", { value = "json" })
local customers = tide.table("fk-customers", { value = "json" })
orders:left_join(customers, function(o) return o.customer end,
  function(o, cu) return { item = o.item, customer = o.customer, name = cu and cu.name } end, { name = "oc" })
  :to_stream():to("fk-enriched", "json")
return tide.topology{ name = "fk" }
]])
    local customers, orders, updates = {}, {}, {}
    for i = 1, 20 do customers[i] = { key = "c" .. i, value = ('{"name":"customer %d"}'):format(i) } end
    for i = 1, 60 do
      orders[i] = { key = "o" .. i, value = ('{"item":"item %d","customer":"c%d"}'):format(i, i % 23 + 1) }
    end
    -- then: customers renamed, orders moved to another customer, one customer deleted
    for i = 1, 20, 3 do updates[#updates + 1] = { "fk-customers", { key = "c" .. i, value = ('{"name":"renamed %d"}'):format(i) } } end
    for i = 1, 60, 4 do
      updates[#updates + 1] = { "fk-orders", { key = "o" .. i, value = ('{"item":"item %d","customer":"c%d"}'):format(i, (i * 7) % 20 + 1) } }
    end
    updates[#updates + 1] = { "fk-customers", { key = "c2", value = nil } }
    local cjson = require("cjson")
    local d = testing.driver(path)
    for _, r in ipairs(customers) do d:pipe("fk-customers", r.key, cjson.decode(r.value)) end
    for _, r in ipairs(orders) do d:pipe("fk-orders", r.key, cjson.decode(r.value)) end
    for _, u in ipairs(updates) do d:pipe(u[1], u[2].key, u[2].value and cjson.decode(u[2].value)) end
    --- a value as text that does not depend on the order its table was built in
    local function canon(v)
      if v == nil then return nil end
      if type(v) == "string" then v = cjson.decode(v) end
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys)
      for i, k in ipairs(keys) do keys[i] = k .. "=" .. tostring(v[k]) end
      return table.concat(keys, ",")
    end
    local final = {}
    for _, r in ipairs(d:read("fk-enriched")) do final[r.key] = canon(r.value) end
    d:close()

    local a = c:run(path, { app = "fk", name = "a" })
    a:wait_for_log("partitions assigned", 30)
    local b = c:run(path, { app = "fk", name = "b" })
    cluster.await_split(a, b, "fk-orders", 4, 40 * cluster.scale)
    c:produce("fk-customers", customers)
    c:produce("fk-orders", orders)
    wait_for_distinct("fk-enriched", 60, function(r) return r.key end, 60, { a, b })
    for _, u in ipairs(updates) do c:produce(u[1], { u[2] }) end
    -- each order's latest result (one key stays on one partition, in order)
    local deadline = cluster.now() + 60 * cluster.scale
    local latest
    repeat
      latest = {}
      for _, r in ipairs(c:consume("fk-enriched", { idle_ms = 700 })) do
        latest[r.key] = canon(r.value)
      end
      local same = true
      for k, v in pairs(final) do if latest[k] ~= v then same = false end end
      if same then break end
      cluster.pause(300)
    until cluster.now() >= deadline
    assert.same(final, latest)
  end)

  it("a global table: each of two instances holds all of it, follows it, and a restart reads only its tail", function()
    local path = c:path("gt.lua")
    cluster.write_file(path, [[
local rates = tide.global_table("gt-rates", { value = "json", name = "rates" })
tide.stream("gt-payments", "json")
  :left_join(rates, function(_, p) return p.currency end,
    function(p, r) return { currency = p.currency, eur = r and p.amount * r.eur } end, { name = "priced" })
  :to("gt-priced", "json")
return tide.topology{ name = "gt" }
]])
    local currencies = {}
    for i = 1, 12 do currencies[i] = { key = ("C%02d"):format(i), value = ('{"eur":%d}'):format(i) } end
    c:produce("gt-rates", currencies)
    local function payments(from, to, currency_of)
      local list = {}
      for i = from, to do
        list[#list + 1] = { key = "p" .. i, value = ('{"amount":10,"currency":"%s"}'):format(currency_of(i)) }
      end
      return list
    end
    local function read_log_records(p)
      local ev = p:wait_for_log(function(e) return e.msg and e.msg:find("global tables read to their end", 1, true) end, 30)
      return tonumber(ev.records)
    end
    local a = c:run(path, { app = "gt", name = "a" })
    a:wait_for_log("partitions assigned", 30)
    local dir_b = c:path("state-gt-b")
    local b = c:run(path, { app = "gt", name = "b", config = { ["state.dir"] = dir_b } })
    assert.equal(12, read_log_records(a))
    assert.equal(12, read_log_records(b))
    cluster.await_split(a, b, "gt-payments", 4, 40 * cluster.scale)
    -- payments on every partition find every currency's rate, whichever instance holds them
    c:produce("gt-payments", payments(1, 48, function(i) return ("C%02d"):format(i % 12 + 1) end))
    local out = c:wait_for_records("gt-priced", 48, 60, { watch = b })
    local cjson = require("cjson")
    for _, r in ipairs(out) do
      local v = type(r.value) == "string" and cjson.decode(r.value) or r.value
      assert.equal(10 * tonumber(v.currency:sub(2)), v.eur, r.key)
    end
    -- a currency added later reaches the table while the detector runs
    c:produce("gt-rates", { { key = "NEW", value = '{"eur":100}' } })
    local deadline, priced, n = cluster.now() + 30 * cluster.scale, false, 100
    while not priced and cluster.now() < deadline do
      n = n + 1
      c:produce("gt-payments", { { key = "p" .. n, value = '{"amount":10,"currency":"NEW"}' } })
      for _, r in ipairs(c:consume("gt-priced", { idle_ms = 500 })) do
        if r.key == "p" .. n then
          local v = type(r.value) == "string" and cjson.decode(r.value) or r.value
          priced = v.eur == 1000
        end
      end
    end
    assert.is_true(priced, "no payment in the new currency was priced within 30 s")
    -- a restart reads the table from its local checkpoint and the topic's tail only
    a:kill("TERM")
    b:kill("TERM")
    assert.equal(0, a:wait(30), a:log_tail(20))
    assert.equal(0, b:wait(30), b:log_tail(20))
    c:produce("gt-rates", { { key = "C01", value = '{"eur":7}' } })
    local b2 = c:run(path, { app = "gt", name = "b2", config = { ["state.dir"] = dir_b } })
    assert.equal(1, read_log_records(b2))
    b2:wait_for_log("partitions assigned", 30)
    c:produce("gt-payments", { { key = "last", value = '{"amount":10,"currency":"C01"}' } })
    deadline = cluster.now() + 30 * cluster.scale
    local last
    repeat
      for _, r in ipairs(c:consume("gt-priced", { idle_ms = 500 })) do
        if r.key == "last" then last = type(r.value) == "string" and cjson.decode(r.value) or r.value end
      end
    until last or cluster.now() >= deadline
    assert.same({ currency = "C01", eur = 70 }, last)
  end)
end)
