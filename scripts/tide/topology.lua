--- Compiling what a DSL script built (tide.dsl) into a plain detector table:
--- inputs, outputs, serdes, stores and one process(rec, ctx).
---
--- Each node of the graph becomes a closure that takes a record and calls
--- the closures of its children; a source topic's closure is what process
--- calls. Stream nodes take (key, value); table nodes take (key, new, old,
--- window_start, window_end), the change of one row. A repartition topic
--- cuts the graph: its writer emits to the topic and its reader is a source.
local windows = require("tide.windows")
local fields = require("tide.fields")
local copy = windows.copy

local M = {}

local function noop() end

local function fanout(fs)
  local n = #fs
  if n == 0 then return noop end
  if n == 1 then return fs[1] end
  return function(a, b, c, d, e)
    for i = 1, n do fs[i](a, b, c, d, e) end
  end
end

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
  local topic, cur = env.internal_topic(n.name), env.cur
  return function(k, v)
    if k ~= nil then cur.ctx:forward(topic, k, v) end
  end
end

--- A table row changed: its old value leaves its group, its new one joins.
function makers.table_repartition(n, _, env)
  local topic, fn, cur = env.internal_topic(n.name), n.fn, env.cur
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

function makers.table_source(n, out, env)
  local get_store = store_getter(env, n.store)
  return function(k, v)
    if k == nil then return end
    local s = get_store()
    local old = s:get(k)
    s:put(k, v)
    out(k, v, old)
  end
end

function makers.aggregate(n, out, env)
  local get_store, init, add = store_getter(env, n.store), n.init, n.add
  local w = n.window
  if w and w.kind == "sliding" then
    return windows.sliding_step(w, env.cur, get_store, init, add, out)
  elseif w and w.kind == "session" then
    return windows.session_step(w, env.cur, get_store, init, add, n.merge, out)
  elseif w then
    return windows.time_step(w, env.cur, get_store, init, add, out)
  end
  return function(k, v)
    if k == nil or v == nil then return end
    local s = get_store()
    local old = s:get(k)
    local new = add(old == nil and init(k) or copy(old), v, k)
    s:put(k, new)
    out(k, new, old)
  end
end

--- A grouped table's aggregation: { ["-"] = v } subtracts, { ["+"] = v } adds.
function makers.table_aggregate(n, out, env)
  local get_store, init, add, sub = store_getter(env, n.store), n.init, n.add, n.sub
  return function(k, change)
    if k == nil or type(change) ~= "table" then return end
    local s = get_store()
    local old = s:get(k)
    local new = copy(old)
    if change["-"] ~= nil and new ~= nil then new = sub(new, change["-"], k) end
    if change["+"] ~= nil then new = add(new == nil and init(k) or new, change["+"], k) end
    s:put(k, new)
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

function makers.join(n, out, env)
  local fn, left, cur = n.fn, n.left, env.cur
  local get_store = store_getter(env, n.table.store)
  return function(k, v)
    if v == nil then return end -- nothing to join (Kafka Streams drops it too)
    local tv
    if k ~= nil then tv = get_store():get(k) end
    if tv == nil and not left then return end
    return out(k, (fn(v, tv, k)))
  end
end

--- Add `t` to `list` unless it is there.
local function add_unique(list, seen, t)
  if not seen[t] then
    seen[t] = true
    list[#list + 1] = t
  end
end

--- Whether records reaching node n can change a window (before any
--- repartition topic, which starts a subtopology of its own).
local function reaches_window(n)
  if n.window then return true end
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

--- What a node shows in a topology's one-line description.
local function label(n)
  if n.kind == "source" then return n.topic or ("repartition " .. n.internal) end
  if n.kind == "table_source" then return "table " .. n.topic end
  if n.kind == "to" then return "to " .. n.topic end
  if n.kind == "repartition" or n.kind == "table_repartition" then return "repartition " .. n.name end
  if n.kind == "pass" then return nil end
  local l = n.op or n.kind:gsub("^table_", "")
  if n.window and n.kind ~= "suppress" then l = l .. " " .. n.window.kind end
  if n.store then l = l .. " [" .. n.store .. "]" end
  return l
end

--- The operators from n on: "a > b > (c > d | e)".
local function chain(n)
  local parts = {}
  local l = label(n)
  if l then parts[1] = l end
  local kids = {}
  for i, c in ipairs(n.children) do kids[i] = chain(c) end
  if #kids == 1 then
    parts[#parts + 1] = kids[1]
  elseif #kids > 1 then
    parts[#parts + 1] = "(" .. table.concat(kids, " | ") .. ")"
  end
  return table.concat(parts, " > ")
end

--- A one-line description of the graph, for the status page when the
--- script gives none: "lines > flat_map_values > repartition words; ...".
local function describe(b)
  local parts = {}
  for i, src in ipairs(b.sources) do parts[i] = chain(src) end
  return table.concat(parts, "; ")
end
M.describe = describe

--- The detector fields a script gave tide.topology{} (tide.fields marks
--- which it takes), passed on as they are.
local function passed_on(opts)
  local det = {}
  for _, f in ipairs(fields.list) do
    if f.topology then det[f.name] = opts[f.name] end
  end
  return det
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
  local env = { cur = { ctx = nil, rec = nil }, after_record = {}, on_task = {} }
  function env.internal_topic(n) return ("%s.%s-%s-repartition"):format(app, name, n) end
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
    serdes[t] = { key = "string", value = "json" }
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
  det.name, det.description = name, opts.description or describe(b)
  det.inputs, det.outputs, det.serdes, det.stores = inputs, outputs, serdes, b.stores
  det.process, det.on_task, det.stream_time_topics = process, on_task, timed
  det.timestamps = next(b.timestamps) and b.timestamps or nil
  return det
end

return M
