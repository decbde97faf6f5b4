--- Compiling what a DSL script built (tide.dsl) into a plain detector table:
--- inputs, outputs, serdes, stores and one process(rec, ctx).
---
--- Each node of the graph becomes a closure that takes a record and calls
--- the closures of its children; a source topic's closure is what process
--- calls. Stream nodes take (key, value); table nodes take (key, new, old,
--- window_start, window_end), the change of one row. A repartition topic
--- cuts the graph: its writer emits to the topic and its reader is a source.
local windows = require("tide.windows")
local describe = require("tide.describe")
local fields = require("tide.fields")
local copy = windows.copy

local M = {}

local function noop() end

--- Call every child with the record. A value that is a table reaches each
--- child but the last as a copy of its own: an operator that changes its
--- value in place (map_values adding a field) changes it for its own
--- branch only, never for a sibling (Kafka Streams asks that values not be
--- changed; in Lua nothing stops it, so siblings are kept apart). A chain
--- without branches copies nothing.
local function fanout(fs)
  local n = #fs
  if n == 0 then return noop end
  if n == 1 then return fs[1] end
  return function(a, b, c, d, e)
    if type(b) ~= "table" and type(c) ~= "table" then
      for i = 1, n do fs[i](a, b, c, d, e) end
      return
    end
    for i = 1, n - 1 do fs[i](a, copy(b), copy(c), d, e) end
    return fs[n](a, b, c, d, e)
  end
end
M.fanout = fanout

--- What a value serde accepts, checked before emitting so the error names
--- the to() that declared the topic.
local accepts = {
  string = { string = true, number = true, ["nil"] = true },
  bytes = { string = true, ["nil"] = true },
}

--- How many values a function returned, and the first two.
local function pass_on(...)
  return select("#", ...), ...
end

--- The makers: maker(n, out, env) returns the closure of node n, whose
--- children are reached through `out`.
local makers = {}

function makers.source(_, out) return out end
makers.pass = makers.source

function makers.filter(n, out, env)
  local fn, cur = n.fn, env.cur
  return function(k, v)
    if fn(k, v, cur.ctx) then return out(k, v) end
  end
end

function makers.filter_not(n, out, env)
  local fn, cur = n.fn, env.cur
  return function(k, v)
    if not fn(k, v, cur.ctx) then return out(k, v) end
  end
end

function makers.map(n, out, env)
  local fn, cur = n.fn, env.cur
  return function(k, v)
    local k2, v2 = fn(k, v, cur.ctx)
    return out(k2, v2)
  end
end

function makers.map_values(n, out, env)
  local fn, cur = n.fn, env.cur
  return function(k, v)
    return out(k, (fn(v, k, cur.ctx)))
  end
end

function makers.transform(n, out, env)
  local fn, cur = n.fn, env.cur
  return function(k, v)
    local n_out, k2, v2 = pass_on(fn(k, v, cur.ctx))
    if n_out > 0 then return out(k2, v2) end
  end
end

function makers.select_key(n, out, env)
  local fn, cur = n.fn, env.cur
  return function(k, v)
    return out((fn(k, v, cur.ctx)), v)
  end
end

function makers.peek(n, out, env)
  local fn, cur = n.fn, env.cur
  return function(k, v)
    fn(k, v, cur.ctx)
    return out(k, v)
  end
end

local function list_of(r, op, at)
  if r == nil then return {} end
  if type(r) ~= "table" then
    error(("%s (declared at %s) must return a list, got %s"):format(op, at, type(r)), 0)
  end
  return r
end

function makers.flat_map(n, out, env)
  local fn, cur = n.fn, env.cur
  return function(k, v)
    for _, kv in ipairs(list_of(fn(k, v, cur.ctx), "flat_map", n.at)) do
      local k2, v2 = kv[1], kv[2]
      if k2 == nil and v2 == nil then k2, v2 = kv.key, kv.value end
      out(k2, v2)
    end
  end
end

function makers.flat_map_values(n, out, env)
  local fn, cur = n.fn, env.cur
  return function(k, v)
    for _, v2 in ipairs(list_of(fn(v, k, cur.ctx), "flat_map_values", n.at)) do
      out(k, v2)
    end
  end
end

