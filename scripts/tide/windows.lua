--- Windows for the DSL's windowed aggregations, and the steps that keep them:
--- time windows (tumbling, hopping), session windows, and suppress.
---
--- A window is [start, end): end is exclusive. A record is late, and dropped,
--- when the window it belongs to closed: when stream time (the task's largest
--- record timestamp) reached end + grace; a session window closes at
--- end + gap + grace. Aggregates are kept in a window store (tide.store)
--- keyed by (key, window start); sessions keep { e = end, v = aggregate }.
local store = require("tide.store")
local usage = require("tide.errors").usage

local M = {}

local duration = store.duration

--- A deep copy of a table (other values as they are): what an aggregator
--- receives, so that changing it in place leaves the old value intact for
--- the operators downstream (a regrouped table subtracts the old value).
local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return t
end
M.copy = copy

--- Tumbling windows: fixed size, no overlap. tide.tumbling{ size = "1m", grace = "10s" }
---@param opts { size: string|number, grace?: string|number }
function M.tumbling(opts)
  if type(opts) ~= "table" then usage("tide.tumbling{ size = \"1m\", grace = \"10s\" } expected") end
  local size = duration(opts.size, "tumbling size")
  if size <= 0 then usage("tumbling size must be positive") end
  return { kind = "tumbling", size = size, advance = size, grace = duration(opts.grace or 0, "grace") }
end

--- Hopping windows: size, starting every `advance`; a record is in size/advance of them.
---@param opts { size: string|number, advance: string|number, grace?: string|number }
function M.hopping(opts)
  if type(opts) ~= "table" then usage("tide.hopping{ size = \"5m\", advance = \"1m\" } expected") end
  local size = duration(opts.size, "hopping size")
  local advance = duration(opts.advance, "hopping advance")
  if size <= 0 or advance <= 0 or advance > size then
    usage("hopping windows need 0 < advance <= size")
  end
  return { kind = "hopping", size = size, advance = advance, grace = duration(opts.grace or 0, "grace") }
end

--- Session windows: a key's records closer than `gap` to each other form one window.
---@param opts { gap: string|number, grace?: string|number }
function M.session(opts)
  if type(opts) ~= "table" then usage("tide.session{ gap = \"5m\", grace = \"1m\" } expected") end
  local gap = duration(opts.gap, "session gap")
  if gap <= 0 then usage("session gap must be positive") end
  return { kind = "session", gap = gap, grace = duration(opts.grace or 0, "grace") }
end

