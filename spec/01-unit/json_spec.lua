-- tide.json: the encoder behind the json serde and stored tables. What it
-- writes must decode (with cjson, as tide decodes) to the value it was given.
local cjson = require("cjson")
local serde = require("tide.serde")
local json = require("tide.json")

local encode = serde.json.encode

describe("tide.json", function()
  it("writes numbers that read back exactly, where cjson kept 14 digits", function()
    for _, n in ipairs({ 1732233600123456, 2 ^ 53, -(2 ^ 53), 2 ^ 60, 0.1, 1 / 3, 123.456,
      1e20, 1.5e-300, 5e-324, -2.5, 0, 12345678901234567 }) do
      local text = encode({ n = n })
      assert.equal(n, cjson.decode(text).n, text)
      assert.equal(n, tonumber(json.number_text(n)), json.number_text(n))
    end
    assert.equal('{"ts":1732233600123456}', encode({ ts = 1732233600123456 }))
    assert.equal("0.1", json.number_text(0.1)) -- the shortest text, not 17 digits
    assert.equal("1152921504606846976", json.number_text(2 ^ 60))
  end)

  it("writes arrays, holes as null, sparse tables and mixed keys as objects, {} for empty", function()
    assert.equal('[1,"a",true,false]', encode({ 1, "a", true, false }))
    assert.equal('["a",null,"c"]', encode({ [1] = "a", [3] = "c" }))
    assert.same({ ["1"] = "a", ["20"] = "x" }, cjson.decode(encode({ [1] = "a", [20] = "x" })))
    assert.same({ ["1"] = "a", x = "b" }, cjson.decode(encode({ "a", x = "b" })))
    assert.equal("{}", encode({}))
    assert.equal('{"n":null}', encode({ n = serde.null }))
    assert.same({ a = { b = { 1, { c = "d" } } } }, cjson.decode(encode({ a = { b = { 1, { c = "d" } } } })))
  end)

  it("escapes quotes, backslashes and control characters and keeps UTF-8 as it is", function()
    local s = 'q"b\\n\nt\tc\1d\127 é € 😀 a/b'
    local text = encode(s)
    assert.equal('"q\\"b\\\\n\\nt\\tc\\u0001d\\u007f é € 😀 a/b"', text)
    assert.equal(s, cjson.decode(text))
  end)

  it("refuses NaN, infinities, odd keys, functions and runaway nesting with the reason", function()
    local deep, t = {}, nil
    t = deep
    for _ = 1, 1100 do t.x = {}; t = t.x end
    for _, case in ipairs({
      { { x = 0 / 0 }, "must not be NaN or Infinity" },
      { { x = -math.huge }, "must not be NaN or Infinity" },
      { { [true] = 1 }, "table key must be a number or string" },
      { { f = print }, "Cannot serialise function" },
      { deep, "excessive nesting" },
    }) do
      local ok, err = pcall(encode, case[1])
      assert.is_false(ok)
      assert.matches(case[2], err, 1, true)
    end
    -- the encoder is usable again after a failure
    assert.equal('{"a":1}', encode({ a = 1 }))
  end)

  it("writes a number given to the string serde exactly too", function()
    local s = serde.new("string", require("tide.ffi").api)
    assert.equal("1732233600123456", s.encode(1732233600123456, "value"))
    assert.equal("0.30000000000000004", s.encode(0.1 + 0.2, "value"))
  end)
end)
