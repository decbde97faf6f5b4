-- Interactive queries against running instances (`tide run DIR`): reads of
-- count_per_key's RocksDB store through the admin API, on one instance, then
-- on two sharing the partitions, where any instance answers for any key (the
-- one holding it, found through the <application.id>.instances topic, serves
-- it). Answers are checked against counts recomputed here.
local cluster = require("helpers.cluster")
local cjson = require("cjson")
local http = require("socket.http")

local N_PARTS = 4
local N_KEYS = 24

local function url_escape(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--- GET path on the instance at port: status, decoded JSON (or the text), headers.
local function get(port, path)
  local body, code, headers = http.request(("http://127.0.0.1:%d%s"):format(port, path))
  local ok, doc = pcall(cjson.decode, body or "")
  return code, ok and doc or body, headers or {}
end

local function key_path(det, store, key)
  return ("/api/detectors/%s/stores/%s?key=%s"):format(det, store, url_escape(key))
end

--- Start `tide run DIR` on a folder holding count_per_key; returns the
--- process and its admin port.
local function start_instance(c, app, name, extra)
  local dir = c:path(name .. "-detectors")
  assert(os.execute("mkdir -p " .. dir))
  assert(os.execute(("cp %s %s/"):format(cluster.example("count_per_key.lua"), dir)))
  local config = { ["admin.port"] = 0, ["consumer.session.timeout.ms"] = 3000,
    ["consumer.heartbeat.interval.ms"] = 300, ["commit.interval.ms"] = 500 }
  for k, v in pairs(extra or {}) do config[k] = v end
  local p = c:run(dir, { app = app, name = name, config = config })
  local ev = p:wait_for_log(function(e) return e.msg and e.msg:find("admin server listening", 1, true) end)
  p.port = tonumber(ev.msg:match("127%.0%.0%.1:(%d+)"))
  return p
end

--- The detector's entry in an instance's /api/detectors.
local function detector(port)
  local code, doc = get(port, "/api/detectors")
  if code ~= 200 then return nil end
  for _, d in ipairs(doc.detectors) do
    if d.name == "count-per-key" then return d end
  end
end

-- Every record produced to `words` in this file: a new application.id reads
-- them all.
local produced = {}

local function produce(c, records)
  c:produce("words", records, { key_separator = ":" })
  for _, r in ipairs(records) do produced[#produced + 1] = r end
end

local function truth()
  local counts = {}
  for _, r in ipairs(produced) do
    local k = r:match("^([^:]+):")
    counts[k] = (counts[k] or 0) + 1
  end
  return counts
end

--- Every key read through `port` equals its count; returns who served each.
local function all_keys_answer(port, counts, timeout)
  return cluster.eventually(function()
    local served = {}
    for k, n in pairs(counts) do
      local code, doc = get(port, key_path("count-per-key", "counts", k))
      if code ~= 200 then return nil, ("%s: HTTP %s %s"):format(k, tostring(code), cjson.encode(doc)) end
      if doc.value ~= n then return nil, ("%s: %s, want %d"):format(k, tostring(doc.value), n) end
      served[k] = doc.served_by
    end
    return served
  end, timeout or 30, { what = "every key answered with its count" })
end

describe("integration: interactive queries", function()
  local c = cluster.suite("queries", { ("words:%d"):format(N_PARTS), ("counts:%d"):format(N_PARTS),
    ("q1.count-per-key-counts-changelog:%d"):format(N_PARTS),
    ("q2.count-per-key-counts-changelog:%d"):format(N_PARTS) })

  it("reads a key, a scan, a count and a key's metadata of one instance", function()
    local a = start_instance(c, "q1", "one")
    a:wait_for_log({ detector = "count-per-key", msg = "partitions assigned" })
    local records = cluster.keyed_records(1, 600, "v", N_KEYS)
    produce(c, records)
    local counts = truth()
    c:wait_for_records("counts", #produced, 60, { watch = a })

    local served = all_keys_answer(a.port, counts)
    for _, s in pairs(served) do assert.are.equal("127.0.0.1:" .. a.port, s) end
    local code, doc = get(a.port, key_path("count-per-key", "counts", "no-such-key"))
    assert.are.equal(200, code)
    assert.is_false(doc.found)
    assert.are.equal(cjson.null, doc.value)

    -- a scan in key order, over pages
    code, doc = get(a.port, "/api/detectors/count-per-key/stores/counts?prefix=key-0&limit=5")
    assert.are.equal(200, code)
    assert.same({ 0, 1, 2, 3 }, doc.partitions)
    assert.are.equal(5, #doc.entries)
    assert.is_true(doc.more)
    local seen, page = {}, doc
    while true do
      for _, e in ipairs(page.entries) do
        assert.are.equal(counts[e.key], e.value, e.key)
        seen[#seen + 1] = e.key
      end
      if not page.more then break end
      code, page = get(a.port, "/api/detectors/count-per-key/stores/counts?prefix=key-0&limit=5&after="
        .. url_escape(page.next))
      assert.are.equal(200, code)
    end
    local want = {}
    for k in pairs(counts) do if k:sub(1, 5) == "key-0" then want[#want + 1] = k end end
    table.sort(want)
    assert.same(want, seen)

    code, doc = get(a.port, "/api/detectors/count-per-key/stores/counts?count")
    assert.are.equal(N_KEYS, doc.count)

    -- the key's partition is the one its records (and outputs) went to
    local out = c:consume("counts", { max = #records })
    local part_of = {}
    for _, r in ipairs(out) do part_of[r.key] = r.partition end
    code, doc = get(a.port, "/api/detectors/count-per-key/stores/counts/metadata?key=key-007")
    assert.are.equal(200, code)
    assert.are.equal(part_of["key-007"], doc.partition)
    assert.are.equal("127.0.0.1:" .. a.port, doc.active.server)
    assert.is_true(doc.active["local"])

    -- the page's view of the detector, and refusals
    local d = detector(a.port)
    assert.same({ { name = "counts", memory = false } }, d.stores)
    assert.same({ 0, 1, 2, 3 }, d.tasks.active)
    code, doc = get(a.port, "/api/detectors/count-per-key/stores/nope?key=a")
    assert.are.equal(404, code)
    assert.matches("no store named nope", doc.error)
    code = get(a.port, "/api/detectors/count-per-key/stores/counts?kee=a")
    assert.are.equal(400, code)
  end)

  it("answers any key on either of two instances, from the one that holds it", function()
    local a = start_instance(c, "q2", "a")
    a:wait_for_log({ detector = "count-per-key", msg = "partitions assigned" })
    local b = start_instance(c, "q2", "b")
    -- both hold tasks, and each knows where the other's are
    cluster.eventually(function()
      local da, db = detector(a.port), detector(b.port)
      if not (da and db and type(da.tasks) == "table" and type(db.tasks) == "table") then
        return nil, "no task map yet"
      end
      if #da.tasks.active == 0 or #db.tasks.active == 0 or
          #da.tasks.active + #db.tasks.active ~= N_PARTS then
        return nil, ("a holds %d, b holds %d"):format(#da.tasks.active, #db.tasks.active)
      end
      local _, inst = get(a.port, "/api/detectors/count-per-key/instances")
      return #inst.instances == 2, "a sees " .. #inst.instances .. " instance(s)"
    end, 60, { what = "two instances sharing the partitions", watch = { a, b } })

    local records = cluster.keyed_records(1, 800, "w", N_KEYS)
    produce(c, records)
    local counts = truth()

    for _, p in ipairs({ a, b }) do
      local served = all_keys_answer(p.port, counts)
      local by = {}
      for _, s in pairs(served) do by[s] = (by[s] or 0) + 1 end
      assert.is_true((by["127.0.0.1:" .. a.port] or 0) > 0, "no key served by a")
      assert.is_true((by["127.0.0.1:" .. b.port] or 0) > 0, "no key served by b")
    end
    -- metadata agrees with the instance that serves the key
    local code, meta = get(a.port, "/api/detectors/count-per-key/stores/counts/metadata?key=key-003")
    assert.are.equal(200, code)
    local _, doc = get(a.port, key_path("count-per-key", "counts", "key-003"))
    assert.are.equal(meta.active.server, doc.served_by)
    -- a scan reads this instance and names where the rest is
    code, doc = get(b.port, "/api/detectors/count-per-key/stores/counts?limit=100")
    assert.are.equal(200, code)
    assert.are.equal(1, #doc.elsewhere)
    assert.are.equal("127.0.0.1:" .. a.port, doc.elsewhere[1].server)
    assert.are.equal(N_PARTS, #doc.partitions + #doc.elsewhere[1].partitions)
  end)
end)
