-- The checker of `make chaos` finds each kind of fault it reports, and none
-- where there is none.
local check = require("chaos.check")

local function rec(partition, offset, key, value)
  return { partition = partition, offset = offset, key = key, value = value }
end

--- Input: n records per key for keys "a" (partition 0) and "b" (partition 1).
local function input(n)
  local list = {}
  for i = 1, n do
    list[#list + 1] = rec(0, i - 1, "a", ("a:%06d"):format(i))
    list[#list + 1] = rec(1, i - 1, "b", ("b:%06d"):format(i))
  end
  return list
end

--- Copies of the given (key, seq) pairs, in this order, on one partition per key.
local function copies(pairs_list, version)
  local list, offsets = {}, {}
  for _, p in ipairs(pairs_list) do
    local key, seq = p[1], p[2]
    local part = key == "a" and 0 or 1
    offsets[part] = (offsets[part] or -1) + 1
    list[#list + 1] = rec(part, offsets[part], key, ("%s:%06d|v%d"):format(key, seq, version or 1))
  end
  return list
end

describe("chaos checker", function()
  it("parses the three record shapes", function()
    assert.are.same({ "k017", 123 }, { check.parse_input("k017:000123") })
    assert.are.same({ 123, 3 }, { check.parse_copy("k017:000123|v3") })
    assert.are.same({ 123, 3, 57 }, { check.parse_count("000123:57|v3") })
    assert.is_nil(check.parse_input("nonsense"))
    assert.is_nil(check.parse_copy("k017:000123"))
  end)

  it("reads the truth from the input, with its own duplicates and truncation", function()
    local inp = input(3)
    inp[#inp + 1] = rec(0, 3, "a", "a:000002") -- written twice
    inp[#inp + 1] = rec(2, 7, "c", "c:000001") -- partition 2 starts at 7
    local t = check.truth(inp)
    assert.are.equal(7, t.total)
    assert.are.equal(1, t.duplicates)
    assert.are.same({ a = 3, b = 3, c = 1 }, t.per_key)
    assert.are.same({ 2 }, t.truncated)
  end)

  it("finds nothing wrong in an exact copy", function()
    local t = check.truth(input(4))
    local out = copies({ { "a", 1 }, { "a", 2 }, { "b", 1 }, { "a", 3 }, { "b", 2 }, { "b", 3 },
      { "a", 4 }, { "b", 4 } })
    local r = check.stream(t, out, check.parse_copy)
    assert.are.same({ 0, 0, 0, 0, 0, 0 }, { r.lost, r.duplicates, r.unexpected, r.reorder_first,
      r.reorder_all, r.split_keys })
  end)

  it("counts lost records, duplicates and reorderings, telling replays from reorderings", function()
    local t = check.truth(input(5))
    -- a: 1 2 3 | replay 2 3 | 4 5 (a replay after a crash)
    -- b: 1 3 2 5 (b4 lost, b2 delivered late for the first time)
    local out = copies({ { "a", 1 }, { "a", 2 }, { "a", 3 }, { "a", 2 }, { "a", 3 }, { "a", 4 },
      { "a", 5 }, { "b", 1 }, { "b", 3 }, { "b", 2 }, { "b", 5 } })
    local r = check.stream(t, out, check.parse_copy)
    assert.are.equal(1, r.lost)
    assert.are.same({ "b#4" }, r.lost_sample)
    assert.are.equal(2, r.duplicates)
    assert.are.equal(2, r.duplicated)
    assert.are.equal(1, r.reorder_first)
    assert.are.equal(2, r.reorder_all) -- a2 replayed after a3, and b2
    assert.are.equal(0, r.unexpected)
  end)

  it("counts outputs the input never had, and keys split over partitions", function()
    local t = check.truth(input(1))
    local out = copies({ { "a", 1 }, { "b", 1 }, { "a", 9 } })
    out[#out + 1] = rec(5, 0, "a", "a:000001|v1")
    local r = check.stream(t, out, check.parse_copy)
    assert.are.equal(1, r.unexpected)
    assert.are.equal(1, r.split_keys)
    assert.are.equal(1, r.duplicates)
  end)

  it("judges final counts: exact, too high (a replay) and too low (a lost update)", function()
    local t = check.truth(input(3))
    local function count(p, o, key, seq, n) return rec(p, o, key, ("%06d:%d|v1"):format(seq, n)) end
    local exact = { count(0, 0, "a", 1, 1), count(0, 1, "a", 2, 2), count(0, 2, "a", 3, 3),
      count(1, 0, "b", 1, 1), count(1, 1, "b", 2, 2), count(1, 2, "b", 3, 3) }
    local r = check.counts(t, exact)
    assert.are.same({ 2, 2, 0, 0, 0, 0 }, { r.keys, r.exact, r.high, r.low, r.count_above_seq, r.count_below_seq })

    -- a replayed 2 and 3 (counts 4, 5); b lost the update of 2 (3 counted as 2)
    local off = { count(0, 0, "a", 1, 1), count(0, 1, "a", 2, 2), count(0, 2, "a", 3, 3),
      count(0, 3, "a", 2, 4), count(0, 4, "a", 3, 5),
      count(1, 0, "b", 1, 1), count(1, 1, "b", 3, 2) }
    r = check.counts(t, off)
    assert.are.same({ 0, 1, 2, 2, 1, 1 }, { r.exact, r.high, r.excess, r.high_max, r.low, r.deficit })
    assert.are.equal(2, r.count_above_seq)
    assert.are.equal(1, r.count_below_seq)
    assert.is_true(check.lost_anything({ lost = 0 }, { lost = 0 }, r))
    assert.is_false(check.lost_anything({ lost = 0 }, { lost = 0 }, check.counts(t, exact)))
  end)
end)
