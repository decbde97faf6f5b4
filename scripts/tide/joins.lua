--- The DSL's joins of two streams and of two tables, compiled into closures
--- (tide.topology asks here for the makers of their nodes):
---
--- * stream-stream (KStream-KStream): each side keeps its records in a
---   window store for the window's span; a record joins the other side's
---   records of its key within [t - before, t + after]. Left and outer joins
---   keep a side's records that found no partner in a buffer store and pass
---   them on with nil once their window has closed (Kafka Streams 3.1 on).
--- * table-table (KTable-KTable): a change on either side is joined with the
---   other side's current row; a row that leaves the join is deleted.
--- * foreign key (KIP-213): the left table subscribes each row to the right
---   table's row it refers to, through an internal topic keyed by the
---   foreign key; the right side answers, now and whenever that row
---   changes, through a second topic keyed by the left row's key. An answer
---   is used only if the left row is still the one that asked (a hash).
local store = require("tide.store")
local windows = require("tide.windows")
local number_text = require("tide.json").number_text

local M = { makers = {}, getters = {} }
local makers, getters = M.makers, M.getters

local u64, read_u64, window_prefix = store.u64, store.read_u64, store.window_prefix
local max = math.max

--------------------------------------------------------------------------------
-- Stream-stream joins

-- The buffer of records waiting for their window to close is a key-value
-- store keyed [time u64][side][key as in a window store]: the earliest first.
local LEFT, RIGHT = "\0", "\1"

local function outer_key(ts, is_left, k)
  return u64(ts) .. (is_left and LEFT or RIGHT) .. window_prefix(tostring(k))
end

local function outer_key_parts(bk)
  local n = bk:byte(10) * 256 + bk:byte(11)
  return read_u64(bk, 1), bk:byte(9) == 0, bk:sub(12, 11 + n)
end

