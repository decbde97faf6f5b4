local cache = require("tide.cache")

describe("tide.cache", function()
  it("holds what it was given", function()
    local c = cache.new(10)
    c:set("a", 1)
    assert.equal(1, c:get("a"))
    assert.is_nil(c:get("b"))
    assert.equal(7, c:get_or_create("b", function() return 7 end))
    assert.equal(7, c:get_or_create("b", function() error("made twice") end))
  end)

  it("forgets keys untouched for a whole generation, keeps recently used ones", function()
    local c = cache.new(2)
    c:set("old", 1)
    c:set("used", 2)
    c:set("x", 3) -- generation 1 full: {old, used} become old
    assert.equal(2, c:get("used")) -- read: young again
    c:set("y", 4) -- young {x, used} full -> old; old {old, used} forgotten
    c:set("z", 5)
    assert.is_nil(c:peek("old"))
    assert.equal(2, c:peek("used"))
  end)

  it("never holds more than two generations", function()
    local c = cache.new(100)
    for i = 1, 10000 do c:set(i, i) end
    local n = 0
    for _ in pairs(c.young) do n = n + 1 end
    for _ in pairs(c.old) do n = n + 1 end
    assert.is_true(n <= 200)
    assert.equal(10000, c:get(10000))
  end)

  it("peek does not keep a key young", function()
    local c = cache.new(1)
    c:set("a", 1)
    c:set("b", 2) -- a is old
    assert.equal(1, c:peek("a"))
    c:set("c", 3) -- b old, a forgotten
    assert.is_nil(c:peek("a"))
  end)

  it("refuses a bad capacity at the caller's line", function()
    assert.has_error(function() cache.new(0) end, "bad argument #1 to 'cache' (a capacity of at least 1 expected)")
  end)
end)
