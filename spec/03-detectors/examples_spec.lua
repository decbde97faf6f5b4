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

describe("examples/word_count.lua (DSL)", function()
  it("counts every word across lines, whatever their keys, as a recomputation does", function()
    local d = testing.driver("examples/word_count.lua", { application_id = "wc" })
    assert.same({ "lines", "wc.word-count-words-repartition" }, d.spec.inputs)
    local lines = { "The cat sat", "the CAT ran", "a dog, a cat!", "" }
    local truth, order = {}, {}
    for i, line in ipairs(lines) do
      d:pipe("lines", "line-" .. i, line, { partition = i % 2 })
      for w in line:lower():gmatch("%a+") do
        truth[w] = (truth[w] or 0) + 1
        order[#order + 1] = { w, tostring(truth[w]) }
      end
    end
    local got = {}
    for i, r in ipairs(d:read("word-counts")) do got[i] = { r.key, r.value } end
    assert.same(order, got)
    assert.equal(3, d:store("counts"):get("cat"))
    assert.same({}, d:errors())
    d:close()
  end)
end)

describe("examples/metrics.lua (DSL)", function()
  it("keeps one total per metric as counters move on and instances go away", function()
    local d = testing.driver("examples/metrics.lua")
    local latest = {}
    local function report(instance, metric, value)
      local key = instance .. "/" .. metric
      latest[key] = value and { metric = metric, value = value } or nil
      d:pipe("instance-metrics", key, latest[key])
    end
    local function truth(metric)
      local sum = 0
      for _, c in pairs(latest) do
        if c.metric == metric then sum = sum + c.value end
      end
      return sum
    end
    report("i1", "requests", 10)
    report("i2", "requests", 5)
    report("i1", "errors", 1)
    report("i1", "requests", 25)
    report("i2", "requests", nil) -- i2 is gone
    report("i3", "errors", 4)
    local last = {}
    for _, r in ipairs(d:read("metric-totals")) do last[r.key] = tonumber(r.value) end
    assert.equal(truth("requests"), last.requests)
    assert.equal(25, last.requests)
    assert.equal(truth("errors"), last.errors)
    assert.equal(5, d:store("totals"):get("errors"))
    d:close()
  end)
end)