--- The emitter of a left or outer join's buffered records: passes on (with
--- nil for the missing side, stamped with the record's own time) each one
--- whose window has closed at stream time st. Per task, the earliest close
--- time in the buffer is remembered so that most records skip the scan.
local function buffered_emitter(j, env, out)
  local get_buffer = env.store_getter(j.outer_store)
  local w, fn, due = j.window, j.fn, j.due
  return function(ctx, st)
    local p = ctx.partition
    local d = due[p]
    if d ~= nil and st < d then return end
    local buf = get_buffer()
    local done, open_left, open_right, first = {}, false, false, math.huge
    for bk, list in buf:range(nil, nil) do
      local ts, is_left = outer_key_parts(bk)
      local close = ts + (is_left and w.after or w.before) + w.grace
      if close > st then
        -- The buffer is in time order, and one side's windows all last as
        -- long: past an open record of each side, every other is open too.
        if is_left then open_left = true else open_right = true end
        if close < first then first = close end
        if open_left and open_right then break end
      else
        done[#done + 1] = { bk, list }
      end
    end
    due[p] = first
    for _, e in ipairs(done) do
      buf:delete(e[1])
      local ts, is_left, k = outer_key_parts(e[1])
      for _, v in ipairs(e[2]) do
        if is_left then
          ctx:_stamped(ts, out, k, fn(v, nil, k))
        else
          ctx:_stamped(ts, out, k, fn(nil, v, k))
        end
      end
    end
  end
end

--- One side of a stream-stream join (Kafka Streams' JOINTHIS/JOINOTHER).
function makers.stream_join_side(n, out, env)
  local j, cur, is_left = n.join, env.cur, n.side == "left"
  local w, fn, kind = j.window, j.fn, j.kind
  local own_name, other_name = j.this_store, j.other_store
  if not is_left then own_name, other_name = other_name, own_name end
  local own, other = env.store_getter(own_name), env.store_getter(other_name)
  -- a left record at t meets the right ones at [t - before, t + after]
  local lo, hi = w.before, w.after
  if not is_left then lo, hi = hi, lo end
  local lookback, grace = hi, w.grace
  -- Does this side pass on its records that found no partner, and does the
  -- other? (left join: the left side; outer join: both)
  local outer = kind == "outer" or (kind == "left" and is_left)
  local other_outer = kind == "outer" or (kind == "left" and not is_left)
  local buffer, emit_due
  if j.outer_store then
    j.due = j.due or {}
    buffer = env.store_getter(j.outer_store)
    j.emit_due = j.emit_due or buffered_emitter(j, env, out)
    emit_due = j.emit_due
    env.on_task[#env.on_task + 1] = function(p) j.due[p] = nil end
  end
  local function joined(mine, theirs, k)
    if is_left then return fn(mine, theirs, k) end
    return fn(theirs, mine, k)
  end
  return function(k, v)
    if v == nil then return end -- nothing to join, as in Kafka Streams
    if k == nil then
      -- no key, no partner: an outer side passes it on at once
      if outer then return out(k, joined(v, nil, k)) end
      return
    end
    local ctx = cur.ctx
    local ts, st = windows.event_time(cur.rec), ctx.stream_time
    if emit_due and ts >= st then emit_due(ctx, st) end
    if ts + lookback + grace <= st then
      windows.late(ctx, k, ts, max(0, ts - lo), ts + hi, st, true)
      return
    end
    local mine = own()
    local list = mine:get(k, ts) or {}
    list[#list + 1] = v
    mine:put_at(k, ts, list)
    local matched = false
    local buf = buffer and buffer()
    for ots, others in other():fetch(k, max(0, ts - lo), ts + hi) do
      for _, ov in ipairs(others) do
        matched = true
        ctx:_stamped(max(ts, ots), out, k, joined(v, ov, k))
      end
      -- the other's records found a partner: they no longer wait
      if other_outer then
        local ok = outer_key(ots, not is_left, k)
        if buf:get(ok) ~= nil then buf:delete(ok) end
      end
    end
    if outer and not matched then
      local bk = outer_key(ts, is_left, k)
      local waiting = buf:get(bk) or {}
      waiting[#waiting + 1] = v
      buf:put(bk, waiting)
      local p, close = ctx.partition, ts + lookback + grace
      if j.due[p] ~= nil and close < j.due[p] then j.due[p] = close end
    end
  end
end

--------------------------------------------------------------------------------
-- Table-table joins

--- The joined value of rows l and r (nil: no row in the result).
local function result_of(j)
  local fn, kind = j.fn, j.kind
  if kind == "inner" then
    return function(l, r, k) if l ~= nil and r ~= nil then return fn(l, r, k) end end
  elseif kind == "left" then
    return function(l, r, k) if l ~= nil then return fn(l, r, k) end end
  end
  return function(l, r, k) if l ~= nil or r ~= nil then return fn(l, r, k) end end
end

--- One side of a table-table join: this side's change joined with the other
--- side's current row, passed on as the result's change (new and old).
function makers.table_join_side(n, out, env)
  local j, cur, is_left = n.join, env.cur, n.side == "left"
  local other = env.getter_of(is_left and j.right or j.left)
  local result = result_of(j)
  return function(k, new, old)
    if k == nil then return end
    local ov, ots = other(k)
    local res_new, res_old
    if is_left then
      res_new, res_old = result(new, ov, k), result(old, ov, k)
    else
      res_new, res_old = result(ov, new, k), result(ov, old, k)
    end
    if res_new == nil and res_old == nil then return end -- not in the join before or after
    local ctx = cur.ctx
    local ts = ctx:_emit_time()
    if ots ~= nil and ots > ts then ts = ots end -- the later of the two rows' times
    if ts < 0 then return out(k, res_new, res_old) end
    ctx:_stamped(ts, out, k, res_new, res_old)
  end
end

function makers.table_join(_, out) return out end

--- The joined row of key k, read from both sides.
function getters.table_join(n, env)
  local j = n.join
  local lg, rg, result = env.getter_of(j.left), env.getter_of(j.right), result_of(j)
  return function(k)
    local l, lt = lg(k)
    local r, rt = rg(k)
    local v = result(l, r, k)
    if v == nil then return nil end
    return v, (lt or rt) and max(lt or -1, rt or -1) or nil
  end
end

--------------------------------------------------------------------------------
-- Foreign-key joins

-- What a subscription asks of the right side (Kafka Streams' instructions):
-- forget this subscriber; answer even when the row is missing (the left row
-- changed its foreign key, or a left join always answers); answer only
-- when there is a row.
local UNSUBSCRIBE, ANSWER_ALWAYS, ANSWER_IF_FOUND = 0, 1, 2

--- A text that is the same for equal values, whatever order their tables
--- were built in (JSON from cjson follows the hash order): what is hashed.
local function canonical(v, out)
  local t = type(v)
  if t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      if type(a) == type(b) then return a < b end
      return type(a) < type(b)
    end)
    out[#out + 1] = "{"
    for _, k in ipairs(keys) do
      canonical(k, out)
      out[#out + 1] = "="
      canonical(v[k], out)
      out[#out + 1] = ","
    end
    out[#out + 1] = "}"
  elseif t == "string" then
    out[#out + 1] = ("%q"):format(v)
  elseif t == "number" then
    out[#out + 1] = number_text(v)
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  else
    out[#out + 1] = "null" -- tide.null
  end
  return out
end

local hash_fn
--- The hash of a left row, with which a subscription and its answer are
--- matched to the row's version (any worker computes the same).
local function row_hash(v)
  hash_fn = hash_fn or require("tide.core").hash
  return hash_fn(table.concat(canonical(v, {})))
end
M.row_hash = row_hash

--- A foreign key as the internal topics and stores carry it: a string.
local function fk_text(fk, at)
  local t = type(fk)
  if t == "string" then return fk end
  if t == "number" then return number_text(fk) end
  error(("the foreign-key extractor (at %s) must return a string or a number, got %s"):format(at, t), 0)
end

--- The left table's changes, as subscriptions to the rows they refer to.
function makers.fk_subscribe(n, _, env)
  local j, cur = n.join, env.cur
  local topic = env.internal_topic(j.subscription)
  local extract, fn, left_join, at = j.extract, j.fn, j.kind == "left", n.at
  -- (the key goes out as the extractor gave it: the other table's key serde
  -- writes it; fk_text compares and stores it)
  local function send(fk, pk, instruction, h)
    cur.ctx:emit(topic, fk, { pk = pk, i = instruction, h = h })
  end
  return function(k, new, old)
    if k == nil or (new == nil and old == nil) then return end
    local raw_new = new ~= nil and extract(new, k) or nil
    local raw_old = old ~= nil and extract(old, k) or nil
    local fk_new = raw_new ~= nil and fk_text(raw_new, at) or nil
    local fk_old = raw_old ~= nil and fk_text(raw_old, at) or nil
    if fk_old ~= nil and fk_new ~= fk_old then send(raw_old, k, UNSUBSCRIBE) end
    if fk_new == nil then
      -- no row, or one that refers to nothing: the answer is known here
      if new ~= nil and left_join then
        j.result(k, fn(new, nil, k))
      elseif old ~= nil then
        j.result(k, nil)
      end
      return
    end
    local instruction = ANSWER_IF_FOUND
    -- a left join answers every row; an inner join must also clear the
    -- result a row had under its former foreign key
    if left_join or (fk_old ~= nil and fk_old ~= fk_new) then instruction = ANSWER_ALWAYS end
    send(raw_new, k, instruction, row_hash(new))
  end
end

--- The right side: subscriptions kept in a store keyed by foreign key and
--- left key, and answered with the right row.
function makers.fk_subscription(n, _, env)
  local j, cur = n.join, env.cur
  local subs, right = env.store_getter(j.subscriptions), env.getter_of(j.right)
  local topic = env.internal_topic(j.response)
  return function(fk, sub)
    if fk == nil or type(sub) ~= "table" or sub.pk == nil then return end
    local key = window_prefix(fk_text(fk, n.at)) .. tostring(sub.pk)
    if sub.i == UNSUBSCRIBE then
      subs():delete(key)
      return
    end
    subs():put(key, { h = sub.h, pk = sub.pk }) -- (pk as its key serde reads it)
    local rv = right(fk)
    if rv == nil and sub.i == ANSWER_IF_FOUND then return end
    cur.ctx:emit(topic, sub.pk, { h = sub.h, v = rv })
  end
end

--- The right table's changes, answered to every subscriber of the row.
function makers.fk_foreign(n, _, env)
  local j, cur = n.join, env.cur
  local subs = env.store_getter(j.subscriptions)
  local topic = env.internal_topic(j.response)
  return function(fk, new, old)
    if fk == nil or (new == nil and old == nil) then return end
    local prefix = window_prefix(tostring(fk))
    local answers = {}
    for key, sub in subs():prefix(prefix) do
      local pk = sub.pk
      if pk == nil then pk = key:sub(#prefix + 1) end
      answers[#answers + 1] = { pk, sub.h }
    end
    for _, a in ipairs(answers) do cur.ctx:emit(topic, a[1], { h = a[2], v = new }) end
  end
end

--- The left side reads the answers: joined with the left row if it is still
--- the one that asked; the result is kept (its rows) and passed on.
function makers.fk_response(n, out, env)
  local j, cur = n.join, env.cur
  local results, left = env.store_getter(n.rows), env.getter_of(j.left)
  local fn, left_join = j.fn, j.kind == "left"
  function j.result(pk, res)
    local rs = results()
    local old = rs:get(pk)
    rs:put(pk, res, cur.ctx:_emit_time())
    out(pk, res, old)
  end
  local result = j.result
  return function(pk, answer)
    if pk == nil or type(answer) ~= "table" then return end
    local lv = left(pk)
    if lv == nil or row_hash(lv) ~= answer.h then return end -- the row changed since it asked
    local rv = answer.v
    if rv ~= nil then return result(pk, fn(lv, rv, pk)) end
    if left_join then return result(pk, fn(lv, nil, pk)) end
    result(pk, nil)
  end
end

return M
