--- Descriptions of a detector's topology: what `tide describe` prints, the
--- status page draws, and the one-line summary a DSL detector shows when it
--- gives no description of its own.
---
--- The structure follows Kafka Streams' Topology#describe(): sub-topologies
--- (the parts of the graph that a repartition topic separates; one task per
--- input partition runs each), made of sources, processors and sinks, with
--- the stores each processor uses; the global tables each in a sub-topology
--- of their own that makes no task. tide adds the stores and the internal
--- topics (changelogs, repartition topics) by name.
local M = {}

---@class tide.TopologyNode
---@field name string
---@field type "source"|"processor"|"sink"
---@field topics? string[] a source's topics
---@field topic? string a sink's topic
---@field stores string[] the stores a processor reads or writes
---@field next string[] successors' names
---@field prev string[] predecessors' names

---@class tide.TopologyDescription
---@field detector string
---@field subtopologies { id: integer, global?: boolean, nodes: tide.TopologyNode[] }[]
---@field stores { name: string, kind: string, changelog?: string, global?: string }[]
---@field internal_topics { name: string, kind: string, store?: string }[]

-- Generated names, as Kafka Streams makes them (KSTREAM-FILTER-0000000003).
local KIND_NAMES = {
  source = "KSTREAM-SOURCE", filter = "KSTREAM-FILTER", filter_not = "KSTREAM-FILTER",
  map = "KSTREAM-MAP", map_values = "KSTREAM-MAPVALUES", flat_map = "KSTREAM-FLATMAP",
  flat_map_values = "KSTREAM-FLATMAPVALUES", peek = "KSTREAM-PEEK", select_key = "KSTREAM-KEY-SELECT",
  transform = "KSTREAM-PROCESSOR", branch = "KSTREAM-BRANCH", to = "KSTREAM-SINK",
  repartition = "KSTREAM-SINK", aggregate = "KSTREAM-AGGREGATE", table_aggregate = "KTABLE-AGGREGATE",
  table_filter = "KTABLE-FILTER", table_map_values = "KTABLE-MAPVALUES", to_stream = "KTABLE-TOSTREAM",
  suppress = "KTABLE-SUPPRESS", table_repartition = "KTABLE-SINK", join = "KSTREAM-JOIN",
  global_join = "KSTREAM-GLOBALJOIN", table_join = "KTABLE-MERGE", table_source = "KTABLE-SOURCE",
  fk_subscribe = "KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION", fk_subscription = "KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR",
  fk_foreign = "KTABLE-FK-JOIN-FOREIGN", fk_response = "KTABLE-FK-JOIN-OUTPUT",
}

local OP_NAMES = {
  foreach = "KSTREAM-FOREACH", branch = "KSTREAM-BRANCHCHILD", merge = "KSTREAM-MERGE",
  ["join-merge"] = "KSTREAM-MERGE", cogroup = "COGROUPKSTREAM-AGGREGATE",
  ["cogroup-merge"] = "COGROUPKSTREAM-MERGE", reduce = "KSTREAM-REDUCE",
}

local function generated(n)
  local base = OP_NAMES[n.op] or KIND_NAMES[n.kind] or ("KSTREAM-" .. n.kind:upper())
  if n.kind == "table_aggregate" and n.op == "reduce" then base = "KTABLE-REDUCE" end
  if n.kind == "stream_join_side" then
    base = (n.join.kind == "outer" and "KSTREAM-OUTER" or "KSTREAM-JOIN") .. (n.side == "left" and "THIS" or "OTHER")
  elseif n.kind == "table_join_side" then
    base = "KTABLE-JOIN" .. (n.side == "left" and "THIS" or "OTHER")
  elseif n.kind == "join" and n.left then
    base = "KSTREAM-LEFTJOIN"
  end
  return ("%s-%010d"):format(base, n.id)
end

--- The name a node shows: the script's, or a generated one.
local function name_of(n)
  return n.name or generated(n)
end
M.name_of = name_of

