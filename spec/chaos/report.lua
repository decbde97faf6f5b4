--- What a `make chaos` run says at its end: the faults injected, what the
--- checker found, and what broke in tide's own logs; a table on stdout and
--- the same as JSON.
local cjson = require("cjson").new()

local M = {}

--- A log message with its figures taken out, so that alike lines count together.
local function shape(msg)
  return (tostring(msg):gsub("127%.0%.0%.1:%d+", "HOST:PORT"):gsub("0x%x+", "N")
    :gsub("%d%d%d+", "N"))
end

local function bump(t, k) t[k] = (t[k] or 0) + 1 end

--- Sorted { { text, n } } of the n largest counts in t.
local function top(t, n)
  local list = {}
  for k, v in pairs(t) do list[#list + 1] = { k, v } end
  table.sort(list, function(a, b)
    if a[2] ~= b[2] then return a[2] > b[2] end
    return a[1] < b[1]
  end)
  local out = {}
  for i = 1, math.min(n, #list) do out[i] = list[i] end
  return out, #list
end

--- What the instances' logs (supervisors and workers) say went wrong.
function M.breakage(procs)
  local ended, errors, rdkafka, warnings = {}, {}, {}, {}
  local restarts, quarantined, stopped = 0, 0, {}
  for _, p in ipairs(procs) do
    for _, ev in ipairs(p:events()) do
      local msg = ev.msg
      if type(msg) == "string" then
        local det, why = msg:match("^worker of (.-) ended: (.*)$")
        if det then
          bump(ended, det .. ": " .. shape(why))
        elseif msg:find("^restarting ") then
          restarts = restarts + 1
        elseif msg:find(" quarantined: ") then
          quarantined = quarantined + 1
          bump(errors, shape(msg))
        elseif msg == "stopped" and ev.detector then
          stopped[#stopped + 1] = ev
        elseif ev.level == "error" then
          bump(msg:find("^librdkafka") and rdkafka or errors,
            (ev.detector and (ev.detector .. ": ") or "") .. shape(msg))
        elseif ev.level == "warn" and not msg:find("^librdkafka") then
          bump(warnings, (ev.detector and (ev.detector .. ": ") or "") .. shape(msg))
        end
      end
    end
  end
  local dropped = 0
  for _, ev in ipairs(stopped) do dropped = dropped + (tonumber(ev.dropped) or 0) end
  return { worker_ends = ended, errors = errors, rdkafka_errors = rdkafka, warnings = warnings,
    restarts = restarts, quarantined = quarantined, graceful_stops = #stopped,
    dropped_redeliveries = dropped }
end

local function line(fmt, ...) io.write(fmt:format(...), "\n") end

local function rule() line("%s", ("-"):rep(78)) end

local function print_top(title, t, n)
  local list, total = top(t, n)
  if total == 0 then return end
  line("%s (%d kinds%s):", title, total, total > n and (", the " .. n .. " most frequent") or "")
  for _, e in ipairs(list) do line("  %6d  %s", e[2], e[1]:sub(1, 150)) end
end

local function print_streams(copy, count)
  line("%-44s %16s %16s", "", "chaos-copy", "chaos-count")
  local rows = {
    { "output records", "records" },
    { "lost (input with no output)", "lost" },
    { "duplicates (copies beyond the first)", "duplicates" },
    { "records delivered more than once", "duplicated" },
    { "order violations, first deliveries", "reorder_first" },
    { "order violations, replays included", "reorder_all" },
    { "outputs not in the input", "unexpected" },
    { "malformed outputs", "malformed" },
    { "keys split over partitions", "split_keys" },
  }
  for _, r in ipairs(rows) do
    line("%-44s %16d %16d", r[1], copy[r[2]], count[r[2]])
  end
end

local function print_counts(counts)
  line("final counts of chaos-count (a key's last output against its input):")
  line("  keys %d: exact %d, too high %d (excess %d records, at most %d on one key), too low %d (deficit %d)",
    counts.keys, counts.exact, counts.high, counts.excess, counts.high_max, counts.low, counts.deficit)
  line("  outputs whose count is above their SEQ (replayed): %d, below it (an update lost): %d",
    counts.count_above_seq, counts.count_below_seq)
  if #counts.low_sample > 0 then line("  too low: %s", table.concat(counts.low_sample, "; ")) end
end

local function print_faults(r)
  line("faults injected (%d):", r.faults_total)
  local names = {}
  for k in pairs(r.faults) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do line("  %6d  %s", r.faults[k], k) end
end

local function print_breakage(r)
  local b = r.breakage
  line("what broke:")
  line("  instances that ended unasked: %d; stops past %d s: %d", #r.unasked_exits, r.stop_timeout, r.slow_stops)
  for _, e in ipairs(r.unasked_exits) do
    line("    %s: %s after %.0f s; last lines:", e.name, e.status, e.after)
    for _, l in ipairs(e.tail) do line("      %s", l:sub(1, 160)) end
  end
  line("  worker restarts by the supervisors: %d; quarantined: %d; graceful worker stops: %d",
    b.restarts, b.quarantined, b.graceful_stops)
  line("  redeliveries skipped by workers (\"dropped\" at their stop): %d", b.dropped_redeliveries)
  print_top("  workers ended", b.worker_ends, 12)
  print_top("  tide errors logged", b.errors, 12)
  print_top("  tide warnings logged", b.warnings, 8)
  print_top("  librdkafka errors logged", b.rdkafka_errors, 5)
end

--- Print the summary table of report r (see run.lua for its fields).
function M.print(r)
  rule()
  line("make chaos: %.1f min of faults, seed %d, %s, %d brokers, %d input partitions, %d keys",
    r.minutes, r.seed, r.guarantee, r.brokers, r.partitions, r.keys)
  line("input: %d records produced by %d runs of tide produce (%d failed); the input topic holds %d "
    .. "distinct (%d written twice%s)", r.produced, r.chunks, r.failed_chunks, r.truth.total,
    r.truth.duplicates, #r.truth.truncated > 0 and
      (", partitions " .. table.concat(r.truth.truncated, ",") .. " truncated by the mock") or "")
  line("dead letters: %d; hot-swap versions seen in chaos-copy: %s", r.dead_letters, r.versions)
  rule()
  print_faults(r)
  rule()
  print_streams(r.copy, r.count)
  print_counts(r.counts)
  rule()
  print_breakage(r)
  rule()
  if r.guarantee == "exactly_once_v2" then
    -- What exactly-once must bring to 0; the mock shows aborted records to
    -- read_committed readers, so on it some of these may be aborted writes.
    line("exactly_once_v2: %d duplicates in chaos-copy, %d in chaos-count, %d keys off their count, "
      .. "%d outputs whose count is not their SEQ", r.copy.duplicates, r.count.duplicates,
      r.counts.high + r.counts.low, r.counts.count_above_seq + r.counts.count_below_seq)
  end
  line("verdict: %s", r.lost and "FAIL: records were lost" or
    "PASS: no record lost (duplicates and excess counts are reported, not failed)")
end

--- Write report r as JSON to path.
function M.write_json(r, path)
  local f = assert(io.open(path, "w"))
  f:write(cjson.encode(r), "\n")
  f:close()
end

return M
