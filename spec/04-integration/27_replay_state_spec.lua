-- `tide replay --with-state`: both versions start from the running
-- detector's state, read from its changelogs as they are now, partition by
-- partition; without it they start empty. count_per_key runs live over 40
-- records (4 per key), then the next 10 (one per key) are replayed: with
-- the state every count goes on from 4, without it from 0.
local cluster = require("helpers.cluster")
local cjson = require("cjson")

local N_KEYS = 10
local APP = "replay-state"

local function decode_lines(text)
  local list = {}
  for line in text:gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) end
  return list
end

describe("integration: tide replay --with-state", function()
  local c = cluster.suite("replay_state", { "words:4", "counts:4", APP .. ".count-per-key-counts-changelog:4" })

  local function tide(...)
    local argv = { cluster.bin(), ... }
    local p = c:spawn(argv, { name = argv[2] })
    local code = p:wait(60)
    return code, p:stdout_text(), p:stderr_text()
  end

  it("seeds both versions from the running detector's changelogs, so counts go on from them", function()
    local live = {}
    for i = 1, 4 * N_KEYS do live[i] = ("k%02d:live%d"):format(i % N_KEYS, i) end
    c:produce("words", live, { key_separator = ":" })
    local run = c:run(cluster.example("count_per_key.lua"), { app = APP, name = "live" })
    c:wait_for_records("counts", #live, 60, { watch = run })
    assert.is_true(run:kill("TERM"))
    assert.are.equal(0, run:wait(20), run:log_tail(20))

    -- the next record of each key, recorded as `tide consume --json` writes them
    local next_ = {}
    for i = 1, N_KEYS do next_[i] = ("k%02d:next%d"):format(i % N_KEYS, i) end
    c:produce("words", next_, { key_separator = ":" })
    local recording, lines = c:path("next.jsonl"), {}
    for _, r in ipairs(c:consume("words")) do
      if r.value:find("^next") then lines[#lines + 1] = cjson.encode(r) end
    end
    assert.are.equal(N_KEYS, #lines)
    cluster.write_file(recording, table.concat(lines, "\n") .. "\n")

    local v2 = c:path("count_v2.lua")
    cluster.write_file(v2, (cluster.read_file(cluster.example("count_per_key.lua")):gsub(
      'tostring%(n%)', '"n=" .. n')))
    local code, out, err = tide("replay", v2, "--against", cluster.example("count_per_key.lua"), "--file",
      recording, "--with-state", "--application-id", APP, "-b", c.addr)
    assert.are.equal(1, code, err) -- the versions differ in their outputs' text
    local seeded = "seeded store counts from " .. #live .. " records of " .. APP .. ".count-per-key-counts-changelog"
    assert.is_truthy(err:find(seeded, 1, true), err)
    local minus, plus = 0, 0
    for line in out:gmatch("[^\n]+") do
      if line:find('^%-{') then
        minus = minus + 1
        assert.are.equal("5", cjson.decode(line:sub(2)).value, line)
      elseif line:find('^%+{') then
        plus = plus + 1
        assert.are.equal("n=5", cjson.decode(line:sub(2)).value, line)
      end
    end
    assert.are.equal(N_KEYS, minus, out)
    assert.are.equal(N_KEYS, plus, out)

    -- without the state, both start from nothing
    code, out = tide("replay", cluster.example("count_per_key.lua"), "--file", recording)
    assert.are.equal(0, code)
    for _, r in ipairs(decode_lines(out)) do assert.are.equal("1", r.value) end
    -- and nothing was produced: counts still holds only the live run's outputs
    assert.are.equal(#live, #c:consume("counts"))
  end)

  it("refuses --with-state on a detector without stores, and a changelog it cannot read", function()
    local recording = c:path("one.jsonl")
    cluster.write_file(recording, '{"key":"a","value":"b"}\n')
    local code, _, err = tide("replay", cluster.example("text_transformer.lua"), "--file", recording,
      "--with-state", "-b", c.addr)
    assert.are.equal(2, code)
    assert.matches("has no stores", err)
  end)
end)
