--- The DSL: a detector written as streams and tables, in the manner of Kafka
--- Streams, compiled at load time into a plain detector table (inputs,
--- outputs, stores, process): the host runs it on the same dispatcher,
--- serdes, stores and timers as a hand-written detector. There is no second
--- engine: every operator becomes a small Lua closure, and a record goes
--- down the chain of closures inside one process() call.
---
---   local words = tide.stream("text-input")
---   words:filter(function(key, value) return value:find("a") end)
---        :map_values(string.upper)
---        :to("text-output")
---   return words
---
--- A script returns any stream or table it built, or tide.topology{ name =,
--- description =, on_error =, serde =, key_serde =, init =, close = } for
--- detector options; everything built while the script loads is compiled.
---
--- Functions given to operators receive (key, value, ctx), except
--- map_values and flat_map_values (value, key, ctx), and the aggregators
--- (agg, value, key). Re-keying before an aggregation or a join goes through
--- a repartition topic <application.id>.<detector>-<name>-repartition, so
--- that each key is aggregated in one place, as in Kafka Streams.
local store = require("tide.store")
local windows = require("tide.windows")
local errors = require("tide.errors")

local usage, where = errors.usage, errors.caller
-- The classes below hide their metatables from detectors (__metatable), so
-- that one detector cannot change the DSL another one builds with; tide
-- reads them raw.
local getmetatable = debug.getmetatable

local M = {}

local building -- the builder of the script being loaded, or nil

local Stream, Table, Grouped, Splitter = {}, {}, {}, {}
Stream.__index, Table.__index, Grouped.__index, Splitter.__index = Stream, Table, Grouped, Splitter
Stream.__metatable, Table.__metatable, Grouped.__metatable, Splitter.__metatable = false, false, false, false

local function need_fn(f, op, shape)
  if type(f) ~= "function" then
    usage(("%s: a function%s expected, got %s"):format(op, shape, type(f)))
  end
end

local function builder()
  if not building then
    usage("tide.stream and tide.table can only be used while the detector loads (at the top of the script)")
  end
  return building
end

