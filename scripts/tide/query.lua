--- Interactive queries: reads of a detector's stores from outside it.
---
--- The admin API (`GET /api/detectors/NAME/stores/STORE?...`, answered by
--- the worker between two batches) and the test driver's d:query() both come
--- here, so a spec sees what an operator sees. Only reads: a query never
--- writes a store, never emits, never runs the detector's code.
---
--- A query names one store and reads the tasks (partitions) it is given:
---   { key = K }                       a key-value store: K's value
---   { key = K, time_from?, time_to? } a window store: K's windows whose
---                                     start is in [time_from, time_to]
---   { from?, to?, prefix?, after? }   the entries in key order (from <= key
---                                     < to, or keys starting with prefix),
---                                     after `after` (and, in a window
---                                     store, the window starting at
---                                     `after_start`) when given; at most
---                                     `limit` of them (default 100), with
---                                     `next` (and `next_start`) to go on
---   { count = true }                  how many entries the tasks hold
--- The answer is a table (the driver's) or its JSON text (the host's): see
--- M.run. Values come out as the detector stored them: a string as a
--- string, anything else as JSON.
local serde = require("tide.serde")
local store = require("tide.store")

local M = {}

local decode = store.decode

M.DEFAULT_LIMIT = 100
M.MAX_LIMIT = 10000

--- A query that cannot be answered as asked: the status and why.
local function refuse(status, msg)
  error({ status = status, message = msg }, 0)
end

local function value_out(v)
  return v
end

-- The budget: a scan gives way (coroutine.yield) when its time is up and
-- goes on at the next call. `deadline` is in os.clock() seconds; nil: none.
local clock = os.clock

local function checker(deadline)
  if not deadline then return function() end end
  local n = 0
  return function()
    n = n + 1
    if n % 256 == 0 and clock() > deadline[1] then coroutine.yield() end
  end
end

local function window_end(decl, start, v)
  if decl.session and type(v) == "table" and type(v.e) == "number" then return v.e end
  return start + decl.size
end

