-- The DSL (tide.stream, tide.table, ...), operator by operator, through the
-- test driver: the compiled detector runs on the real dispatcher, serdes and
-- stores, and its repartition topics are read back as the host reads them.
local testing = require("tide.testing")

local write, driver = require("helpers.scripts").temporary()

local function pairs_of(list)
  local out = {}
  for i, r in ipairs(list) do out[i] = { r.key, r.value } end
  return out
end

describe("DSL stateless operators", function()
  it("filter, filter_not, map_values and to", function()
    local d = driver([[
local s = tide.stream("in")
s:filter(function(k, v) return v:find("a", 1, true) end):map_values(string.upper):to("with-a")
s:filter_not(function(k, v) return v:find("a", 1, true) end):to("without-a")
return s
]])
    d:pipe("in", "1", "banana")
    d:pipe("in", "2", "kiwi")
    d:pipe("in", "3", "pear")
    assert.same({ { "1", "BANANA" }, { "3", "PEAR" } }, pairs_of(d:read("with-a")))
    assert.same({ { "2", "kiwi" } }, pairs_of(d:read("without-a")))
    d:close()
  end)

  it("map, select_key, peek and foreach see key, value and ctx", function()
    local d = driver([[
local seen = {}
local s = tide.stream("in")
s:map(function(k, v, ctx) return v, k .. "@" .. ctx.partition end)
 :peek(function(k, v) seen[#seen + 1] = k end)
 :to("swapped")
s:select_key(function(k, v) return #v end):to("by-length")
s:foreach(function(k, v, ctx) seen[#seen + 1] = "foreach " .. k end)
s:filter(function() return true end):map_values(function() return table.concat(seen, ",") end):to("seen")
return tide.topology{ name = "ops" }
]])
    d:pipe("in", "a", "xyz", { partition = 2 })
    assert.same({ { "xyz", "a@2" } }, pairs_of(d:read("swapped")))
    assert.same({ { "3", "xyz" } }, pairs_of(d:read("by-length")))
    assert.same({ { "a", "xyz,foreach a" } }, pairs_of(d:read("seen")))
    d:close()
  end)

  it("operators read the record's timestamp, topic, offset and headers from ctx", function()
    local d = driver([[
tide.stream("in"):map_values(function(v, k, ctx)
  return ("%s %d %s@%d %s"):format(v, ctx.timestamp, ctx.topic, ctx.offset, ctx.headers.h)
end):to("out")
return tide.topology{}
]])
    d:pipe("in", "k", "x", { timestamp = 2000, headers = { h = "hv" } })
    d:pipe("in", "k", "y", { timestamp = 1000, headers = { h = "hw" } })
    assert.same({ { "k", "x 2000 in@0 hv" }, { "k", "y 1000 in@1 hw" } }, pairs_of(d:read("out")))
    d:close()
  end)

  it("to() carries the record's headers, as Kafka Streams does", function()
    local d = driver([[
tide.stream("in"):map_values(string.upper):to("out")
return tide.topology{}
]])
    d:pipe("in", "k", "x", { headers = { trace = "t-1" } })
    d:pipe("in", "k", "y")
    local out = d:read("out")
    assert.same({ trace = "t-1" }, out[1].headers)
    assert.same({}, out[2].headers)
    d:close()
  end)

  it("flat_map and flat_map_values make zero or more records", function()
    local d = driver([[
local s = tide.stream("in")
s:flat_map_values(function(v) local w = {} for x in v:gmatch("%S+") do w[#w + 1] = x end return w end)
 :to("words")
s:flat_map(function(k, v) return { { k .. "1", v }, { key = k .. "2", value = v .. "!" } } end)
 :to("pairs")
return s
]])
    d:pipe("in", "k", "to be or")
    d:pipe("in", "e", "")
    assert.same({ { "k", "to" }, { "k", "be" }, { "k", "or" } }, pairs_of(d:read("words")))
    assert.same({ { "k1", "to be or" }, { "k2", "to be or!" }, { "e1", "" }, { "e2", "!" } },
      pairs_of(d:read("pairs")))
    d:close()
  end)

  it("transform uses stores and punctuators declared with tide.topology", function()
    local d = driver([[
tide.stream("in")
  :transform(function(k, v, ctx)
    local seen = ctx.stores.seen
    if seen:get(k) then return end -- drop repeats
    seen:put(k, v)
    return k, v .. "!"
  end)
  :to("firsts")
return tide.topology{
  stores = { seen = tide.kv() },
  punctuate = { every = "10s", on = "wall", fn = function(ctx, now) ctx:emit("firsts", "tick", tostring(now)) end },
}
]])
    d:pipe("in", "a", "1")
    d:pipe("in", "a", "2")
    d:pipe("in", "b", "3")
    assert.same({ { "a", "1!" }, { "b", "3!" } }, pairs_of(d:read("firsts")))
    assert.equal("1", d:store("seen"):get("a"))
    d:advance_wall_clock("10s")
    d:advance_wall_clock("10s")
    assert.same({ { "tick", "10000" }, { "tick", "20000" } }, pairs_of(d:read("firsts")))
    d:close()
  end)

  it("branch sends each record to the first matching predicate only", function()
    local d = driver([[
local big, small = tide.stream("in", "json"):branch(
  function(k, v) return v.amount >= 100 end,
  function(k, v) return v.amount >= 10 end)
big:to("big", "json")
small:to("small", "json")
return big
]])
    for i, amount in ipairs({ 500, 50, 5, 100 }) do d:pipe("in", tostring(i), { amount = amount }) end
    assert.same({ { "1", { amount = 500 } }, { "4", { amount = 100 } } }, pairs_of(d:read("big")))
    assert.same({ { "2", { amount = 50 } } }, pairs_of(d:read("small")))
    d:close()
  end)

  it("split names its branches and the default branch takes the rest", function()
    local d = driver([[
local b = tide.stream("in"):split()
  :branch(function(k, v) return v == "red" end, "red")
  :branch(function(k, v) return v == "blue" end, "blue")
  :default_branch("other")
b.red:to("red")
b.blue:to("blue")
b.other:to("other")
return b.red
]])
    for _, c in ipairs({ "red", "green", "blue", "red" }) do d:pipe("in", c, c) end
    assert.equal(2, #d:read("red"))
    assert.same({ { "blue", "blue" } }, pairs_of(d:read("blue")))
    assert.same({ { "green", "green" } }, pairs_of(d:read("other")))
    d:close()
  end)

  it("tide.stream of a list of topics reads them all as one stream", function()
    local d = driver([[
tide.stream({ "eu-clicks", "us-clicks" }):map_values(string.upper):to("clicks")
return tide.topology{}
]])
    assert.same({ "eu-clicks", "us-clicks" }, d.spec.inputs)
    d:pipe("us-clicks", "1", "us")
    d:pipe("eu-clicks", "2", "eu")
    assert.same({ { "1", "US" }, { "2", "EU" } }, pairs_of(d:read("clicks")))
    d:close()
  end)

  it("merge joins two streams with their own serdes", function()
    local d = driver([[
local a = tide.stream("a", "json"):map_values(function(v) return v.text end)
local b = tide.stream("b")
a:merge(b):to("out")
return a
]])
    d:pipe("a", "1", { text = "from a" })
    d:pipe("b", "2", "from b")
    assert.same({ { "1", "from a" }, { "2", "from b" } }, pairs_of(d:read("out")))
    assert.same({ "a", "b" }, d.spec.inputs)
    d:close()
  end)
end)

describe("DSL serdes and errors", function()
  it("routes a record its stream's serde cannot decode to the dead letters", function()
    local d = driver([[
tide.stream("in", { key = "string", value = "json" }):map_values(function(v) return v.n * 2 end):to("out", "json")
return tide.topology{ name = "doubler" }
]])
    d:pipe("in", "k", "{not json", { raw = true })
    d:pipe("in", "k", { n = 4 })
    local dead = d:dead_letters()
    assert.equal(1, #dead)
    assert.equal("DecodeError", dead[1].headers["tide.error.class"])
    assert.equal("{not json", dead[1].value)
    assert.same({ { "k", 8 } }, pairs_of(d:read("out")))
    d:close()
  end)

  it("reports an error in an operator's function with the detector's own file and line", function()
    local path = write([[
local s = tide.stream("in")
s:map_values(function(v)
  return v .. nil -- line 3
end):to("out")
return s
]])
    local d = testing.driver(path)
    d:pipe("in", "k", "v")
    local errs = d:errors()
    assert.equal(1, #errs)
    assert.truthy(errs[1].message:find(path:match("[^/]+$") .. ":3:", 1, true), errs[1].message)
    assert.equal(1, #d:dead_letters())
    d:close()
  end)

  it("names the to() of a string topic that was given a table", function()
    local d = driver([[
local s = tide.stream("in")
s:map_values(function(v) return { v = v } end):to("out")
return s
]])
    d:pipe("in", "k", "v")
    local errs = d:errors()
    assert.equal(1, #errs)
    assert.truthy(errs[1].message:find("to('out') at ", 1, true), errs[1].message)
    assert.truthy(errs[1].message:find(":2: the value is a table", 1, true), errs[1].message)
    d:close()
  end)

  it("dead-letters a record whose string key or value is not valid UTF-8, with the reason", function()
    local d = driver([[
tide.stream("in"):select_key(function(k, v) return v:sub(1, 1) end):to("out")
return tide.topology{ name = "initials" }
]])
    d:pipe("in", "k1", "anna")
    d:pipe("in", "k2", "émile") -- its first byte is half of "é"
    assert.same({ { "a", "anna" } }, pairs_of(d:read("out")))
    local dead = d:dead_letters()
    assert.equal(1, #dead)
    assert.equal("émile", dead[1].value)
    assert.truthy(dead[1].headers["tide.error.message"]:find("key is not valid UTF-8", 1, true),
      dead[1].headers["tide.error.message"])
    d:close()
  end)

  it("refuses misuse at load with the file and line", function()
    local path = write([[
local s = tide.stream("in")
s:filter("not a function")
return s
]])
    local ok, err = pcall(testing.driver, path)
    assert.is_false(ok)
    assert.truthy(err:find(path .. ":2: filter: a function(key, value) expected, got string", 1, true), err)

    path = write([[
tide.table("t", { value = "json" })
  :group_by(function(k, v) return v.g, 1 end)
  :windowed_by(tide.tumbling{ size = "1m" })
return tide.topology{}
]])
    ok, err = pcall(testing.driver, path)
    assert.is_false(ok)
    assert.truthy(err:find(path .. ":3: windowed_by: only a grouped stream has windows", 1, true), err)

    path = write([[
tide.stream("in"):to("out")
return tide.topology{ descripton = "typo" }
]])
    ok, err = pcall(testing.driver, path)
    assert.is_false(ok)
    assert.truthy(err:find(path .. ":2: tide.topology: unknown option 'descripton'", 1, true), err)

    path = write([[
tide.stream("in"):to("out")
return { inputs = { "x" }, process = function() end }
]])
    ok, err = pcall(testing.driver, path)
    assert.is_false(ok)
    assert.truthy(err:find("builds streams", 1, true), err)
  end)
end)

describe("DSL aggregations", function()
  it("group_by_key on an unchanged key needs no repartition topic", function()
    local d = driver([[
tide.stream("in"):group_by_key():count({ name = "n" }):to_stream():to("counts", "json")
return tide.topology{ name = "c" }
]])
    assert.same({ "in" }, d.spec.inputs)
    d:pipe("in", "a", "x")
    d:pipe("in", "a", "y")
    d:pipe("in", "b", "z")
    assert.same({ { "a", 1 }, { "a", 2 }, { "b", 1 } }, pairs_of(d:read("counts")))
    assert.equal(2, d:store("n"):get("a"))
    d:close()
  end)

  it("describes its graph on the status page when the script gives no description", function()
    local d = driver([[
local users = tide.table("users", { value = "json" })
local big, small = tide.stream("orders", "json"):branch(function(k, v) return v.n > 1 end, function() return true end)
big:join(users, function(o, u) return o end):to("big", "json")
small:group_by_key():windowed_by(tide.tumbling{ size = "1m" }):count({ name = "n" }):suppress():to_stream():to("small", "json")
return tide.topology{}
]])
    assert.equal("table users; orders > branch > (join > to big | count tumbling [n] > suppress [n-suppress] "
      .. "> to_stream > to small)", d.spec.description)
    d:close()
  end)

  it("group_by re-keys through <application.id>.<detector>-<name>-repartition", function()
    local d = driver([[
tide.stream("clicks", "json")
  :group_by(function(k, v) return v.page end, { name = "by-page" })
  :count({ name = "views" })
  :to_stream():to("page-views", "json")
return tide.topology{ name = "pages" }
]], { application_id = "shop" })
    assert.same({ "clicks", "shop.pages-by-page-repartition" }, d.spec.inputs)
    assert.same({ "page-views", "shop.pages-by-page-repartition" }, d.spec.outputs)
    d:pipe("clicks", "u1", { page = "/home" })
    d:pipe("clicks", "u2", { page = "/cart" })
    d:pipe("clicks", "u1", { page = "/home" })
    assert.same({ { "/home", 1 }, { "/cart", 1 }, { "/home", 2 } }, pairs_of(d:read("page-views")))
    -- the repartition records themselves are not outputs a test reads
    assert.same({}, d:read("shop.pages-by-page-repartition"))
    d:close()
  end)

  it("reduce and aggregate keep their state in stores that survive as changelogs", function()
    local d = driver([[
local g = tide.stream("in", "json"):group_by_key()
g:reduce(function(agg, v) return agg + v end, { name = "sum" }):to_stream():to("sums", "json")
g:aggregate({ n = 0, max = 0 }, function(agg, v, k)
  agg.n = agg.n + 1
  if v > agg.max then agg.max = v end
  return agg
end, { name = "stats" }):to_stream():to("stats", "json")
return g
]])
    d:pipe("in", "a", 3)
    d:pipe("in", "b", 10)
    d:pipe("in", "a", 4)
    assert.same({ { "a", 3 }, { "b", 10 }, { "a", 7 } }, pairs_of(d:read("sums")))
    assert.same({ { "a", { n = 1, max = 3 } }, { "b", { n = 1, max = 10 } }, { "a", { n = 2, max = 4 } } },
      pairs_of(d:read("stats")))
    assert.same({ n = 2, max = 4 }, d:store("stats"):get("a"))
    local changelog_keys = {}
    for _, e in ipairs(d.changelog) do changelog_keys[#changelog_keys + 1] = e.key end
    assert.is_true(#changelog_keys >= 6)
    d:close()
  end)

  it("an aggregator may change its aggregate in place: the old value stays intact downstream", function()
    local d = driver([[
tide.stream("in", "json"):group_by_key()
  :aggregate({ n = 0 }, function(agg, v) agg.n = agg.n + v; return agg end, { name = "per-key" })
  :group_by(function(_, agg) return "all", agg.n end, { name = "all" })
  :reduce(function(a, b) return a + b end, function(a, b) return a - b end, { name = "total" })
  :to_stream():to("total", "json")
return tide.topology{}
]])
    d:pipe("in", "a", 1)
    d:pipe("in", "a", 2)
    d:pipe("in", "b", 5)
    -- a: 1; a: 1 leaves, 3 joins; b: 5 joins
    assert.same({ { "all", 1 }, { "all", 0 }, { "all", 3 }, { "all", 8 } }, pairs_of(d:read("total")))
    d:close()
  end)

  it("ignores records with a nil key or value, as Kafka Streams does", function()
    local d = driver([[
tide.stream("in"):group_by_key():count({ name = "n" }):to_stream():to("out", "json")
return tide.topology{}
]])
    d:pipe("in", nil, "x")
    d:pipe("in", "a", nil)
    d:pipe("in", "a", "y")
    assert.same({ { "a", 1 } }, pairs_of(d:read("out")))
    d:close()
  end)
end)

describe("DSL windows", function()
  local function windowed(list)
    local out = {}
    for i, r in ipairs(list) do out[i] = { r.key, r.value.start, r.value["end"], r.value.value } end
    return out
  end

  it("counts in tumbling windows, takes late records within grace and drops them after", function()
    local d = driver([[
tide.stream("in"):group_by_key()
  :windowed_by(tide.tumbling{ size = "10s", grace = "2s" })
  :count({ name = "per10s" })
  :to_stream():to("counts", "json")
return tide.topology{}
]])
    d:pipe("in", "a", "x", { timestamp = 1000 })
    d:pipe("in", "a", "x", { timestamp = 9999 })
    d:pipe("in", "a", "x", { timestamp = 10000 }) -- next window
    d:pipe("in", "a", "x", { timestamp = 11000 }) -- stream time 11 s: [0, 10 s) open until 12 s
    d:pipe("in", "a", "x", { timestamp = 5000 })  -- late, within grace: counted
    d:pipe("in", "b", "x", { timestamp = 12000 }) -- stream time 12 s closes [0, 10 s)
    d:pipe("in", "a", "x", { timestamp = 6000 })  -- too late: dropped
    assert.same({
      { "a", 0, 10000, 1 }, { "a", 0, 10000, 2 }, { "a", 10000, 20000, 1 }, { "a", 10000, 20000, 2 },
      { "a", 0, 10000, 3 }, { "b", 10000, 20000, 1 },
    }, windowed(d:read("counts")))
    assert.equal(2, d:store("per10s"):get("a", 10000))
    assert.is_nil(d:store("per10s"):get("a", 0)) -- closed, and past its retention (size + grace)
    d:close()
  end)

  it("puts a record in every hopping window that holds it", function()
    local d = driver([[
tide.stream("in"):group_by_key()
  :windowed_by(tide.hopping{ size = "10s", advance = "5s" })
  :count()
  :to_stream():to("counts", "json")
return tide.topology{}
]])
    d:pipe("in", "a", "x", { timestamp = 7000 })
    d:pipe("in", "a", "x", { timestamp = 12000 })
    assert.same({
      { "a", 0, 10000, 1 }, { "a", 5000, 15000, 1 },
      { "a", 5000, 15000, 2 }, { "a", 10000, 20000, 1 },
    }, windowed(d:read("counts")))
    d:close()
  end)

  it("merges session windows within the gap and removes the merged ones", function()
    local d = driver([[
tide.stream("in", "json"):group_by_key()
  :windowed_by(tide.session{ gap = "5s" })
  :reduce(function(agg, v) return agg + v end, { name = "sessions", retention = "1h" })
  :to_stream():to("sums", "json")
return tide.topology{}
]])
    d:pipe("in", "a", 1, { timestamp = 0 })
    d:pipe("in", "a", 2, { timestamp = 3000 })  -- same session: [0, 3 s]
    d:pipe("in", "a", 4, { timestamp = 20000 }) -- a new session
    d:pipe("in", "a", 8, { timestamp = 16000 }) -- bridges into the 20 s one only
    -- a merged-away session is sent as gone (no value) before the session
    -- that took it in, as Kafka Streams sends its tombstone
    assert.same({
      { "a", 0, 0, 1 }, { "a", 0, 0, nil }, { "a", 0, 3000, 3 }, { "a", 20000, 20000, 4 },
      { "a", 20000, 20000, nil }, { "a", 16000, 20000, 12 },
    }, windowed(d:read("sums")))
    local sessions = {}
    for start, sv in d:store("sessions"):fetch("a", 0, 100000) do sessions[#sessions + 1] = { start, sv.e, sv.v } end
    assert.same({ { 0, 3000, 3 }, { 16000, 20000, 12 } }, sessions)
    d:close()
  end)

  it("keeps a closed session while a record may still bridge it to an open one", function()
    local d = driver([[
tide.stream("in", "json"):group_by_key()
  :windowed_by(tide.session{ gap = "5s" })
  :count({ name = "sessions" })
  :to_stream():to("counts", "json")
return tide.topology{}
]])
    d:pipe("in", "u", 1, { timestamp = 0 })
    d:pipe("in", "u", 1, { timestamp = 10000 }) -- [0, 0] is closed now: 0 + gap <= 10000
    d:pipe("in", "u", 1, { timestamp = 5000 })  -- within the gap of both: one session
    local out = windowed(d:read("counts"))
    assert.same({ "u", 0, 10000, 3 }, out[#out])
    d:close()
  end)

  it("a repartitioned window's stream time comes from its own records, not the source topic's", function()
    local d = driver([[
tide.stream("in", "json")
  :group_by(function(k, v) return v.user end, { name = "by-user" })
  :windowed_by(tide.tumbling{ size = "10s" })
  :count({ name = "n" })
  :to_stream():to("counts", "json")
return tide.topology{}
]])
    d:pipe("in", "a", { other = "no user" }, { timestamp = 1000000 }) -- no user: never repartitioned
    d:pipe("in", "b", { user = "u1" }, { timestamp = 1000 })
    assert.same({ { "u1", 0, 10000, 1 } }, windowed(d:read("counts")))
    d:close()
  end)

  it("takes event time from the value with a timestamp function", function()
    local d = driver([[
tide.stream("in", { value = "json", timestamp = function(v) return v.time end })
  :group_by_key()
  :windowed_by(tide.tumbling{ size = "10s" })
  :count({ name = "n" })
  :to_stream():to("counts", "json")
return tide.topology{}
]])
    d:pipe("in", "a", { time = 5000 }, { timestamp = 999999 })
    d:pipe("in", "a", { time = 7000 }, { timestamp = 1 })
    d:pipe("in", "a", { time = "soon" }, { timestamp = 1 })
    local out = d:read("counts")
    assert.same({ { "a", 0, 10000, 1 }, { "a", 0, 10000, 2 } }, windowed(out))
    assert.equal(7000, out[2].timestamp, "outputs carry the event time")
    local dead = d:dead_letters()
    assert.equal(1, #dead)
    assert.truthy(dead[1].headers["tide.error.message"]:find("timestamp function returned soon", 1, true))
    d:close()
  end)

  it("sliding windows count each record's key within size before it, ends included", function()
    local d = driver([[
tide.stream("auths", "json")
  :group_by_key()
  :windowed_by(tide.sliding{ size = "10m", grace = "1m" })
  :count({ name = "recent" })
  :to_stream()
  :filter(function(card, w) return w.value >= 3 end)
  :to("alerts", "json")
return tide.topology{}
]])
    local M = 60000
    d:pipe("auths", "c1", {}, { timestamp = 0 })
    d:pipe("auths", "c1", {}, { timestamp = 4 * M })
    d:pipe("auths", "c2", {}, { timestamp = 5 * M })
    d:pipe("auths", "c1", {}, { timestamp = 10 * M })      -- 0, 4m, 10m: three within 10m, ends included
    d:pipe("auths", "c1", {}, { timestamp = 14 * M + 1 })  -- 4m is out: two
    d:pipe("auths", "c1", {}, { timestamp = 13.5 * M })    -- late within grace: 4m, 10m, 13.5m;
                                                           -- and 14m+1's window, revised: 3
    d:pipe("auths", "c1", {}, { timestamp = 12 * M })      -- beyond grace: dropped
    local alerts = d:read("alerts")
    assert.same({ { "c1", 0, 10 * M, 3 }, { "c1", 3.5 * M, 13.5 * M, 3 }, { "c1", 4 * M + 1, 14 * M + 1, 3 } },
      windowed(alerts))
    assert.equal(14 * M + 1, alerts[3].timestamp, "a revised window carries its own end")
    d:close()
  end)

  it("stamps results as Kafka Streams does: a session with its end, a suppressed final with its update's time", function()
    local d = driver([[
local clicks = tide.stream("clicks"):group_by_key()
clicks:windowed_by(tide.session{ gap = "5s" }):count({ name = "sessions" })
  :to_stream():to("sessions", "json")
clicks:windowed_by(tide.tumbling{ size = "10s" }):count({ name = "per10s" })
  :suppress():to_stream():to("finals", "json")
return tide.topology{}
]])
    d:pipe("clicks", "u", "x", { timestamp = 1000 })
    d:pipe("clicks", "u", "x", { timestamp = 4000 })
    d:pipe("clicks", "u", "x", { timestamp = 2000 })  -- inside the session [1000, 4000]
    d:pipe("clicks", "u", "x", { timestamp = 30000 }) -- closes [0, 10 s)
    local stamps = {}
    for _, r in ipairs(d:read("sessions")) do
      if r.value.value then stamps[#stamps + 1] = { r.value.start, r.value["end"], r.timestamp } end
    end
    assert.same({ { 1000, 1000, 1000 }, { 1000, 4000, 4000 }, { 1000, 4000, 4000 }, { 30000, 30000, 30000 } }, stamps)
    local finals = d:read("finals")
    assert.equal(1, #finals)
    assert.same({ start = 0, ["end"] = 10000, value = 3 }, finals[1].value)
    assert.equal(2000, finals[1].timestamp) -- the last update's record, not the stream time 30 s
    d:close()
  end)

  it("a sliding window never starts before time 0", function()
    local d = driver([[
tide.stream("in"):group_by_key()
  :windowed_by(tide.sliding{ size = "10s" })
  :count({ name = "recent" })
  :to_stream():to("counts", "json")
return tide.topology{}
]])
    d:pipe("in", "k", "x", { timestamp = 1000 })
    d:pipe("in", "k", "x", { timestamp = 12000 })
    assert.same({ { "k", 0, 1000, 1 }, { "k", 2000, 12000, 1 } }, windowed(d:read("counts")))
    d:close()
  end)

  it("a sliding window includes its end: a record at end + grace still counts, and suppress waits for it", function()
    local d = driver([[
tide.stream("in"):group_by_key()
  :windowed_by(tide.sliding{ size = "10s", grace = "2s" })
  :count({ name = "recent" })
  :suppress():to_stream():to("finals", "json")
return tide.topology{}
]])
    d:pipe("in", "k", "x", { timestamp = 1000 })
    d:pipe("in", "k", "x", { timestamp = 3000 })  -- stream time 3 s: [0, 1 s] not closed yet
    assert.same({}, d:read("finals"))
    d:pipe("in", "k", "x", { timestamp = 1000 })  -- at end + grace: counts in [0, 1 s] and [0, 3 s]
    d:pipe("in", "k", "x", { timestamp = 3001 })  -- past it: [0, 1 s] is final
    assert.same({ { "k", 0, 1000, 2 } }, windowed(d:read("finals")))
    d:pipe("in", "k", "x", { timestamp = 999 })   -- late: dropped
    d:pipe("in", "k", "x", { timestamp = 5001 })  -- [0, 3 s] is final; [0, 3.001 s] at 5.002 s
    assert.same({ { "k", 0, 3000, 3 } }, windowed(d:read("finals")))
    d:close()
  end)

  it("dead-letters a record that has no timestamp for a window, with the reason", function()
    local d = driver([[
tide.stream("in"):group_by_key()
  :windowed_by(tide.tumbling{ size = "10s" })
  :count({ name = "per10s" })
  :to_stream():to("counts", "json")
return tide.topology{}
]])
    d:pipe("in", "k", "x")                          -- no timestamp
    d:pipe("in", "k", "x", { timestamp = 1000 })
    assert.same({ { "k", 0, 10000, 1 } }, windowed(d:read("counts")))
    local dead = d:dead_letters()
    assert.equal(1, #dead)
    assert.matches("the record has no timestamp", dead[1].headers["tide.error.message"], 1, true)
    d:close()
  end)

  it("suppress passes on one final result per window, when it closes", function()
    local d = driver([[
tide.stream("in"):group_by_key()
  :windowed_by(tide.tumbling{ size = "10s" }, "2s")
  :count({ name = "per10s" })
  :suppress()
  :to_stream():to("final", "json")
return tide.topology{}
]])
    d:pipe("in", "a", "x", { timestamp = 1000 })
    d:pipe("in", "b", "x", { timestamp = 2000 })
    d:pipe("in", "a", "x", { timestamp = 11000 })
    assert.same({}, d:read("final"))
    d:pipe("in", "a", "x", { timestamp = 9000 }) -- late but within grace
    assert.same({}, d:read("final"))
    d:pipe("in", "c", "x", { timestamp = 12000 }) -- closes [0, 10 s)
    assert.same({ { "a", 0, 10000, 2 }, { "b", 0, 10000, 1 } }, windowed(d:read("final")))
    d:pipe("in", "a", "x", { timestamp = 3000 }) -- too late: nothing
    d:pipe("in", "c", "x", { timestamp = 22000 })
    assert.same({ { "a", 10000, 20000, 1 }, { "c", 10000, 20000, 1 } }, windowed(d:read("final")))
    d:close()
  end)
end)

describe("DSL tables and joins", function()
  it("a table keeps the latest value per key and a tombstone deletes it", function()
    local d = driver([[
tide.table("users", { value = "json", name = "users" }):to_stream():to("changes", "json")
return tide.topology{}
]])
    d:pipe("users", "u1", { name = "Ann" })
    d:pipe("users", "u1", { name = "Anna" })
    d:pipe("users", "u2", { name = "Bob" })
    d:pipe("users", "u2", nil)
    assert.same({ name = "Anna" }, d:store("users"):get("u1"))
    assert.is_nil(d:store("users"):get("u2"))
    assert.same({ { "u1", { name = "Ann" } }, { "u1", { name = "Anna" } }, { "u2", { name = "Bob" } }, { "u2", nil } },
      pairs_of(d:read("changes")))
    d:close()
  end)

  it("filter and map_values on a table: a row that stops passing is deleted downstream", function()
    local d = driver([[
tide.table("accounts", { value = "json" })
  :filter(function(k, a) return a.balance < 0 end)
  :map_values(function(a) return a.balance end)
  :to_stream():to("overdrawn", "json")
return tide.topology{}
]])
    d:pipe("accounts", "a", { balance = 10 })  -- never in: nothing
    d:pipe("accounts", "a", { balance = -5 })  -- in
    d:pipe("accounts", "a", { balance = -7 })  -- changed
    d:pipe("accounts", "a", { balance = 3 })   -- out: deleted
    d:pipe("accounts", "b", nil)               -- never there: nothing
    assert.same({ { "a", -5 }, { "a", -7 }, { "a", nil } }, pairs_of(d:read("overdrawn")))
    d:close()
  end)

  it("join and left_join see the table as it was when the stream record came", function()
    local d = driver([[
local users = tide.table("users", { value = "json" })
local orders = tide.stream("orders", "json")
orders:join(users, function(o, u) return { item = o.item, user = u.name } end):to("joined", "json")
orders:left_join(users, function(o, u) return { item = o.item, user = u and u.name or "?" } end)
  :to("left", "json")
return orders
]])
    d:pipe("orders", "u1", { item = "book" })       -- before the user exists
    d:pipe("users", "u1", { name = "Ann" })
    d:pipe("orders", "u1", { item = "pen" })        -- after
    d:pipe("users", "u1", { name = "Anna" })        -- later updates do not change the past
    d:pipe("users", "u1", nil)
    d:pipe("orders", "u1", { item = "cup" })        -- after the delete
    d:pipe("users", "u2", { name = "Bo" })
    d:pipe("orders", "u2", nil)                     -- no value: dropped by both, not joined
    d:pipe("orders", nil, { item = "hat" })         -- no key: no row; left_join passes nil
    assert.same({ { "u1", { item = "pen", user = "Ann" } } }, pairs_of(d:read("joined")))
    assert.same({
      { "u1", { item = "book", user = "?" } }, { "u1", { item = "pen", user = "Ann" } },
      { "u1", { item = "cup", user = "?" } }, { nil, { item = "hat", user = "?" } },
    }, pairs_of(d:read("left")))
    assert.same({}, d:dead_letters())
    d:close()
  end)

  it("a join after a key change repartitions the stream first", function()
    local d = driver([[
local users = tide.table("users", { value = "json" })
tide.stream("orders", "json")
  :select_key(function(k, o) return o.user end)
  :join(users, function(o, u) return u.name .. " bought " .. o.item end, { name = "orders-by-user" })
  :to("receipts")
return tide.topology{ name = "receipts" }
]])
    assert.same({ "users", "orders", "tide.receipts-orders-by-user-repartition" }, d.spec.inputs)
    d:pipe("users", "u7", { name = "Ann" })
    d:pipe("orders", "o1", { user = "u7", item = "a lamp" })
    assert.same({ { "u7", "Ann bought a lamp" } }, pairs_of(d:read("receipts")))
    d:close()
  end)

  it("aggregates a table regrouped by a new key, with add and subtract (metrics)", function()
    local d = driver([[
tide.table("counters", { value = "json" })
  :group_by(function(instance_metric, c) return c.metric, c.value end, { name = "by-metric" })
  :reduce(function(agg, v) return agg + v end, function(agg, v) return agg - v end, { name = "totals" })
  :to_stream():to("totals", "json")
return tide.topology{ name = "metrics" }
]])
    d:pipe("counters", "i1/requests", { metric = "requests", value = 10 })
    d:pipe("counters", "i2/requests", { metric = "requests", value = 5 })
    d:pipe("counters", "i1/requests", { metric = "requests", value = 12 }) -- i1's counter moved on
    d:pipe("counters", "i2/requests", nil)                                  -- i2 went away
    assert.same({
      { "requests", 10 }, { "requests", 15 }, { "requests", 5 }, { "requests", 17 }, { "requests", 12 },
    }, pairs_of(d:read("totals")))
    assert.equal(12, d:store("totals"):get("requests"))
    d:close()
  end)
end)

describe("DSL names, descriptions and values", function()
  it("names an operator's store and internal topics; a name is used once and spelled plainly", function()
    local d = driver([[
tide.stream("in"):filter(function() return true end, { name = "keep" })
  :group_by(function(_, v) return v end, { name = "by-value" })
  :count({ name = "per-value" })
return tide.topology{ name = "n" }
]], { application_id = "a" })
    assert.same({ "in", "a.n-by-value-repartition" }, d.spec.inputs)
    assert.is_table(d.spec.stores["per-value"])
    d:close()
    local path = write([[
tide.stream("in"):filter(function() return true end, { name = "x" })
  :map_values(function(v) return v end, { name = "x" })
return tide.topology{}
]])
    local ok, err = pcall(testing.driver, path)
    assert.is_false(ok)
    assert.truthy(err:find(path .. ":2: map_values: the name 'x' is used already (" .. path .. ":1)", 1, true), err)
    path = write([[
tide.stream("in"):to("out", { name = "to out" })
return tide.topology{}
]])
    ok, err = pcall(testing.driver, path)
    assert.is_false(ok)
    assert.truthy(err:find(path .. ":1: to: name 'to out' may only use letters, digits", 1, true), err)
  end)

  it("keeps named stores and topics when an operator is inserted; generated names move", function()
    local function resources(src)
      local d = driver(src, { application_id = "a" })
      local stores = {}
      for name in pairs(d.spec.stores) do stores[#stores + 1] = name end
      table.sort(stores)
      local topics = d.spec.inputs
      d:close()
      return stores, topics
    end
    local v1 = [[
local s = tide.stream("in")
%s
s:group_by(function(_, v) return v end, { name = "by-v" }):count({ name = "named" }):to_stream():to("o1")
s:group_by_key():windowed_by(tide.tumbling{ size = "1m" }):count():to_stream():to("o2")
return tide.topology{ name = "t" }
]]
    local extra = [[s:select_key(function(_, v) return v end):group_by_key():count():to_stream():to("o3")]]
    local stores1, topics1 = resources(v1:format(""))
    local stores2, topics2 = resources(v1:format(extra))
    assert.same({ "count-1", "named" }, stores1)
    assert.same({ "count-2", "count-3", "named" }, stores2) -- the unnamed window count moved: its state starts fresh
    assert.same({ "in", "a.t-by-v-repartition" }, topics1)
    assert.same({ "in", "a.t-repartition-1-repartition", "a.t-by-v-repartition" }, topics2)
  end)

  it("describes the topology as Kafka Streams' Topology#describe(): sub-topologies cut at repartition topics", function()
    local d = driver([[
local users = tide.table("users", { value = "json", name = "users" })
tide.stream("clicks", "json")
  :select_key(function(_, c) return c.user end, { name = "by-user" })
  :join(users, function(c, u) return u.name end, { name = "with-user" })
  :to("named-clicks")
local rates = tide.global_table("rates", { name = "rates" })
return tide.topology{ name = "clicks" }
]], { application_id = "app" })
    assert.equal([[
Topologies:
   Sub-topology: 0
    Source: users-source (topics: [users])
      --> users
    Source: with-user-repartition-source (topics: [app.clicks-with-user-repartition])
      --> with-user
    Processor: users (stores: [users])
      --> none
      <-- users-source
    Processor: with-user (stores: [users])
      --> KSTREAM-SINK-0000000006
      <-- with-user-repartition-source
    Sink: KSTREAM-SINK-0000000006 (topic: named-clicks)
      <-- with-user

   Sub-topology: 1
    Source: KSTREAM-SOURCE-0000000001 (topics: [clicks])
      --> by-user
    Processor: by-user (stores: [])
      --> with-user-repartition
      <-- KSTREAM-SOURCE-0000000001
    Sink: with-user-repartition (topic: app.clicks-with-user-repartition)
      <-- by-user

   Sub-topology: 2 for global store (will not generate tasks)
    Source: rates-source (topics: [rates])
      --> rates
    Processor: rates (stores: [rates])
      --> none
      <-- rates-source

Stores:
  rates (global table of rates, every worker holds all of it; no changelog)
  users (key-value; changelog app.clicks-users-changelog)

Internal topics:
  app.clicks-with-user-repartition (repartition)
  app.clicks-users-changelog (changelog of store users)
]], require("tide.describe").text(d.spec.dsl.topology))
    d:close()
  end)

  it("a branch that changes its value in place does not change its sibling's", function()
    local d = driver([[
local s = tide.stream("in", "json")
s:map_values(function(v) v.seen_by = "first"; v.n = v.n + 1; return v end):to("first", "json")
s:filter(function(_, v) return v.seen_by == nil end):map_values(function(v) return v.n end):to("second", "json")
s:peek(function(_, v) v.n = 100 end):to("third", "json")
return tide.topology{}
]])
    d:pipe("in", "k", { n = 1 })
    assert.same({ { "k", { n = 2, seen_by = "first" } } }, pairs_of(d:read("first")))
    assert.same({ { "k", 1 } }, pairs_of(d:read("second")))
    assert.same({ { "k", { n = 100 } } }, pairs_of(d:read("third")))
    d:close()
  end)

  it("each load builds its own topology, and tide.stream works only while a script loads", function()
    local path = write([[
local captured
tide.stream("in"):map_values(function(v)
  captured = captured or tide.stream("late")  -- at run time: refused
  return v
end):to("out")
return tide.topology{}
]])
    local a, b = testing.driver(path), testing.driver(path)
    assert.same(a.spec.inputs, b.spec.inputs)
    a:pipe("in", "k", "v")
    local errs = a:errors()
    assert.equal(1, #errs)
    assert.truthy(errs[1].message:find("tide.stream can only be used while the detector loads", 1, true), errs[1].message)
    assert.same({}, b:read("out"))
    a:close()
    b:close()
    local ok, err = pcall(require("tide").stream, "x")
    assert.is_false(ok)
    assert.truthy(tostring(err.message or err):find("only be used while a detector loads", 1, true))
  end)
end)