function makers.branch(n, _, env)
  local preds, cur = n.preds, env.cur
  local outs = {}
  for i, o in ipairs(n.outs) do outs[i] = env.push_of(o) end
  local count = #preds
  return function(k, v)
    local ctx = cur.ctx
    for i = 1, count do
      if preds[i](k, v, ctx) then return outs[i](k, v) end
    end
  end
end

function makers.to(n, _, env)
  local topic, cur = n.topic, env.cur
  local serde = env.value_serde(topic)
  local ok = accepts[serde]
  if not ok then
    return function(k, v) cur.ctx:forward(topic, k, v) end
  end
  return function(k, v)
    if not ok[type(v)] then
      error(("to('%s') at %s: the value is a %s but the topic's value serde is '%s'; "
        .. "declare to('%s', \"json\") to write tables"):format(topic, n.at, type(v), serde, topic), 0)
    end
    cur.ctx:forward(topic, k, v)
  end
end

--- Records with a nil key cannot be grouped: they are dropped, as in Kafka Streams.
function makers.repartition(n, _, env)
  local topic, cur = env.internal_topic(n.internal), env.cur
  return function(k, v)
    if k ~= nil then cur.ctx:forward(topic, k, v) end
  end
end

--- A table row changed: its old value leaves its group, its new one joins.
function makers.table_repartition(n, _, env)
  local topic, fn, cur = env.internal_topic(n.internal), n.fn, env.cur
  return function(k, new, old)
    local ctx = cur.ctx
    if old ~= nil then
      local k2, v2 = fn(k, old, ctx)
      if k2 ~= nil and v2 ~= nil then ctx:emit(topic, k2, { ["-"] = v2 }) end
    end
    if new ~= nil then
      local k2, v2 = fn(k, new, ctx)
      if k2 ~= nil and v2 ~= nil then ctx:emit(topic, k2, { ["+"] = v2 }) end
    end
  end
end

local function store_getter(env, name)
  local cur = env.cur
  return function() return cur.ctx.stores[name] end
end
M.store_getter = store_getter

function makers.table_source(n, out, env)
  local get_store, cur = store_getter(env, n.rows), env.cur
  return function(k, v)
    if k == nil then return end
    local s = get_store()
    local old = s:get(k)
    s:put(k, v, cur.ctx:_emit_time())
    out(k, v, old)
  end
end

function makers.aggregate(n, out, env)
  local get_store, init, add, cur = store_getter(env, n.store), n.init, n.add, env.cur
  local w = n.window
  if w and w.kind == "sliding" then
    return windows.sliding_step(w, cur, get_store, init, add, out, n.adds, n.input)
  elseif w and w.kind == "session" then
    return windows.session_step(w, cur, get_store, init, add, n.merge, out)
  elseif w then
    return windows.time_step(w, cur, get_store, init, add, out)
  end
  return function(k, v)
    if k == nil or v == nil then return end
    local s = get_store()
    local old = s:get(k)
    local new = add(old == nil and init(k) or copy(old), v, k)
    s:put(k, new, cur.ctx:_emit_time())
    out(k, new, old)
  end
end

--- A grouped table's aggregation: { ["-"] = v } subtracts, { ["+"] = v } adds.
function makers.table_aggregate(n, out, env)
  local get_store, init, add, sub, cur = store_getter(env, n.store), n.init, n.add, n.sub, env.cur
  return function(k, change)
    if k == nil or type(change) ~= "table" then return end
    local s = get_store()
    local old = s:get(k)
    local new = copy(old)
    if change["-"] ~= nil and new ~= nil then new = sub(new, change["-"], k) end
    if change["+"] ~= nil then new = add(new == nil and init(k) or new, change["+"], k) end
    s:put(k, new, cur.ctx:_emit_time())
    out(k, new, old)
  end
end

function makers.table_filter(n, out, env)
  local fn, cur = n.fn, env.cur
  return function(k, new, old, s, e)
    local ctx = cur.ctx
    if new ~= nil and not fn(k, new, ctx) then new = nil end
    if old ~= nil and not fn(k, old, ctx) then old = nil end
    if new == nil and old == nil then return end -- never in, still not in
    out(k, new, old, s, e)
  end
end

