--- The environment a detector's code runs in.
---
--- A whitelist: the pure parts of Lua (string without dump, table, math, bit,
--- coroutine), os.time/clock/date/difftime, text-only load, and the `tide`
--- module. Reaching for anything else (io, os.execute, require, debug, ffi,
--- package, string.dump, collectgarbage, ...) raises an error that names it,
--- instead of the bare "attempt to index a nil value".
---
--- What a detector shares with tide's own Lua (and, in `tide test`, `tide
--- replay` and busted, with other detectors) is locked: the string metatable
--- is read-only (string methods are tide's, whatever a detector does), the
--- `tide` module is a copy per detector, tide's classes hide their
--- metatables, and coroutine.running() and yield stay within the detector's
--- own coroutines, never tide's.
local core = require("tide.core")
local errors = require("tide.errors")

local M = {}

local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local setmetatable, getmetatable, rawget = setmetatable, getmetatable, rawget
local real_rep, real_load, concat, collectgarbage = string.rep, load, table.concat, collectgarbage
local co_create, co_wrap, co_running, co_yield = coroutine.create, coroutine.wrap,
  coroutine.running, coroutine.yield

local function refuse(what)
  error(what .. " is not available to detectors (tide sandbox)", 3)
end

local function denied(what)
  return function()
    refuse(what)
  end
end

--- A read-only view of `t`: reads go to t, writes raise with `why`.
local function read_only(t, why)
  return setmetatable({}, {
    __index = t,
    __newindex = function() error(why .. " (tide sandbox)", 2) end,
    __metatable = false,
  })
end

--- A read-only view of `lib` limited to `names`; other fields raise.
local function limited(libname, lib, names)
  local t = {}
  for _, n in ipairs(names) do t[n] = lib[n] end
  return setmetatable(t, {
    __index = function(_, k)
      refuse(libname .. "." .. tostring(k))
    end,
  })
end

local function copy(lib, except)
  local t = {}
  for k, v in pairs(lib) do
    if not except[k] then t[k] = v end
  end
  return t
end

--- string.rep that checks the size of what it would make against what the
--- detector's heap has left, so that ("x"):rep(2^30) fails at the detector's
--- line with a MemoryError instead of an allocation of a gigabyte.
local function rep(s, n, sep)
  local ts = type(s)
  if (ts == "string" or ts == "number") and type(n) == "number" and n > 1 then
    local size = #tostring(s) * n
    local tsep = type(sep)
    if tsep == "string" or tsep == "number" then size = size + #tostring(sep) * (n - 1) end
    if size > 65536 then
      local room, cap = core.heap_room()
      if size > room then
        collectgarbage() -- garbage counts against the heap until collected
        room, cap = core.heap_room()
      end
      if size > room then
        local info = debug.getinfo(2, "Sl")
        local at = info and info.currentline > 0 and (info.short_src .. ":" .. info.currentline .. ": ") or ""
        error(errors.new(errors.MEMORY, ("%snot enough memory: string.rep would make %.0f bytes, "
          .. "past the detector's limit of %.0f bytes of Lua heap"):format(at, size, cap)), 0)
      end
    end
  end
  return real_rep(s, n, sep)
end

local string_methods -- what ("").method finds, once locked

--- Lock the string metatable of this Lua state (once): its methods become
--- tide's table (string, with dump refused and rep checked) and the
--- metatable itself cannot be reached: getmetatable("") gives a read-only
--- stand-in. Strings are shared by every detector and by tide's own code,
--- which must print what happened, not what a detector wished.
function M.lock_strings()
  local mt = debug.getmetatable("")
  if string_methods and mt.__index == string_methods then return end
  string_methods = setmetatable({ dump = denied("string.dump"), rep = rep }, { __index = string })
  mt.__index = string_methods
  mt.__newindex = nil
  mt.__metatable = read_only({ __index = read_only(string_methods,
    "strings are shared with tide: their methods cannot be changed") },
    "the string metatable is shared with tide: it cannot be changed")
end

--- The detector's own copy of the `tide` module: setting a field of it
--- changes nothing for tide or for another detector.
local function module_copy(t)
  local c = {}
  for k, v in pairs(t) do
    if type(v) == "table" and getmetatable(v) == nil then v = copy(v, {}) end
    c[k] = v
  end
  return c
end

--- coroutine, with running() and yield() confined to the coroutines the
--- detector made: tide runs each call on a coroutine of its own, which a
--- detector must neither get hold of nor yield.
local function coroutines()
  local mine = setmetatable({}, { __mode = "k" })
  local c = copy(coroutine, {})
  function c.create(f)
    local co = co_create(f)
    mine[co] = true
    return co
  end
  function c.wrap(f)
    if type(f) ~= "function" then return co_wrap(f) end
    return co_wrap(function(...)
      mine[co_running()] = true
      return f(...)
    end)
  end
  function c.running()
    local co = co_running()
    if co and mine[co] then return co end
    return nil
  end
  function c.yield(...)
    local co = co_running()
    if not (co and mine[co]) then error("attempt to yield from outside a coroutine", 2) end
    return co_yield(...)
  end
  return c
end

local forbidden = {
  io = true, debug = true, ffi = true, package = true, jit = true,
  dofile = true, loadfile = true, collectgarbage = true, getfenv = true,
  setfenv = true, module = true, newproxy = true, gcinfo = true,
}

--- load for detectors: text only, into the detector's environment, and
--- under a chunk name that cannot pass for a file (nor for tide's own code).
local function checked_load(env)
  return function(chunk, chunkname, _, fenv)
    if type(chunk) == "function" then
      local parts = {}
      while true do
        local piece = chunk()
        if piece == nil or piece == "" then break end
        if type(piece) ~= "string" then error("reader function must return a string", 2) end
        parts[#parts + 1] = piece
      end
      chunk = concat(parts)
    end
    if type(chunk) ~= "string" then
      error("bad argument #1 to 'load' (string expected)", 2)
    end
    if chunk:byte(1) == 27 then
      refuse("loading bytecode")
    end
    local name = "=(load)"
    if type(chunkname) == "string" then name = "=(load) " .. chunkname:gsub("^[=@]", "") end
    return real_load(chunk, name, "t", type(fenv) == "table" and fenv or env)
  end
end

--- Make the global environment for one detector.
---@param tide table the `tide` module the detector sees (copied)
---@param opts? { print?: fun(msg: string), require?: fun(name: string): any }
---@return table env
function M.env(tide, opts)
  opts = opts or {}
  M.lock_strings()
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next,
    pairs = pairs, pcall = pcall, xpcall = xpcall, select = select,
    tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
    rawequal = rawequal, rawget = rawget, rawset = rawset,
    setmetatable = setmetatable,
    _VERSION = _VERSION,
    string = copy(string, { dump = true }),
    table = copy(table, {}),
    math = copy(math, {}),
    bit = copy(require("bit"), {}),
    coroutine = coroutines(),
    os = limited("os", os, { "time", "clock", "date", "difftime" }),
    tide = module_copy(tide),
  }
  env.string.dump = denied("string.dump")
  env.string.rep = rep
  env._G = env
  -- getmetatable("") gives a stand-in of the detector's own, read-only
  local strings = read_only({ __index = read_only(string_methods,
    "strings are shared with tide: their methods cannot be changed") },
    "the string metatable is shared with tide: it cannot be changed")
  env.getmetatable = function(v)
    if type(v) == "string" then return strings end
    return getmetatable(v)
  end

  env.load = checked_load(env)
  env.loadstring = env.load

  env.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    if opts.print then opts.print(concat(parts, "\t")) end
  end

  env.require = opts.require or function(name)
    refuse("require('" .. tostring(name) .. "')")
  end

  return setmetatable(env, {
    __index = function(_, k)
      if forbidden[k] then refuse(k) end
      return nil
    end,
  })
end

return M