--- Sliding windows: for every record at t, the key's records in
--- [t - size, t], both ends included: "5 payments within 10 minutes".
--- Each record passes on its own window; one that comes out of order
--- (within grace) also revises the windows of the later records within
--- `size` after it. As the window includes its end (the record's time), a
--- record is late, and dropped, once stream time is past that end + grace.
---@param opts { size: string|number, grace?: string|number }
function M.sliding(opts)
  if type(opts) ~= "table" then usage("tide.sliding{ size = \"10m\", grace = \"1m\" } expected") end
  local size = duration(opts.size, "sliding size")
  if size <= 0 then usage("sliding size must be positive") end
  return { kind = "sliding", size = size, grace = duration(opts.grace or 0, "grace") }
end

local kinds = { tumbling = true, hopping = true, session = true, sliding = true }

---@class tide.Window a window for windowed_by: tumbling, hopping, session or sliding
---@field kind string
---@field size? number ms
---@field advance? number ms
---@field gap? number ms
---@field grace number ms

function M.is_window(w)
  return type(w) == "table" and kinds[w.kind] == true
end

---@class tide.JoinWindow how far apart in time two records of a stream-stream join may be
---@field kind "join"
---@field before number ms: how much earlier a right record may be than the left one
---@field after number ms: how much later
---@field grace number ms: how late a record may arrive

--- The window of a stream-stream join: a left record at t joins the right
--- records at [t - before, t + after] (Kafka Streams' JoinWindows);
--- `within` sets both. A record arriving once its window closed, when
--- stream time reached t + after + grace (a right record's: t + before +
--- grace), is late: dropped, and counted.
---   tide.join_window{ within = "10m", grace = "1m" }
---@param opts { before?: string|number, after?: string|number, within?: string|number, grace?: string|number }
---@return tide.JoinWindow
function M.join_window(opts)
  if type(opts) ~= "table" then usage("tide.join_window{ before = \"10m\", after = \"10m\", grace = \"1m\" } expected") end
  for k in pairs(opts) do
    if k ~= "before" and k ~= "after" and k ~= "within" and k ~= "grace" then
      usage(("tide.join_window: unknown option '%s' (known: before, after, within, grace)"):format(tostring(k)))
    end
  end
  local within = opts.within ~= nil and duration(opts.within, "join window within") or nil
  local before = opts.before ~= nil and duration(opts.before, "join window before") or within
  local after = opts.after ~= nil and duration(opts.after, "join window after") or within
  if before == nil or after == nil then
    usage("tide.join_window: give before and after (how far apart two records may be), or within for both")
  end
  return { kind = "join", before = before, after = after, grace = duration(opts.grace or 0, "grace") }
end

function M.is_join_window(w)
  return type(w) == "table" and w.kind == "join"
end

--- The window store declaration that keeps a windowed aggregation.
function M.store_decl(w, memory, retention)
  -- Session and sliding stores keep their value's end time (e) and expire by
  -- it; a sliding store holds one entry per key (window start 0):
  -- { e = latest time, items = { { t, value }, ... } }.
  local size, grace, by_end = w.size, w.grace, w.kind == "session" or w.kind == "sliding"
  -- A session ending at e is closed at e + gap + grace, but a record at
  -- e + gap can still join it to a session starting at e + 2 gap: it is kept
  -- one millisecond past e + 2 gap + grace.
  if w.kind == "session" then size, grace = w.gap, w.gap + w.grace + 1 end
  local wanted = retention and store.duration(retention, "retention") or 0
  return store.window{ size = size, grace = grace, retention = math.max(size + grace, wanted),
    memory = memory, session = by_end }
end

--- When the window [start, end) closes: no record changes it after that.
function M.close_time(w, _, e)
  if w.kind == "session" then return e + w.gap + w.grace end
  -- a sliding window includes its end: a record at end + grace still counts
  if w.kind == "sliding" then return e + w.grace + 1 end
  return e + w.grace
end

--- A record without a timestamp (-1) has no window: it fails, and goes to
--- the dead letters with the reason, rather than land in a window of 1970.
function M.event_time(rec)
  local ts = rec.timestamp
  if ts < 0 then
    error(("the record has no timestamp (%d), and a window needs one: give it one, or take "
      .. "it from the value with tide.stream(topic, { timestamp = fn })"):format(ts), 0)
  end
  return ts
end

--- A late record, dropped and counted (ctx:dropped). `closed`: the window
--- includes its end (sessions, sliding windows).
local function late(ctx, k, ts, s, e, st, closed)
  ctx:dropped("late", "late record dropped: key %s at %d is for window [%d, %d%s, closed at "
    .. "stream time %d (past its end and grace)", tostring(k), ts, s, e, closed and "]" or ")", st)
end
M.late = late

--- The step of a time-windowed aggregation: for each window holding the
--- record's timestamp, agg = add(old agg or init(key), value, key), then
--- push(key, new, old, start, end) downstream.
---@param w table tumbling or hopping
---@param cur { ctx: table, rec: table } the record being processed
function M.time_step(w, cur, get_store, init, add, push)
  local size, advance, grace = w.size, w.advance, w.grace
  return function(k, v)
    if k == nil or v == nil then return end
    local ctx = cur.ctx
    local ts, st = M.event_time(cur.rec), ctx.stream_time
    local ws = get_store()
    local s = ts - ts % advance
    local first = s
    while s - advance + size > ts and s - advance >= 0 do s = s - advance end
    while s <= first do
      local e = s + size
      if e + grace <= st then
        late(ctx, k, ts, s, e, st)
      else
        local old = ws:get(k, s)
        local new = add(old == nil and init(k) or copy(old), v, k)
        ws:put_at(k, s, new)
        push(k, new, old, s, e)
      end
      s = s + advance
    end
  end
end

--- The step of a session-windowed aggregation: the record's session is
--- merged with every session of its key within `gap`; merged-away sessions
--- are pushed as removed (new = nil).
function M.session_step(w, cur, get_store, init, add, merge, push)
  local gap, grace = w.gap, w.grace
  return function(k, v)
    if k == nil or v == nil then return end
    local ctx = cur.ctx
    local ts, st = M.event_time(cur.rec), ctx.stream_time
    local ws = get_store()
    local s, e, agg = ts, ts, nil
    local merged = {}
    for start, sv in ws:fetch(k, 0, ts + gap) do
      if sv.e >= ts - gap then
        merged[#merged + 1] = { s = start, e = sv.e, v = sv.v }
        if start < s then s = start end
        if sv.e > e then e = sv.e end
        agg = agg == nil and copy(sv.v) or merge(agg, sv.v, k)
      end
    end
    if e + gap + grace <= st then
      late(ctx, k, ts, s, e, st, true)
      return
    end
    for _, m in ipairs(merged) do
      ws:put_at(k, m.s, nil)
      push(k, nil, m.v, m.s, m.e)
    end
    local new = add(agg == nil and init(k) or agg, v, k)
    ws:put_at(k, s, { e = e, v = new })
    ctx:_stamped(e, push, k, new, nil, s, e) -- a session's result carries its end
  end
end

--- The step of a sliding-window aggregation: the key's recent records are
--- kept (in time order, as far back as a window can still reach), and the
--- record's window [t - size, t] is folded from them; so are the windows of
--- later records that an out-of-order one falls into. A cogrouped
--- aggregation gives `adds`, every input's aggregator, and `input`, this
--- one's index: each kept record is folded with the aggregator of its input.
function M.sliding_step(w, cur, get_store, init, add, push, adds, input)
  local size, grace = w.size, w.grace
  --- Key k's window ending at `e`, folded from its kept records, pushed and
  --- stamped with its end (its latest record's time).
  local function window(ctx, k, kept, e)
    local agg = init(k)
    for _, it in ipairs(kept) do
      if it[1] >= e - size and it[1] <= e then agg = (adds and adds[it[3] or 1] or add)(agg, it[2], k) end
    end
    ctx:_stamped(e, push, k, agg, nil, math.max(0, e - size), e) -- none starts before 0
  end
  return function(k, v)
    if k == nil or v == nil then return end
    local ctx = cur.ctx
    local ts, st = M.event_time(cur.rec), ctx.stream_time
    if ts + grace < st then -- its window includes its end: late only past end + grace
      late(ctx, k, ts, math.max(0, ts - size), ts, st, true)
      return
    end
    local ws = get_store()
    local kept = ws:get(k, 0) or { e = ts }
    local items = kept.items or {}
    local i = #items
    while i > 0 and items[i][1] > ts do
      items[i + 1] = items[i]
      i = i - 1
    end
    items[i + 1] = { ts, v, input }
    if ts > kept.e then kept.e = ts end
    -- what no window can reach any more: older than the latest, less size and grace
    local horizon, fresh = kept.e - size - grace, {}
    for _, it in ipairs(items) do
      if it[1] >= horizon then fresh[#fresh + 1] = it end
    end
    kept.items = fresh
    ws:put_at(k, 0, kept)
    window(ctx, k, fresh, ts)
    -- An out-of-order record is also in the windows of the later records
    -- within `size` after it: each is pushed again, revised.
    local last = ts
    for _, it in ipairs(fresh) do
      local u = it[1]
      if u > last and u <= ts + size then
        window(ctx, k, fresh, u)
        last = u
      end
    end
  end
end

--- A session store's value is { e, v }: read the aggregate.
function M.session_get(ws, k, start)
  local sv = ws:get(k, start)
  return sv and sv.v
end

--------------------------------------------------------------------------------
-- suppress: hold a windowed table's updates until the window closes, then
-- push its final value once. The buffer is a key-value store keyed by
-- (close time, key, window start), so the due ones come first.

local u64, read_u64, window_key, window_key_parts = store.u64, store.read_u64, store.window_key, store.window_key_parts

--- push(k, v, nil, start, end) for every buffered window closed at stream
--- time `st`. Returns the step (for updates) and check (after each record).
---@param get_buffer fun(): table the kv store of the current task
function M.suppress(w, cur, get_buffer, push)
  -- per task: the earliest close time in the buffer (nil: not known yet)
  local next_due = {}

  local function step(k, new, old, s, e)
    local buf = get_buffer()
    local p = cur.ctx.partition
    local close = M.close_time(w, s, e)
    local bk = u64(close) .. window_key(k, s)
    if new == nil then
      buf:delete(bk)
      return
    end
    -- the final result will carry the time this update carries (a session's end)
    buf:put(bk, { e = e, v = new, t = cur.ctx:_emit_time() })
    local due = next_due[p]
    if due ~= nil and close < due then next_due[p] = close end
  end

  local function check()
    local ctx = cur.ctx
    local p, st = ctx.partition, ctx.stream_time
    local due = next_due[p]
    if due ~= nil and st < due then return end
    local buf = get_buffer()
    local done = {}
    local first = math.huge
    for bk, bv in buf:range(nil, nil) do
      local close = read_u64(bk, 1)
      if close > st then
        first = close
        break
      end
      done[#done + 1] = { bk = bk, bv = bv }
    end
    next_due[p] = first
    for _, d in ipairs(done) do
      buf:delete(d.bk)
      local k, s = window_key_parts(d.bk:sub(9))
      ctx:_stamped(d.bv.t or st, push, k, d.bv.v, nil, s, d.bv.e)
    end
  end

  local function reset(p) next_due[p] = nil end
  return step, check, reset
end

return M
