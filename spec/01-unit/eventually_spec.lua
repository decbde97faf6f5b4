-- helpers.eventually: the integration tier's one way to wait for a condition.
local wait = require("helpers.eventually")
local cluster = require("helpers.cluster")

describe("eventually", function()
  it("returns what the condition returned once it holds, after polling it", function()
    local calls = 0
    local a, b = wait.eventually(function()
      calls = calls + 1
      if calls < 3 then return nil, "not yet" end
      return "done", 42
    end, 5, { what = "the third call", every = 1 })
    assert.equal("done", a)
    assert.equal(42, b)
    assert.equal(3, calls)
  end)

  it("fails after its timeout, naming what it waited for and what it last saw", function()
    local t0 = wait.now()
    local ok, err = pcall(wait.eventually, function() return false, "7 of 10 records" end, 0.2 / wait.scale,
      "ten records")
    local took = wait.now() - t0
    assert.is_false(ok)
    assert.matches("timed out after 0.2s waiting for ten records (last seen: 7 of 10 records)", err, 1, true)
    assert.is_true(took >= 0.2 and took < 2, ("took %.2fs"):format(took))
  end)

  it("fails as soon as a watched process exits, with its log", function()
    local c = cluster.new("eventually")
    local p = c:spawn({ "sh", "-c", "echo going away >&2; exit 3" }, { name = "short" })
    local t0 = wait.now()
    local ok, err = pcall(wait.eventually, function() return nil end, 30, { what = "a condition that never holds",
      watch = { p } })
    assert.is_false(ok)
    assert.is_true(wait.now() - t0 < 10, "it waited for the timeout")
    assert.matches("short exited (exit code 3) while waiting for a condition that never holds", err, 1, true)
    assert.matches("going away", err, 1, true)
    c:cleanup()
  end)

  it("lets an error raised by the condition through", function()
    assert.has_error(function()
      wait.eventually(function() error("broken probe", 0) end, 5, "anything")
    end, "broken probe")
  end)

  it("refuses a call that names nothing to wait for", function()
    assert.has_error(function() wait.eventually(function() return true end, 5) end)
  end)
end)
