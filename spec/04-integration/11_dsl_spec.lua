-- A DSL detector gives the same outputs under the test driver (no broker)
-- and under the host against the development broker, for the same input:
-- the driver runs the code that runs in production.
local cluster = require("helpers.cluster")
local testing = require("tide.testing")

local APP = "dsl-eq"

--- Lines of words drawn so that some words are frequent and some rare.
local function input_lines(n)
  local vocab = { "tide", "kafka", "lua", "stream", "table", "window", "join", "count", "c", "fast" }
  local lines = {}
  for i = 1, n do
    local words = {}
    for j = 1, (i % 5) + 1 do words[j] = vocab[(i * j * 7 + j) % #vocab + 1] end
    lines[i] = { key = "line-" .. i, value = table.concat(words, " ") }
  end
  return lines
end

--- (key, value) pairs, sorted: the driver and the host may interleave
--- different keys differently, never one key's records.
local function sorted_pairs(list)
  local out = {}
  for i, r in ipairs(list) do out[i] = r.key .. "=" .. tostring(r.value) end
  table.sort(out)
  return out
end

describe("integration: the DSL under the host and under the driver", function()
  local c = cluster.suite("dsl", {
    "lines:3", "word-counts:3", "clicks:1", "sessions:1",
    APP .. ".sessions-per-user-changelog:1", APP .. ".sessions-per-user-suppress-changelog:1",
    "orders:3", "users:3", "receipts:3", "cojoin.receipts-users-changelog:3",
    "bare-lines:4", "bare-counts:4",
    APP .. ".word-count-words-repartition:3",
    APP .. ".word-count-counts-changelog:3",
  })

  it("word count: identical outputs, repartition topic included", function()
    local lines = input_lines(300)
    local d = testing.driver(cluster.example("word_count.lua"), { application_id = APP })
    local expected = {}
    for _, r in ipairs(lines) do d:pipe("lines", r.key, r.value) end
    for _, r in ipairs(d:read("word-counts")) do expected[#expected + 1] = r end
    d:close()
    assert.is_true(#expected > 600)

    c:produce("lines", lines)
    local p = c:run(cluster.example("word_count.lua"), { app = APP, name = "wc" })
    local out = c:wait_for_records("word-counts", #expected, 60, { watch = p })
    p:kill("TERM")
    assert.equal(0, p:wait(30), p:log_tail(20))
    -- nothing more than the driver made
    out = c:consume("word-counts", { max = #expected + 1, idle_ms = 1000 })
    assert.same(sorted_pairs(expected), sorted_pairs(out))
    -- every word went through the repartition topic, keyed by the word
    local rep = c:consume(APP .. ".word-count-words-repartition", { idle_ms = 1000 })
    assert.equal(#expected, #rep)
  end)

  it("windowed aggregation with suppress: the same final windows, late records dropped alike", function()
    local path = c:path("sessions.lua")
    local f = assert(io.open(path, "w"))
    f:write([[
tide.stream("clicks")
  :group_by_key()
  :windowed_by(tide.session{ gap = "30s" }, "10s")
  :count({ name = "per-user" })
  :suppress()
  :to_stream()
  :to("sessions", "json")
return tide.topology{ name = "sessions" }
]])
    f:close()
    -- one partition: the order of records, hence stream time, is the same
    local clicks, t = {}, 1000000
    for i = 1, 400 do
      t = t + ((i % 13 == 0) and 45000 or (i % 7) * 1000)
      local ts = t
      if i % 17 == 0 then ts = t - 50000 end -- late, some beyond grace
      clicks[i] = { key = "user-" .. (i % 5), value = "click", timestamp = ts }
    end
    local d = testing.driver(path, { application_id = APP })
    for _, r in ipairs(clicks) do d:pipe("clicks", r.key, r.value, { timestamp = r.timestamp }) end
    local expected = d:read("sessions")
    d:close()
    assert.is_true(#expected > 20, "sessions closed: " .. #expected)

    c:produce("clicks", clicks)
    local p = c:run(path, { app = APP, name = "sessions" })
    c:wait_for_records("sessions", #expected, 60, { watch = p })
    p:kill("TERM")
    assert.equal(0, p:wait(30), p:log_tail(20))
    local out = c:consume("sessions", { max = #expected + 1, idle_ms = 1000 })
    local function rows(list)
      local r = {}
      for i, x in ipairs(list) do
        local v = type(x.value) == "string" and require("cjson").decode(x.value) or x.value
        r[i] = ("%s [%d,%d] %d"):format(x.key, v.start, v["end"], v.value)
      end
      return r
    end
    assert.same(rows(expected), rows(out))
  end)

  it("two instances of a stream-table join hold the same partitions of both inputs", function()
    local path = c:path("receipts.lua")
    local f = assert(io.open(path, "w"))
    f:write([[
local users = tide.table("users", { value = "json" })
tide.stream("orders", "json")
  :join(users, function(order, user) return user.name .. " bought " .. order.item end)
  :to("receipts")
return tide.topology{ name = "receipts" }
]])
    f:close()
    local N = 60
    local users = {}
    for i = 1, N do users[i] = { key = "u" .. i, value = ('{"name":"user %d"}'):format(i) } end
    c:produce("users", users)
    local a = c:run(path, { app = "cojoin", name = "a" })
    a:wait_for_log("partitions assigned", 30)
    local b = c:run(path, { app = "cojoin", name = "b" })
    cluster.await_split(a, b, "orders", 3, 40)
    for _, p in ipairs({ a, b }) do
      local _, orders = cluster.holding(p, "orders")
      local _, tables = cluster.holding(p, "users")
      assert.same(orders, tables, p.name .. " holds other partitions of users than of orders")
    end
    -- every user is in a table before the orders come
    c:wait_for_records("cojoin.receipts-users-changelog", N, 60, { watch = a })
    local orders = {}
    for i = 1, N do orders[i] = { key = "u" .. i, value = ('{"item":"item %d"}'):format(i) } end
    c:produce("orders", orders)
    local out = c:wait_for_records("receipts", N, 60, { watch = b })
    local got = {}
    for _, r in ipairs(out) do got[r.key] = r.value end
    for i = 1, N do assert.equal(("user %d bought item %d"):format(i, i), got["u" .. i]) end
  end)

  it("runs on a broker without its internal topics: the broker is asked to create them", function()
    local path = c:path("bare.lua")
    cluster.write_file(path, [[
tide.stream("bare-lines")
  :flat_map_values(function(line) local w = {} for x in line:gmatch("%a+") do w[#w + 1] = x end return w end)
  :group_by(function(_, word) return word end, { name = "words" })
  :count({ name = "counts" })
  :to_stream():to("bare-counts")
return tide.topology{ name = "bare" }
]])
    local lines = input_lines(200)
    local truth, total = {}, 0
    for _, r in ipairs(lines) do
      for w in r.value:gmatch("%a+") do
        truth[w] = (truth[w] or 0) + 1
        total = total + 1
      end
    end
    c:produce("bare-lines", lines)
    local p = c:run(path, { app = "bare", name = "bare" })
    p:wait_for_log(function(e) return e.msg and e.msg:find("created by the broker itself", 1, true) end, 30)
    local out = c:wait_for_records("bare-counts", total, 60, { watch = p })
    local last = {}
    for _, r in ipairs(out) do
      local n = tonumber(r.value)
      if n > (last[r.key] or 0) then last[r.key] = n end
    end
    assert.same(truth, last)
    p:kill("TERM")
    assert.equal(0, p:wait(30), p:log_tail(20))
  end)
end)