function makers.table_map_values(n, out, env)
  local fn, cur = n.fn, env.cur
  return function(k, new, old, s, e)
    local ctx = cur.ctx
    if new ~= nil then new = fn(new, k, ctx) end
    if old ~= nil then old = fn(old, k, ctx) end
    out(k, new, old, s, e)
  end
end

function makers.to_stream(n, out)
  if n.parents[1].window then
    -- A window that is gone (a session merged into a larger one, a row a
    -- filter no longer passes) comes as { start, end } with no value: Kafka
    -- Streams' tombstone for that window.
    return function(k, new, _, s, e)
      out(k, { start = s, ["end"] = e, value = new })
    end
  end
  return function(k, new) out(k, new) end
end

function makers.suppress(n, out, env)
  local step, check, reset = windows.suppress(n.window, env.cur, store_getter(env, n.store), out)
  env.after_record[#env.after_record + 1] = check
  env.on_task[#env.on_task + 1] = reset
  return step
end

--- A stream record joined with a table's current row (KStream-KTable).
function makers.join(n, out, env)
  local fn, left = n.fn, n.left
  local get = env.getter_of(n.table)
  return function(k, v)
    if v == nil then return end -- nothing to join (Kafka Streams drops it too)
    local tv
    if k ~= nil then tv = get(k) end
    if tv == nil and not left then return end
    return out(k, (fn(v, tv, k)))
  end
end

--- A stream record joined with a global table's row for key_mapper(key,
--- value) (KStream-GlobalKTable): no co-partitioning, no repartition.
function makers.global_join(n, out, env)
  local fn, left, mapper, cur, name = n.fn, n.left, n.mapper, env.cur, n.global.store
  return function(k, v)
    if v == nil then return end
    local gk = mapper(k, v, cur.ctx)
    local gv
    if gk ~= nil then gv = cur.ctx.stores[name]:get(gk) end
    if gv == nil and not left then return end
    return out(k, (fn(v, gv, k)))
  end
end

--------------------------------------------------------------------------------
-- Reading a table's current row (what joins look up): from the store that
-- keeps its rows, or derived from one (Kafka Streams' value getters).
-- A getter returns the row's value and the time it carries (nil: unknown).

local getters = {}

local function rows_getter(env, name)
  local get_store = store_getter(env, name)
  return function(k) return get_store():get_timed(k) end
end

function getters.table_filter(n, env)
  local parent, fn, cur = env.getter_of(n.parents[1]), n.fn, env.cur
  return function(k)
    local v, ts = parent(k)
    if v ~= nil and fn(k, v, cur.ctx) then return v, ts end
    return nil
  end
end

function getters.table_map_values(n, env)
  local parent, fn, cur = env.getter_of(n.parents[1]), n.fn, env.cur
  return function(k)
    local v, ts = parent(k)
    if v == nil then return nil end
    return fn(v, k, cur.ctx), ts
  end
end
M.getters = getters

-- the joins of two streams and of two tables (tide.joins)
local joins = require("tide.joins")
for kind, f in pairs(joins.makers) do makers[kind] = f end
for kind, f in pairs(joins.getters) do getters[kind] = f end

--- Add `t` to `list` unless it is there.
local function add_unique(list, seen, t)
  if not seen[t] then
    seen[t] = true
    list[#list + 1] = t
  end
end

--- Whether records reaching node n can change a window or a stream-stream
--- join (before any repartition topic, which starts a subtopology of its own).
local function reaches_window(n)
  if n.window or n.timed then return true end
  for _, c in ipairs(n.children) do
    if reaches_window(c) then return true end
  end
  return false
end

--- The input topics whose records advance stream time: with windows, only
--- those that feed them, as in Kafka Streams, where a repartition topic
--- starts another task with its own stream time. (An input topic whose
--- records merely pass on to a repartition topic would otherwise move a
--- window's clock with timestamps that never reach it.) nil: every input.
local function timed_topics(b, internal_topic)
  local set, any = {}, false
  for _, src in ipairs(b.sources) do
    if reaches_window(src) then
      set[src.topic or internal_topic(src.internal)] = true
      any = true
    end
  end
  return any and set or nil
end

--- The detector fields a script gave tide.topology{} (tide.fields marks
--- which it takes), passed on as they are.
local function passed_on(opts)
  local det = {}
  for _, f in ipairs(fields.list) do
    if f.topology then det[f.name] = opts[f.name] end
  end
  return det
end

--- The environment the makers share: the record being processed (cur), the
--- hooks run after each record and when a task starts, and the ways to a
--- node's closure (push_of) and to a table's current rows (getter_of).
local function environment(b, name, app, opts, serdes)
  local env = { cur = { ctx = nil, rec = nil }, after_record = {}, on_task = {} }
  function env.store_getter(store_name) return store_getter(env, store_name) end
  function env.internal_topic(base) return ("%s.%s-%s-repartition"):format(app, name, base) end
  function env.changelog(store_name) return ("%s.%s-%s-changelog"):format(app, name, store_name) end
  function env.value_serde(t)
    return (serdes[t] and serdes[t].value) or opts.serde or "string"
  end
  local pushers = {}
  function env.push_of(n)
    local f = pushers[n]
    if f then return f end
    local kids = {}
    for i, c in ipairs(n.children) do kids[i] = env.push_of(c) end
    f = makers[n.kind](n, fanout(kids), env)
    pushers[n] = f
    return f
  end
  local got = {}
  function env.getter_of(t)
    local f = got[t]
    if f then return f end
    if t.rows then
      f = rows_getter(env, t.rows)
    else
      local g = getters[t.kind]
      if not g then error(("a table made by %s (at %s) keeps no rows to read"):format(t.kind, t.at), 0) end
      f = g(t, env)
    end
    got[t] = f
    return f
  end
  return env
end

--- The detector table of builder `b`.
---@param b table what tide.dsl collected while the script loaded
---@param default_name string the detector's name when the script sets none
---@param app string application.id, which names the repartition topics
function M.compile(b, default_name, app)
  local opts = b.options
  local name = opts.name or default_name
  local serdes = {}
  for t, sd in pairs(b.serdes) do serdes[t] = sd end
  local env = environment(b, name, app, opts, serdes)

  local inputs, outputs, seen_in, seen_out = {}, {}, {}, {}
  local by_topic = {}
  for _, src in ipairs(b.sources) do
    local topic = src.topic or env.internal_topic(src.internal)
    add_unique(inputs, seen_in, topic)
    local list = by_topic[topic] or {}
    by_topic[topic] = list
    list[#list + 1] = env.push_of(src)
  end
  for _, t in ipairs(b.outputs) do add_unique(outputs, seen_out, t) end
  for _, n in ipairs(b.internal) do
    local t = env.internal_topic(n)
    add_unique(outputs, seen_out, t)
    local like = b.internal_keys[n]
    serdes[t] = { key = like and serdes[like] and serdes[like].key or (like and opts.key_serde) or "string",
      value = "json" }
  end
  if #inputs == 0 then
    error("the script builds no stream: start with tide.stream(\"topic\") or tide.table(\"topic\")", 0)
  end
  for t, list in pairs(by_topic) do by_topic[t] = fanout(list) end
  local timed = timed_topics(b, env.internal_topic)

  local cur, after = env.cur, env.after_record
  local n_after = #after
  local single = #inputs == 1 and by_topic[inputs[1]] or nil
  local function process(rec, ctx)
    cur.ctx, cur.rec = ctx, rec
    if single then
      single(rec.key, rec.value)
    else
      by_topic[rec.topic](rec.key, rec.value)
    end
    for i = 1, n_after do after[i]() end
  end

  local resets = env.on_task
  local on_task
  if #resets > 0 then
    on_task = function(ctx, p)
      cur.ctx = ctx
      for _, r in ipairs(resets) do r(p) end
    end
  end
  local det = passed_on(opts)
  det.name, det.description = name, opts.description or describe.summary(b)
  det.inputs, det.outputs, det.serdes, det.stores = inputs, outputs, serdes, b.stores
  det.process, det.on_task, det.stream_time_topics = process, on_task, timed
  det.timestamps = next(b.timestamps) and b.timestamps or nil
  det.dsl = {
    topology = describe.of_builder(b, { detector = name, internal_topic = env.internal_topic,
      changelog = env.changelog }),
  }
  return det
end

return M
