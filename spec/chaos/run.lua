--- make chaos: tide under faults for N minutes, then a check of what it wrote.
---
---   luajit spec/chaos/run.lua [--minutes N] [--seed N] [--rate N] [--keys N]
---                             [--start-down S] [-D key=value]...
---
--- A `tide broker` with three brokers and a control FIFO; one to three
--- `tide run DIR` instances of one application.id over a folder with a
--- stateless detector (chaos_copy) and a stateful one (chaos_count); a feeder
--- that writes numbered, keyed records ("KEY:SEQ", SEQ counting per key) with
--- `tide produce`, one run at a time so that each key stays in order. Faults
--- (faults.lua) come every 3 to 8 s. The brokers start down for --start-down
--- seconds (default 10). Then the faults stop, the feeder finishes, tide
--- drains, the instances stop, and the checker (check.lua) compares the
--- outputs with the input topic.
---
--- -D settings go to every `tide run` (e.g. -D processing.guarantee=exactly_once_v2).
--- Exits 1 when a record was lost (or a key's count is below its input), 2 on a
--- harness failure, 0 otherwise. The report is printed and written to
--- report.json in the run's directory (under TIDE_TEST_TMP), with every log.
local cluster = require("helpers.cluster")
local check = require("chaos.check")
local faults = require("chaos.faults")
local Fleet = require("chaos.fleet")
local report = require("chaos.report")

local APP = "chaos"
local IN, COPY_OUT, COUNT_OUT = "chaos-in", "chaos-out", "chaos-counts"
local CHANGELOG = APP .. ".chaos-count-counts-changelog"
local DLQS = { APP .. ".chaos-copy-dlq", APP .. ".chaos-count-dlq" }
local BROKERS, PARTITIONS = 3, 6
local MAX_CHUNK = 3000        -- records per run of tide produce
local DRAIN_TIMEOUT = 240     -- seconds for tide to catch up once the faults stop
local DRAIN_STABLE = 45       -- ... or for its outputs to stop growing

local function usage(msg)
  io.stderr:write("chaos: ", msg, "\nusage: luajit spec/chaos/run.lua [--minutes N] [--seed N] "
    .. "[--rate N] [--keys N] [--start-down S] [-D key=value]...\n")
  os.exit(2)
end

local function parse_args(argv)
  local o = { minutes = 10, seed = os.time(), rate = 100, keys = 60, start_down = 10, defines = {} }
  local i = 1
  while i <= #argv do
    local a, v = argv[i], argv[i + 1]
    local num = { ["--minutes"] = "minutes", ["--seed"] = "seed", ["--rate"] = "rate",
      ["--keys"] = "keys", ["--start-down"] = "start_down" }
    if num[a] then
      o[num[a]] = tonumber(v) or usage(a .. " wants a number")
      i = i + 2
    elseif a == "-D" and v and v:find("=") then
      local k, val = v:match("^([^=]+)=(.*)$")
      o.defines[k] = val
      i = i + 2
    else
      usage("unknown argument " .. tostring(a))
    end
  end
  return o
end

local o = parse_args(arg)
math.randomseed(o.seed)

local function log(fmt, ...)
  io.write(("[%s] "):format(os.date("%H:%M:%S")), fmt:format(...), "\n")
  io.flush()
end

-- The run ----------------------------------------------------------------------

local c = cluster.new("chaos")
local detector_dir = c.dir .. "/detectors"
os.execute("mkdir -p " .. detector_dir)

local w = { c = c, brokers = BROKERS, versions = { copy = 1, count = 1 } }
function w.random(lo, hi) return math.random(lo, hi) end
function w.pick(list) return list[math.random(1, #list)] end

local SOURCES = {
  copy = cluster.read_file(cluster.spec_dir .. "/chaos/detectors/chaos_copy.lua"),
  count = cluster.read_file(cluster.spec_dir .. "/chaos/detectors/chaos_count.lua"),
}

--- Write a detector with its VERSION, beside and renamed into place.
local function write_detector(which)
  local text, n = SOURCES[which]:gsub("local VERSION = %d+", "local VERSION = " .. w.versions[which])
  assert(n == 1, "no VERSION line in chaos_" .. which .. ".lua")
  local path = ("%s/chaos_%s.lua"):format(detector_dir, which)
  local tmp = ("%s/.chaos_%s.lua.tmp"):format(detector_dir, which)
  cluster.write_file(tmp, text)
  assert(os.rename(tmp, path))
end

function w.reload()
  local which = w.pick({ "copy", "count" })
  w.versions[which] = w.versions[which] + 1
  write_detector(which)
  return ("chaos_%s.lua to version %d"):format(which, w.versions[which])
end

-- The feeder: one `tide produce` at a time, `rate` records a second.
local feed = { produced = 0, chunks = 0, failed = 0, next_seq = {}, proc = nil, t0 = nil, tails = {} }

local function pump()
  local p = feed.proc
  if p then
    if p:running() then return end
    if p.exit_code ~= 0 then
      feed.failed = feed.failed + 1
      if #feed.tails < 5 then feed.tails[#feed.tails + 1] = p:log_tail(3) end
    end
    feed.proc = nil
  end
  if not feed.t0 then return end
  local due = math.floor(o.rate * (cluster.now() - feed.t0)) - feed.produced
  if due <= 0 then return end
  local lines = {}
  for _ = 1, math.min(due, MAX_CHUNK) do
    local key = ("k%03d"):format(feed.produced % o.keys + 1)
    local seq = (feed.next_seq[key] or 0) + 1
    feed.next_seq[key] = seq
    lines[#lines + 1] = ("%s:%s:%06d"):format(key, key, seq)
    feed.produced = feed.produced + 1
  end
  feed.chunks = feed.chunks + 1
  feed.proc = c:produce_async(IN, lines, { key_separator = ":" })
end

-- Faults ------------------------------------------------------------------------

local injected, timeline = {}, {}
local held, next_fault

local function note(name, detail)
  injected[name] = (injected[name] or 0) + 1
  timeline[#timeline + 1] = { t = math.floor(cluster.now() - feed.t0), fault = name, detail = detail }
  log("fault: %s: %s", name, detail)
end

local function fault_step()
  local now = cluster.now()
  if held and now >= held.till then
    held.fault.undo(w)
    log("fault over: %s", held.fault.name)
    held = nil
  end
  if now < next_fault then return end
  next_fault = now + w.random(3, 8)
  local f = faults.draw(w, held ~= nil)
  local detail = f.run(w)
  if not detail then return end
  note(f.name, detail)
  if f.hold then held = { fault = f, till = now + f.hold(w) } end
end

--- At least one instance runs; one that ended unasked is replaced at once.
local function keep_one()
  w.fleet:poll()
  if #w.fleet:running() == 0 and next(w.fleet.slots) == nil then
    local slot = w.fleet:start()
    log("no instance running: started instance %d", slot)
  end
end

-- Phases --------------------------------------------------------------------------

local function setup()
  local topics = { IN .. ":" .. PARTITIONS, COPY_OUT .. ":" .. PARTITIONS,
    COUNT_OUT .. ":" .. PARTITIONS, CHANGELOG .. ":" .. PARTITIONS }
  -- The mock has no CreateTopics: internal topics are made here, as tide would.
  for _, t in ipairs(DLQS) do topics[#topics + 1] = t .. ":" .. PARTITIONS end
  c:start_broker(topics, { brokers = BROKERS, down = o.start_down > 0 })
  write_detector("copy")
  write_detector("count")
  local config = {
    ["admin.port"] = 0,
    -- Random kills must not be taken for crashes caused by a record, nor
    -- quarantine a detector: the run would stop measuring.
    ["detector.poison.kills"] = 100,
    ["detector.quarantine.crashes"] = 1000,
    ["detector.restart.backoff.max.ms"] = 2000,
  }
  for k, v in pairs(o.defines) do config[k] = v end
  w.guarantee = config["processing.guarantee"] or "at_least_once"
  w.fleet = Fleet.new(c, detector_dir, APP, config)
  w.fleet:start()
  feed.t0 = cluster.now()
  log("broker %s, run directory %s", c.addr, c.dir)
end

--- A setting tide refuses ends the run at once, rather than 10 minutes of restarts.
local function refused_at_start()
  local p = w.fleet.all_procs[1]
  if p:running() or p.exit_code ~= 2 then return false end
  io.stderr:write("chaos: tide run refused its configuration:\n", p:log_tail(5), "\n")
  return true
end

local function chaos_phase()
  local finish = feed.t0 + o.minutes * 60
  local up_at = o.start_down > 0 and feed.t0 + o.start_down or nil
  next_fault = feed.t0 + (o.start_down or 0) + 3
  local last_status = cluster.now()
  while cluster.now() < finish do
    pump()
    if refused_at_start() then return false end
    keep_one()
    if up_at and cluster.now() >= up_at then
      c:broker_up("all")
      note("brokers down at start", ("all %d brokers up after %d s"):format(BROKERS, o.start_down))
      up_at = nil
    elseif not up_at then
      fault_step()
    end
    if cluster.now() - last_status >= 30 then
      last_status = cluster.now()
      log("status: %d records produced, %d instance(s) running%s", feed.produced,
        #w.fleet:running(), held and (", held: " .. held.fault.name) or "")
    end
    cluster.pause(100)
  end
  return true
end

local function read_outputs(truth)
  local copy_out = c:consume(COPY_OUT, { idle_ms = 2000, timeout = 300 })
  local count_out = c:consume(COUNT_OUT, { idle_ms = 2000, timeout = 300 })
  local copy = check.stream(truth, copy_out, check.parse_copy)
  local count = check.stream(truth, count_out, check.parse_count)
  local counts = check.counts(truth, count_out)
  return copy, count, counts
end

--- Faults off, feeder done, then wait for the outputs to hold everything
--- (or to stop growing). Returns the truth.
local function drain()
  if held then held.fault.undo(w) held = nil end
  faults.calm(w)
  local fed = feed.produced
  feed.t0 = nil -- no more chunks
  log("faults stopped; waiting for the feeder (%d records)", fed)
  local deadline = cluster.now() + 300
  while feed.proc and cluster.now() < deadline do
    pump()
    keep_one()
    cluster.pause(100)
  end
  if feed.proc then
    feed.proc:destroy()
    feed.failed = feed.failed + 1
  end
  local truth = check.truth(c:consume(IN, { idle_ms = 2000, timeout = 300 }))
  log("input topic: %d distinct records; draining", truth.total)
  local stop_at, last, since = cluster.now() + DRAIN_TIMEOUT, -1, cluster.now()
  while cluster.now() < stop_at do
    keep_one()
    local copy, count, counts = read_outputs(truth)
    log("drain: chaos-copy lacks %d, chaos-count lacks %d, %d keys below their count",
      copy.lost, count.lost, counts.low)
    if copy.lost == 0 and count.lost == 0 and counts.low == 0 then break end
    local size = copy.records + count.records
    if size ~= last then last, since = size, cluster.now()
    elseif cluster.now() - since >= DRAIN_STABLE then break end
    cluster.pause(3000)
  end
  return truth
end

local function dead_letters()
  local n = 0
  for _, t in ipairs(DLQS) do
    if c:topic_partitions(t) then n = n + #c:consume(t, { idle_ms = 1500 }) end
  end
  return n
end

local function versions_text(v)
  local list = {}
  for ver, n in pairs(v) do list[#list + 1] = { ver, n } end
  table.sort(list, function(a, b) return a[1] < b[1] end)
  for i, e in ipairs(list) do list[i] = ("v%d: %d"):format(e[1], e[2]) end
  return table.concat(list, ", ")
end

local function finish(truth)
  local ended = w.fleet:stop_all()
  for name, how in pairs(ended) do log("%s ended: %s", name, how) end
  local copy, count, counts = read_outputs(truth)
  local versions = versions_text(copy.versions)
  copy.versions, count.versions = nil, nil
  local r = {
    minutes = o.minutes, seed = o.seed, guarantee = w.guarantee, brokers = BROKERS,
    partitions = PARTITIONS, keys = o.keys, rate = o.rate, defines = o.defines,
    produced = feed.produced, chunks = feed.chunks, failed_chunks = feed.failed,
    feeder_failures = feed.tails,
    truth = { total = truth.total, records = truth.records, duplicates = truth.duplicates,
      malformed = truth.malformed, truncated = truth.truncated },
    faults = injected, faults_total = #timeline, timeline = timeline,
    copy = copy, count = count, counts = counts, versions = versions, dead_letters = dead_letters(),
    unasked_exits = w.fleet.unasked_exits, slow_stops = w.fleet.slow_stops,
    stop_timeout = Fleet.STOP_TIMEOUT, instance_starts = w.fleet.starts,
    breakage = report.breakage(w.fleet.all_procs), dir = c.dir,
  }
  r.lost = check.lost_anything(copy, count, counts)
  report.print(r)
  report.write_json(r, c.dir .. "/report.json")
  log("report: %s/report.json", c.dir)
  return r
end

local ok, result = pcall(function()
  setup()
  if not chaos_phase() then return nil end
  return finish(drain())
end)
c:shutdown()
if not ok then
  io.stderr:write("chaos: the harness failed: ", tostring(result), "\n")
  os.exit(2)
end
if not result then os.exit(2) end
os.exit(result.lost and 1 or 0)
