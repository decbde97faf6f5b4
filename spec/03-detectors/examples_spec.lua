-- The example detectors, through the test driver (no broker).
local testing = require("tide.testing")

describe("examples/text_transformer.lua", function()
  it("keeps values with an 'a', upper-cased, under the same key", function()
    local d = testing.driver("examples/text_transformer.lua")
    d:pipe("text-input", "k1", "apple")
    d:pipe("text-input", "k2", "kiwi")
    d:pipe("text-input", "k3", "banana")
    d:pipe("text-input", "k4", nil)
    assert.same({
      { key = "k1", value = "APPLE", headers = {} },
      { key = "k3", value = "BANANA", headers = {} },
    }, d:read("text-output"))
    assert.same({}, d:errors())
  end)
end)

describe("examples/large_payments.lua", function()
  it("alerts on payments over the card's limit, as JSON", function()
    local d = testing.driver("examples/large_payments.lua")
    d:pipe("payments", "c-1", { card = "c-1", amount = 1250.5 })
    d:pipe("payments", "c-2", { card = "c-2", amount = 300, limit = 200 })
    d:pipe("payments", "c-3", { card = "c-3", amount = 10 })
    assert.same({
      { key = "c-1", value = { card = "c-1", amount = 1250.5, over_by = 250.5 }, headers = {} },
      { key = "c-2", value = { card = "c-2", amount = 300, over_by = 100 }, headers = {} },
    }, d:read("payment-alerts"))
  end)

  it("dead-letters invalid JSON and payments without an amount", function()
    local d = testing.driver("examples/large_payments.lua")
    d:pipe("payments", "x", "{not json")
    d:pipe("payments", "y", { card = "y" })
    local dead = d:dead_letters()
    assert.equal(2, #dead)
    assert.equal("DecodeError", dead[1].headers["tide.error.class"])
    assert.equal("{not json", dead[1].value)
    assert.equal("ProcessError", dead[2].headers["tide.error.class"])
    assert.matches("large_payments%.lua:%d+: payment without a numeric amount", dead[2].headers["tide.error.message"])
    assert.same({}, d:read("payment-alerts"))
  end)
end)
