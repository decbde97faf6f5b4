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
--- Each load has its own builder (M.builder): the `tide` table a script sees
--- is bound to it (M.bind), so nothing here is shared between two loads.
---
--- Functions given to operators receive (key, value, ctx), except
--- map_values and flat_map_values (value, key, ctx), the aggregators
--- (agg, value, key) and the joiners (left, right, key). Re-keying before an
--- aggregation or a join goes through a repartition topic
--- <application.id>.<detector>-<name>-repartition, so that each key is
--- aggregated in one place, as in Kafka Streams.
---
--- Every operator takes a last `opts` table whose `name` names it: the name
--- a stateful operator gives its store (and changelog) and its internal
--- topics, and the name `tide describe` shows. A name is used once per
--- topology. Named, they stay the same when the script is edited.
local store = require("tide.store")
local windows = require("tide.windows")
local errors = require("tide.errors")

local usage, where = errors.usage, errors.caller
-- The classes below hide their metatables from detectors (__metatable), so
-- that one detector cannot change the DSL another one builds with; tide
-- reads them raw.
local getmetatable = debug.getmetatable
local source_topic

local M = {}

---@class tide.Builder what one loading script built: its nodes, stores, topics and options
---@field nodes tide.Node[] every operator, in the order the script made them
---@field sources tide.Node[] the nodes records enter by: topics, repartition and other internal topics
---@field outputs string[] topics written with to()
---@field internal string[] base names of internal topics (repartition, subscription, response)
---@field stores table<string, table> store declarations by name
---@field serdes table<string, { key?: string, value?: string }> per topic
---@field timestamps table<string, function> event-time functions per topic
---@field globals tide.GlobalTable[] the global tables
---@field names table<string, string> operator names in use, and where each was given
---@field options table what tide.topology{} was given
local Builder = {}
Builder.__index = Builder
Builder.__metatable = false -- shared by every load: not a detector's to change

---@class tide.Node an operator in the graph; Stream, Table and the join sides are nodes
---@field b tide.Builder
---@field kind string what the node does (its maker in tide.topology)
---@field name? string the name the script gave it
---@field id integer its position in the build order (for generated names)
---@field at string where the script made it (file:line)
---@field parents tide.Node[]
---@field children tide.Node[]
---@field key_changed boolean whether an operator before it may have changed the key

