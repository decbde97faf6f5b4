--- `tide test`, `tide replay` and `tide describe`: a detector run through the test driver
--- (tide.testing) over records from a JSON-lines file or from a topic; what
--- it emitted is printed as JSON lines, or compared with an expectation or
--- with another version of the detector.
---
--- bindings/runtime.c (tide_runtime_cli) calls main() in a plain Lua state
--- holding tide's scripts; detectors still run in the driver's sandbox. This
--- module never talks to Kafka: `replay --from` reads the topic through
--- host.read_topic, the C reader of host/tools.c.
local errors = require("tide.errors")
local serde = require("tide.serde")
local testing = require("tide.testing")

-- String functions taken once: this module prints what detectors did, so it
-- never reaches them through a string's metatable.
local format, gsub, find, match, sub, byte, gmatch = string.format, string.gsub, string.find,
  string.match, string.sub, string.byte, string.gmatch

local M = {}

local null = serde.null

--- The topic dead letters are printed under: the same for every version of a
--- detector, so that two versions compare.
M.DEAD_LETTERS = "dead-letters"

-- Exit codes. LIMIT: a record broke the detector's limits (heap or time).
local SAME, DIFFERENT, REFUSED, LIMIT = 0, 1, 2, 3

-- A refusal (bad command line, unreadable file, detector that does not load)
-- is raised as this table and becomes exit code 2 in main().
local Refusal = {}

local function refuse(msg)
  error(setmetatable({ msg = msg }, Refusal), 0)
end

-- JSON text -------------------------------------------------------------------

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function quote(s)
  return '"' .. gsub(s, '[%c"\\]', function(c)
    return escapes[c] or format("\\u%04x", byte(c))
  end) .. '"'
end

local number_text = require("tide.json").number_text

local function number(n)
  if n ~= n or n == math.huge or n == -math.huge then return quote(tostring(n)) end
  return number_text(n)
end

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n > 0 and n == #t
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

--- JSON text of a decoded value with the keys of objects sorted: equal values
--- always give equal text, which is what comparisons compare.
local function encode(v)
  if v == nil or v == null then return "null" end
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "number" then return number(v) end
  if t ~= "table" then return t == "boolean" and tostring(v) or quote(tostring(v)) end
  local parts = {}
  if is_array(v) then
    for i = 1, #v do parts[i] = encode(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  for i, k in ipairs(sorted_keys(v)) do parts[i] = quote(tostring(k)) .. ":" .. encode(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

--- One output line: {"topic","key","value","timestamp"?,"headers"?}.
local function record_line(r)
  local s = '{"topic":' .. quote(r.topic) .. ',"key":' .. encode(r.key) .. ',"value":' .. encode(r.value)
  if r.timestamp then s = s .. ',"timestamp":' .. number(r.timestamp) end
  if r.headers and next(r.headers) then s = s .. ',"headers":' .. encode(r.headers) end
  return s .. "}"
end

-- Reading JSON-lines files -------------------------------------------------------