local function in_range(q, key, start)
  if q.after ~= nil and (key < q.after or key == q.after and (start == nil or
      q.after_start == nil or start <= q.after_start)) then
    return false
  end
  if q.from ~= nil and key < q.from then return false end
  if q.to ~= nil and key >= q.to then return false end
  return q.prefix == nil or key:sub(1, #q.prefix) == q.prefix
end

--- Entries of one partition in key order (from <= key < to, with prefix,
--- after `after`): at most `want` of them; also whether more follow. A
--- key-value store's keys are its order; a window store's are not (a
--- window's key is prefixed by its length), so all of its windows are read
--- and sorted.
local function scan_part(e, p, q, want, tick)
  local b, window = e.backend, e.decl.kind == "window"
  local it
  if window then it = b.iter(p)
  elseif q.prefix then it = b.iter_prefix(p, q.prefix)
  else
    local from = q.from
    if q.after and (from == nil or q.after >= from) then from = q.after .. "\0" end
    it = b.iter(p, from, q.to)
  end
  local out = {}
  for k, raw in it do
    tick()
    local key, start = k, nil
    if window then key, start = store.window_key_parts(k) end
    if in_range(q, key, start) then
      if not window and #out == want then return out, true end
      local x = { partition = p, key = key }
      local v = decode(raw)
      if start then x.start, x["end"] = start, window_end(e.decl, start, v) end
      x.value = value_out(v)
      out[#out + 1] = x
    end
  end
  return out, false
end

--- A scan over several partitions: each partition's first entries, merged
--- in key order (then partition), cut at `limit`.
local function scan(e, parts, q, tick)
  local limit = q.limit
  local all, more = {}, false
  for _, p in ipairs(parts) do
    local list, m = scan_part(e, p, q, limit, tick)
    more = more or m
    for _, x in ipairs(list) do all[#all + 1] = x end
  end
  table.sort(all, function(a, b)
    if a.key ~= b.key then return a.key < b.key end
    if (a.start or 0) ~= (b.start or 0) then return (a.start or 0) < (b.start or 0) end
    return a.partition < b.partition
  end)
  if #all > limit then
    for i = #all, limit + 1, -1 do all[i] = nil end
    more = true
  end
  local res = { entries = all, more = more }
  if more and #all > 0 then
    -- the cursor: the next page goes on after this key (and window)
    res.next, res.next_start = all[#all].key, all[#all].start
  end
  return res
end

local function count(e, parts, tick)
  local n = 0
  for _, p in ipairs(parts) do
    for _ in e.backend.iter(p) do
      tick()
      n = n + 1
    end
  end
  return { count = n }
end

--- One key of a key-value store, or its windows in a window store.
local function lookup(e, parts, q, set_task)
  local p = parts[1]
  set_task(p)
  if e.decl.kind ~= "window" then
    local v = e.store:get(q.key)
    return { key = q.key, partition = p, found = v ~= nil, value = value_out(v) }
  end
  local windows = {}
  for start, v in e.store:fetch(q.key, q.time_from, q.time_to) do
    windows[#windows + 1] = { start = start, ["end"] = window_end(e.decl, start, v), value = value_out(v) }
    if #windows >= q.limit then break end
  end
  return { key = q.key, partition = p, found = #windows > 0, windows = windows }
end

local function number_arg(q, name)
  local v = q[name]
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or n ~= n then refuse(400, ("%s must be a number, got %s"):format(name, tostring(v))) end
  return n
end

--- Check and normalise a query (strings from a URL, or a driver's table).
local function normalise(e, q)
  local out = { key = q.key, from = q.from, to = q.to, prefix = q.prefix, after = q.after,
    count = q.count and q.count ~= "false" and q.count ~= false or nil }
  for _, k in ipairs({ "key", "from", "to", "prefix", "after" }) do
    local v = out[k]
    if v ~= nil and type(v) == "number" then out[k] = tostring(v) end
    if out[k] ~= nil and type(out[k]) ~= "string" then refuse(400, k .. " must be a string") end
  end
  out.time_from, out.time_to = number_arg(q, "time_from"), number_arg(q, "time_to")
  out.after_start = number_arg(q, "after_start")
  local limit = number_arg(q, "limit") or M.DEFAULT_LIMIT
  if limit < 1 or limit > M.MAX_LIMIT or limit ~= math.floor(limit) then
    refuse(400, ("limit must be an integer from 1 to %d"):format(M.MAX_LIMIT))
  end
  out.limit = limit
  if (out.time_from or out.time_to) and e.decl.kind ~= "window" then
    refuse(400, "time_from and time_to are for window stores; " .. e.name .. " is a key-value store")
  end
  if out.key and (out.from or out.to or out.prefix or out.count) then
    refuse(400, "key goes alone (or with time_from, time_to for a window store)")
  end
  return out
end

--- Answer query `q` over store list entry `e` and partitions `parts` (each
--- a task this runtime holds). set_task(p) makes p the current task (store
--- objects read the current task's data). deadline: { seconds of
--- os.clock() } past which a scan yields (inside a coroutine), or nil.
--- Returns the answer as a table; raises { status, message } for a query
--- that cannot be answered.
function M.answer(e, parts, q, set_task, deadline)
  q = normalise(e, q)
  local tick = checker(deadline)
  if q.key then
    if #parts ~= 1 then refuse(400, "a key is read from one partition") end
    return lookup(e, parts, q, set_task)
  end
  if q.count then return count(e, parts, tick) end
  return scan(e, parts, q, tick)
end

--- The store list entry of store `name`, or a refusal.
local function entry(stores, name)
  for _, e in ipairs(stores) do
    if e.name == name then return e end
  end
  local names = {}
  for i, e in ipairs(stores) do names[i] = e.name end
  refuse(404, ("no store named %s (stores: %s)"):format(tostring(name),
    #names > 0 and table.concat(names, ", ") or "none"))
end
M.entry = entry

local LISTS = { entries = true, windows = true }

--- The JSON text of an answer; its lists are arrays even when empty.
function M.encode(res)
  local encode = serde.json.encode
  local keys, parts = {}, {}
  for k in pairs(res) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = res[k]
    local text
    if LISTS[k] then
      local items = {}
      for i, x in ipairs(v) do items[i] = encode(x) end
      text = "[" .. table.concat(items, ",") .. "]"
    else
      text = encode(v)
    end
    parts[#parts + 1] = encode(k) .. ":" .. text
  end
  -- a key not found: its value is null, not absent
  if res.found == false and res.windows == nil then parts[#parts + 1] = '"value":null' end
  return "{" .. table.concat(parts, ",") .. "}"
end

--- The host's side: queries by id, each run in a coroutine that yields when
--- its slice of time is spent, so a long scan spreads over several passes of
--- the worker's loop. serve(id, request_json, parts, budget_ms) returns
--- nil while the query goes on, else its status and JSON text.
---@param stores table the dispatcher's store list
---@param set_task fun(p: integer)
function M.server(stores, set_task)
  local running = {}
  local encode = serde.json.encode
  local function start(text, parts, deadline)
    return coroutine.create(function()
      local ok, req = pcall(serde.json.decode, text)
      if not ok or type(req) ~= "table" then refuse(400, "bad request") end
      local e = entry(stores, req.store)
      return 200, M.encode(M.answer(e, parts, req, set_task, deadline))
    end)
  end
  local self = {}
  function self.serve(id, text, parts, budget_ms)
    local r = running[id]
    if not r then
      r = { deadline = { 0 } }
      r.co = start(text, parts, r.deadline)
      running[id] = r
    end
    r.deadline[1] = clock() + budget_ms / 1000
    local ok, status, body = coroutine.resume(r.co)
    if ok and coroutine.status(r.co) ~= "dead" then return nil end
    running[id] = nil
    if ok then return status, body end
    if type(status) == "table" and status.status then
      return status.status, encode({ error = status.message })
    end
    return 500, encode({ error = tostring(status) })
  end
  --- Forget query `id` (its asker gave up).
  function self.cancel(id) running[id] = nil end
  return self
end

return M
