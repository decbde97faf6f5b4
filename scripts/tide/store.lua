--- State stores: declarations (tide.kv, tide.window) and the objects a
--- detector reaches as ctx.stores.<name>.
---
--- A store is per task (input partition): every call works on the store of
--- the record being processed (or of the task a punctuator runs for). Values
--- are strings or Lua tables, numbers and booleans (kept as JSON); a string is
--- kept as is. Every write also goes to the store's changelog topic
--- <application.id>.<detector>-<store>-changelog, same partition, keyed like
--- the store, tombstones for deletes: that is how state survives the loss of
--- the machine.
---
--- RocksDB stores go through the FFI into C (core/store.c); in-memory
--- stores (tide.kv{ memory = true }) are Lua tables, changelogged alike.
local ffi = require("ffi")
local serde = require("tide.serde")

local M = {}

local units = { ms = 1, s = 1000, m = 60000, h = 3600000, d = 86400000 }

--- Milliseconds of a duration: a number (ms) or "500ms", "10s", "5m", "1h", "2d".
---@param d tide.Duration
---@param what? string for the error message
---@return number ms
function M.duration(d, what)
  if type(d) == "number" and d >= 0 then return d end
  if type(d) == "string" then
    local n, unit = d:match("^%s*(%d+%.?%d*)%s*(%a+)%s*$")
    if n and units[unit] then return tonumber(n) * units[unit] end
  end
  error(("%s: a duration like \"10s\", \"5m\" or a number of ms expected, got %s"):format(
    what or "duration", tostring(d)), 3)
end

--- Declare a key-value store. opts.memory: keep it in Lua tables.
---@param opts? { memory?: boolean }
---@return tide.StoreDecl
function M.kv(opts)
  opts = opts or {}
  return { kind = "kv", memory = opts.memory and true or false }
end

--- The partition a global table's store keeps its rows under: one key space
--- for the whole topic, apart from every task's (a task is an input
--- partition, and no topic has this many).
M.GLOBAL_PARTITION = 2147483647

--- Declare the store of a global table (tide.global_table): it holds the
--- topic's records as they are (raw key and value bytes, tombstones delete),
--- written by the host from the topic itself, never by the detector, and
--- has no changelog. Reads decode with the topic's serdes.
---@param opts { topic: string, key?: string, value?: string }
function M.global(opts)
  return { kind = "kv", memory = false, global = opts.topic,
    key_serde = opts.key or "string", value_serde = opts.value or "string" }
end

--- Declare a windowed store of tumbling windows: size, grace (how late a
--- record may still update its window) and retention (how long windows are
--- kept; default size + grace).
---@param opts { size: tide.Duration, grace?: tide.Duration, retention?: tide.Duration, memory?: boolean, session?: boolean }
---@return tide.StoreDecl
function M.window(opts)
  if type(opts) ~= "table" then error("tide.window{ size = ..., grace = ... } expected", 2) end
  local size = M.duration(opts.size, "window size")
  if size <= 0 then error("window size must be positive", 2) end
  local grace = M.duration(opts.grace or 0, "window grace")
  local retention = opts.retention and M.duration(opts.retention, "window retention") or size + grace
  if retention < size + grace then
    error("window retention must be at least size + grace", 2)
  end
  return { kind = "window", size = size, grace = grace, retention = retention,
    memory = opts.memory and true or false, session = opts.session and true or false }
end

-- Values: a tag byte, then the bytes. 's': a string; 'j': JSON.
local encode_json, decode_json = serde.json.encode, serde.json.decode

local huge = math.huge
local number_text = require("tide.json").number_text

local function encode(v, what)
  local t = type(v)
  if v == serde.null then error(what .. ": tide.null is not a value a store keeps; delete the key instead", 3) end
  if t == "string" then return "s" .. v end
  if t == "number" and v == v and v ~= huge and v ~= -huge then return "j" .. number_text(v) end
  if t == "table" or t == "number" or t == "boolean" then
    local ok, s = pcall(encode_json, v)
    if not ok then error(what .. ": value cannot be kept (" .. tostring(s) .. ")", 3) end
    return "j" .. s
  end
  error(what .. ": a string, number, boolean or table expected, got " .. t, 3)
end
M.encode = encode