--- The JSON objects of a file, each as { where = "file:line", t = object }.
local function read_json_lines(path)
  local f, err = io.open(path, "rb")
  if not f then refuse("cannot read " .. tostring(err)) end
  local entries, n = {}, 0
  for line in f:lines() do
    n = n + 1
    if find(line, "%S") then
      local ok, v = pcall(serde.json.decode, line)
      if not ok or type(v) ~= "table" or v[1] ~= nil then
        f:close()
        refuse(format("%s:%d: each line must be a JSON object%s", path, n, ok and "" or ": " .. tostring(v)))
      end
      entries[#entries + 1] = { where = path .. ":" .. n, t = v }
    end
  end
  f:close()
  return entries
end

local function nonnull(v)
  if v == null then return nil end
  return v
end

local function check_fields(e, allowed, list)
  for k in pairs(e.t) do
    if not allowed[k] then
      refuse(format("%s: unknown field \"%s\" (known: %s)", e.where, tostring(k), list))
    end
  end
end

--- Field `name` of the line, nil when absent or null, refused when not a `kind`.
local function field(e, name, kind)
  local v = nonnull(e.t[name])
  if v ~= nil and type(v) ~= kind then
    refuse(format("%s: \"%s\" must be a %s", e.where, name, kind == "table" and "JSON object" or kind))
  end
  return v
end

local function headers_of(e)
  local h = field(e, "headers", "table")
  for name, v in pairs(h or {}) do
    if v == null then
      h[name] = nil
    elseif type(v) ~= "string" then
      refuse(format("%s: header \"%s\" must be a string", e.where, tostring(name)))
    end
  end
  return h
end

local INPUT_FIELDS = "topic, key, value, timestamp, partition, headers, raw, offset; "
  .. "or advance_wall_clock alone"
local input_fields = { topic = true, key = true, value = true, timestamp = true,
  partition = true, headers = true, raw = true, offset = true }

local function wall_clock_step(e)
  local d = e.t.advance_wall_clock
  if next(e.t, next(e.t)) ~= nil then
    refuse(e.where .. ": advance_wall_clock goes alone on its line")
  end
  if type(d) ~= "string" and type(d) ~= "number" then
    refuse(e.where .. ": advance_wall_clock wants a duration like \"10s\" or milliseconds")
  end
  return { where = e.where, advance = d }
end

--- One line of an input file or a recording: a record to pipe, or a move of
--- the wall clock.
local function input_step(e)
  if e.t.advance_wall_clock ~= nil then return wall_clock_step(e) end
  check_fields(e, input_fields, INPUT_FIELDS)
  local step = {
    where = e.where, topic = field(e, "topic", "string"),
    key = nonnull(e.t.key), value = nonnull(e.t.value),
    timestamp = field(e, "timestamp", "number"), partition = field(e, "partition", "number"),
    offset = field(e, "offset", "number"), headers = headers_of(e),
  }
  local raw = field(e, "raw", "boolean")
  -- A line with an offset was read from Kafka (`tide consume --json`): its
  -- key and value are the record's bytes.
  if raw == nil then raw = step.offset ~= nil end
  step.raw = raw
  if raw and (type(step.key or "") ~= "string" or type(step.value or "") ~= "string") then
    refuse(e.where .. ": with \"raw\": true, key and value are the bytes, as JSON strings")
  end
  return step
end

local output_fields = { topic = true, key = true, value = true, timestamp = true, headers = true }

--- One line of an --expect file.
local function expected_record(e)
  check_fields(e, output_fields, "topic, key, value, timestamp, headers")
  return {
    topic = field(e, "topic", "string") or refuse(e.where .. ": \"topic\" is missing"),
    key = nonnull(e.t.key), value = nonnull(e.t.value),
    timestamp = field(e, "timestamp", "number"), headers = headers_of(e),
  }
end

local function map(list, fn)
  local out = {}
  for i, v in ipairs(list) do out[i] = fn(v) end
  return out
end

-- Running a detector ------------------------------------------------------------

--- The limits every detector runs within, from the host (-D
--- detector.memory.limit.bytes, detector.batch.timeout.ms); nil: the driver's
--- defaults, which are the same.
local limits = {}

local function load_driver(path, schemas)
  local ok, d = pcall(testing.driver, path, { schemas = schemas, memory = limits.memory,
    timeout_ms = limits.timeout_ms })
  if not ok then refuse(errors.describe(d)) end
  for _, o in ipairs(d.spec.outputs) do
    if o == M.DEAD_LETTERS then
      refuse(format("%s: an output named \"%s\" cannot be told apart from the dead letters "
        .. "that tide test prints under that name", path, o))
    end
  end
  return d
end

--- One line of text for stderr: control characters escaped, so that
--- nothing a detector says (a log, an error message) can pose as a line
--- tide printed, and long texts cut.
local function one_line(s)
  s = gsub(tostring(s), "%c", function(c)
    return escapes[c] or format("\\%03d", byte(c))
  end)
  if #s > 4096 then s = sub(s, 1, 4096) .. format("... (%d bytes)", #s) end
  return s
end

local LIMIT_CLASSES = { MemoryError = true, TimeoutError = true }

--- The topics of `list` that are not in `other`: a detector's own inputs
--- and outputs, without the internal (repartition) topics it writes and reads.
local function without(list, other)
  local set, out = {}, {}
  for _, t in ipairs(other) do set[t] = true end
  for _, t in ipairs(list) do
    if not set[t] then out[#out + 1] = t end
  end
  return out
end

local function input_topic(step, spec)
  local inputs = spec.inputs
  local outside = without(inputs, spec.outputs)
  if not step.topic and #outside == 1 then return outside[1] end
  for _, i in ipairs(inputs) do
    if i == step.topic then return i end
  end
  refuse(format("%s: %s; %s reads %s", step.where,
    step.topic and ("topic \"" .. step.topic .. "\" is not an input") or "\"topic\" is missing",
    spec.name, table.concat(inputs, ", ")))
end

--- Move what the driver holds (emits, dead letters, logs, `failures`) to `res`.
local function collect(d, res, where, failures)
  for _, o in ipairs(res.outputs) do
    local list = res.out[o]
    for _, r in ipairs(d:read(o)) do
      list[#list + 1] = { topic = o, key = r.key, value = r.value, timestamp = r.timestamp,
        headers = r.headers }
    end
  end
  for _, r in ipairs(d:dead_letters()) do
    res.dead[#res.dead + 1] = { topic = M.DEAD_LETTERS, key = r.key, value = r.value,
      timestamp = (r.timestamp or 0) > 0 and r.timestamp or nil, headers = r.headers }
  end
  for _, f in ipairs(failures) do
    res.errors[#res.errors + 1] = { where = where, class = f.class, message = f.message,
      traceback = f.traceback }
  end
  local logs = d.logs or {}
  for i = res.logs + 1, #logs do
    io.stderr:write(format("%s [%s] %s\n", d.spec.name, one_line(logs[i].level), one_line(logs[i].msg)))
  end
  res.logs = #logs
  if (d.logs_dropped or 0) > (res.logs_dropped or 0) then
    io.stderr:write(format("%s [warn] dropped %d log lines past the first %d\n", d.spec.name,
      d.logs_dropped - (res.logs_dropped or 0), #logs))
    res.logs_dropped = d.logs_dropped
  end
end

local function pipe(d, res, step)
  local topic = input_topic(step, d.spec)
  res.records_in = res.records_in + 1
  if step.offset then d:seek(topic, step.partition or 0, step.offset) end
  d:at(step.where)
  return pcall(d.pipe, d, topic, step.key, step.value, { timestamp = step.timestamp,
    partition = step.partition, headers = step.headers, raw = step.raw or nil })
end

--- Feed one step; false when the detector stopped (on_error = "stop").
local function feed(d, res, step)
  local ok, err
  if step.advance then
    ok, err = pcall(d.advance_wall_clock, d, step.advance)
  else
    ok, err = pipe(d, res, step)
  end
  local failures = d:errors()
  if not ok and errors.is(err) and LIMIT_CLASSES[rawget(err, "class")] then
    -- a limit broken in tide's code around the detector's (a punctuator's
    -- bookkeeping): the step fails, the run goes on
    failures[#failures + 1] = { class = rawget(err, "class"), message = errors.describe(rawget(err, "message")) }
    ok = true
  end
  collect(d, res, step.where, failures)
  if ok then return true end
  if #failures > 0 and d.spec.on_error == "stop" then
    res.stopped = step.where
    return false
  end
  refuse(step.where .. ": " .. errors.describe(err))
end

--- Run `steps` through driver `d` and close it. Returns what came out:
--- { path, spec, outputs, records_in, out = { [output] = records }, dead, errors, stopped }.
local function run(d, path, steps)
  local res = { path = path, spec = d.spec, outputs = without(d.spec.outputs, d.spec.inputs),
    records_in = 0, out = {}, dead = {}, errors = {}, logs = 0 }
  for _, o in ipairs(res.outputs) do res.out[o] = {} end
  for _, step in ipairs(steps) do
    if not feed(d, res, step) then break end
  end
  d:at("close")
  local ok, err = pcall(d.close, d)
  local class = errors.is(err) and rawget(err, "class") or "ProcessError"
  collect(d, res, "close", ok and {} or { { class = class, message = errors.is(err)
    and errors.describe(rawget(err, "message")) or errors.describe(err) } })
  return res
end

--- Did a record of the run break the detector's limits?
local function broke_limits(res)
  for _, e in ipairs(res.errors) do
    if LIMIT_CLASSES[e.class] then return true end
  end
  return false
end

--- Every record of a run in print order: each output in declaration order,
--- then the dead letters.
local function records_of(res)
  local list = {}
  for _, o in ipairs(res.outputs) do
    for _, r in ipairs(res.out[o]) do list[#list + 1] = r end
  end
  for _, r in ipairs(res.dead) do list[#list + 1] = r end
  return list
end

local function tide_frame(line)
  return find(line, "^%[C%]") or find(line, "^scripts/tide/") or find(line, "/scripts/tide/[%w_]+%.lua:")
end

--- The traceback down to the detector's outermost frame: what tide's own
--- frames around the call (dispatcher, driver, this module) would only bury.
local function detector_frames(traceback)
  local lines = {}
  for line in gmatch(traceback or "", "[^\n]+") do lines[#lines + 1] = (gsub(line, "^%s+", "")) end
  local last = 0
  for i = 2, #lines do
    if not tide_frame(lines[i]) then last = i end
  end
  return { unpack(lines, 1, last) }
end

--- The summary line and the errors of a run, on stderr.
local function report(res)
  local parts = { format("records in: %d", res.records_in) }
  for _, o in ipairs(res.outputs) do
    parts[#parts + 1] = format("%s: %d out", o, #res.out[o])
  end
  parts[#parts + 1] = format("dead letters: %d, errors: %d", #res.dead, #res.errors)
  io.stderr:write(format("%s (%s): %s\n", res.path, res.spec.name, table.concat(parts, ", ")))
  for _, e in ipairs(res.errors) do
    io.stderr:write(format("  error at %s: %s: %s\n", e.where, e.class, one_line(e.message)))
    for _, line in ipairs(detector_frames(e.traceback)) do io.stderr:write("      ", one_line(line), "\n") end
  end
  if res.stopped then
    io.stderr:write(format("  stopped at %s (on_error = \"stop\")\n", res.stopped))
  end
end

local function print_records(records)
  for _, r in ipairs(records) do io.stdout:write(record_line(r), "\n") end
end

-- Comparing --------------------------------------------------------------------

-- Dead-letter headers that change with every edit of a detector.
local VOLATILE = { ["tide.error.traceback"] = true, ["tide.detector.version"] = true,
  ["tide.detector"] = true }

local function plain(s)
  return (gsub(s, "[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

--- How Lua names the file at `path` in an error message: the path itself, or
--- "..." and its tail when it is longer than Lua keeps (LUA_IDSIZE).
local function shown_as(path)
  local _, err = pcall(load("error('x')", "@" .. path))
  return (match(tostring(err), "^(.*):1: x$")) or path
end

--- The line a record is compared by. A dead letter leaves out its traceback,
--- version and detector name, and its error message calls the detector's
--- file (`path`) <detector>: two versions in two files that fail alike compare
--- equal.
local function comparable(r, path)
  if r.topic ~= M.DEAD_LETTERS or not r.headers then return record_line(r) end
  local h = {}
  for k, v in pairs(r.headers) do
    if not VOLATILE[k] then h[k] = v end
  end
  local msg = h["tide.error.message"]
  if msg then h["tide.error.message"] = gsub(msg, plain(shown_as(path)), "<detector>") end
  return record_line({ topic = r.topic, key = r.key, value = r.value, timestamp = r.timestamp,
    headers = h })
end

--- Comparable lines per topic, and the topics in first-seen order (appended
--- to `order` when not in it yet).
local function by_topic(records, path, order)
  local lines = {}
  for _, r in ipairs(records) do
    if not lines[r.topic] then
      lines[r.topic] = {}
      if not order[r.topic] then
        order[r.topic] = true
        order[#order + 1] = r.topic
      end
    end
    local l = lines[r.topic]
    l[#l + 1] = comparable(r, path)
  end
  return lines
end

-- Past this many cells the middle of a diff is shown as removed then added.
local MAX_LCS = 1000000

--- The longest common subsequence table of a[lo+1..ea] and b[lo+1..eb],
--- suffix form: L[i][j] for a[lo+i..], b[lo+j..].
local function lcs_table(a, b, lo, n, m)
  local L = {}
  L[n + 1] = setmetatable({}, { __index = function() return 0 end })
  for i = n, 1, -1 do
    local row, below = { [m + 1] = 0 }, L[i + 1]
    for j = m, 1, -1 do
      if a[lo + i] == b[lo + j] then row[j] = below[j + 1] + 1
      else row[j] = math.max(below[j], row[j + 1]) end
    end
    L[i] = row
  end
  return L
end

--- Edit ops for a[lo+1..ea] -> b[lo+1..eb], appended to ops.
local function diff_middle(a, b, lo, ea, eb, add)
  local n, m = ea - lo, eb - lo
  if n * m > MAX_LCS then
    for i = lo + 1, ea do add("-", a[i]) end
    for j = lo + 1, eb do add("+", b[j]) end
    return
  end
  local L = lcs_table(a, b, lo, n, m)
  local i, j = 1, 1
  while i <= n or j <= m do
    if i <= n and j <= m and a[lo + i] == b[lo + j] then
      add(" ", a[lo + i])
      i, j = i + 1, j + 1
    elseif j > m or (i <= n and L[i + 1][j] >= L[i][j + 1]) then
      add("-", a[lo + i])
      i = i + 1
    else
      add("+", b[lo + j])
      j = j + 1
    end
  end
end

--- Edit ops turning list a into list b: { op, line, ia, ib } where ia and ib
--- count the lines of a and b before the op.
local function edit_script(a, b)
  local ops, ia, ib = {}, 0, 0
  local function add(op, line)
    ops[#ops + 1] = { op, line, ia, ib }
    if op ~= "+" then ia = ia + 1 end
    if op ~= "-" then ib = ib + 1 end
  end
  local pre, suf = 0, 0
  while pre < #a and pre < #b and a[pre + 1] == b[pre + 1] do pre = pre + 1 end
  while suf < #a - pre and suf < #b - pre and a[#a - suf] == b[#b - suf] do suf = suf + 1 end
  for i = 1, pre do add(" ", a[i]) end
  diff_middle(a, b, pre, #a - suf, #b - suf, add)
  for k = suf - 1, 0, -1 do add(" ", a[#a - k]) end
  return ops
end

local CONTEXT = 2

local function hunk_header(topic, ops, first, last)
  local na, nb = 0, 0
  for k = first, last do
    if ops[k][1] ~= "+" then na = na + 1 end
    if ops[k][1] ~= "-" then nb = nb + 1 end
  end
  local a, b = ops[first][3], ops[first][4]
  return format("@@ %s -%d,%d +%d,%d @@", topic, na > 0 and a + 1 or a, na, nb > 0 and b + 1 or b, nb)
end

--- Unified-diff hunks (CONTEXT records around each change) of one topic.
local function hunks(topic, ops, out)
  local k = 1
  while k <= #ops do
    if ops[k][1] == " " then
      k = k + 1
    else
      local last, q = k, k + 1
      while q <= #ops and q - last <= 2 * CONTEXT do
        if ops[q][1] ~= " " then last = q end
        q = q + 1
      end
      local first = math.max(1, k - CONTEXT)
      last = math.min(#ops, last + CONTEXT)
      out[#out + 1] = hunk_header(topic, ops, first, last)
      for i = first, last do out[#out + 1] = ops[i][1] .. ops[i][2] end
      k = last + 1
    end
  end
end

--- A line-oriented diff of two runs' records, topic by topic (order matters
--- within a topic, not across topics). Returns its lines: empty when equal.
--- a, b: { records =, path = (the detector's file), label = }.
function M.diff(a, b)
  local order = {}
  local la = by_topic(a.records, a.path, order)
  local lb = by_topic(b.records, b.path, order)
  local out = { "--- " .. a.label, "+++ " .. b.label }
  for _, topic in ipairs(order) do
    hunks(topic, edit_script(la[topic] or {}, lb[topic] or {}), out)
  end
  if #out == 2 then return {} end
  return out
end

local function print_diff(a, b)
  local lines = M.diff(a, b)
  for _, l in ipairs(lines) do io.stdout:write(l, "\n") end
  return #lines > 0 and DIFFERENT or SAME
end

-- Commands -------------------------------------------------------------------------

local USAGE = {
  describe = [[
usage: tide describe DETECTOR [--json] [--application-id ID]
Prints DETECTOR's topology as Kafka Streams' Topology#describe() does: its
sub-topologies (the parts a repartition topic separates), each made of
sources (the topics read), processors (with the stores they use) and sinks
(the topics written); global tables in sub-topologies of their own; then the
stores and the internal topics (changelogs, repartition topics, named after
ID, default "tide"). --json prints the same as one JSON object. Nothing is
run and no broker is needed. Exit 2: bad command line, detector refused at
load.]],
  test = [[
usage: tide test DETECTOR --input IN.jsonl [--expect OUT.jsonl] [--schemas DIR]
Runs DETECTOR (a .lua file or a folder with init.lua) through the test driver,
without a broker, on the records of IN.jsonl, one JSON object a line:
  {"topic": "...", "key": ..., "value": ..., "timestamp": ms, "partition": n,
   "headers": {"name": "value"}}    (topic may be left out with one input)
  {"advance_wall_clock": "10s"}     (fires wall-clock punctuators)
Key and value are decoded values (a JSON object for a json serde); with
"raw": true they are the record's bytes. Prints every emitted record, then the
dead letters, as JSON lines; a summary and the errors go to stderr.
With --expect: prints the differences (-expected, +got) instead, exit 1 if any.
Avro topics take their schemas from DIR (default: schemas/ beside DETECTOR):
DIR/<id>.avsc by schema id, DIR/<topic>-value.avsc by subject; values given as
JSON are encoded with the topic's schema.
The detector runs within its live limits: -D detector.memory.limit.bytes=N
(its Lua heap) and -D detector.batch.timeout.ms=MS (each record), also from
-c FILE and TIDE_* variables; a record past one fails with a MemoryError or a
TimeoutError at the detector's line.
Exit 2: bad command line, unreadable file, detector refused at load.
Exit 3: a record broke the detector's limits (or one stuck in a C function
past its budget ended the run).]],
  replay = [[
usage: tide replay DETECTOR [--against RUNNING.lua] [--schemas DIR]
                   (--from TOPIC [--offsets P:FROM-TO,...] | --file REC.jsonl)
                   [--with-state] [--application-id APP] [-b HOST:PORT]
Runs DETECTOR over recorded traffic through the test driver: it produces
nothing. --from reads TOPIC by assignment (no consumer group, no commits):
--offsets takes inclusive ranges per partition (P:FROM- reads to the end as of
startup); without it, every partition from the beginning to the end. --file
reads a recording in the format of `tide test --input` (`tide consume --json`
writes one). Prints the outputs as `tide test` does; with --against, runs
RUNNING.lua over the same records and prints the differences (-running,
+DETECTOR), exit 1 if any. Avro schemas come from DIR (see tide test --help).
--with-state seeds both versions' stores, partition by partition, from the
running detector's changelogs as they are now (<APP>.<name>-<store>-changelog,
read committed; APP: --application-id, else $TIDE_APPLICATION_ID, else tide;
the running detector is RUNNING.lua with --against, else DETECTOR), so that
a change is compared on real, warm state.
Both run within their live limits, as in `tide test` (-D
detector.memory.limit.bytes=N, -D detector.batch.timeout.ms=MS).
Exit 2: bad command line, unreadable source, detector refused at load.
Exit 3: a record broke a detector's limits.]],
}

--- Split args into the one positional argument and options (name ->
--- "value" or "list").
local function parse(args, options, usage)
  local o, positional = {}, {}
  local i = 1
  while i <= #args do
    local a, kind = args[i], options[args[i]]
    if kind == "flag" then
      o[a] = true
    elseif kind then
      i = i + 1
      if args[i] == nil then refuse(a .. " needs a value\n" .. usage) end
      if kind == "list" then
        o[a] = o[a] or {}
        o[a][#o[a] + 1] = args[i]
      else
        o[a] = args[i]
      end
    elseif sub(a, 1, 1) == "-" then
      refuse("unknown option " .. a .. "\n" .. usage)
    else
      positional[#positional + 1] = a
    end
    i = i + 1
  end
  if #positional ~= 1 then refuse("one DETECTOR, please\n" .. usage) end
  return positional[1], o
end

local commands = {}

function commands.test(args)
  local path, o = parse(args, { ["--input"] = "value", ["--expect"] = "value", ["--schemas"] = "value" },
    USAGE.test)
  if not o["--input"] then refuse("--input is missing\n" .. USAGE.test) end
  local steps = map(read_json_lines(o["--input"]), input_step)
  local expected = o["--expect"] and map(read_json_lines(o["--expect"]), expected_record)
  local res = run(load_driver(path, o["--schemas"]), path, steps)
  report(res)
  local code = SAME
  if not expected then
    print_records(records_of(res))
  else
    code = print_diff({ records = expected, path = path, label = "expected (" .. o["--expect"] .. ")" },
      { records = records_of(res), path = path, label = "got (" .. path .. ")" })
  end
  return broke_limits(res) and LIMIT or code
end

--- `--offsets 0:5-9,1:0-`: { { partition =, from =, to = (nil: the end) } }.
local function parse_offsets(list)
  local ranges, seen = {}, {}
  for _, arg in ipairs(list or {}) do
    for item in gmatch(arg, "[^,]+") do
      local p, from, to = match(item, "^%s*(%d+):(%d+)%-(%d*)%s*$")
      if not p then
        refuse(format("bad --offsets item \"%s\" (want PARTITION:FROM-TO or PARTITION:FROM-)", item))
      end
      p, from, to = tonumber(p), tonumber(from), tonumber(to)
      if to and to < from then refuse(format("--offsets %s: the range ends before it starts", item)) end
      if seen[p] then refuse(format("--offsets: partition %d is given twice", p)) end
      seen[p] = true
      ranges[#ranges + 1] = { partition = p, from = from, to = to }
    end
  end
  return ranges
end

--- Records of several partitions interleaved as a consumer would roughly
--- see them live: each partition in offset order, the partitions merged by
--- timestamp (the earliest head first). Windows and their lateness then
--- behave as they did live, not as if one partition came before the next.
local function interleave(records)
  local parts, heads = {}, {}
  for _, r in ipairs(records) do
    local list = parts[r.partition]
    if not list then
      list = {}
      parts[r.partition] = list
      heads[#heads + 1] = r.partition
    end
    list[#list + 1] = r
  end
  local pos = {}
  for p, list in pairs(parts) do
    table.sort(list, function(x, y) return x.offset < y.offset end)
    pos[p] = 1
  end
  table.sort(heads)
  local out = {}
  for _ = 1, #records do
    local best
    for _, p in ipairs(heads) do
      local r = parts[p][pos[p]]
      if r and (best == nil or r.timestamp < parts[best][pos[best]].timestamp) then best = p end
    end
    out[#out + 1] = parts[best][pos[best]]
    pos[best] = pos[best] + 1
  end
  return out
end

--- The records of `topic` in `ranges`, read by the host, as steps: each
--- partition in offset order, partitions interleaved by timestamp.
local function topic_steps(host, topic, ranges, bootstrap)
  if not (host and host.read_topic) then refuse("--from needs the tide binary's Kafka client") end
  local records, err = host.read_topic(bootstrap, topic, ranges)
  if not records then refuse(format("cannot read %s: %s", topic, tostring(err))) end
  records = interleave(records)
  for _, r in ipairs(records) do
    r.where = format("%s/%d@%d", topic, r.partition, r.offset)
    r.raw = true
  end
  io.stderr:write(format("read %d records of %s\n", #records, topic))
  return records
end

local REPLAY_OPTIONS = { ["--against"] = "value", ["--from"] = "value", ["--offsets"] = "list",
  ["--file"] = "value", ["-b"] = "value", ["--bootstrap-server"] = "value", ["--schemas"] = "value",
  ["--with-state"] = "flag", ["--application-id"] = "value" }

local function replay_steps(o, host)
  local bootstrap = o["-b"] or o["--bootstrap-server"]
  if (o["--from"] == nil) == (o["--file"] == nil) then
    refuse("give either --from TOPIC or --file REC.jsonl\n" .. USAGE.replay)
  end
  if o["--file"] then
    if o["--offsets"] or (bootstrap and not o["--with-state"]) then
      refuse("--offsets and -b go with --from (or -b with --with-state), not --file")
    end
    return map(read_json_lines(o["--file"]), input_step)
  end
  return topic_steps(host, o["--from"], parse_offsets(o["--offsets"]), bootstrap)
end

--- --with-state: every changelog record of the running detector's stores,
--- as of now, into each driver's store of the same name and partition.
local function seed_state(o, host, running, drivers)
  if not (host and host.read_topic) then refuse("--with-state needs the tide binary's Kafka client") end
  local app = o["--application-id"] or os.getenv("TIDE_APPLICATION_ID") or "tide"
  local bootstrap = o["-b"] or o["--bootstrap-server"]
  local names = {}
  for name in pairs(running.spec.stores) do names[#names + 1] = name end
  table.sort(names)
  if #names == 0 then refuse(running.spec.name .. " has no stores: --with-state has nothing to seed") end
  for _, name in ipairs(names) do
    local topic = ("%s.%s-%s-changelog"):format(app, running.spec.name, name)
    local records, err = host.read_topic(bootstrap, topic, {})
    if not records then refuse(("cannot read %s: %s"):format(topic, tostring(err))) end
    for _, d in ipairs(drivers) do
      if d.spec.stores[name] then
        for _, r in ipairs(records) do d:restore(name, r.partition, r.key, r.value) end
      else
        io.stderr:write(("%s has no store %s: not seeded\n"):format(d.spec.name, name))
      end
    end
    io.stderr:write(("seeded store %s from %d records of %s\n"):format(name, #records, topic))
  end
end

function commands.replay(args, host)
  local path, o = parse(args, REPLAY_OPTIONS, USAGE.replay)
  local against = o["--against"]
  -- Both versions load before anything is read: a refused one costs nothing.
  local d = load_driver(path, o["--schemas"])
  local base = against and load_driver(against, o["--schemas"])
  local steps = replay_steps(o, host)
  if o["--with-state"] then seed_state(o, host, base or d, { d, base }) end
  local res = run(d, path, steps)
  report(res)
  if not base then
    print_records(records_of(res))
    return broke_limits(res) and LIMIT or SAME
  end
  local res_base = run(base, against, steps)
  report(res_base)
  local code = print_diff({ records = records_of(res_base), path = against, label = against .. " (running)" },
    { records = records_of(res), path = path, label = path .. " (replayed)" })
  return (broke_limits(res) or broke_limits(res_base)) and LIMIT or code
end

--- `tide describe DETECTOR`: the topology, loaded and compiled, never run.
function commands.describe(args)
  local path, o = parse(args, { ["--json"] = "flag", ["--application-id"] = "value" }, USAGE.describe)
  local app = o["--application-id"] or "tide"
  -- loading runs the script: within the limits it has live, as tide test's
  local core = require("tide.core")
  local defaults = core.limits()
  local guard = core.guard({ memory = limits.memory or defaults.memory,
    timeout_ms = limits.timeout_ms or defaults.timeout_ms, label = path })
  local ok, spec_or_err, err = pcall(guard.call, guard, require("tide.detector").load, path,
    { application_id = app, print = function() end })
  if not ok then refuse(errors.describe(spec_or_err)) end
  local spec = spec_or_err
  if not spec then refuse(tostring(err)) end
  local describe = require("tide.describe")
  local desc = spec.dsl and spec.dsl.topology or describe.of_detector(spec, function(store)
    return ("%s.%s-%s-changelog"):format(app, spec.name, store)
  end)
  if o["--json"] then
    io.stdout:write(serde.json.encode(desc), "\n")
  else
    io.stdout:write(describe.text(desc))
  end
  return SAME
end

local function internal_error(e)
  if getmetatable(e) == Refusal then return e end
  return debug.traceback(errors.describe(e), 2)
end

--- `tide <command> args...` for command "test", "replay" or "describe"; returns the exit
--- code. host.read_topic(bootstrap, topic, ranges) -> records | nil, msg is
--- the host's topic reader (bindings/runtime.c).
---@param command string
---@param args string[]
---@param host? table
function M.main(command, args, host)
  local fn = commands[command]
  if not fn then
    io.stderr:write(format("tide: no command %s here\n", tostring(command)))
    return REFUSED
  end
  for _, a in ipairs(args) do
    if a == "-h" or a == "--help" then
      io.stdout:write(USAGE[command], "\n")
      return SAME
    end
  end
  limits = host and host.limits or {}
  local ok, res = xpcall(fn, internal_error, args, host)
  if ok then return res end
  if getmetatable(res) == Refusal then
    io.stderr:write(format("tide %s: %s\n", command, res.msg))
  else
    io.stderr:write(format("tide %s: internal error: %s\n", command, res))
  end
  return REFUSED
end

return M