local function node(b, class, kind, fields)
  local n = fields or {}
  n.b, n.kind, n.children = b, kind, {}
  n.at = where() or "the script's return"
  b.nodes[#b.nodes + 1] = n
  return setmetatable(n, class)
end

--- A child node of `parent`, of the same class unless given.
local function child(parent, kind, fields, class)
  local n = node(parent.b, class or getmetatable(parent), kind, fields)
  n.parents = { parent }
  parent.children[#parent.children + 1] = n
  if n.key_changed == nil then n.key_changed = parent.key_changed end
  return n
end

local function next_name(b, what)
  b.seq = b.seq + 1
  return ("%s-%d"):format(what, b.seq)
end

--- Serdes of a topic: "json" (the value's) or { key = ..., value = ... };
--- an avro serde's schema files ride along (`schema`, `key_schema`), given
--- in the table or as serde options (`extra`: to("t", "avro", { schema = ... })).
local function declare_serdes(b, topic, sd, op, extra)
  if sd == nil then return end
  if type(sd) == "string" then sd = { value = sd } end
  if type(sd) ~= "table" then
    usage(("%s('%s'): serdes must be a serde name or { key = ..., value = ... }"):format(op, topic))
  end
  if extra ~= nil and type(extra) ~= "table" then
    usage(("%s('%s'): serde options must be a table like { schema = \"schemas/x.avsc\" }"):format(op, topic))
  end
  local prev = b.serdes[topic] or {}
  for _, f in ipairs({ "schema", "key_schema" }) do
    local v = (extra and extra[f]) or sd[f]
    if v ~= nil then
      if prev[f] ~= nil and prev[f] ~= v then
        usage(("%s('%s'): %s '%s' differs from '%s' declared before"):format(op, topic, f, tostring(v), prev[f]))
      end
      prev[f] = v
    end
  end
  for _, which in ipairs({ "key", "value" }) do
    local name = sd[which]
    if name ~= nil then
      if prev[which] ~= nil and prev[which] ~= name then
        usage(("%s('%s'): %s serde '%s' differs from '%s' declared before"):format(
          op, topic, which, name, prev[which]))
      end
      prev[which] = name
    end
  end
  b.serdes[topic] = prev
end

local function check_topic(topic, op)
  if type(topic) ~= "string" or topic == "" then
    usage(("%s: a topic name expected, got %s"):format(op, tostring(topic)))
  end
end

--------------------------------------------------------------------------------
-- Sources

--- Event time: opts.timestamp(value, key) returns the record's time (ms)
--- from its contents, replacing the Kafka timestamp for windows, stream
--- time and the records it leads to (Kafka Streams' TimestampExtractor).
local function declare_timestamp(b, topic, opts, op)
  local f = type(opts) == "table" and opts.timestamp or nil
  if f == nil then return end
  need_fn(f, op .. "('" .. topic .. "'): timestamp", "(value, key) returning milliseconds")
  if b.timestamps[topic] and b.timestamps[topic] ~= f then
    usage(("%s('%s'): another timestamp function was given for this topic before"):format(op, topic))
  end
  b.timestamps[topic] = f
end

--- A stream of the records of `topic` (or of a list of topics, merged).
--- opts: "json" (the value's serde) or
--- { key = "string", value = "json", timestamp = function(value, key) ... end }.
--- serde_opts: the avro serde's { schema = "schemas/x.avsc" } (the reader
--- schema), as in tide.stream("payments", "avro", { schema = ... }).
---@param topic string
---@param opts? string|{ key?: string, value?: string, timestamp?: fun(value: any, key: any): number, schema?: string, key_schema?: string }
---@param serde_opts? { schema?: string, key_schema?: string }
function M.stream(topic, opts, serde_opts)
  local b = builder()
  if type(topic) == "table" then
    -- several topics, one stream: their records merged
    if #topic == 0 then usage("tide.stream: a topic name or a list of them expected") end
    local s = M.stream(topic[1], opts, serde_opts)
    for i = 2, #topic do s = s:merge(M.stream(topic[i], opts, serde_opts)) end
    return s
  end
  check_topic(topic, "tide.stream")
  declare_serdes(b, topic, opts, "tide.stream", serde_opts)
  declare_timestamp(b, topic, opts, "tide.stream")
  local n = node(b, Stream, "source", { topic = topic, key_changed = false })
  b.sources[#b.sources + 1] = n
  return n
end

--- A table from a topic: the latest value of each key; a null value (a
--- tombstone) deletes the key. It is kept in a key-value store (opts.name,
--- default the topic's name) so that streams can join it.
---@param topic string
---@param opts? { key?: string, value?: string, name?: string, memory?: boolean }
function M.table(topic, opts)
  local b = builder()
  check_topic(topic, "tide.table")
  opts = opts or {}
  declare_serdes(b, topic, { key = opts.key, value = opts.value, schema = opts.schema,
    key_schema = opts.key_schema }, "tide.table")
  declare_timestamp(b, topic, opts, "tide.table")
  local n = node(b, Table, "table_source", { topic = topic, key_changed = false })
  n.store = M.add_store(b, opts.name or topic:gsub("[^%w_-]", "_"), store.kv{ memory = opts.memory })
  b.sources[#b.sources + 1] = n
  return n
end

--- Options of the detector a DSL script makes.
---@param opts { name?: string, description?: string, on_error?: string, serde?: string, key_serde?: string, init?: function, close?: function }
local topology_options = {
  name = "string", description = "string", on_error = "string", serde = "string",
  key_serde = "string", init = "function", close = "function", stores = "table",
  punctuate = "table",
}

function M.topology(opts)
  local b = builder()
  if type(opts) ~= "table" then usage("tide.topology{ ... } expected") end
  for k, v in pairs(opts) do
    local want = topology_options[k]
    if not want then
      usage(("tide.topology: unknown option '%s' (known: name, description, on_error, serde, "
        .. "key_serde, init, close, stores, punctuate)"):format(tostring(k)))
    end
    if type(v) ~= want then usage(("tide.topology: %s must be a %s, got %s"):format(k, want, type(v))) end
  end
  -- stores for transform() and punctuators, reached as ctx.stores.<name>
  for name, decl in pairs(opts.stores or {}) do M.add_store(b, name, decl) end
  b.options = opts
  return b
end

function M.add_store(b, name, decl)
  if b.stores[name] then usage(("a store named '%s' exists already: give this one another name"):format(name)) end
  b.stores[name] = decl
  return name
end

--------------------------------------------------------------------------------
-- Stateless stream operators

--- Keep the records for which fn(key, value, ctx) is true.
function Stream:filter(fn)
  need_fn(fn, "filter", "(key, value)")
  return child(self, "filter", { fn = fn })
end

--- Drop the records for which fn(key, value, ctx) is true.
function Stream:filter_not(fn)
  need_fn(fn, "filter_not", "(key, value)")
  return child(self, "filter_not", { fn = fn })
end

--- A new key and value: fn(key, value, ctx) returns key, value.
function Stream:map(fn)
  need_fn(fn, "map", "(key, value) returning key, value")
  return child(self, "map", { fn = fn, key_changed = true })
end

--- A new value: fn(value, key, ctx) returns it (map_values(string.upper)).
function Stream:map_values(fn)
  need_fn(fn, "map_values", "(value, key)")
  return child(self, "map_values", { fn = fn })
end

--- Zero or more records per record: fn(key, value, ctx) returns a list of
--- { key, value } pairs.
function Stream:flat_map(fn)
  need_fn(fn, "flat_map", "(key, value) returning { { key, value }, ... }")
  return child(self, "flat_map", { fn = fn, key_changed = true })
end

--- Zero or more values per record, same key: fn(value, key, ctx) returns a list.
function Stream:flat_map_values(fn)
  need_fn(fn, "flat_map_values", "(value, key) returning a list of values")
  return child(self, "flat_map_values", { fn = fn })
end

--- Call fn(key, value, ctx) and pass the record on unchanged.
function Stream:peek(fn)
  need_fn(fn, "peek", "(key, value)")
  return child(self, "peek", { fn = fn })
end

--- Call fn(key, value, ctx) for every record (the end of a branch).
function Stream:foreach(fn)
  need_fn(fn, "foreach", "(key, value)")
  child(self, "peek", { fn = fn })
end

--- A new key: fn(key, value, ctx) returns it; the value stays.
function Stream:select_key(fn)
  need_fn(fn, "select_key", "(key, value) returning the new key")
  return child(self, "select_key", { fn = fn, key_changed = true })
end

--- Anything else, record by record: fn(key, value, ctx) returns the key
--- and value to pass on, or nothing to drop the record; it may use the
--- stores declared with tide.topology{ stores = ... } (ctx.stores) and
--- emit with ctx:emit (Kafka Streams' process()).
function Stream:transform(fn)
  need_fn(fn, "transform", "(key, value, ctx) returning key, value or nothing")
  return child(self, "transform", { fn = fn, key_changed = true })
end

--- Split by predicates: each record goes to the stream of the first
--- predicate fn(key, value, ctx) that is true, or nowhere.
---   local big, small = s:branch(is_big, is_small)
---@return table ... one stream per predicate
function Stream:branch(...)
  local preds = { ... }
  if #preds == 0 then usage("branch: at least one predicate expected") end
  for i, p in ipairs(preds) do need_fn(p, "branch #" .. i, "(key, value)") end
  local sw = child(self, "branch", { preds = preds, outs = {} })
  local outs = {}
  for i = 1, #preds do
    outs[i] = child(sw, "pass", {}, Stream)
    sw.outs[i] = outs[i]
  end
  return unpack(outs)
end

--- Named branches, Kafka Streams style:
---   local b = s:split():branch(is_big, "big"):branch(is_small, "small"):default_branch("rest")
---   b.big:to("big-payments")
function Stream:split()
  return setmetatable({ stream = self, preds = {}, names = {} }, Splitter)
end

function Splitter:branch(pred, name)
  need_fn(pred, "split():branch", "(key, value)")
  self.preds[#self.preds + 1] = pred
  self.names[#self.names + 1] = name or tostring(#self.preds)
  return self
end

local function always() return true end

--- The branches by name, with `name` (default "default") taking the rest.
function Splitter:default_branch(name)
  self:branch(always, name or "default")
  return self:no_default_branch()
end

--- The branches by name; records no predicate took are dropped.
function Splitter:no_default_branch()
  local outs = { self.stream:branch(unpack(self.preds)) }
  local by_name = {}
  for i, n in ipairs(self.names) do by_name[n] = outs[i] end
  return by_name
end

--- The records of both streams.
function Stream:merge(other)
  if getmetatable(other) ~= Stream then usage("merge: a stream expected") end
  local n = child(self, "pass", {})
  n.parents[2] = other
  other.children[#other.children + 1] = n
  n.key_changed = self.key_changed or other.key_changed
  return n
end

--- Write the records to `topic`. serdes: "json" or { key = ..., value = ... };
--- serde_opts: the avro serde's { schema = "schemas/x.avsc" } (the writer schema).
---@param topic string
---@param serdes? string|{ key?: string, value?: string, schema?: string, key_schema?: string }
---@param serde_opts? { schema?: string, key_schema?: string }
function Stream:to(topic, serdes, serde_opts)
  check_topic(topic, "to")
  declare_serdes(self.b, topic, serdes, "to", serde_opts)
  child(self, "to", { topic = topic })
  self.b.outputs[#self.b.outputs + 1] = topic
end

--- Write the records to a repartition topic keyed by their key and read
--- them back: afterwards every record of a key is on one partition.
---@param opts? { name?: string }
function Stream:repartition(opts)
  opts = opts or {}
  local b = self.b
  local name = opts.name or next_name(b, "repartition")
  local sink = child(self, "repartition", { name = name })
  local src = node(b, Stream, "source", { internal = name, key_changed = false })
  sink.source = src
  b.sources[#b.sources + 1] = src
  b.internal[#b.internal + 1] = name
  return src
end

--------------------------------------------------------------------------------
-- Grouping and aggregation

--- Group by the current key (through a repartition topic when an earlier
--- operator changed the key).
---@param opts? { name?: string } the repartition topic's name
function Stream:group_by_key(opts)
  local s = self.key_changed and self:repartition(opts) or self
  return setmetatable({ b = self.b, stream = s }, Grouped)
end

--- Group by a new key, fn(key, value, ctx): through a repartition topic
--- named opts.name (default: generated; name it to keep it across edits).
function Stream:group_by(fn, opts)
  need_fn(fn, "group_by", "(key, value) returning the group key")
  return self:select_key(fn):group_by_key(opts)
end

--- Aggregate in windows: tide.tumbling{...}, tide.hopping{...} or
--- tide.session{...}; grace (how late a record may be) may be given here.
function Grouped:windowed_by(w, grace)
  if self.table then usage("windowed_by: only a grouped stream has windows, not a regrouped table") end
  if not windows.is_window(w) then
    usage("windowed_by: tide.tumbling{...}, tide.hopping{...}, tide.session{...} or tide.sliding{...} expected")
  end
  if grace ~= nil then
    local copy = {}
    for k, v in pairs(w) do copy[k] = v end
    copy.grace = store.duration(grace, "grace")
    w = copy
  end
  return setmetatable({ b = self.b, stream = self.stream, table = self.table, window = w }, Grouped)
end

local function initializer(init)
  if type(init) == "function" then return init end
  if type(init) == "table" then
    local encode, decode = store.encode, store.decode
    local frozen = encode(init, "aggregate initial value")
    return function() return decode(frozen) end
  end
  return function() return init end
end

local function plus(a, b) return a + b end
local function minus(a, b) return a - b end
local function plus_one(agg) return agg + 1 end
local function minus_one(agg) return agg - 1 end

--- The aggregation itself: a table node fed by the grouped stream or table.
local function aggregation(self, kind, init, add, sub, merge, opts)
  opts = opts or {}
  local b = self.b
  local name = opts.name or next_name(b, kind)
  local decl
  if self.window then
    decl = windows.store_decl(self.window, opts.memory, opts.retention)
  else
    decl = store.kv{ memory = opts.memory }
  end
  local fields = { op = kind, store = M.add_store(b, name, decl), window = self.window,
    init = initializer(init), add = add, sub = sub, merge = merge, key_changed = false }
  if self.table then
    return child(self.table, "table_aggregate", fields, Table)
  end
  return child(self.stream, "aggregate", fields, Table)
end

--- Count records per key (a grouped table: rows per group).
--- opts of every aggregation: name (of its store), memory (keep it in Lua
--- tables), retention (windowed: how long windows are kept; default until
--- they close).
---@param opts? { name?: string, memory?: boolean, retention?: string|number }
function Grouped:count(opts)
  return aggregation(self, "count", 0, plus_one, minus_one, plus, opts)
end

--- Combine values per key: reducer(agg, value, key). For a grouped table
--- also subtractor(agg, old_value, key), run when a row leaves the group.
function Grouped:reduce(reducer, subtractor, opts)
  need_fn(reducer, "reduce", "(agg, value, key)")
  if type(subtractor) == "table" then subtractor, opts = nil, subtractor end
  if self.table then need_fn(subtractor, "reduce on a grouped table: subtractor", "(agg, value, key)") end
  local function add(agg, v, k)
    if agg == nil then return v end
    return reducer(agg, v, k)
  end
  return aggregation(self, "reduce", nil, add, subtractor,
    function(a, v, k) return reducer(a, v, k) end, opts)
end

--- Aggregate per key: init (a value, or function(key)), adder(agg, value, key).
--- A grouped table also needs subtractor(agg, old_value, key); session
--- windows need merger(agg1, agg2, key) in that place.
function Grouped:aggregate(init, adder, third, opts)
  need_fn(adder, "aggregate", "(agg, value, key)")
  if type(third) == "table" then third, opts = nil, third end
  local sub, merge
  if self.table then
    need_fn(third, "aggregate on a grouped table: subtractor", "(agg, value, key)")
    sub = third
  elseif self.window and self.window.kind == "session" then
    need_fn(third, "aggregate over session windows: merger", "(agg1, agg2, key)")
    merge = third
  end
  local function add(agg, v, k) return adder(agg, v, k) end
  return aggregation(self, "aggregate", init, add, sub, merge, opts)
end

--------------------------------------------------------------------------------
-- Tables

--- The table's changes as a stream: (key, new value); a delete is a nil
--- value. A windowed table's value is { start =, ["end"] =, value = }.
function Table:to_stream()
  return child(self, "to_stream", {}, Stream)
end

--- The rows for which fn(key, value, ctx) is true; a row that stops
--- passing is deleted downstream (a nil value), as KTable#filter.
function Table:filter(fn)
  need_fn(fn, "filter", "(key, value)")
  return child(self, "table_filter", { fn = fn, window = self.window })
end

--- Every row's value through fn(value, key, ctx), as KTable#mapValues.
function Table:map_values(fn)
  need_fn(fn, "map_values", "(value, key)")
  return child(self, "table_map_values", { fn = fn, window = self.window })
end

--- Hold a windowed table's updates until the window closes, and pass on
--- only its final value (Kafka Streams' untilWindowCloses).
---@param opts? { name?: string } the buffer store's name
function Table:suppress(opts)
  if not self.window then
    usage("suppress: only a windowed aggregation can be suppressed (until its window closes)")
  end
  opts = opts or {}
  local name = opts.name or (self.store .. "-suppress")
  return child(self, "suppress", { window = self.window, store = M.add_store(self.b, name, store.kv{}) })
end

--- Regroup a table by a new key, fn(key, value, ctx) returning key, value,
--- through a repartition topic; aggregate with add and subtract.
function Table:group_by(fn, opts)
  need_fn(fn, "group_by", "(key, value) returning key, value")
  if self.window then usage("group_by on a windowed table is not supported") end
  opts = opts or {}
  local b = self.b
  local name = opts.name or next_name(b, "repartition")
  local sink = child(self, "table_repartition", { name = name, fn = fn })
  local src = node(b, Table, "source", { internal = name, key_changed = false })
  sink.source = src
  b.sources[#b.sources + 1] = src
  b.internal[#b.internal + 1] = name
  return setmetatable({ b = b, table = src }, Grouped)
end

--------------------------------------------------------------------------------
-- Joins

local function join(self, tbl, joiner, left, op, opts)
  if getmetatable(tbl) ~= Table or tbl.window or not tbl.store then
    usage(op .. ": a table (tide.table or an aggregation) expected")
  end
  need_fn(joiner, op, "(value, table_value, key)")
  local s = self.key_changed and self:repartition(opts) or self
  return child(s, "join", { table = tbl, fn = joiner, left = left, key_changed = false })
end

--- Join each record with the table's current value for its key:
--- joiner(value, table_value, key) makes the result; records whose key is
--- not in the table are dropped.
function Stream:join(tbl, joiner, opts)
  return join(self, tbl, joiner, false, "join", opts)
end

--- As join, but a record whose key is not in the table is joined with nil.
function Stream:left_join(tbl, joiner, opts)
  return join(self, tbl, joiner, true, "left_join", opts)
end

--------------------------------------------------------------------------------
-- Loading

--- Start collecting what a loading script builds.
function M.begin()
  building = {
    nodes = {}, sources = {}, outputs = {}, internal = {}, stores = {}, serdes = {}, timestamps = {},
    seq = 0, options = {},
  }
  return building
end

--- Stop collecting; returns the builder (nil when nothing was built).
function M.finish()
  local b = building
  building = nil
  if b and #b.nodes == 0 and next(b.options) == nil then return nil end
  return b
end

--- Whether what a script returned is DSL-built (a stream, table or topology).
function M.is_dsl(v, b)
  if b == nil then return false end
  local mt = getmetatable(v)
  return v == b or mt == Stream or mt == Table or mt == Grouped or mt == Splitter
end

M.Stream, M.Table, M.Grouped = Stream, Table, Grouped

return M