---@class tide.Stream: tide.Node a record stream (KStream): every record is an event
local Stream = {}
---@class tide.Table: tide.Node a changelog stream (KTable): the latest value per key
---@field rows? string the store that holds its rows, when it has one
---@field window? tide.Window set on a windowed table
local Table = {}
---@class tide.Grouped records grouped by key, ready to aggregate (KGroupedStream, KGroupedTable)
---@field stream? tide.Stream the grouped stream
---@field table? tide.Table the regrouped table (a repartition source)
---@field window? tide.Window set by windowed_by
local Grouped = {}
---@class tide.Splitter named branches being declared (KStream#split)
local Splitter = {}
---@class tide.Cogrouped several grouped streams aggregated into one store (KIP-150)
---@field inputs { grouped: tide.Grouped, add: function }[]
---@field window? tide.Window
local Cogrouped = {}
---@class tide.GlobalTable a table every worker holds in full (GlobalKTable); only streams join it
---@field topic string
---@field store string the store's name
local GlobalTable = {}

-- (__metatable: hidden from detectors, see the top of this file)
for _, class in ipairs({ Stream, Table, Grouped, Splitter, Cogrouped, GlobalTable }) do
  class.__index = class
  class.__metatable = false
end

local function need_fn(f, op, shape)
  if type(f) ~= "function" then
    usage(("%s: a function%s expected, got %s"):format(op, shape, type(f)))
  end
end

--- The name in an operator's opts: checked, and taken (a name is used once).
---@param b tide.Builder
---@param opts? table
---@param op string the operator, for errors
---@return string|nil
local function take_name(b, opts, op)
  if opts == nil then return nil end
  if type(opts) ~= "table" then usage(("%s: options must be a table like { name = \"...\" }, got %s"):format(op, type(opts))) end
  local name = opts.name
  if name == nil then return nil end
  if type(name) ~= "string" or not name:match("^[%w][%w_-]*$") then
    usage(("%s: name '%s' may only use letters, digits, '_' and '-'"):format(op, tostring(name)))
  end
  local before = b.names[name]
  if before then
    usage(("%s: the name '%s' is used already (%s): names in a topology are used once"):format(op, name, before))
  end
  b.names[name] = where() or "the script"
  return name
end

local function node(b, class, kind, fields)
  local n = fields or {}
  n.b, n.kind, n.children, n.parents = b, kind, {}, n.parents or {}
  n.at = where() or "the script's return"
  n.id = #b.nodes
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

--- A node fed by several parents (a merge, a join's result).
local function merge_node(parents, kind, fields, class)
  local n = node(parents[1].b, class, kind, fields)
  for i, p in ipairs(parents) do
    n.parents[i] = p
    p.children[#p.children + 1] = n
  end
  return n
end

--- A generated name for what the script did not name: it follows the order
--- of the stateful operators, so inserting one renames those after it.
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

--- Options given as a serde name ("json") or a table: always a table.
local function options(opts, op)
  if opts == nil then return {} end
  if type(opts) == "string" then return { value = opts } end
  if type(opts) ~= "table" then usage(("%s: options must be a serde name or a table, got %s"):format(op, type(opts))) end
  return opts
end

--- An internal topic's base name, refused when another has it.
local function add_internal(b, name)
  for _, n in ipairs(b.internal) do
    if n == name then usage(("an internal topic named '%s' exists already: give this operator another name"):format(name)) end
  end
  b.internal[#b.internal + 1] = name
  return name
end

--- Add a store declaration; a second store of that name is refused.
---@param b tide.Builder
---@param name string
---@param decl table tide.kv{} or tide.window{}
function M.add_store(b, name, decl)
  if b.stores[name] then usage(("a store named '%s' exists already: give this one another name"):format(name)) end
  b.stores[name] = decl
  return name
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

local function not_global(b, topic, op)
  for _, g in ipairs(b.globals) do
    if g.topic == topic then
      usage(("%s('%s'): the topic is a global table's already: a topic is read one way"):format(op, topic))
    end
  end
end

--- A stream of the records of `topic` (or of a list of topics, merged).
---@param topic string|string[]
---@param opts? string|{ key?: string, value?: string, timestamp?: fun(value: any, key: any): number, name?: string, schema?: string, key_schema?: string }
---@param serde_opts? { schema?: string, key_schema?: string } the avro serde's reader schema, as in tide.stream("payments", "avro", { schema = "schemas/x.avsc" })
---@return tide.Stream
function Builder:stream(topic, opts, serde_opts)
  if type(topic) == "table" then
    -- several topics, one stream: their records merged
    if #topic == 0 then usage("tide.stream: a topic name or a list of them expected") end
    local s = self:stream(topic[1], opts, serde_opts)
    for i = 2, #topic do s = s:merge(self:stream(topic[i], opts, serde_opts)) end
    return s
  end
  check_topic(topic, "tide.stream")
  not_global(self, topic, "tide.stream")
  opts = options(opts, "tide.stream")
  declare_serdes(self, topic, opts, "tide.stream", serde_opts)
  declare_timestamp(self, topic, opts, "tide.stream")
  local n = node(self, Stream, "source", { topic = topic, key_changed = false,
    name = take_name(self, opts, "tide.stream") })
  self.sources[#self.sources + 1] = n
  return n
end

--- A table from a topic: the latest value of each key; a null value (a
--- tombstone) deletes the key. It is kept in a key-value store (opts.name,
--- default the topic's name) so that streams and tables can join it.
---@param topic string
---@param opts? { key?: string, value?: string, name?: string, memory?: boolean, timestamp?: function }
---@return tide.Table
function Builder:table(topic, opts)
  check_topic(topic, "tide.table")
  not_global(self, topic, "tide.table")
  opts = options(opts, "tide.table")
  declare_serdes(self, topic, { key = opts.key, value = opts.value, schema = opts.schema,
    key_schema = opts.key_schema }, "tide.table")
  declare_timestamp(self, topic, opts, "tide.table")
  local name = take_name(self, opts, "tide.table")
  local n = node(self, Table, "table_source", { topic = topic, key_changed = false, name = name })
  n.rows = M.add_store(self, name or topic:gsub("[^%w_-]", "_"), store.kv{ memory = opts.memory })
  self.sources[#self.sources + 1] = n
  return n
end

--- A global table: every worker of the detector holds the whole topic, read
--- from its start before the first record is processed and kept up to date
--- as it grows. It has no changelog (the topic is its log). Streams join it
--- through a key mapper: stream:join(global, key_mapper, joiner).
---@param topic string
---@param opts? string|{ key?: string, value?: string, name?: string }
---@return tide.GlobalTable
function Builder:global_table(topic, opts)
  check_topic(topic, "tide.global_table")
  opts = options(opts, "tide.global_table")
  -- (its rows are decoded as they are read; an avro table is not supported yet)
  local readable_serdes = { string = true, bytes = true, json = true }
  for _, which in ipairs({ "key", "value" }) do
    if opts[which] ~= nil and not readable_serdes[opts[which]] then
      usage(("tide.global_table('%s'): %s serde '%s' is not one of string, bytes, json"):format(
        topic, which, tostring(opts[which])))
    end
  end
  if self.serdes[topic] then
    usage(("tide.global_table('%s'): the topic is read or written as a stream already"):format(topic))
  end
  not_global(self, topic, "tide.global_table")
  local name = take_name(self, opts, "tide.global_table") or topic:gsub("[^%w_-]", "_")
  local g = setmetatable({ b = self, topic = topic, at = where() or "the script", name = name }, GlobalTable)
  g.store = M.add_store(self, name, store.global{ topic = topic, key = opts.key, value = opts.value })
  self.globals[#self.globals + 1] = g
  return g
end

--- Options of the detector a DSL script makes.
local topology_options = {
  name = "string", description = "string", on_error = "string", serde = "string",
  key_serde = "string", init = "function", close = "function", stores = "table",
  punctuate = "table",
}

--- Detector options: return tide.topology{ name = ..., description = ... }.
---@param opts { name?: string, description?: string, on_error?: string, serde?: string, key_serde?: string, init?: function, close?: function, stores?: table, punctuate?: table }
---@return tide.Builder
function Builder:topology(opts)
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
  for name, decl in pairs(opts.stores or {}) do M.add_store(self, name, decl) end
  self.options = opts
  return self
end

--------------------------------------------------------------------------------
-- Stateless stream operators

--- Keep the records for which fn(key, value, ctx) is true.
---@param fn fun(key: any, value: any, ctx: table): boolean
---@param opts? { name?: string }
---@return tide.Stream
function Stream:filter(fn, opts)
  need_fn(fn, "filter", "(key, value)")
  return child(self, "filter", { fn = fn, name = take_name(self.b, opts, "filter") })
end

--- Drop the records for which fn(key, value, ctx) is true.
---@param fn fun(key: any, value: any, ctx: table): boolean
---@param opts? { name?: string }
---@return tide.Stream
function Stream:filter_not(fn, opts)
  need_fn(fn, "filter_not", "(key, value)")
  return child(self, "filter_not", { fn = fn, name = take_name(self.b, opts, "filter_not") })
end

--- A new key and value: fn(key, value, ctx) returns key, value.
---@param fn fun(key: any, value: any, ctx: table): any, any
---@param opts? { name?: string }
---@return tide.Stream
function Stream:map(fn, opts)
  need_fn(fn, "map", "(key, value) returning key, value")
  return child(self, "map", { fn = fn, key_changed = true, name = take_name(self.b, opts, "map") })
end

--- A new value: fn(value, key, ctx) returns it (map_values(string.upper)).
---@param fn fun(value: any, key: any, ctx: table): any
---@param opts? { name?: string }
---@return tide.Stream
function Stream:map_values(fn, opts)
  need_fn(fn, "map_values", "(value, key)")
  return child(self, "map_values", { fn = fn, name = take_name(self.b, opts, "map_values") })
end

--- Zero or more records per record: fn(key, value, ctx) returns a list of
--- { key, value } pairs.
---@param fn fun(key: any, value: any, ctx: table): table
---@param opts? { name?: string }
---@return tide.Stream
function Stream:flat_map(fn, opts)
  need_fn(fn, "flat_map", "(key, value) returning { { key, value }, ... }")
  return child(self, "flat_map", { fn = fn, key_changed = true, name = take_name(self.b, opts, "flat_map") })
end

--- Zero or more values per record, same key: fn(value, key, ctx) returns a list.
---@param fn fun(value: any, key: any, ctx: table): table
---@param opts? { name?: string }
---@return tide.Stream
function Stream:flat_map_values(fn, opts)
  need_fn(fn, "flat_map_values", "(value, key) returning a list of values")
  return child(self, "flat_map_values", { fn = fn, name = take_name(self.b, opts, "flat_map_values") })
end

--- Call fn(key, value, ctx) and pass the record on unchanged.
---@param fn fun(key: any, value: any, ctx: table)
---@param opts? { name?: string }
---@return tide.Stream
function Stream:peek(fn, opts)
  need_fn(fn, "peek", "(key, value)")
  return child(self, "peek", { fn = fn, name = take_name(self.b, opts, "peek") })
end

--- Call fn(key, value, ctx) for every record (the end of a branch).
---@param fn fun(key: any, value: any, ctx: table)
---@param opts? { name?: string }
function Stream:foreach(fn, opts)
  need_fn(fn, "foreach", "(key, value)")
  child(self, "peek", { fn = fn, name = take_name(self.b, opts, "foreach"), op = "foreach" })
end

--- A new key: fn(key, value, ctx) returns it; the value stays.
---@param fn fun(key: any, value: any, ctx: table): any
---@param opts? { name?: string }
---@return tide.Stream
function Stream:select_key(fn, opts)
  need_fn(fn, "select_key", "(key, value) returning the new key")
  return child(self, "select_key", { fn = fn, key_changed = true, name = take_name(self.b, opts, "select_key") })
end

--- Anything else, record by record: fn(key, value, ctx) returns the key
--- and value to pass on, or nothing to drop the record; it may use the
--- stores declared with tide.topology{ stores = ... } (ctx.stores) and
--- emit with ctx:emit (Kafka Streams' process()).
---@param fn fun(key: any, value: any, ctx: table): any, any
---@param opts? { name?: string }
---@return tide.Stream
function Stream:transform(fn, opts)
  need_fn(fn, "transform", "(key, value, ctx) returning key, value or nothing")
  return child(self, "transform", { fn = fn, key_changed = true, name = take_name(self.b, opts, "transform") })
end

--- Split by predicates: each record goes to the stream of the first
--- predicate fn(key, value, ctx) that is true, or nowhere.
---   local big, small = s:branch(is_big, is_small)
--- A last table argument { name = } names the branching.
---@return tide.Stream ... one stream per predicate
function Stream:branch(...)
  local preds = { ... }
  local opts
  if type(preds[#preds]) == "table" then opts = table.remove(preds) end
  if #preds == 0 then usage("branch: at least one predicate expected") end
  for i, p in ipairs(preds) do need_fn(p, "branch #" .. i, "(key, value)") end
  local name = take_name(self.b, opts, "branch")
  local sw = child(self, "branch", { preds = preds, outs = {}, name = name })
  local outs = {}
  for i = 1, #preds do
    outs[i] = child(sw, "pass", { name = name and (name .. "-" .. i) or nil, op = "branch" }, Stream)
    sw.outs[i] = outs[i]
  end
  return unpack(outs)
end

--- Named branches, Kafka Streams style:
---   local b = s:split():branch(is_big, "big"):branch(is_small, "small"):default_branch("rest")
---   b.big:to("big-payments")
---@param opts? { name?: string } the branching's name; branches are named <name>-<branch>
---@return tide.Splitter
function Stream:split(opts)
  return setmetatable({ stream = self, preds = {}, names = {}, opts = opts }, Splitter)
end

--- Add a branch: the records for which pred(key, value, ctx) is true (and
--- no earlier predicate was).
---@param pred fun(key: any, value: any, ctx: table): boolean
---@param name? string the branch's name in the table default_branch returns
---@return tide.Splitter
function Splitter:branch(pred, name)
  need_fn(pred, "split():branch", "(key, value)")
  self.preds[#self.preds + 1] = pred
  self.names[#self.names + 1] = name or tostring(#self.preds)
  return self
end

local function always() return true end

--- The branches by name, with `name` (default "default") taking the rest.
---@param name? string
---@return table<string, tide.Stream>
function Splitter:default_branch(name)
  self:branch(always, name or "default")
  return self:no_default_branch()
end

--- The branches by name; records no predicate took are dropped.
---@return table<string, tide.Stream>
function Splitter:no_default_branch()
  local args = { unpack(self.preds) }
  if self.opts then args[#args + 1] = self.opts end
  local outs = { self.stream:branch(unpack(args)) }
  local by_name = {}
  for i, n in ipairs(self.names) do by_name[n] = outs[i] end
  return by_name
end

--- The records of both streams.
---@param other tide.Stream
---@param opts? { name?: string }
---@return tide.Stream
function Stream:merge(other, opts)
  if getmetatable(other) ~= Stream then usage("merge: a stream expected") end
  local n = merge_node({ self, other }, "pass", { name = take_name(self.b, opts, "merge"), op = "merge" }, Stream)
  n.key_changed = self.key_changed or other.key_changed
  return n
end

--- Write the records to `topic`. serdes: "json" or { key = ..., value = ... },
--- which may also carry the operator's name; serde_opts: the avro serde's
--- { schema = "schemas/x.avsc" } (the writer schema).
---@param topic string
---@param serdes? string|{ key?: string, value?: string, schema?: string, key_schema?: string, name?: string }
---@param serde_opts? { schema?: string, key_schema?: string, name?: string }
function Stream:to(topic, serdes, serde_opts)
  check_topic(topic, "to")
  declare_serdes(self.b, topic, serdes, "to", serde_opts)
  local named = type(serdes) == "table" and serdes.name ~= nil and serdes or serde_opts
  local name = type(named) == "table" and take_name(self.b, named, "to") or nil
  child(self, "to", { topic = topic, name = name })
  self.b.outputs[#self.b.outputs + 1] = topic
end

--- Write the records to a repartition topic keyed by their key and read
--- them back: afterwards every record of a key is on one partition.
---@param opts? { name?: string }
---@return tide.Stream
function Stream:repartition(opts)
  local name = take_name(self.b, opts, "repartition")
  return M.repartition_as(self, name or next_name(self.b, "repartition"), name)
end

--- Repartition through the internal topic `base`; `name` (or nil) names the
--- two nodes (the sink and the source reading it back) in descriptions.
---@param s tide.Stream
---@param base string
---@param name? string
---@return tide.Stream
function M.repartition_as(s, base, name)
  local b = s.b
  add_internal(b, base)
  local sink = child(s, "repartition", { internal = base, name = name })
  local src = node(b, Stream, "source", { internal = base, key_changed = false,
    name = name and (name .. "-source") or nil })
  sink.source = src
  b.sources[#b.sources + 1] = src
  return src
end

--------------------------------------------------------------------------------
-- Grouping and aggregation

--- Group by the current key (through a repartition topic when an earlier
--- operator changed the key).
---@param opts? { name?: string } the repartition topic's name
---@return tide.Grouped
function Stream:group_by_key(opts)
  local s = self.key_changed and self:repartition(opts) or self
  if not self.key_changed then take_name(self.b, opts, "group_by_key") end
  return setmetatable({ b = self.b, stream = s }, Grouped)
end

--- Group by a new key, fn(key, value, ctx): through a repartition topic
--- named opts.name (default: generated; name it to keep it across edits).
---@param fn fun(key: any, value: any, ctx: table): any
---@param opts? { name?: string }
---@return tide.Grouped
function Stream:group_by(fn, opts)
  need_fn(fn, "group_by", "(key, value) returning the group key")
  return self:select_key(fn):group_by_key(opts)
end

local function with_grace(w, grace)
  if grace == nil then return w end
  local copy = {}
  for k, v in pairs(w) do copy[k] = v end
  copy.grace = store.duration(grace, "grace")
  return copy
end

--- Aggregate in windows: tide.tumbling{...}, tide.hopping{...},
--- tide.session{...} or tide.sliding{...}; grace (how late a record may be)
--- may be given here.
---@param w tide.Window
---@param grace? string|number
---@return tide.Grouped
function Grouped:windowed_by(w, grace)
  if self.table then usage("windowed_by: only a grouped stream has windows, not a regrouped table") end
  if not windows.is_window(w) then
    usage("windowed_by: tide.tumbling{...}, tide.hopping{...}, tide.session{...} or tide.sliding{...} expected")
  end
  return setmetatable({ b = self.b, stream = self.stream, table = self.table, window = with_grace(w, grace) }, Grouped)
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

local function aggregate_store(b, name, window, opts)
  if window then return M.add_store(b, name, windows.store_decl(window, opts.memory, opts.retention)) end
  return M.add_store(b, name, store.kv{ memory = opts.memory })
end

--- The aggregation itself: a table node fed by the grouped stream or table.
local function aggregation(self, kind, init, add, sub, merge, opts)
  local b = self.b
  local name = take_name(b, opts, kind)
  opts = opts or {}
  local st = aggregate_store(b, name or next_name(b, kind), self.window, opts)
  local fields = { op = kind, store = st, rows = not self.window and st or nil, window = self.window,
    init = initializer(init), add = add, sub = sub, merge = merge, key_changed = false, name = name }
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
---@return tide.Table
function Grouped:count(opts)
  return aggregation(self, "count", 0, plus_one, minus_one, plus, opts)
end

--- Combine values per key: reducer(agg, value, key). For a grouped table
--- also subtractor(agg, old_value, key), run when a row leaves the group.
---@param reducer fun(agg: any, value: any, key: any): any
---@param subtractor? fun(agg: any, value: any, key: any): any
---@param opts? { name?: string, memory?: boolean, retention?: string|number }
---@return tide.Table
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
---@param init any|fun(key: any): any
---@param adder fun(agg: any, value: any, key: any): any
---@param third? function|table the subtractor or merger, or opts
---@param opts? { name?: string, memory?: boolean, retention?: string|number }
---@return tide.Table
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

--- Start a cogrouped aggregation (KIP-150): several grouped streams update
--- one aggregate per key, each with its own aggregator(agg, value, key).
---   a:group_by_key():cogroup(add_a):cogroup(b:group_by_key(), add_b):aggregate(init)
---@param aggregator fun(agg: any, value: any, key: any): any
---@return tide.Cogrouped
function Grouped:cogroup(aggregator)
  if self.table then usage("cogroup: only grouped streams cogroup, not a regrouped table") end
  if self.window then usage("cogroup: cogroup first, then windowed_by on the cogrouped streams") end
  need_fn(aggregator, "cogroup", "(agg, value, key)")
  return setmetatable({ b = self.b, inputs = { { grouped = self, add = aggregator } } }, Cogrouped)
end

--- Add another grouped stream, with its aggregator.
---@param grouped tide.Grouped
---@param aggregator fun(agg: any, value: any, key: any): any
---@return tide.Cogrouped
function Cogrouped:cogroup(grouped, aggregator)
  if getmetatable(grouped) ~= Grouped or grouped.table or grouped.window then
    usage("cogroup: a grouped stream (group_by_key() or group_by()) expected")
  end
  need_fn(aggregator, "cogroup", "(agg, value, key)")
  for _, i in ipairs(self.inputs) do
    if i.grouped.stream == grouped.stream then usage("cogroup: this grouped stream is cogrouped already") end
  end
  self.inputs[#self.inputs + 1] = { grouped = grouped, add = aggregator }
  return self
end

--- Aggregate the cogrouped streams in windows (as Grouped:windowed_by).
---@param w tide.Window
---@param grace? string|number
---@return tide.Cogrouped
function Cogrouped:windowed_by(w, grace)
  if not windows.is_window(w) then
    usage("windowed_by: tide.tumbling{...}, tide.hopping{...}, tide.session{...} or tide.sliding{...} expected")
  end
  return setmetatable({ b = self.b, inputs = self.inputs, window = with_grace(w, grace) }, Cogrouped)
end

--- The aggregate of every cogrouped stream, in one store: init (a value,
--- or function(key)); session windows also take merger(agg1, agg2, key).
---@param init any|fun(key: any): any
---@param merger? fun(agg1: any, agg2: any, key: any): any|table
---@param opts? { name?: string, memory?: boolean, retention?: string|number }
---@return tide.Table
function Cogrouped:aggregate(init, merger, opts)
  if type(merger) == "table" then merger, opts = nil, merger end
  local b, w = self.b, self.window
  if w and w.kind == "session" then need_fn(merger, "cogroup aggregate over session windows: merger", "(agg1, agg2, key)") end
  local name = take_name(b, opts, "cogroup")
  opts = opts or {}
  local st = aggregate_store(b, name or next_name(b, "cogroup"), w, opts)
  local init_fn = initializer(init)
  local adds = {}
  for i, input in ipairs(self.inputs) do adds[i] = input.add end
  local sides = {}
  for i, input in ipairs(self.inputs) do
    local add = input.add
    sides[i] = child(input.grouped.stream, "aggregate", { op = "cogroup", store = st, window = w, init = init_fn,
      add = function(agg, v, k) return add(agg, v, k) end, merge = merger, adds = adds, input = i,
      key_changed = false, name = name and (name .. "-" .. i) or nil }, Table)
  end
  return merge_node(sides, "pass", { op = "cogroup-merge", store = st, rows = not w and st or nil, window = w,
    key_changed = false, name = name and (name .. "-merge") or nil }, Table)
end

--------------------------------------------------------------------------------
-- Tables

--- The table's changes as a stream: (key, new value); a delete is a nil
--- value. A windowed table's value is { start =, ["end"] =, value = }.
---@param opts? { name?: string }
---@return tide.Stream
function Table:to_stream(opts)
  return child(self, "to_stream", { name = take_name(self.b, opts, "to_stream") }, Stream)
end

--- The rows for which fn(key, value, ctx) is true; a row that stops
--- passing is deleted downstream (a nil value), as KTable#filter.
---@param fn fun(key: any, value: any, ctx: table): boolean
---@param opts? { name?: string }
---@return tide.Table
function Table:filter(fn, opts)
  need_fn(fn, "filter", "(key, value)")
  return child(self, "table_filter", { fn = fn, window = self.window, name = take_name(self.b, opts, "filter") })
end

--- Every row's value through fn(value, key, ctx), as KTable#mapValues.
---@param fn fun(value: any, key: any, ctx: table): any
---@param opts? { name?: string }
---@return tide.Table
function Table:map_values(fn, opts)
  need_fn(fn, "map_values", "(value, key)")
  return child(self, "table_map_values", { fn = fn, window = self.window, name = take_name(self.b, opts, "map_values") })
end

--- Hold a windowed table's updates until the window closes, and pass on
--- only its final value (Kafka Streams' untilWindowCloses).
---@param opts? { name?: string } the buffer store's name
---@return tide.Table
function Table:suppress(opts)
  if not self.window then
    usage("suppress: only a windowed aggregation can be suppressed (until its window closes)")
  end
  local name = take_name(self.b, opts, "suppress")
  local st = M.add_store(self.b, name or (self.store .. "-suppress"), store.kv{})
  return child(self, "suppress", { window = self.window, store = st, name = name })
end

--- Regroup a table by a new key, fn(key, value, ctx) returning key, value,
--- through a repartition topic; aggregate with add and subtract.
---@param fn fun(key: any, value: any, ctx: table): any, any
---@param opts? { name?: string }
---@return tide.Grouped
function Table:group_by(fn, opts)
  need_fn(fn, "group_by", "(key, value) returning key, value")
  if self.window then usage("group_by on a windowed table is not supported") end
  local b = self.b
  local name = take_name(b, opts, "group_by")
  local base = add_internal(b, name or next_name(b, "repartition"))
  local sink = child(self, "table_repartition", { internal = base, fn = fn, name = name })
  local src = node(b, Table, "source", { internal = base, key_changed = false,
    name = name and (name .. "-source") or nil })
  sink.source = src
  b.sources[#b.sources + 1] = src
  return setmetatable({ b = b, table = src }, Grouped)
end

--------------------------------------------------------------------------------
-- Joins

--- Whether a table's current value of a key can be read (for a join): it
--- keeps its rows in a store, or derives them from one (filter, map_values,
--- a table-table join).
local function readable(t)
  if getmetatable(t) ~= Table or t.window then return false end
  if t.rows then return true end
  if t.kind == "table_filter" or t.kind == "table_map_values" then return readable(t.parents[1]) end
  if t.kind == "table_join" then return readable(t.join.left) and readable(t.join.right) end
  return false
end

--- Join results carry the later of their rows' timestamps: the stores the
--- rows come from keep each row's time.
local function keep_times(t)
  if t.rows then
    local decl = t.b.stores[t.rows]
    decl.timestamped = true
  elseif t.kind == "table_join" then
    keep_times(t.join.left)
    keep_times(t.join.right)
  else
    keep_times(t.parents[1])
  end
end

local JOIN_KINDS = { join = "inner", left_join = "left", outer_join = "outer" }

--- The topic a table's keys come from as they are (tide.table's), or nil
--- (an aggregation's: keyed through a repartition topic, as strings).
function source_topic(t) -- (declared above)
  if t.kind == "table_source" then return t.topic end
  if t.kind == "table_filter" or t.kind == "table_map_values" then return source_topic(t.parents[1]) end
  return nil
end

--- stream:join(table, joiner): each record with the table's current value.
local function stream_table_join(self, tbl, joiner, kind, op, opts)
  need_fn(joiner, op, "(value, table_value, key)")
  if kind == "outer" then usage("outer_join: a stream joins a table with join or left_join only") end
  local b = self.b
  local name = take_name(b, opts, op)
  -- the join's name names the repartition topic a changed key goes through
  local s = self
  if self.key_changed then s = M.repartition_as(self, name or next_name(b, "repartition"), name and (name .. "-repartition")) end
  return child(s, "join", { table = tbl, fn = joiner, left = kind == "left", key_changed = false, name = name })
end

--- stream:join(global, key_mapper, joiner): each record with the global
--- table's value for key_mapper(key, value); no repartition is needed.
local function stream_global_join(self, g, mapper, joiner, kind, op, opts)
  if kind == "outer" then usage("outer_join: a stream joins a global table with join or left_join only") end
  need_fn(mapper, op, "(key, value) returning the global table's key")
  need_fn(joiner, op .. ": joiner", "(value, global_value, key)")
  return child(self, "global_join", { global = g, mapper = mapper, fn = joiner, left = kind == "left",
    name = take_name(self.b, opts, op) })
end

--- stream:join(other, joiner, tide.join_window{...}): both streams are
--- kept in window stores for the window's span and every pair of records
--- of one key within it is joined.
local function stream_stream_join(self, other, joiner, w, kind, op, opts)
  need_fn(joiner, op, "(left_value, right_value, key)")
  if not windows.is_join_window(w) then
    usage(op .. ": a stream joins a stream within tide.join_window{ before = ..., after = ..., grace = ... }")
  end
  local b = self.b
  local name = take_name(b, opts, op)
  local base = name or next_name(b, "join")
  local left = self.key_changed and M.repartition_as(self, base .. "-left", name and (name .. "-left")) or self
  local right = other.key_changed and M.repartition_as(other, base .. "-right", name and (name .. "-right")) or other
  local spec = { kind = kind, fn = joiner, window = w, name = base }
  local span = w.before + w.after
  local function window_store(suffix)
    return M.add_store(b, base .. suffix, store.window{ size = math.max(1, span), grace = w.grace,
      retention = math.max(1, span) + w.grace, memory = opts and opts.memory })
  end
  spec.this_store = window_store("-this-join-store")
  spec.other_store = window_store("-other-join-store")
  if kind ~= "inner" then spec.outer_store = M.add_store(b, base .. "-outer-shared-join-store", store.kv{ memory = opts and opts.memory }) end
  local this = child(left, "stream_join_side", { join = spec, side = "left", timed = true, key_changed = false,
    name = name and (name .. "-this") or nil })
  local that = child(right, "stream_join_side", { join = spec, side = "right", timed = true, key_changed = false,
    name = name and (name .. "-other") or nil })
  return merge_node({ this, that }, "pass", { op = "join-merge", key_changed = false, name = name and (name .. "-merge") or nil }, Stream)
end

local function stream_join(self, other, a, c, d, op)
  local kind = JOIN_KINDS[op]
  local mt = getmetatable(other)
  if mt == Stream then return stream_stream_join(self, other, a, c, kind, op, d) end
  if mt == GlobalTable then
    if other.b ~= self.b then usage(op .. ": the global table belongs to another script") end
    return stream_global_join(self, other, a, c, kind, op, d)
  end
  if not readable(other) then
    usage(op .. ": a stream (with tide.join_window), a table (tide.table, an aggregation) or a global table expected")
  end
  return stream_table_join(self, other, a, kind, op, c)
end

--- Join with a table, a global table or another stream:
---   stream:join(table, joiner(value, table_value, key) [, opts])
---   stream:join(global, key_mapper(key, value), joiner(value, global_value, key) [, opts])
---   stream:join(stream, joiner(left, right, key), tide.join_window{ before =, after =, grace = } [, opts])
--- An inner join: a record with no partner gives nothing.
---@param other tide.Table|tide.GlobalTable|tide.Stream
---@return tide.Stream
function Stream:join(other, a, b, c)
  return stream_join(self, other, a, b, c, "join")
end

--- As join, but a record with no partner is joined with nil; with another
--- stream, once its window has closed (as Kafka Streams since 3.1).
---@param other tide.Table|tide.GlobalTable|tide.Stream
---@return tide.Stream
function Stream:left_join(other, a, b, c)
  return stream_join(self, other, a, b, c, "left_join")
end

--- Two streams, each record of either side with no partner joined with nil
--- once its window has closed: joiner(left, nil, key) or joiner(nil, right, key).
---@param other tide.Stream
---@param joiner fun(left: any, right: any, key: any): any
---@param w table tide.join_window{...}
---@param opts? { name?: string, memory?: boolean }
---@return tide.Stream
function Stream:outer_join(other, joiner, w, opts)
  if getmetatable(other) ~= Stream then usage("outer_join: a stream joins another stream, within a tide.join_window") end
  return stream_join(self, other, joiner, w, opts, "outer_join")
end

--- table:join(other, joiner): a table of the joined rows, updated as either
--- side changes (Kafka Streams' KTable-KTable join).
local function table_table_join(self, other, joiner, kind, op, opts)
  need_fn(joiner, op, "(left_value, right_value, key)")
  if not readable(other) then usage(op .. ": a table (tide.table, an aggregation, a join of tables) expected") end
  keep_times(self)
  keep_times(other)
  local name = take_name(self.b, opts, op)
  local spec = { kind = kind, fn = joiner, left = self, right = other }
  local this = child(self, "table_join_side", { join = spec, side = "left", name = name and (name .. "-this") or nil }, Table)
  local that = child(other, "table_join_side", { join = spec, side = "right", name = name and (name .. "-other") or nil }, Table)
  return merge_node({ this, that }, "table_join", { join = spec, key_changed = false, name = name }, Table)
end

--- table:join(other, fk_extractor, joiner): each row joined with the row of
--- `other` whose key fk_extractor(value, key) returns (KIP-213). The rows
--- meet through two internal topics, as in Kafka Streams: a subscription
--- (keyed by the foreign key) and a response (keyed by this table's key).
local function fk_join(self, other, extract, joiner, kind, op, opts)
  need_fn(extract, op, "(value, key) returning the other table's key")
  need_fn(joiner, op .. ": joiner", "(left_value, right_value, key)")
  if kind == "outer" then usage("outer_join: a foreign-key join is a join or a left_join") end
  if not readable(other) then usage(op .. ": a table (tide.table, an aggregation) expected") end
  local b = self.b
  local name = take_name(b, opts, op)
  local base = name or next_name(b, "fk-join")
  local spec = { kind = kind, extract = extract, fn = joiner, left = self, right = other, name = base }
  spec.subscription = add_internal(b, base .. "-subscription")
  spec.response = add_internal(b, base .. "-response")
  -- A subscription must reach the partition of the other table's row, and
  -- an answer that of this table's row: their keys are written as those
  -- tables' topics write theirs (what Kafka's partitioner hashes).
  b.internal_keys[spec.subscription] = source_topic(other)
  b.internal_keys[spec.response] = source_topic(self)
  spec.subscriptions = M.add_store(b, base .. "-subscription-store", store.kv{ memory = opts and opts.memory })
  local result_store = M.add_store(b, base .. "-result", store.kv{ memory = opts and opts.memory })
  b.stores[result_store].timestamped = true
  spec.result_store = result_store
  child(self, "fk_subscribe", { join = spec, name = name and (name .. "-subscribe") or nil })
  local sub_src = node(b, Stream, "source", { internal = spec.subscription, key_changed = false,
    name = name and (name .. "-subscription-source") or nil })
  b.sources[#b.sources + 1] = sub_src
  child(sub_src, "fk_subscription", { join = spec, name = name and (name .. "-subscription") or nil })
  child(other, "fk_foreign", { join = spec, name = name and (name .. "-foreign") or nil })
  local resp_src = node(b, Stream, "source", { internal = spec.response, key_changed = false,
    name = name and (name .. "-response-source") or nil })
  b.sources[#b.sources + 1] = resp_src
  return child(resp_src, "fk_response", { join = spec, rows = result_store, key_changed = false, name = name }, Table)
end

local function table_join(self, other, a, c, d, op)
  local kind = JOIN_KINDS[op]
  if self.window or not readable(self) then
    usage(op .. ": this table keeps no rows to join (a windowed or suppressed table cannot join)")
  end
  if type(c) == "function" then return fk_join(self, other, a, c, kind, op, d) end
  return table_table_join(self, other, a, kind, op, c)
end

--- Join two tables on their key: joiner(left, right, key) for the keys in
--- both; the result updates as either side changes, and a row that leaves
--- the join is deleted (a nil value). With fk_extractor(value, key) as
--- second argument, a foreign-key join: table:join(other, fk, joiner).
---@param other tide.Table
---@return tide.Table
function Table:join(other, a, b, c)
  return table_join(self, other, a, b, c, "join")
end

--- As join, for every key of this table: joiner(left, nil, key) where the
--- other has none (or the foreign key finds nothing).
---@param other tide.Table
---@return tide.Table
function Table:left_join(other, a, b, c)
  return table_join(self, other, a, b, c, "left_join")
end

--- As join, for every key of either table.
---@param other tide.Table
---@param joiner fun(left: any, right: any, key: any): any
---@param opts? { name?: string }
---@return tide.Table
function Table:outer_join(other, joiner, opts)
  if type(opts) == "function" then usage("outer_join: a foreign-key join is a join or a left_join") end
  return table_join(self, other, joiner, opts, nil, "outer_join")
end

--------------------------------------------------------------------------------
-- Loading

--- A builder for one loading script.
---@return tide.Builder
function M.builder()
  return setmetatable({
    nodes = {}, sources = {}, outputs = {}, internal = {}, stores = {}, serdes = {}, timestamps = {},
    globals = {}, names = {}, seq = 0, options = {}, open = true, internal_keys = {},
  }, Builder)
end

local function bound(b, method)
  return function(...)
    if not b.open then
      usage(("tide.%s can only be used while the detector loads (at the top of the script)"):format(method))
    end
    return b[method](b, ...)
  end
end

--- The `tide` module as a script sees it while it loads into `b`: the
--- module's fields, with the DSL's entry points bound to this builder.
---@param tide table the tide module
---@param b tide.Builder
---@return table
function M.bind(tide, b)
  local t = {}
  for k, v in pairs(tide) do t[k] = v end
  for _, method in ipairs({ "stream", "table", "global_table", "topology" }) do t[method] = bound(b, method) end
  return t
end

--- The module-level entry points (require("tide").stream outside a load).
for _, method in ipairs({ "stream", "table", "global_table", "topology" }) do
  M[method] = function()
    usage(("tide.%s can only be used while a detector loads (at the top of its script)"):format(method))
  end
end

--- Stop building; returns the builder (nil when nothing was built).
---@param b tide.Builder
---@return tide.Builder|nil
function M.finish(b)
  b.open = false
  if #b.nodes == 0 and #b.globals == 0 and next(b.options) == nil then return nil end
  return b
end

--- Whether what a script returned is DSL-built (a stream, table or topology).
function M.is_dsl(v, b)
  if b == nil then return false end
  local mt = getmetatable(v)
  return v == b or mt == Stream or mt == Table or mt == Grouped or mt == Splitter or mt == Cogrouped
    or mt == GlobalTable
end

M.Stream, M.Table, M.Grouped, M.GlobalTable, M.Cogrouped = Stream, Table, Grouped, GlobalTable, Cogrouped

return M
