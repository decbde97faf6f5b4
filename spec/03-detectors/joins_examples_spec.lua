-- The join examples (examples/joins/), through the test driver (no broker):
-- out-of-order and late records, tombstones and restarts, as they would
-- come in production.
local testing = require("tide.testing")

local function pairs_of(list)
  local out = {}
  for i, r in ipairs(list) do out[i] = { r.key, r.value } end
  return out
end

local M = 60000

describe("examples/joins/uncleared_authorizations.lua", function()
  local function auth(card, amount) return { card = card, amount = amount, merchant = "m-" .. card } end
  local function clearing(authorization) return { authorization = authorization } end

  it("alerts, once its 10 minutes and grace are over, on an authorization no clearing followed", function()
    local d = testing.driver("examples/joins/uncleared_authorizations.lua", { application_id = "cards" })
    assert.same({ "authorizations", "clearings", "cards.uncleared-authorizations-authorization-clearing-right-repartition" },
      d.spec.inputs)
    d:pipe("authorizations", "A1", auth("card-1", 120), { timestamp = 0 })
    d:pipe("authorizations", "A2", auth("card-2", 80), { timestamp = 2 * M })
    d:pipe("clearings", "card-1", clearing("A1"), { timestamp = 6 * M })        -- A1 is cleared
    d:pipe("authorizations", "A3", auth("card-3", 15), { timestamp = 11 * M })
    assert.same({}, d:read("uncleared-authorizations"), "A2's window is open until 13m")
    d:pipe("clearings", "card-3", clearing("A3"), { timestamp = 12 * M + 30000 })
    d:pipe("clearings", "card-9", clearing("A9"), { timestamp = 13 * M })       -- stream time 13m: A2 is due
    local out = d:read("uncleared-authorizations")
    assert.same({ { "A2", { authorization = "A2", card = "card-2", amount = 80, merchant = "m-card-2",
      reason = "no clearing within 10 minutes" } } }, pairs_of(out))
    assert.equal(2 * M, out[1].timestamp, "the alert carries the authorization's time")
    d:close()
  end)

  it("counts a clearing that arrives within grace, drops a late one, and keeps waiting through a restart", function()
    local d = testing.driver("examples/joins/uncleared_authorizations.lua")
    d:pipe("authorizations", "A1", auth("c1", 10), { timestamp = 0 })
    d:pipe("authorizations", "A2", auth("c2", 20), { timestamp = 1 * M })
    d:pipe("authorizations", "A3", auth("c3", 30), { timestamp = 10 * M + 30000 })
    d:pipe("clearings", "c1", clearing("A1"), { timestamp = 9 * M + 45000 }) -- 45 s behind: within grace
    d:restart()
    d:pipe("authorizations", "A4", auth("c4", 40), { timestamp = 12 * M })
    d:pipe("clearings", "c2", clearing("A2"), { timestamp = 9 * M })   -- late: its window closed at 10m + 1m
    assert.equal(1, d.d.dropped_late())
    d:pipe("authorizations", "A5", auth("c5", 50), { timestamp = 40 * M })
    local alerted = {}
    for _, r in ipairs(d:read("uncleared-authorizations")) do alerted[#alerted + 1] = r.key end
    assert.same({ "A2", "A3", "A4" }, alerted)
    d:close()
  end)
end)

describe("examples/joins/over_limit.lua", function()
  it("puts an account in over-limit as either table changes, and takes it out again", function()
    local d = testing.driver("examples/joins/over_limit.lua")
    d:pipe("credit-limits", "acct-1", { amount = 500 }, { timestamp = 1000 })
    d:pipe("balances", "acct-1", { amount = 450, currency = "EUR" }, { timestamp = 2000 })
    assert.same({}, d:read("over-limit"))
    d:pipe("balances", "acct-1", { amount = 650, currency = "EUR" }, { timestamp = 3000 })
    assert.same({ { "acct-1", { balance = 650, limit = 500, currency = "EUR" } } }, pairs_of(d:read("over-limit")))
    d:pipe("credit-limits", "acct-1", { amount = 1000 }, { timestamp = 4000 })  -- raised: out again
    assert.same({ { "acct-1", nil } }, pairs_of(d:read("over-limit")))
    d:restart()
    d:pipe("credit-limits", "acct-1", { amount = 100 }, { timestamp = 5000 })   -- lowered under the balance
    local out = d:read("over-limit")
    assert.same({ { "acct-1", { balance = 650, limit = 100, currency = "EUR" } } }, pairs_of(out))
    assert.equal(5000, out[1].timestamp)
    d:pipe("balances", "acct-1", nil, { timestamp = 6000 })                     -- the account closes
    assert.same({ { "acct-1", nil } }, pairs_of(d:read("over-limit")))
    d:pipe("balances", "acct-2", { amount = 5, currency = "EUR" }, { timestamp = 7000 }) -- no limit: not joined
    assert.same({}, d:read("over-limit"))
    d:close()
  end)
end)

describe("examples/joins/order_enrichment.lua", function()
  it("enriches orders with their customer, as orders and customers change", function()
    local d = testing.driver("examples/joins/order_enrichment.lua")
    d:pipe("orders", "o-1", { item = "lamp", amount = 40, customer = "c-7" })
    assert.same({ { "o-1", { item = "lamp", amount = 40, customer = "c-7", segment = "unknown" } } },
      pairs_of(d:read("enriched-orders")))
    d:pipe("customers", "c-7", { name = "Ann", segment = "retail" })
    d:pipe("orders", "o-2", { item = "desk", amount = 300, customer = "c-7" })
    assert.same({
      { "o-1", { item = "lamp", amount = 40, customer = "c-7", name = "Ann", segment = "retail" } },
      { "o-2", { item = "desk", amount = 300, customer = "c-7", name = "Ann", segment = "retail" } },
    }, pairs_of(d:read("enriched-orders")))
    d:restart()
    d:pipe("customers", "c-7", { name = "Ann", segment = "business" }) -- both of her orders follow
    local out = pairs_of(d:read("enriched-orders"))
    table.sort(out, function(a, b) return a[1] < b[1] end)
    assert.same({ "business", "business" }, { out[1][2].segment, out[2][2].segment })
    d:pipe("orders", "o-1", nil)                                        -- cancelled
    assert.same({ { "o-1", nil } }, pairs_of(d:read("enriched-orders")))
    d:close()
  end)
end)

describe("examples/joins/payments_in_eur.lua", function()
  it("prices payments of any partition from the global rate table, and sets aside unknown currencies", function()
    local d = testing.driver("examples/joins/payments_in_eur.lua")
    assert.same({ "payments" }, d.spec.inputs)
    d:pipe("fx-rates", "USD", { eur = 0.92 })
    d:pipe("fx-rates", "GBP", { eur = 1.17 })
    d:pipe("payments", "p-1", { amount = 100, currency = "USD" }, { partition = 0 })
    d:pipe("payments", "p-2", { amount = 10, currency = "GBP" }, { partition = 5 })
    d:pipe("payments", "p-3", { amount = 7, currency = "XYZ" }, { partition = 2 })
    d:pipe("fx-rates", "USD", { eur = 0.5 })                            -- a new rate counts from now on
    d:restart()
    d:pipe("payments", "p-4", { amount = 10, currency = "USD" }, { partition = 1 })
    assert.same({
      { "p-1", { amount = 100, currency = "USD", eur = 92 } },
      { "p-2", { amount = 10, currency = "GBP", eur = 11.7 } },
      { "p-4", { amount = 10, currency = "USD", eur = 5 } },
    }, pairs_of(d:read("payments-eur")))
    assert.same({ { "p-3", { amount = 7, currency = "XYZ" } } }, pairs_of(d:read("unpriced-payments")))
    d:close()
  end)
end)
