-- The text transformer (examples/text_transformer.lua) end to end: tide run
-- against a broker in its own process, records in through `tide produce`,
-- records out through `tide consume`.
local cluster = require("helpers.cluster")

describe("integration: text transformer", function()
  local c = cluster.suite("text_transformer", { "text-input:4", "text-output:4" })

  it("writes exactly the upper-cased records that contain 'a', per key in order, and no more", function()
    -- Values chosen to hit the edges of the filter: uppercase "A" only, empty,
    -- "a" at either end, bytes that JSON must escape, and UTF-8.
    local words = {
      "banana", "cherry", "kiwi", "Apple", "grape", "fig", "plum", "lemon",
      "", "a", "xa", "ax", "A", "tab\there", "quote\"and\\slash", "caf\xc3\xa9",
      "\xc3\xa4rger", "mango split", "LIME", "data",
    }
    local records, expected_by_key, expected_nil = {}, {}, {}
    local n = 3000
    for i = 1, n do
      local w = words[(i * 7) % #words + 1]
      local value = (i % 11 == 0) and w or (w .. " #" .. i)
      local key
      if i % 97 ~= 0 then key = "user-" .. ((i * 13) % 29) end
      records[i] = { key = key, value = value }
      if value:find("a", 1, true) then
        if key then
          expected_by_key[key] = expected_by_key[key] or {}
          table.insert(expected_by_key[key], value:upper())
        else
          expected_nil[#expected_nil + 1] = value:upper()
        end
      end
    end
    local expected_total = #expected_nil
    for _, list in pairs(expected_by_key) do expected_total = expected_total + #list end
    assert.is_true(expected_total > 1000 and expected_total < n, "the input mixes kept and dropped records")
    assert.is_true(#expected_nil > 0)

    c:produce("text-input", records)

    local p = c:run(cluster.example("text_transformer.lua"), { name = "tt", count = n })
    local code = p:wait(60)
    assert.are.equal(0, code, "tide run --count " .. n .. ": " .. p:status_text() .. "\n" .. p:log_tail(20))

    local stopped = cluster.stopped(p)
    assert.is_table(stopped, "no 'stopped' log line\n" .. p:log_tail(20))
    assert.are.equal(n, tonumber(stopped.records_in))
    assert.are.equal(expected_total, tonumber(stopped.records_out))
    for _, field in ipairs({ "records_in", "records_out", "dlq", "errors", "dropped", "elapsed_ms", "rate", "max_rss_kb" }) do
      assert.is_number(stopped[field], "'stopped' field " .. field .. " is a JSON number")
    end
    assert.are.equal(0, stopped.dlq)
    assert.are.equal(0, stopped.errors)

    -- The log: one JSON object per line with ts, level and msg; once the
    -- detector is known, every line names it.
    assert.are.same({}, cluster.bad_log_lines(p), "log lines that are not JSON objects with ts, level, msg")
    local named = false
    for _, ev in ipairs(p:events()) do
      if ev.msg == "detector loaded" then named = true end
      if named then
        assert.are.equal("text-transformer", ev.detector, "detector field of: " .. tostring(ev.msg))
      end
    end
    assert.is_true(named, "no 'detector loaded' line")
    local assigned = p:find_events("partitions assigned")[1]
    assert.is_table(assigned, "no 'partitions assigned' line")
    local topic, list = tostring(assigned.partitions):match("^([%w._-]+)%[([%d,]*)%]$")
    assert.are.equal("text-input", topic, "partitions field: " .. tostring(assigned.partitions))
    local parts = {}
    for num in list:gmatch("%d+") do parts[#parts + 1] = tonumber(num) end
    table.sort(parts)
    assert.are.same({ 0, 1, 2, 3 }, parts, "partitions field: " .. tostring(assigned.partitions))

    -- One more than expected may be read: an extra record would show up.
    local out = c:consume("text-output", { max = expected_total + 1, idle_ms = 1500 })
    assert.are.equal(expected_total, #out, "number of output records")

    for _, r in ipairs(out) do
      assert.are.equal("text-output", r.topic)
    end
    local got = cluster.by_key(out)
    local got_nil = got["\0nil"] or {}
    got["\0nil"] = nil
    for key, list in pairs(expected_by_key) do
      assert.are.same(list, got[key] or {}, "values of key " .. key .. " (in order)")
    end
    for key in pairs(got) do
      assert.is_table(expected_by_key[key], "unexpected output key " .. tostring(key))
    end
    table.sort(got_nil)
    table.sort(expected_nil)
    assert.are.same(expected_nil, got_nil, "values with a null key")
  end)
end)
