-- The DSL's joins through the test driver: stream-stream, table-table,
-- foreign-key and global-table joins, record by record.
--
-- The first three tests port the join semantics tables of Kafka Streams'
-- developer guide (docs/streams/developer-guide/dsl-api.html, "Joining":
-- "Semantics of stream-stream joins" under "KStream-KStream Join",
-- "Semantics of table-table equi-joins" under "KTable-KTable Equi-Join", and
-- "Semantics of table-table foreign-key joins" under "KTable-KTable
-- Foreign-Key Join"), row by row: the records of each row are piped, and
-- what the joiner was called with is compared with the row's cells.
local write, driver = require("helpers.scripts").temporary()

local function pairs_of(list)
  local out = {}
  for i, r in ipairs(list) do out[i] = { r.key, r.value } end
  return out
end

local function values(list)
  local out = {}
  for i, r in ipairs(list) do out[i] = r.value == nil and "null" or r.value end
  return out
end

--- A detector joining topics "left" and "right" with `op`, writing what the
--- joiner was called with as "[A, b]" to "out".
local function joiner_script(source, op, extra)
  return ([[
local left, right = %s("left"), %s("right")
left:%s(right, function(l, r) return "[" .. (l or "null") .. ", " .. (r or "null") .. "]" end%s)
  %s:to("out")
return tide.topology{ name = "joined" }
]]):format(source, source, op, extra or "", source == "tide.table" and ":to_stream()" or "")
end

local S = 1000 -- the tables count in seconds

describe("joins as Kafka Streams documents them", function()
  -- "We assume a join window size of 15 seconds with a grace period of 5
  -- seconds"; an empty cell: the joiner is not called.
  local stream_rows = {
    { 1, "null", nil, {}, {}, {} },
    { 2, nil, "null", {}, {}, {} },
    { 3, "A", nil, {}, {}, {} },
    { 4, nil, "a", { "[A, a]" }, { "[A, a]" }, { "[A, a]" } },
    { 5, "B", nil, { "[B, a]" }, { "[B, a]" }, { "[B, a]" } },
    { 6, nil, "b", { "[A, b]", "[B, b]" }, { "[A, b]", "[B, b]" }, { "[A, b]", "[B, b]" } },
    { 7, "null", nil, {}, {}, {} },
    { 8, nil, "null", {}, {}, {} },
    { 9, "C", nil, { "[C, a]", "[C, b]" }, { "[C, a]", "[C, b]" }, { "[C, a]", "[C, b]" } },
    { 10, nil, "c", { "[A, c]", "[B, c]", "[C, c]" }, { "[A, c]", "[B, c]", "[C, c]" }, { "[A, c]", "[B, c]", "[C, c]" } },
    { 11, nil, "null", {}, {}, {} },
    { 12, "null", nil, {}, {}, {} },
    { 13, nil, "null", {}, {}, {} },
    { 14, nil, "d", { "[A, d]", "[B, d]", "[C, d]" }, { "[A, d]", "[B, d]", "[C, d]" }, { "[A, d]", "[B, d]", "[C, d]" } },
    { 15, "D", nil, { "[D, a]", "[D, b]", "[D, c]", "[D, d]" }, { "[D, a]", "[D, b]", "[D, c]", "[D, d]" },
      { "[D, a]", "[D, b]", "[D, c]", "[D, d]" } },
    { 40, "E", nil, {}, {}, {} },
    { 60, "F", nil, {}, { "[E, null]" }, { "[E, null]" } },
    { 80, nil, "f", {}, { "[F, null]" }, { "[F, null]" } },
    { 100, "G", nil, {}, {}, { "[null, f]" } },
  }

  for col, op in ipairs({ "join", "left_join", "outer_join" }) do
    it("KStream-KStream " .. op .. ", row by row", function()
      local d = driver(joiner_script("tide.stream", op, ', tide.join_window{ within = "15s", grace = "5s" }'))
      for _, row in ipairs(stream_rows) do
        local ts, l, r, want = row[1], row[2], row[3], row[3 + col]
        if l then d:pipe("left", "k", l ~= "null" and l or nil, { timestamp = ts * S }) end
        if r then d:pipe("right", "k", r ~= "null" and r or nil, { timestamp = ts * S }) end
        assert.same(want, values(d:read("out")), ("row %d"):format(ts))
      end
      d:close()
    end)
  end

  local table_rows = {
    { 1, "null", nil, {}, {}, {} },
    { 2, nil, "null", {}, {}, {} },
    { 3, "A", nil, {}, { "[A, null]" }, { "[A, null]" } },
    { 4, nil, "a", { "[A, a]" }, { "[A, a]" }, { "[A, a]" } },
    { 5, "B", nil, { "[B, a]" }, { "[B, a]" }, { "[B, a]" } },
    { 6, nil, "b", { "[B, b]" }, { "[B, b]" }, { "[B, b]" } },
    { 7, "null", nil, { "null" }, { "null" }, { "[null, b]" } },
    { 8, nil, "null", {}, {}, { "null" } },
    { 9, "C", nil, {}, { "[C, null]" }, { "[C, null]" } },
    { 10, nil, "c", { "[C, c]" }, { "[C, c]" }, { "[C, c]" } },
    { 11, nil, "null", { "null" }, { "[C, null]" }, { "[C, null]" } },
    { 12, "null", nil, {}, { "null" }, { "null" } },
    { 13, nil, "null", {}, {}, {} },
    { 14, nil, "d", {}, {}, { "[null, d]" } },
    { 15, "D", nil, { "[D, d]" }, { "[D, d]" }, { "[D, d]" } },
  }

  for col, op in ipairs({ "join", "left_join", "outer_join" }) do
    it("KTable-KTable " .. op .. ", row by row", function()
      local d = driver(joiner_script("tide.table", op))
      for _, row in ipairs(table_rows) do
        local ts, l, r, want = row[1], row[2], row[3], row[3 + col]
        if l then d:pipe("left", "k", l ~= "null" and l or nil, { timestamp = ts * S }) end
        if r then d:pipe("right", "k", r ~= "null" and r or nil, { timestamp = ts * S }) end
        assert.same(want, values(d:read("out")), ("row %d"):format(ts))
      end
      d:close()
    end)
  end

  -- "Left KTable (K, extracted-FK)", "Right KTable (FK, VR)"; (k,null) is a
  -- tombstone, (k,2,null) the joiner called with no right value.
  local fk_rows = {
    { { "k", "1" }, { "1", "foo" }, { "(k,1,foo)" }, { "(k,1,foo)" } },
    { { "k", "2" }, nil, { "(k,null)" }, { "(k,2,null)" } },
    { { "k", "3" }, nil, { "(k,null)" }, { "(k,3,null)" } },
    { nil, { "3", "bar" }, { "(k,3,bar)" }, { "(k,3,bar)" } },
    { { "k", "null" }, nil, { "(k,null)" }, { "(k,null,null)" } },
    { { "k", "1" }, nil, { "(k,1,foo)" }, { "(k,1,foo)" } },
    { { "q", "10" }, nil, {}, { "(q,10,null)" } },
    { { "r", "10" }, nil, {}, { "(r,10,null)" } },
    { nil, { "10", "baz" }, { "(q,10,baz)", "(r,10,baz)" }, { "(q,10,baz)", "(r,10,baz)" } },
  }

  for col, op in ipairs({ "join", "left_join" }) do
    it("KTable-KTable foreign-key " .. op .. ", record by record", function()
      local d = driver(([[
local orders = tide.table("left", { value = "json" })
local customers = tide.table("right")
orders:%s(customers, function(o) return o.fk end,
  function(o, c, k) return ("(%%s,%%s,%%s)"):format(k, o.fk or "null", c or "null") end, { name = "fk" })
  :to_stream():to("out")
return tide.topology{ name = "fk" }
]]):format(op))
      for i, row in ipairs(fk_rows) do
        local l, r, want = row[1], row[2], row[2 + col]
        if r then d:pipe("right", r[1], r[2]) end
        if l then d:pipe("left", l[1], l[2] == "null" and {} or { fk = l[2] }) end
        local got = {}
        for j, rec in ipairs(d:read("out")) do got[j] = rec.value or ("(" .. rec.key .. ",null)") end
        assert.same(want, got, ("offset %d"):format(i))
      end
      d:close()
    end)
  end
end)

describe("stream-stream joins", function()
  local M = 60000

  it("joins out-of-order records within grace, drops and counts late ones, and emits a left result once its window closed", function()
    local d = driver([[
tide.stream("auths"):left_join(tide.stream("clearings"),
  function(a, c) return a .. "+" .. (c or "none") end,
  tide.join_window{ before = 0, after = "10m", grace = "1m" }, { name = "auth-clearing" })
  :to("out")
return tide.topology{}
]])
    d:pipe("auths", "a1", "A1", { timestamp = 0 })
    d:pipe("auths", "a2", "A2", { timestamp = 1 * M })
    d:pipe("clearings", "a1", "C1", { timestamp = 5 * M })   -- within [0, 10m]
    local out = d:read("out")
    assert.same({ { "a1", "A1+C1" } }, pairs_of(out))
    assert.equal(5 * M, out[1].timestamp)
    d:pipe("clearings", "x", "-", { timestamp = 10 * M + 30000 }) -- stream time 10.5m
    assert.same({}, d:read("out"))
    d:pipe("clearings", "a2", "C2", { timestamp = 10 * M })  -- out of order, within its window [0, 10m] + grace 1m
    assert.same({ { "a2", "A2+C2" } }, pairs_of(d:read("out")))
    d:pipe("auths", "a3", "A3", { timestamp = 12 * M })
    d:pipe("auths", "a0", "A0", { timestamp = 0 })          -- its window [0, 10m] closed at 11m: late
    d:pipe("clearings", "a3", "C3", { timestamp = 10 * M })  -- its window [0, 10m] closed at 11m too
    assert.same({}, d:read("out"))
    assert.equal(2, d.d.dropped_late())
    d:pipe("auths", "a4", "A4", { timestamp = 23 * M })      -- a3 closes at 12m + 10m + 1m = 23m
    out = d:read("out")
    assert.same({ { "a3", "A3+none" } }, pairs_of(out))
    assert.equal(12 * M, out[1].timestamp, "a left result carries its record's time")
    d:close()
  end)

  it("stamps a pair with the later of its records' times and joins within before and after only", function()
    local d = driver([[
tide.stream("l"):join(tide.stream("r"), function(a, b) return a .. b end,
  tide.join_window{ before = "2s", after = "5s" }):to("out")
return tide.topology{}
]])
    d:pipe("r", "k", "x", { timestamp = 7000 })   -- 3 s before L: outside before = 2s
    d:pipe("r", "k", "y", { timestamp = 8000 })   -- 2 s before: in
    d:pipe("l", "k", "L", { timestamp = 10000 })
    d:pipe("r", "k", "z", { timestamp = 15000 })  -- 5 s after: in
    d:pipe("r", "k", "w", { timestamp = 15001 })  -- outside
    d:pipe("r", "other", "v", { timestamp = 10000 }) -- another key
    local out = d:read("out")
    assert.same({ { "k", "Ly" }, { "k", "Lz" } }, pairs_of(out))
    assert.same({ 10000, 15000 }, { out[1].timestamp, out[2].timestamp })
    d:close()
  end)

  it("an outer join passes on each side's unmatched records, a left record with no key at once", function()
    local d = driver([[
tide.stream("l"):outer_join(tide.stream("r"), function(a, b) return (a or "-") .. (b or "-") end,
  tide.join_window{ within = "1s" }):to("out")
return tide.topology{}
]])
    d:pipe("l", nil, "N", { timestamp = 100 })
    assert.same({ "N-" }, values(d:read("out")))
    d:pipe("r", "k", "b", { timestamp = 1000 })
    d:pipe("l", "j", "A", { timestamp = 1500 })
    d:pipe("l", "z", "Z", { timestamp = 2500 })   -- b (closes at 2000) goes; A's window is open until 2500
    assert.same({ "-b", "A-" }, values(d:read("out")))
    d:close()
  end)

  it("keeps both sides' windows and the waiting records through a restart", function()
    local d = driver([[
local auths = tide.stream("auths", "json")
local clearings = tide.stream("clearings", "json")
auths:left_join(clearings, function(a, c) return { auth = a.id, clearing = c and c.id } end,
  tide.join_window{ before = 0, after = "10m", grace = "1m" }, { name = "match" })
  :to("out", "json")
return tide.topology{ name = "match" }
]])
    d:pipe("auths", "k1", { id = "a1" }, { timestamp = 0 })
    d:pipe("auths", "k2", { id = "a2" }, { timestamp = 1000 })
    assert.same({}, d:read("out"))
    d:restart()  -- the stores come back from their changelogs only
    assert.same({ { id = "a1" } }, d:store("match-this-join-store"):get("k1", 0))
    d:pipe("clearings", "k1", { id = "c1" }, { timestamp = 2000 })
    assert.same({ { "k1", { auth = "a1", clearing = "c1" } } }, pairs_of(d:read("out")))
    d:restart()
    d:pipe("auths", "k3", { id = "a3" }, { timestamp = 11 * M + 1000 }) -- a2 closed at 11m + 1s
    assert.same({ { "k2", { auth = "a2" } } }, pairs_of(d:read("out")))
    d:close()
  end)

  it("repartitions a side whose key changed, through <name>-left/-right repartition topics", function()
    local d = driver([[
local auths = tide.stream("auths", "json")
local clearings = tide.stream("clearings", "json"):select_key(function(_, c) return c.auth end)
auths:join(clearings, function(a, c) return a.amount .. "=" .. c.amount end,
  tide.join_window{ within = "1m" }, { name = "ac" }):to("out")
return tide.topology{ name = "m" }
]], { application_id = "app" })
    assert.same({ "auths", "clearings", "app.m-ac-right-repartition" }, d.spec.inputs)
    d:pipe("auths", "a1", { amount = 5 }, { timestamp = 1000 })
    d:pipe("clearings", "card-9", { auth = "a1", amount = 5 }, { timestamp = 2000 })
    assert.same({ { "a1", "5=5" } }, pairs_of(d:read("out")))
    d:close()
  end)

  it("drops records with no value, and no-key records of an inner join", function()
    local d = driver([[
tide.stream("l"):join(tide.stream("r"), function(a, b) return a .. b end, tide.join_window{ within = "1s" }):to("out")
return tide.topology{}
]])
    d:pipe("l", "k", nil, { timestamp = 1 })
    d:pipe("l", nil, "x", { timestamp = 1 })
    d:pipe("r", "k", "y", { timestamp = 2 })
    assert.same({}, d:read("out"))
    assert.same({}, d:dead_letters())
    d:close()
  end)

  it("refuses a stream-stream join without a join window, with the line", function()
    local path = write([[
local a, b = tide.stream("a"), tide.stream("b")
a:join(b, function(x, y) return x end)
return a
]])
    local ok, err = pcall(require("tide.testing").driver, path)
    assert.is_false(ok)
    assert.truthy(err:find(path .. ":2: join: a stream joins a stream within tide.join_window", 1, true), err)
  end)
end)

describe("table-table joins", function()
  it("results carry the later of the two rows' times, tombstones delete, and survive a restart", function()
    local d = driver([[
local limits = tide.table("limits", { value = "json", name = "limits" })
local balances = tide.table("balances", { value = "json", name = "balances" })
balances:join(limits, function(b, l) return { balance = b.amount, limit = l.max } end)
  :filter(function(_, v) return v.balance > v.limit end)
  :to_stream():to("over", "json")
return tide.topology{ name = "over" }
]])
    d:pipe("limits", "acct", { max = 100 }, { timestamp = 5000 })
    d:pipe("balances", "acct", { amount = 150 }, { timestamp = 1000 }) -- older than the limit row
    local out = d:read("over")
    assert.same({ { "acct", { balance = 150, limit = 100 } } }, pairs_of(out))
    assert.equal(5000, out[1].timestamp)
    d:restart()
    d:pipe("limits", "acct", { max = 200 }, { timestamp = 6000 }) -- no longer over: deleted downstream
    assert.same({ { "acct", nil } }, pairs_of(d:read("over")))
    d:pipe("limits", "acct", nil, { timestamp = 7000 })           -- out of the join, and was not over
    assert.same({}, d:read("over"))
    d:pipe("balances", "acct", { amount = 999 }, { timestamp = 8000 }) -- no limit row: no result
    assert.same({}, d:read("over"))
    d:close()
  end)

  it("joins a filtered table and a join's result, reading their rows through their parents", function()
    local d = driver([[
local users = tide.table("users", { value = "json" })
local active = users:filter(function(_, u) return u.active end)
local plans = tide.table("plans")
local active_plans = active:join(plans, function(u, p) return u.name .. ":" .. p end)
tide.stream("logins"):join(active_plans, function(l, up) return l .. "@" .. up end):to("out")
return tide.topology{}
]])
    d:pipe("users", "u1", { name = "ann", active = true })
    d:pipe("users", "u2", { name = "bob", active = false })
    d:pipe("plans", "u1", "gold")
    d:pipe("plans", "u2", "free")
    d:pipe("logins", "u1", "web")
    d:pipe("logins", "u2", "app")  -- bob is not active: not in the joined table
    assert.same({ { "u1", "web@ann:gold" } }, pairs_of(d:read("out")))
    d:close()
  end)
end)

describe("foreign-key joins", function()
  local script = [[
local orders = tide.table("orders", { value = "json" })
local customers = tide.table("customers", { value = "json" })
orders:%s(customers, function(o) return o.customer end,
  function(o, c) return { item = o.item, customer = c and c.name } end, { name = "enrich" })
  :to_stream():to("enriched", "json")
return tide.topology{ name = "orders" }
]]

  it("follows the order's customer as either table changes", function()
    local d = driver(script:format("join"), { application_id = "shop" })
    assert.same({ "orders", "customers", "shop.orders-enrich-subscription-repartition",
      "shop.orders-enrich-response-repartition" }, d.spec.inputs)
    d:pipe("customers", "c1", { name = "Ann" })
    d:pipe("orders", "o1", { item = "lamp", customer = "c1" })
    assert.same({ { "o1", { item = "lamp", customer = "Ann" } } }, pairs_of(d:read("enriched")))
    d:pipe("customers", "c1", { name = "Anna" })             -- the customer changes: the order follows
    assert.same({ { "o1", { item = "lamp", customer = "Anna" } } }, pairs_of(d:read("enriched")))
    d:pipe("customers", "c2", { name = "Bo" })
    d:pipe("orders", "o1", { item = "lamp", customer = "c2" }) -- the order moves to another customer
    assert.same({ { "o1", { item = "lamp", customer = "Bo" } } }, pairs_of(d:read("enriched")))
    d:pipe("customers", "c1", { name = "Annie" })            -- no longer its customer: nothing
    assert.same({}, d:read("enriched"))
    d:restart()
    d:pipe("customers", "c2", nil)                           -- the customer goes: so does the joined order
    assert.same({ { "o1", nil } }, pairs_of(d:read("enriched")))
    d:pipe("customers", "c2", { name = "Bob" })              -- and comes back, after a restart too
    assert.same({ { "o1", { item = "lamp", customer = "Bob" } } }, pairs_of(d:read("enriched")))
    d:pipe("orders", "o1", nil)                              -- the order goes
    assert.same({ { "o1", nil } }, pairs_of(d:read("enriched")))
    d:pipe("customers", "c2", { name = "Bobby" })            -- nobody subscribes any more
    assert.same({}, d:read("enriched"))
    d:close()
  end)

  it("a left join passes on orders whose customer is unknown", function()
    local d = driver(script:format("left_join"))
    d:pipe("orders", "o1", { item = "pen", customer = "c9" })
    assert.same({ { "o1", { item = "pen" } } }, pairs_of(d:read("enriched")))
    d:pipe("customers", "c9", { name = "Cy" })
    assert.same({ { "o1", { item = "pen", customer = "Cy" } } }, pairs_of(d:read("enriched")))
    d:pipe("customers", "c9", nil)
    assert.same({ { "o1", { item = "pen" } } }, pairs_of(d:read("enriched")))
    d:close()
  end)

  it("hashes a row the same however its table was built, so answers match across workers", function()
    local row_hash = require("tide.joins").row_hash
    local a = { item = "x", tags = { 1, 2 }, customer = "c" }
    local b = {}
    b.customer, b.tags, b.item = "c", { 1, 2 }, "x"
    assert.equal(row_hash(a), row_hash(b))
    assert.not_equal(row_hash(a), row_hash({ item = "y", tags = { 1, 2 }, customer = "c" }))
    assert.equal(row_hash(require("tide").json.decode('{"a":1,"b":[true,null]}')),
      row_hash(require("tide").json.decode('{"b":[true,null],"a":1}')))
  end)
end)

describe("global tables", function()
  local script = [[
local rates = tide.global_table("rates", { value = "json" })
tide.stream("payments", "json")
  :%s(rates, function(_, p) return p.currency end,
    function(p, r) return { amount = p.amount, eur = r and p.amount * r.eur } end)
  :to("in-eur", "json")
return tide.topology{ name = "eur" }
]]

  it("every record joins the global table's row its key mapper names; the topic is not an input", function()
    local d = driver(script:format("join"))
    assert.same({ "payments" }, d.spec.inputs)
    assert.equal("rates", d.spec.stores.rates.global)
    d:pipe("rates", "USD", { eur = 0.5 })
    d:pipe("payments", "p1", { amount = 10, currency = "USD" }, { partition = 3 }) -- any partition
    d:pipe("payments", "p2", { amount = 10, currency = "GBP" })                  -- no rate: dropped
    d:pipe("rates", "USD", { eur = 0.25 })
    d:pipe("payments", "p3", { amount = 8, currency = "USD" })
    d:pipe("rates", "USD", nil)                                                  -- a tombstone deletes
    d:pipe("payments", "p4", { amount = 8, currency = "USD" })
    assert.same({ { "p1", { amount = 10, eur = 5 } }, { "p3", { amount = 8, eur = 2 } } }, pairs_of(d:read("in-eur")))
    d:close()
  end)

  it("a left join passes nil, a restart restores the table from its topic, and the detector cannot write it", function()
    local d = driver(script:format("left_join"))
    d:pipe("rates", "USD", { eur = 0.5 })
    d:pipe("payments", "p1", { amount = 4, currency = "CHF" })
    assert.same({ { "p1", { amount = 4 } } }, pairs_of(d:read("in-eur")))
    d:restart()
    d:pipe("payments", "p2", { amount = 4, currency = "USD" })
    assert.same({ { "p2", { amount = 4, eur = 2 } } }, pairs_of(d:read("in-eur")))
    assert.equal(0, #d.changelog, "a global table has no changelog")
    local ok, err = pcall(function() d:store("rates"):put("USD", { eur = 1 }) end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("written from its topic rates only", 1, true), tostring(err))
    d:close()
  end)

  it("refuses a topic read both as a stream and as a global table", function()
    local path = write([[
local g = tide.global_table("rates")
tide.stream("rates"):join(g, function(k) return k end, function(a, b) return a end):to("out")
return tide.topology{}
]])
    local ok, err = pcall(require("tide.testing").driver, path)
    assert.is_false(ok)
    assert.truthy(err:find(path .. ":2: tide.stream('rates'): the topic is a global table's already", 1, true), err)
  end)
end)

describe("cogroup", function()
  local function windowed(list)
    local out = {}
    for i, r in ipairs(list) do out[i] = { r.key, r.value.start, r.value["end"], r.value.value } end
    return out
  end

  it("aggregates several grouped streams into one store, each with its own aggregator", function()
    local d = driver([[
local buys = tide.stream("buys", "json"):group_by_key()
local refunds = tide.stream("refunds", "json"):group_by(function(_, r) return r.customer end, { name = "by-customer" })
buys:cogroup(function(agg, b) agg.spent = agg.spent + b.amount; return agg end)
  :cogroup(refunds, function(agg, r) agg.refunded = agg.refunded + r.amount; return agg end)
  :aggregate({ spent = 0, refunded = 0 }, { name = "ledger" })
  :to_stream():to("ledger", "json")
return tide.topology{ name = "ledger" }
]])
    d:pipe("buys", "c1", { amount = 30 })
    d:pipe("refunds", "r1", { customer = "c1", amount = 10 })
    d:pipe("buys", "c1", { amount = 5 })
    assert.same({
      { "c1", { spent = 30, refunded = 0 } }, { "c1", { spent = 30, refunded = 10 } }, { "c1", { spent = 35, refunded = 10 } },
    }, pairs_of(d:read("ledger")))
    assert.same({ spent = 35, refunded = 10 }, d:store("ledger"):get("c1"))
    d:restart()
    d:pipe("refunds", "r2", { customer = "c1", amount = 1 })
    assert.same({ { "c1", { spent = 35, refunded = 11 } } }, pairs_of(d:read("ledger")))
    d:close()
  end)

  it("windowed: tumbling windows shared by the inputs, late records of any input dropped", function()
    local d = driver([[
local a = tide.stream("a"):group_by_key()
local b = tide.stream("b"):group_by_key()
a:cogroup(function(n) return n + 1 end):cogroup(b, function(n) return n + 10 end)
  :windowed_by(tide.tumbling{ size = "10s", grace = "1s" })
  :aggregate(0, { name = "per10s" })
  :to_stream():to("out", "json")
return tide.topology{}
]])
    d:pipe("a", "k", "x", { timestamp = 1000 })
    d:pipe("b", "k", "x", { timestamp = 2000 })
    d:pipe("b", "k", "x", { timestamp = 11000 })
    d:pipe("a", "k", "x", { timestamp = 9000 })   -- late: [0, 10 s) closed at 11 s
    assert.same({ { "k", 0, 10000, 1 }, { "k", 0, 10000, 11 }, { "k", 10000, 20000, 10 } }, windowed(d:read("out")))
    assert.equal(1, d.d.dropped_late())
    d:close()
  end)

  it("session and sliding windows fold each input's records with its own aggregator", function()
    local d = driver([[
local a = tide.stream("a"):group_by_key()
local b = tide.stream("b"):group_by_key()
local cg = a:cogroup(function(s) return s .. "a" end):cogroup(b, function(s) return s .. "b" end)
cg:windowed_by(tide.session{ gap = "5s" })
  :aggregate("", function(x, y) return x .. y end, { name = "sessions" })
  :to_stream():to("sessions", "json")
cg:windowed_by(tide.sliding{ size = "10s", grace = "5s" })
  :aggregate("", { name = "sliding" })
  :to_stream():to("sliding", "json")
return tide.topology{}
]])
    d:pipe("a", "k", "x", { timestamp = 1000 })
    d:pipe("b", "k", "x", { timestamp = 3000 })
    d:pipe("a", "k", "x", { timestamp = 2000 }) -- out of order: sliding revises [0, 3 s]
    local sessions = windowed(d:read("sessions"))
    assert.same({ "k", 1000, 3000, "aba" }, sessions[#sessions], "merged: a, b, then a")
    assert.same({ { "k", 0, 1000, "a" }, { "k", 0, 3000, "ab" }, { "k", 0, 2000, "aa" }, { "k", 0, 3000, "aab" } },
      windowed(d:read("sliding")))
    d:close()
  end)
end)

describe("foreign-key joins with JSON keys", function()
  it("writes the subscription and the answer keys as the tables' topics write theirs", function()
    local d = driver([[
local orders = tide.table("orders", { key = "json", value = "json" })
local customers = tide.table("customers", { key = "json", value = "json" })
orders:join(customers, function(o) return o.customer end, function(o, c) return c.name end, { name = "oc" })
  :to_stream():to("names", { key = "json" })
return tide.topology{ name = "j" }
]], { application_id = "a" })
    assert.same({ key = "json", value = "json" }, d.spec.serdes["a.j-oc-subscription-repartition"])
    assert.same({ key = "json", value = "json" }, d.spec.serdes["a.j-oc-response-repartition"])
    d:pipe("orders", 7, { customer = 42 })
    d:pipe("customers", 42, { name = "Ann" })    -- the answer comes back on the order's key, 7
    d:pipe("customers", 42, { name = "Anna" })
    assert.same({ { 7, "Ann" }, { 7, "Anna" } }, pairs_of(d:read("names")))
    d:close()
  end)
end)
