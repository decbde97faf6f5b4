-- The fraud pipeline of examples/fraud, detector by detector through the test
-- driver, then the whole diamond in-process on the generator's traffic.
local testing = require("tide.testing")
local store = require("tide.store")
local cjson = require("cjson")
local null = require("tide").null

local DIR = "examples/fraud/"
local T0 = 1795255200000 -- 2026-11-21T10:00:00Z
local MINUTE = 60 * 1000
local CARD = "4111111111111111"

-- Drivers of detectors with stores hold a RocksDB directory until closed.
local opened = {}
after_each(function()
  for _, d in ipairs(opened) do d:close() end
  opened = {}
end)

--- A driver for the detector at `path`, closed after the test.
local function open(path, opts)
  local d = testing.driver(path, opts)
  opened[#opened + 1] = d
  return d
end

--- A driver for the example's `file`, closed after the test.
local function driver(file, opts)
  return open(DIR .. file, opts)
end

--- A canonical authorisation, as normaliser.lua writes them.
local function auth(card, amount, time, over)
  local a = { card = card, amount = amount, currency = "EUR", country = "FR", merchant = "Cafe", time = time }
  for k, v in pairs(over or {}) do a[k] = v end
  return a
end

--- Pipe canonical authorisations (`{ amount, minutes after T0 [, overrides] }`) for one card.
local function pay(d, card, list)
  for _, p in ipairs(list) do
    d:pipe("auths", card, auth(card, p[1], T0 + p[2] * MINUTE, p[3]))
  end
end

--- A driver for a copy of `file` whose `local NAME = n` is `value`: how a test
--- reaches a cap that is far too large to fill record by record.
local function driver_with(file, name, value)
  local f = assert(io.open(DIR .. file, "rb"))
  local src = f:read("*a")
  f:close()
  local patched, n = src:gsub("local " .. name .. " = %d+", "local " .. name .. " = " .. value)
  assert.equal(1, n, name .. " not found in " .. file)
  local tmp = os.tmpname()
  local path = tmp .. ".lua"
  f = assert(io.open(path, "wb"))
  f:write(patched)
  f:close()
  local ok, d = pcall(open, path)
  os.remove(tmp)
  os.remove(path)
  assert(ok, d)
  return d
end

--- A fresh driver of `file` whose store `name` holds what driver `d` wrote to
--- that store's changelog, as a restart, or another worker taking the
--- partition over, finds it once the store is restored.
local function restored(file, name, d)
  local after = driver(file)
  for _, e in ipairs(d.changelog) do
    after:store(name):put(e.key, store.decode(e.value))
  end
  return after
end

--- The messages of the dead letters, in order.
local function dead_messages(d)
  local list = {}
  for i, e in ipairs(d:dead_letters()) do list[i] = e.headers["tide.error.message"] end
  return list
end

describe("examples/fraud/normaliser.lua", function()
  local d
  before_each(function() d = driver("normaliser.lua") end)

  it("turns a messy authorisation into the canonical one, keyed by card", function()
    d:pipe("auths-raw", "whatever", {
      card_number = "4111-1111-1111-1111", amt = "12.50", currency = "eur",
      merchant = { country = "fr", name = "Cafe de Flore" }, ts = "2026-11-21T10:00:00Z",
    })
    assert.same({ {
      key = CARD,
      value = { card = CARD, amount = 12.5, currency = "EUR", country = "FR",
        merchant = "Cafe de Flore", time = T0 },
      headers = {},
    } }, d:read("auths"))
    assert.same({}, d:errors())
  end)

  it("reads the other shapes and time formats upstream systems send", function()
    local raws = {
      { card_number = "4111 1111 1111 1111", amt = 7, currency = " usd ", merchant = "Shop",
        merchant_country = "us", ts = T0 + 123 },
      { pan = "5500000000000004", amount = ".99", ccy = "GBP", merchant = { name = "Tesco" },
        ts = "2026-11-21 11:00:00.25+01:00" },
      { card_number = "5500000000000004", amt = "3.", currency = "GBP", ts = tostring(T0) },
      { card_number = "5500000000000004", amt = 3, currency = "GBP", country = "gb",
        merchant = { name = "Boots", country = null }, ts = T0 / 1000 },
    }
    for _, raw in ipairs(raws) do d:pipe("auths-raw", nil, raw) end
    local values = {}
    for i, r in ipairs(d:read("auths")) do values[i] = r.value end
    assert.same({
      { card = CARD, amount = 7, currency = "USD", country = "US", merchant = "Shop", time = T0 + 123 },
      { card = "5500000000000004", amount = 0.99, currency = "GBP", country = null, merchant = "Tesco",
        time = T0 + 250 },
      { card = "5500000000000004", amount = 3, currency = "GBP", country = null, merchant = null, time = T0 },
      { card = "5500000000000004", amount = 3, currency = "GBP", country = "GB", merchant = "Boots", time = T0 },
    }, values)
    assert.same({}, d:errors())
  end)

  it("falls back to the record timestamp when the authorisation has no time", function()
    d:pipe("auths-raw", nil, { card_number = CARD, amt = "1", currency = "EUR" }, { timestamp = T0 + 7 })
    assert.equal(T0 + 7, d:read("auths")[1].value.time)
  end)

  it("dead-letters malformed authorisations, unchanged, with the reason", function()
    local good = { card_number = CARD, amt = "1.00", currency = "EUR", ts = T0 }
    local function but(k, v)
      local r = {}
      for gk, gv in pairs(good) do r[gk] = gv end
      r[k] = v
      return r
    end
    local cases = {
      { but("card_number", nil), "no card number %(card_number%)" },
      { but("card_number", 4111111111111111), "card number must be a JSON string, got number" },
      { but("card_number", "4111-1111"), "card number ending \"1111\" is not 12 to 19 digits" },
      { but("amt", "12,5O"), "amount \"12,5O\" is not a number" },
      { but("amt", "0x10"), "amount \"0x10\" is not a number" },
      { but("amt", nil), "no amount %(amt%)" },
      { but("amt", -3), "amount %-3 is negative" },
      { but("currency", "euro"), "currency \"euro\" is not a 3%-letter code" },
      { but("ts", "yesterday"), "time \"yesterday\" is neither epoch milliseconds nor ISO 8601" },
      { but("ts", "2026-13-01T00:00:00Z"), "time \"2026%-13%-01T00:00:00Z\" is neither" },
      { but("merchant", { name = "X", country = "France" }), "merchant country \"France\" is not a 2%-letter code" },
      { { 1, 2 }, "no card number" },
      { "\"just a string\"", "expected a JSON object, got string" },
    }
    for _, c in ipairs(cases) do d:pipe("auths-raw", "k", c[1]) end
    d:pipe("auths-raw", "k", "{\"card_number\": \"4111")
    assert.same({}, d:read("auths"))

    local dead = d:dead_letters()
    assert.equal(#cases + 1, #dead)
    for i, c in ipairs(cases) do
      local h = dead[i].headers
      assert.equal("ProcessError", h["tide.error.class"])
      assert.matches("normaliser%.lua:%d+: malformed authorisation: " .. c[2], h["tide.error.message"])
      -- the dead letter is the record as it came, for a person to repair and replay
      -- (encoded as the driver encodes what it pipes: every digit of the card number kept)
      local sent = type(c[1]) == "string" and c[1] or require("tide.serde").json.encode(c[1])
      assert.same(cjson.decode(sent), cjson.decode(dead[i].value))
      assert.equal("k", dead[i].key)
    end
    assert.equal("DecodeError", dead[#dead].headers["tide.error.class"])
    assert.equal("{\"card_number\": \"4111", dead[#dead].value)

    local errors = d:errors()
    assert.equal(#cases + 1, #errors)
    assert.matches("amount \"12,5O\" is not a number", errors[4].message)
  end)

  it("keeps the full card number out of its messages", function()
    d:pipe("auths-raw", "k", { card_number = "4111-1111-1111-1111-1111", amt = "1", currency = "EUR" })
    local msg = dead_messages(d)[1]
    assert.matches("ending \"1111\"", msg)
    assert.is_nil(msg:find("4111", 1, true))
  end)
end)

describe("examples/fraud detectors written with the DSL", function()
  it("read auths and write alerts, keeping their state in durable stores", function()
    for file, st in pairs({ amount_spike = "baselines", velocity = "recent", new_country = "countries" }) do
      local d = driver(file .. ".lua")
      -- the names demo.sh and the README give their changelog topics
      assert.equal(file, d.spec.name)
      -- no repartition topic: auths is keyed by card already
      assert.same({ "auths" }, d.spec.inputs)
      assert.same({ "alerts" }, d.spec.outputs)
      -- RocksDB (not memory = true), changelogged and restored
      assert.same({ [st] = { kind = "kv", memory = false } }, d.spec.stores)
    end
  end)
end)

describe("examples/fraud/amount_spike.lua", function()
  local d
  before_each(function() d = driver("amount_spike.lua") end)
  local history = { { 40, 0 }, { 50, 60 }, { 60, 120 }, { 50, 180 }, { 50, 240 } } -- mean 50, variance 40

  it("stays silent for amounts in the card's usual range", function()
    pay(d, CARD, history)
    for i = 1, 30 do pay(d, CARD, { { 30 + (i * 7) % 45, 300 + i * 60 } }) end
    assert.same({}, d:read("alerts"))
    assert.same({}, d:errors())
  end)

  it("alerts, with its evidence, on an amount far above the card's mean", function()
    pay(d, CARD, history)
    pay(d, CARD, { { 400, 300, { merchant = "Cartier" } } })
    assert.same({ {
      key = CARD,
      headers = {},
      value = {
        card = CARD, detector = "amount_spike", time = T0 + 300 * MINUTE,
        reason = "400.00 EUR is 8.0 times this card's usual 50.00 EUR (5 payments)",
        -- the deviation (6.32) is below half the mean, so half the mean (25) is used
        score = 14,
        details = { rule = "stddev", mean = 50, stddev = 6.32, n = 5 },
        auth = auth(CARD, 400, T0 + 300 * MINUTE, { merchant = "Cartier" }),
      },
    } }, d:read("alerts"))
  end)

  it("draws the line at the mean plus 4 deviations", function()
    pay(d, CARD, history)
    pay(d, CARD, { { 149, 300 } })
    assert.same({}, d:read("alerts"))
    local d2 = driver("amount_spike.lua")
    pay(d2, CARD, history)
    pay(d2, CARD, { { 151, 300 } })
    assert.equal(1, #d2:read("alerts"))
  end)

  it("waits for 5 payments before judging by deviations", function()
    pay(d, CARD, { { 50, 0 }, { 50, 1 }, { 50, 2 }, { 50, 3 }, { 400, 4 } })
    assert.same({}, d:read("alerts"))
  end)

  it("catches 10 times the mean after only two payments (a freshly stolen card)", function()
    pay(d, CARD, { { 10, 0 }, { 10, 1 }, { 99, 2 } })
    assert.same({}, d:read("alerts"))
    local d2 = driver("amount_spike.lua")
    pay(d2, CARD, { { 10, 0 }, { 10, 1 }, { 100, 2 } })
    local alerts = d2:read("alerts")
    assert.equal(1, #alerts)
    assert.same({ rule = "multiple", mean = 10, stddev = 0, n = 2 }, alerts[1].value.details)
    assert.equal("100.00 EUR is 10.0 times this card's usual 10.00 EUR (2 payments)", alerts[1].value.reason)
    assert.equal(18, alerts[1].value.score)
  end)

  it("does not learn from spikes, so repeated fraud keeps alerting", function()
    pay(d, CARD, history)
    pay(d, CARD, { { 400, 300 }, { 400, 301 }, { 400, 302 } })
    local alerts = d:read("alerts")
    assert.equal(3, #alerts)
    assert.same(alerts[1].value.details, alerts[3].value.details)
  end)

  it("keeps a baseline per card and per currency", function()
    pay(d, CARD, history)
    pay(d, "5500000000000004", { { 400, 300 } })
    pay(d, CARD, { { 400, 301, { currency = "USD" } } })
    assert.same({}, d:read("alerts"))
  end)

  it("dead-letters a record that is not a canonical authorisation", function()
    d:pipe("auths", CARD, { card = CARD, amount = "12" })
    assert.matches("not a canonical authorisation", dead_messages(d)[1])
  end)

  it("keeps its baselines in a store, and judges by them once restored from the changelog", function()
    pay(d, CARD, history)
    local eur = d:store("baselines"):get(CARD).baselines.EUR
    assert.equal(5, eur.n)
    assert.near(50, eur.mean, 1e-9)
    assert.near(40, eur.var, 1e-9)
    local after = restored("amount_spike.lua", "baselines", d)
    pay(after, CARD, { { 400, 300 } })
    local alerts = after:read("alerts")
    assert.equal(1, #alerts)
    assert.same({ rule = "stddev", mean = 50, stddev = 6.32, n = 5 }, alerts[1].value.details)
    -- the spike was not learnt
    assert.equal(5, after:store("baselines"):get(CARD).baselines.EUR.n)
  end)
end)

describe("examples/fraud/velocity.lua", function()
  local d
  before_each(function() d = driver("velocity.lua") end)

  it("alerts once when 5 payments fall within 10 minutes", function()
    pay(d, CARD, { { 10, 0 }, { 11, 1 }, { 12, 2 }, { 13, 3 } })
    assert.same({}, d:read("alerts"))
    pay(d, CARD, { { 14, 4 } })
    assert.same({ {
      key = CARD,
      headers = {},
      value = {
        card = CARD, detector = "velocity", time = T0 + 4 * MINUTE,
        reason = "5 payments within 4m00s (alerting at 5 within 10m00s)",
        score = 2.5,
        details = { count = 5, span_ms = 4 * MINUTE, window_ms = 10 * MINUTE },
        auth = auth(CARD, 14, T0 + 4 * MINUTE),
      },
    } }, d:read("alerts"))
    -- the rest of the burst is the same news
    pay(d, CARD, { { 1, 5 }, { 1, 6 }, { 1, 13 } })
    assert.same({}, d:read("alerts"))
    -- a new burst after the quiet window is news again
    pay(d, CARD, { { 1, 20 }, { 1, 21 }, { 1, 22 }, { 1, 23 }, { 1, 24 } })
    assert.equal(1, #d:read("alerts"))
  end)

  it("stays silent when the same payments span the whole window", function()
    pay(d, CARD, { { 1, 0 }, { 1, 2.5 }, { 1, 5 }, { 1, 7.5 }, { 1, 10 }, { 1, 12.5 }, { 1, 15 } })
    assert.same({}, d:read("alerts"))
  end)

  it("counts in the authorisations' time, not the records' timestamps", function()
    for i = 0, 4 do -- produced together, used an hour apart: a batch upload
      d:pipe("auths", CARD, auth(CARD, 1, T0 + i * 60 * MINUTE), { timestamp = T0 })
    end
    assert.same({}, d:read("alerts"))
    for i = 0, 4 do -- used within a second, delivered hours apart
      d:pipe("auths", "x", auth("x", 1, T0 + i * 200), { timestamp = T0 + i * 3600 * 1000 })
    end
    local alerts = d:read("alerts")
    assert.equal(1, #alerts)
    -- 800 ms count as a second: 600 times faster than 5 in 10 minutes, not infinitely
    assert.equal(600, alerts[1].value.score)
  end)

  it("counts payments that arrive out of order", function()
    pay(d, CARD, { { 1, 0 }, { 1, 4 }, { 1, 1 }, { 1, 3 }, { 1, 2 } })
    local alerts = d:read("alerts")
    assert.equal(1, #alerts)
    assert.equal(4 * MINUTE, alerts[1].value.details.span_ms)
  end)

  it("keeps cards apart", function()
    for i = 0, 3 do
      pay(d, CARD, { { 1, i } })
      pay(d, "5500000000000004", { { 1, i } })
    end
    assert.same({}, d:read("alerts"))
  end)

  it("keeps the latest times and the quiet window in a store, restored from the changelog", function()
    pay(d, CARD, { { 1, 0 }, { 1, 1 }, { 1, 2 }, { 1, 3 } })
    assert.same({ times = { T0, T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE } }, d:store("recent"):get(CARD))
    local after = restored("velocity.lua", "recent", d)
    pay(after, CARD, { { 1, 4 } })
    assert.equal(1, #after:read("alerts"))
    assert.equal(T0 + 14 * MINUTE, after:store("recent"):get(CARD).quiet_until)
    local later = restored("velocity.lua", "recent", after)
    pay(later, CARD, { { 1, 5 } }) -- still the same burst
    assert.same({}, later:read("alerts"))
  end)
end)

describe("examples/fraud/new_country.lua", function()
  local d
  before_each(function() d = driver("new_country.lua") end)
  local five_in_france = { { 1, 0 }, { 1, 60 }, { 1, 120 }, { 1, 180 }, { 1, 240 } }

  it("alerts on the first payment in a new country after 5 payments", function()
    pay(d, CARD, five_in_france)
    pay(d, CARD, { { 25, 300, { country = "TH", currency = "THB" } } })
    assert.same({ {
      key = CARD,
      headers = {},
      value = {
        card = CARD, detector = "new_country", time = T0 + 300 * MINUTE,
        reason = "first payment in TH (5 earlier payments, in FR)",
        score = 5,
        details = { country = "TH", known = { "FR" } },
        auth = auth(CARD, 25, T0 + 300 * MINUTE, { country = "TH", currency = "THB" }),
      },
    } }, d:read("alerts"))
  end)

  it("remembers the new country at once", function()
    pay(d, CARD, five_in_france)
    pay(d, CARD, { { 1, 300, { country = "DE" } }, { 1, 301, { country = "DE" } }, { 1, 302 } })
    assert.equal(1, #d:read("alerts"))
  end)

  it("learns the countries of a young card without alerting", function()
    pay(d, CARD, { { 1, 0 }, { 1, 1 }, { 1, 2, { country = "DE" } }, { 1, 3 }, { 1, 4 }, { 1, 5 },
      { 1, 6, { country = "DE" } } })
    assert.same({}, d:read("alerts"))
    pay(d, CARD, { { 1, 7, { country = "ES" } } })
    local alerts = d:read("alerts")
    assert.equal(1, #alerts)
    assert.same({ country = "ES", known = { "DE", "FR" } }, alerts[1].value.details)
    assert.equal("first payment in ES (7 earlier payments, in DE, FR)", alerts[1].value.reason)
  end)

  it("learns nothing from payments without a country", function()
    for i = 1, 6 do pay(d, CARD, { { 1, i, { country = null } } }) end
    pay(d, CARD, { { 1, 7 } })
    assert.same({}, d:read("alerts"))
    pay(d, CARD, { { 1, 8, { country = "DE" } } })
    assert.equal("first payment in DE (7 earlier payments, in FR)", d:read("alerts")[1].value.reason)
  end)

  it("keeps each card's countries in a store, restored from the changelog", function()
    pay(d, CARD, five_in_france)
    pay(d, CARD, { { 1, 300, { country = "DE" } } })
    assert.equal(1, #d:read("alerts"))
    local profile = d:store("countries"):get(CARD)
    assert.equal(6, profile.n)
    assert.same({ "DE", "FR" }, profile.countries)
    local after = restored("new_country.lua", "countries", d)
    pay(after, CARD, { { 1, 301, { country = "DE" } } }) -- no news after a restart either
    assert.same({}, after:read("alerts"))
    pay(after, CARD, { { 1, 302, { country = "TH" } } })
    assert.equal("first payment in TH (7 earlier payments, in DE, FR)", after:read("alerts")[1].value.reason)
  end)
end)

describe("examples/fraud/notifier.lua", function()
  local d
  before_each(function() d = driver("notifier.lua") end)

  local function alert(detector, minutes, over)
    local a = { card = CARD, detector = detector, reason = "because", score = 1, time = T0 + minutes * MINUTE,
      auth = auth(CARD, 950, T0 + minutes * MINUTE, { merchant = "Apple Store" }) }
    for k, v in pairs(over or {}) do a[k] = v end
    return a
  end

  it("tells the cardholder what each detector saw, on the detector's channel", function()
    d:pipe("alerts", CARD, alert("amount_spike", 0))
    d:pipe("alerts", CARD, alert("velocity", 0))
    d:pipe("alerts", CARD, alert("new_country", 0,
      { auth = auth(CARD, 1500, T0, { country = "TH", currency = "THB", merchant = "7-Eleven" }) }))
    local call = " If it was not you, call us on the number on your card."
    local function note(detector, channel, message)
      return { key = CARD, headers = {}, value = { card = CARD, detector = detector, channel = channel,
        time = T0, message = message .. call } }
    end
    assert.same({
      note("amount_spike", "sms", "Card ending 1111: a payment of 950.00 EUR at Apple Store (FR) "
        .. "on 2026-11-21 10:00 UTC is much larger than usual."),
      note("velocity", "sms", "Card ending 1111: many payments in a few minutes, the latest "
        .. "950.00 EUR at Apple Store (FR) on 2026-11-21 10:00 UTC."),
      note("new_country", "push", "Card ending 1111: first use in TH, 1500.00 THB at 7-Eleven (TH) "
        .. "on 2026-11-21 10:00 UTC. Travelling? Then all is well."),
    }, d:read("notifications"))
  end)

  it("passes an unknown detector's reason on by email", function()
    d:pipe("alerts", CARD, alert("night_owl", 0, { reason = "3 payments between 2 and 4 am", auth = null }))
    local n = d:read("notifications")[1].value
    assert.equal("email", n.channel)
    assert.equal("Card ending 1111: unusual activity (night_owl: 3 payments between 2 and 4 am)."
      .. " If it was not you, call us on the number on your card.", n.message)
  end)

  it("sends one notification per card and detector within 30 minutes", function()
    local function count(list)
      local c = {}
      for _, r in ipairs(list) do
        local k = r.value.card .. " " .. r.value.detector
        c[k] = (c[k] or 0) + 1
      end
      return c
    end
    d:pipe("alerts", CARD, alert("velocity", 0))
    d:pipe("alerts", CARD, alert("velocity", 10))
    d:pipe("alerts", CARD, alert("amount_spike", 11)) -- other news about the same card
    d:pipe("alerts", "x", alert("velocity", 12, { card = "5500000000000004" })) -- another card
    d:pipe("alerts", CARD, alert("velocity", 29.99))
    assert.same({
      [CARD .. " velocity"] = 1, [CARD .. " amount_spike"] = 1, ["5500000000000004 velocity"] = 1,
    }, count(d:read("notifications")))
    -- the window opened with the notification at 0, not with the last duplicate
    d:pipe("alerts", CARD, alert("velocity", 30))
    assert.same({ [CARD .. " velocity"] = 1 }, count(d:read("notifications")))
    -- and a new window opened there
    d:pipe("alerts", CARD, alert("velocity", 45))
    assert.same({}, count(d:read("notifications")))
  end)

  it("de-duplicates in alert time, whatever order alerts arrive in", function()
    d:pipe("alerts", CARD, alert("velocity", 40))
    d:pipe("alerts", CARD, alert("velocity", 20))
    d:pipe("alerts", CARD, alert("velocity", 5))
    local times = {}
    for i, n in ipairs(d:read("notifications")) do times[i] = n.value.time end
    assert.same({ T0 + 40 * MINUTE, T0 + 5 * MINUTE }, times)
  end)

  it("dead-letters what is not an alert", function()
    d:pipe("alerts", CARD, { reason = "no card" })
    assert.matches("not an alert: card and detector must be strings", dead_messages(d)[1])
    assert.same({}, d:read("notifications"))
  end)

  it("holds at most two generations of card and detector pairs", function()
    local function repeats_after(others)
      local dc = driver_with("notifier.lua", "MAX_PAIRS", 2)
      dc:pipe("alerts", CARD, alert("velocity", 0))
      for i = 1, others do dc:pipe("alerts", "x", alert("velocity", 1, { card = "card-" .. i })) end
      dc:pipe("alerts", CARD, alert("velocity", 2))
      local n = 0
      for _, r in ipairs(dc:read("notifications")) do
        if r.value.card == CARD then n = n + 1 end
      end
      return n
    end
    assert.equal(1, repeats_after(2))
    assert.equal(2, repeats_after(4)) -- forgotten: at worst one duplicate gets through
  end)
end)

describe("the fraud diamond, in-process", function()
  local N, SEED = 3000, 7

  local function generate(n, seed)
    local p = assert(io.popen(("luajit %stools/generator.lua %d %d"):format(DIR, n, seed)))
    local out = p:read("*a")
    assert.is_true(p:close())
    return out
  end

  it("generates the same N lines for the same seed, and others for another", function()
    local a, b, c = generate(200, 1), generate(200, 1), generate(200, 2)
    assert.equal(a, b)
    assert.are_not.equal(a, c)
    local n = 0
    for line in a:gmatch("[^\n]+") do
      n = n + 1
      local r = cjson.decode(line)
      assert.is_not_nil(r.value)
    end
    assert.equal(200, n)
  end)

  it("notifies every injected fraud pattern, and no normal card", function()
    local normaliser = driver("normaliser.lua")
    local detectors = {
      driver("amount_spike.lua"),
      driver("velocity.lua"),
      driver("new_country.lua"),
    }
    local notifier = driver("notifier.lua")
    local detector_for = { spike = "amount_spike", burst = "velocity", new_country = "new_country" }

    local expected, per_pattern, cards, n_lines, n_malformed = {}, {}, {}, 0, 0
    for line in generate(N, SEED):gmatch("[^\n]+") do
      n_lines = n_lines + 1
      local r = cjson.decode(line)
      local key = r.key ~= cjson.null and r.key or nil
      local pattern = r.headers and r.headers["synthetic.pattern"]
      if pattern == "malformed" then
        n_malformed = n_malformed + 1
      elseif key then
        cards[key] = true
        if pattern then
          local expect = assert(detector_for[pattern], pattern)
          if not expected[key .. " " .. expect] then
            per_pattern[pattern] = (per_pattern[pattern] or 0) + 1
          end
          expected[key .. " " .. expect] = true
        end
      end

      normaliser:pipe("auths-raw", key, r.value, { headers = r.headers })
      for _, a in ipairs(normaliser:read("auths")) do
        for _, det in ipairs(detectors) do
          det:pipe("auths", a.key, a.value)
          for _, alert in ipairs(det:read("alerts")) do
            notifier:pipe("alerts", alert.key, alert.value)
          end
        end
      end
    end

    local notified = {}
    for _, n in ipairs(notifier:read("notifications")) do
      assert.equal(n.key, n.value.card)
      assert.is_string(n.value.message)
      notified[n.value.card .. " " .. n.value.detector] = true
    end

    assert.equal(N, n_lines)
    -- the patterns are really there, or the comparison below proves nothing
    assert.is_true(per_pattern.spike >= 5 and per_pattern.burst >= 5 and per_pattern.new_country >= 5)
    assert.is_true(n_malformed >= 10)
    -- exactly the injected (card, detector) pairs: none missed, no normal card alarmed
    assert.same(expected, notified)
    local normal, alarmed = 0, {}
    for card in pairs(cards) do
      local injected, told = false, false
      for _, det in pairs(detector_for) do
        injected = injected or expected[card .. " " .. det] ~= nil
        told = told or notified[card .. " " .. det] ~= nil
      end
      if not injected then
        normal = normal + 1
        if told then alarmed[#alarmed + 1] = card end
      end
    end
    assert.is_true(normal >= 80)
    assert.same({}, alarmed)

    local dead = normaliser:dead_letters()
    assert.equal(n_malformed, #dead)
    for _, e in ipairs(dead) do
      assert.equal("malformed", e.headers["synthetic.pattern"])
      assert.matches("^%u%l+Error$", e.headers["tide.error.class"])
    end
    for _, det in ipairs(detectors) do assert.same({}, det:errors()) end
    assert.same({}, notifier:errors())
  end)
end)