--- The stores a table's current rows are read from (what a join looks up).
local function row_stores(t, out)
  out = out or {}
  if t.rows then
    out[#out + 1] = t.rows
  elseif t.kind == "table_join" then
    row_stores(t.join.left, out)
    row_stores(t.join.right, out)
  elseif t.parents[1] then
    row_stores(t.parents[1], out)
  end
  return out
end

local function append(list, more)
  for _, x in ipairs(more) do list[#list + 1] = x end
  return list
end

--- The stores node n uses.
local function stores_of(n)
  local k = n.kind
  if k == "table_source" then return { n.rows } end
  if k == "aggregate" or k == "table_aggregate" or k == "suppress" then return { n.store } end
  if k == "join" then return row_stores(n.table) end
  if k == "global_join" then return { n.global.store } end
  if k == "stream_join_side" then
    local j = n.join
    local own, other = j.this_store, j.other_store
    if n.side == "right" then own, other = other, own end
    return { own, other, j.outer_store }
  end
  if k == "table_join_side" then return row_stores(n.side == "left" and n.join.right or n.join.left) end
  if k == "fk_subscribe" then return { n.join.result_store } end
  if k == "fk_subscription" then return append({ n.join.subscriptions }, row_stores(n.join.right)) end
  if k == "fk_foreign" then return { n.join.subscriptions } end
  if k == "fk_response" then return append({ n.rows }, row_stores(n.join.left)) end
  return {}
end

--- The internal topic a processor writes besides its children (the
--- foreign-key join's subscription and response topics): shown as a sink.
local function side_sink(n)
  if n.kind == "fk_subscribe" then return n.join.subscription end
  if n.kind == "fk_subscription" or n.kind == "fk_foreign" then return n.join.response end
  return nil
end

--- Union-find over node ids.
local function groups(count)
  local up = {}
  for i = 0, count - 1 do up[i] = i end
  local function find(i)
    while up[i] ~= i do
      up[i] = up[up[i]]
      i = up[i]
    end
    return i
  end
  local function union(a, b)
    a, b = find(a), find(b)
    if a < b then up[b] = a elseif b < a then up[a] = b end
  end
  return find, union
end

--- Which sub-topology each node is in: nodes joined by an edge or sharing
--- a store (a table and the join that reads it) run in one task. Returns
--- find(node id) -> the id that names its group.
local function group_nodes(b)
  local find, union = groups(#b.nodes)
  local by_store = {}
  for _, n in ipairs(b.nodes) do
    for _, c in ipairs(n.children) do union(n.id, c.id) end
    for _, s in ipairs(stores_of(n)) do
      if not b.stores[s].global then
        if by_store[s] then union(by_store[s], n.id) else by_store[s] = n.id end
      end
    end
  end
  return find
end

--- Node n as described, with the extra nodes Kafka Streams shows: a
--- table's source, and the sink of a processor that also writes an internal
--- topic. Appended to `list`; returns n's own entry.
local function describe_node(n, ctx, list)
  local e = { name = name_of(n), type = "processor", stores = stores_of(n), next = {}, prev = {} }
  if n.kind == "source" then
    e.type, e.stores = "source", nil
    e.topics = { n.topic or ctx.internal_topic(n.internal) }
  elseif n.kind == "to" then
    e.type, e.stores, e.topic = "sink", nil, n.topic
  elseif n.kind == "repartition" or n.kind == "table_repartition" then
    e.type, e.stores, e.topic = "sink", nil, ctx.internal_topic(n.internal)
  elseif n.kind == "table_source" then
    local src = { name = n.name and (n.name .. "-source") or ("KSTREAM-SOURCE-%010d"):format(n.id),
      type = "source", topics = { n.topic }, next = { e.name }, prev = {} }
    e.prev[1] = src.name
    list[#list + 1] = src
  end
  list[#list + 1] = e
  local topic = side_sink(n)
  if topic then
    local sink = { name = e.name .. "-sink", type = "sink", topic = ctx.internal_topic(topic), next = {}, prev = { e.name } }
    e.next[#e.next + 1] = sink.name
    list[#list + 1] = sink
  end
  return e
end

--- The stores, and the internal topics (repartition topics, changelogs).
local function describe_resources(b, ctx, desc)
  for _, base in ipairs(b.internal) do
    desc.internal_topics[#desc.internal_topics + 1] = { name = ctx.internal_topic(base), kind = "repartition" }
  end
  local names = {}
  for name in pairs(b.stores) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local decl = b.stores[name]
    local entry = { name = name, kind = decl.global and "global" or (decl.kind == "window" and "window" or "key-value") }
    if decl.global then
      entry.global = decl.global
    else
      entry.changelog = ctx.changelog(name)
      desc.internal_topics[#desc.internal_topics + 1] = { name = entry.changelog, kind = "changelog", store = name }
    end
    desc.stores[#desc.stores + 1] = entry
  end
end

--- The description of a DSL builder.
---@param b table what tide.dsl built
---@param ctx { detector: string, internal_topic: fun(base: string): string, changelog: fun(store: string): string }
---@return tide.TopologyDescription
function M.of_builder(b, ctx)
  local find = group_nodes(b)
  local subs, order, entries = {}, {}, {}
  for _, n in ipairs(b.nodes) do
    local root = find(n.id)
    if not subs[root] then
      subs[root] = {}
      order[#order + 1] = subs[root]
    end
    entries[n] = describe_node(n, ctx, subs[root])
  end
  for _, n in ipairs(b.nodes) do
    for _, c in ipairs(n.children) do
      table.insert(entries[n].next, entries[c].name)
      table.insert(entries[c].prev, entries[n].name)
    end
  end
  local desc = { detector = ctx.detector, subtopologies = {}, stores = {}, internal_topics = {} }
  for i, list in ipairs(order) do
    -- sources first, as Kafka Streams lists them; otherwise in build order
    local nodes = {}
    for _, e in ipairs(list) do if e.type == "source" then nodes[#nodes + 1] = e end end
    for _, e in ipairs(list) do if e.type ~= "source" then nodes[#nodes + 1] = e end end
    desc.subtopologies[i] = { id = i - 1, nodes = nodes }
  end
  for _, g in ipairs(b.globals) do
    local src = { name = g.name .. "-source", type = "source", topics = { g.topic }, next = { g.name }, prev = {} }
    local proc = { name = g.name, type = "processor", stores = { g.store }, next = {}, prev = { src.name } }
    desc.subtopologies[#desc.subtopologies + 1] = { id = #desc.subtopologies, global = true, nodes = { src, proc } }
  end
  describe_resources(b, ctx, desc)
  return desc
end

--- The description of a hand-written detector: its inputs, one processor
--- (process) with every store, and a sink per output.
---@param spec table a validated detector
---@param changelog fun(store: string): string
---@return tide.TopologyDescription
function M.of_detector(spec, changelog)
  local names = {}
  for name in pairs(spec.stores or {}) do names[#names + 1] = name end
  table.sort(names)
  local src = { name = "source", type = "source", topics = {}, next = { "process" }, prev = {} }
  for i, t in ipairs(spec.inputs) do src.topics[i] = t end
  local proc = { name = "process", type = "processor", stores = names, next = {}, prev = { "source" } }
  local nodes = { src, proc }
  for _, t in ipairs(spec.outputs) do
    local sink = { name = "sink-" .. t, type = "sink", topic = t, next = {}, prev = { "process" } }
    proc.next[#proc.next + 1] = sink.name
    nodes[#nodes + 1] = sink
  end
  local desc = { detector = spec.name, subtopologies = { { id = 0, nodes = nodes } }, stores = {}, internal_topics = {} }
  for _, name in ipairs(names) do
    local decl = spec.stores[name]
    local entry = { name = name, kind = decl.kind == "window" and "window" or "key-value", changelog = changelog(name) }
    desc.stores[#desc.stores + 1] = entry
    desc.internal_topics[#desc.internal_topics + 1] = { name = entry.changelog, kind = "changelog", store = name }
  end
  return desc
end

local function list(t)
  return "[" .. table.concat(t or {}, ", ") .. "]"
end

--- The description as text, laid out as Kafka Streams' TopologyDescription
--- prints, then the stores and the internal topics.
---@param desc tide.TopologyDescription
---@return string
function M.text(desc)
  local out = { "Topologies:" }
  local function add(s) out[#out + 1] = s end
  for _, st in ipairs(desc.subtopologies) do
    add(("   Sub-topology: %d%s"):format(st.id, st.global and " for global store (will not generate tasks)" or ""))
    for _, n in ipairs(st.nodes) do
      if n.type == "source" then
        add(("    Source: %s (topics: %s)"):format(n.name, list(n.topics)))
        add("      --> " .. (#n.next > 0 and table.concat(n.next, ", ") or "none"))
      elseif n.type == "sink" then
        add(("    Sink: %s (topic: %s)"):format(n.name, n.topic))
        add("      <-- " .. table.concat(n.prev, ", "))
      else
        add(("    Processor: %s (stores: %s)"):format(n.name, list(n.stores)))
        add("      --> " .. (#n.next > 0 and table.concat(n.next, ", ") or "none"))
        add("      <-- " .. table.concat(n.prev, ", "))
      end
    end
    add("")
  end
  if #desc.stores > 0 then
    add("Stores:")
    for _, s in ipairs(desc.stores) do
      if s.global then
        add(("  %s (global table of %s, every worker holds all of it; no changelog)"):format(s.name, s.global))
      else
        add(("  %s (%s; changelog %s)"):format(s.name, s.kind, s.changelog))
      end
    end
    add("")
  end
  if #desc.internal_topics > 0 then
    add("Internal topics:")
    for _, t in ipairs(desc.internal_topics) do
      add(("  %s (%s%s)"):format(t.name, t.kind, t.store and (" of store " .. t.store) or ""))
    end
    add("")
  end
  return table.concat(out, "\n")
end

--------------------------------------------------------------------------------
-- The one-line summary

--- What a node shows in a topology's one-line description.
local function label(n, internal_topic)
  if n.kind == "source" then return n.topic or ("repartition " .. n.internal) end
  if n.kind == "table_source" then return "table " .. n.topic end
  if n.kind == "to" then return "to " .. n.topic end
  if n.kind == "repartition" or n.kind == "table_repartition" then return "repartition " .. n.internal end
  if n.kind == "pass" and n.op ~= "join-merge" and n.op ~= "cogroup-merge" then return nil end
  if n.kind == "global_join" then return (n.left and "left_join" or "join") .. " global " .. n.global.topic end
  if n.kind == "stream_join_side" then return n.join.kind .. " join " .. n.side end
  if n.kind == "table_join_side" then return "table " .. n.join.kind .. " join " .. n.side end
  if n.kind:match("^fk_") then return n.kind:gsub("_", " ", 1) end
  local l = n.op or n.kind:gsub("^table_", "")
  if n.window and n.kind ~= "suppress" then l = l .. " " .. n.window.kind end
  if n.store then l = l .. " [" .. n.store .. "]" elseif n.rows then l = l .. " [" .. n.rows .. "]" end
  return l
end

--- The operators from n on: "a > b > (c > d | e)". A node fed by several
--- parents (a join's result, a merge) is followed from its first parent only.
local function chain(n)
  local parts = {}
  local l = label(n)
  if l then parts[1] = l end
  local kids = {}
  for _, c in ipairs(n.children) do
    if c.parents[1] == n then kids[#kids + 1] = chain(c) else kids[#kids + 1] = "(" .. (label(c) or "merge") .. ")" end
  end
  if #kids == 1 then
    parts[#parts + 1] = kids[1]
  elseif #kids > 1 then
    parts[#parts + 1] = "(" .. table.concat(kids, " | ") .. ")"
  end
  return table.concat(parts, " > ")
end

--- A one-line description of the graph, for the status page when the
--- script gives none: "lines > flat_map_values > repartition words; ...".
function M.summary(b)
  local parts = {}
  for i, src in ipairs(b.sources) do parts[i] = chain(src) end
  return table.concat(parts, "; ")
end

return M