--- A value kept with its timestamp (the DSL's joined tables): 't', the time
--- in 8 bytes, then the value as encode() makes it.
local function encode_timed(v, ts, what)
  return "t" .. M.u64(ts) .. encode(v, what)
end

local decode
--- The value and, when it was kept with one, its timestamp.
function decode(s)
  if s == nil then return nil end
  local tag = s:byte(1)
  if tag == 115 then return s:sub(2) end -- 's'
  if tag == 116 then return decode(s:sub(10)), M.read_u64(s, 2) end -- 't'
  local c = s:byte(2)
  if c and (c == 45 or (c >= 48 and c <= 57)) then -- '-' or a digit: a number
    local n = tonumber(s:sub(2))
    if n then return n end
  end
  return decode_json(s:sub(2))
end
M.decode = decode

local function check_key(k, what)
  local t = type(k)
  if t == "string" then return k end
  if t == "number" then return tostring(k) end
  error(what .. ": a string key expected, got " .. t, 3)
end

-- Window keys: [2-byte key length][key][8-byte window start], so that one
-- key's windows sort together, by time.
local function u64(n)
  local hi = math.floor(n / 4294967296)
  local lo = n % 4294967296
  return string.char(
    math.floor(hi / 16777216) % 256, math.floor(hi / 65536) % 256, math.floor(hi / 256) % 256, hi % 256,
    math.floor(lo / 16777216) % 256, math.floor(lo / 65536) % 256, math.floor(lo / 256) % 256, lo % 256)
end
local function read_u64(s, i)
  local b1, b2, b3, b4, b5, b6, b7, b8 = s:byte(i, i + 7)
  return ((b1 * 256 + b2) * 256 + b3) * 256 * 16777216 * 256 + (((b4 * 256 + b5) * 256 + b6) * 256 + b7) * 256 + b8
end
local function window_prefix(key)
  return string.char(math.floor(#key / 256) % 256, #key % 256) .. key
end
M.window_prefix, M.u64, M.read_u64 = window_prefix, u64, read_u64
function M.window_key(key, start)
  return window_prefix(key) .. u64(start)
end
function M.window_key_parts(wk)
  local n = wk:byte(1) * 256 + wk:byte(2)
  return wk:sub(3, 2 + n), read_u64(wk, 3 + n)
end

--------------------------------------------------------------------------------
-- Backends: both offer get, put, delete, iter(from, to), iter_prefix(p) for
-- the raw bytes of one (store, partition).

--- The RocksDB backend (through the FFI), with its changelog in C.
local function rocks_backend(api, db, sink, id)
  -- a cdata pointer, not the lightuserdata C handed over: the JIT cannot
  -- compile a call that converts a lightuserdata argument
  db = ffi.cast("void *", db)
  local vp = ffi.new("const char *[1]")
  local vl = ffi.new("size_t[1]")
  local b = {}
  function b.get(p, k)
    local r = api.store_get(db, id, p, k, #k, vp, vl)
    if r < 0 then error("store read failed", 3) end
    if r == 0 then return nil end
    return ffi.string(vp[0], vl[0])
  end
  function b.put(p, k, v)
    if api.store_put(sink, db, id, p, k, #k, v, #v) ~= 0 then error("store write failed", 3) end
  end
  function b.delete(p, k)
    if api.store_put(sink, db, id, p, k, #k, nil, -1) ~= 0 then error("store write failed", 3) end
  end
  local kp = ffi.new("const char *[1]")
  local kl = ffi.new("size_t[1]")
  -- An iterator left before its end (a `break`) is freed by the collector.
  local function iterate(raw)
    if raw == nil then error("store iteration failed", 3) end
    local it = ffi.gc(raw, api.store_iter_free) ---@type any
    return function()
      if it == nil then return nil end
      local got = api.store_iter_next(it, kp, kl, vp, vl)
      if got <= 0 then
        ffi.gc(it, nil)
        api.store_iter_free(it)
        it = nil
        if got < 0 then error("store iteration failed: out of memory", 2) end
        return nil
      end
      return ffi.string(kp[0], kl[0]), ffi.string(vp[0], vl[0])
    end
  end
  function b.iter(p, from, to)
    return iterate(api.store_iter(db, id, p, from, from and #from or 0, to, to and #to or 0, nil, 0))
  end
  function b.iter_prefix(p, prefix)
    return iterate(api.store_iter(db, id, p, nil, 0, nil, 0, prefix, #prefix))
  end
  return b
end

--- The in-memory backend: one table per partition; changelog through emit.
--- Each key's value before its first write since the last commit is kept,
--- so that a rollback (an aborted transaction, a refused output) puts the
--- committed state back without reading the changelog.
local function memory_backend(api, sink, output)
  local data = {}
  local undo, NONE = {}, {}
  local b = { data = data }
  local function part(p)
    local t = data[p]
    if not t then
      t = {}
      data[p] = t
    end
    return t
  end
  local function remember(p, t, k)
    local u = undo[p]
    if not u then
      u = {}
      undo[p] = u
    end
    if u[k] == nil then
      local old = t[k]
      if old == nil then old = NONE end
      u[k] = old
    end
  end
  function b.get(p, k) return part(p)[k] end
  function b.put(p, k, v)
    local t = part(p)
    remember(p, t, k)
    t[k] = v
    if api.emit_partition(sink, output, p, k, #k, v, #v) ~= 0 then error("out of memory", 3) end
  end
  function b.delete(p, k)
    local t = part(p)
    remember(p, t, k)
    t[k] = nil
    if api.emit_partition(sink, output, p, k, #k, nil, -1) ~= 0 then error("out of memory", 3) end
  end
  --- A commit went through: the writes since the last one stay.
  function b.commit()
    for p in pairs(undo) do undo[p] = nil end
  end
  --- Back to the last commit, for partition p.
  function b.rollback(p)
    local u, t = undo[p], data[p]
    if not u or not t then return end
    for k, old in pairs(u) do
      if old == NONE then t[k] = nil else t[k] = old end
    end
    undo[p] = nil
  end
  local function sorted_iter(t, ok)
    local keys = {}
    for k in pairs(t) do
      if ok(k) then keys[#keys + 1] = k end
    end
    table.sort(keys)
    local i = 0
    return function()
      i = i + 1
      local k = keys[i]
      if k == nil then return nil end
      return k, t[k]
    end
  end
  function b.iter(p, from, to)
    return sorted_iter(part(p), function(k)
      return (from == nil or k >= from) and (to == nil or k < to)
    end)
  end
  function b.iter_prefix(p, prefix)
    return sorted_iter(part(p), function(k) return k:sub(1, #prefix) == prefix end)
  end
  --- Restore: apply a changelog entry without writing the changelog again.
  function b.restore(p, k, v)
    part(p)[k] = v
  end
  function b.drop(p)
    data[p] = nil
    undo[p] = nil
  end
  return b
end
M.memory_backend = memory_backend

--------------------------------------------------------------------------------
-- The objects detectors use.

--- An iterator of (key, raw value) as one of (key, decoded value).
local function decoded(it)
  return function()
    local k, v = it()
    if k == nil then return nil end
    return k, decode(v)
  end
end

--- The object of a key-value store (tide.KvStore) over `backend`; task()
--- is the current task, `what` names the store in errors. A store that
--- keeps times (`timed`: the DSL's joined tables) keeps each value's time.
local function kv_store(backend, task, what, timed)
  return {
    --- The value of key, or nil.
    get = function(_, k)
      return (decode(backend.get(task(), check_key(k, what .. ":get"))))
    end,
    --- The value of key and the time it was put with (nil when none was).
    get_timed = function(_, k)
      return decode(backend.get(task(), check_key(k, what .. ":get")))
    end,
    --- Set key to value (nil deletes); a store that keeps times keeps ts
    --- (the record's time) with it.
    put = function(_, k, v, ts)
      k = check_key(k, what .. ":put")
      if v == nil then
        backend.delete(task(), k)
      elseif timed and ts and ts >= 0 then
        backend.put(task(), k, encode_timed(v, ts, what .. ":put"))
      else
        backend.put(task(), k, encode(v, what .. ":put"))
      end
    end,
    delete = function(_, k)
      backend.delete(task(), check_key(k, what .. ":delete"))
    end,
    --- Iterate keys from <= k < to (nil: unbounded), in byte order: for k, v in s:range(a, b)
    range = function(_, from, to)
      return decoded(backend.iter(task(), from, to))
    end,
    --- Iterate the keys that start with prefix, in byte order.
    prefix = function(_, p)
      return decoded(backend.iter_prefix(task(), check_key(p, what .. ":prefix")))
    end,
  }
end

--- The object of a windowed store (tide.WindowStore) of declaration `decl`.
local function window_store(backend, decl, env, what)
  local task, stream_time = env.task, env.stream_time
  local size, grace, retention = decl.size, decl.grace, decl.retention
  -- Past retention: a window that started (a session that ended, its
  -- value v being { e = end, ... }) more than retention before `now`
  -- (default: stream time). Swept in batches; hidden from reads at once.
  local session = decl.session
  local function expired(start, v, now)
    if session then start = type(v) == "table" and v.e or start end
    return start + retention <= (now or stream_time())
  end
  return {
    size = size,
    --- Put value for key in the window holding timestamp. Returns false,
    --- and changes nothing, when that window closed more than grace ago.
    put = function(_, k, v, ts)
      k = check_key(k, what .. ":put")
      if type(ts) ~= "number" then error(what .. ":put: a timestamp (ms) expected", 2) end
      if ts < 0 then error(("%s:put: timestamp %d is before 1970 (a record without one?)"):format(what, ts), 2) end
      local start = ts - ts % size
      if start + size + grace <= stream_time() then return false end
      local wk = M.window_key(k, start)
      if v == nil then backend.delete(task(), wk) else backend.put(task(), wk, encode(v, what .. ":put")) end
      return true
    end,
    --- Put value (nil deletes) for key's window starting at start, with
    --- no lateness check (the DSL's windowed aggregations check theirs).
    put_at = function(_, k, start, v)
      local wk = M.window_key(check_key(k, what .. ":put_at"), start)
      if v == nil then backend.delete(task(), wk) else backend.put(task(), wk, encode(v, what .. ":put_at")) end
    end,
    --- The value of key's window starting at start, or nil (also once the
    --- window is past retention, though not yet swept away).
    get = function(_, k, start)
      local v = decode(backend.get(task(), M.window_key(check_key(k, what .. ":get"), start)))
      if v ~= nil and expired(start, v) then return nil end
      return v
    end,
    --- Iterate key's windows whose start is in [from, to]: for start, v in s:fetch(k, a, b)
    fetch = function(_, k, from, to)
      k = check_key(k, what .. ":fetch")
      local it = backend.iter(task(), M.window_key(k, math.max(0, from or 0)),
        to and M.window_key(k, to + 1) or (window_prefix(k) .. "\255\255\255\255\255\255\255\255\255"))
      local function nxt()
        local wk, raw = it()
        if wk == nil then return nil end
        local _, start = M.window_key_parts(wk)
        local v = decode(raw)
        if expired(start, v) then return nxt() end
        return start, v
      end
      return nxt
    end,
    --- Delete the windows that started more than retention before now
    --- (session windows: that ended; their value is { e = end, ... }).
    expire = function(_, now)
      local doomed = {}
      for wk, raw in backend.iter(task()) do
        local _, start = M.window_key_parts(wk)
        if expired(start, session and decode(raw), now) then doomed[#doomed + 1] = wk end
      end
      for _, wk in ipairs(doomed) do backend.delete(task(), wk) end
      return #doomed
    end,
  }
end

--- The object of a global table's store: reads only; the rows are the
--- topic's raw records, decoded with its serdes on the way out.
function M.global_store(decl, backend, api, what)
  local P = M.GLOBAL_PARTITION
  local kenc = serde.new(decl.key_serde, api).encode
  local vdec = serde.new(decl.value_serde, api).decode
  local function read_only()
    error(what .. " is a global table's: it is written from its topic " .. decl.global .. " only", 2)
  end
  return {
    global = decl.global,
    --- The value of the topic's latest record with this key, or nil.
    get = function(_, k)
      if k == nil then return nil end
      local raw = backend.get(P, kenc(k, what .. ":get key"))
      if raw == nil then return nil end
      return vdec(raw, #raw, "value of " .. decl.global)
    end,
    put = read_only, delete = read_only,
    --- Apply one record of the topic (raw bytes; a nil value deletes): what
    --- the host does in C, for the test driver.
    _apply = function(_, kb, vb)
      if kb == nil then return end
      if vb == nil then backend.delete(P, kb) else backend.put(P, kb, vb) end
    end,
  }
end

--- Build ctx.stores for a detector.
---@param decls table<string, tide.StoreDecl> the detector's `stores`
---@param env { api: any, db: any, sink: any, task: fun(): integer, stream_time: fun(): number }
---@return table<string, tide.KvStore|tide.WindowStore> stores
---@return table list { { name, decl, backend, output, store } } in id order
function M.open(decls, env)
  local names = {}
  for name in pairs(decls) do names[#names + 1] = name end
  table.sort(names)
  local stores, list = {}, {}
  for i, name in ipairs(names) do
    local decl = decls[name]
    local id = i - 1
    local output = -2 - id -- the sink's output index of this store's changelog
    local backend
    if decl.memory then
      backend = memory_backend(env.api, env.sink, output)
    else
      if env.db == nil then error("store '" .. name .. "' needs a state directory (RocksDB)", 0) end
      backend = rocks_backend(env.api, env.db, env.sink, id)
    end
    local what = "store '" .. name .. "'"
    local s
    if decl.global then
      s = M.global_store(decl, backend, env.api, what)
    elseif decl.kind == "kv" then
      s = kv_store(backend, env.task, what, decl.timestamped)
    else
      s = window_store(backend, decl, env, what)
    end
    stores[name] = s
    list[#list + 1] = { name = name, decl = decl, backend = backend, output = output, store = s }
  end
  return stores, list
end

return M
