--- The environment a detector's code runs in.
---
--- A whitelist: the pure parts of Lua (string without dump, table, math, bit,
--- coroutine), os.time/clock/date/difftime, text-only load, and the `tide`
--- module. Reaching for anything else (io, os.execute, require, debug, ffi,
--- package, string.dump, collectgarbage, ...) raises an error that names it,
--- instead of the bare "attempt to index a nil value".
local M = {}

local function refuse(what)
  error(what .. " is not available to detectors (tide sandbox)", 3)
end

local function denied(what)
  return function()
    refuse(what)
  end
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

local forbidden = {
  io = true, debug = true, ffi = true, package = true, jit = true,
  dofile = true, loadfile = true, collectgarbage = true, getfenv = true,
  setfenv = true, module = true, newproxy = true, gcinfo = true,
}

--- Make the global environment for one detector.
---@param tide table the `tide` module the detector sees
---@param opts? { print?: fun(msg: string), require?: fun(name: string): any }
---@return table env
function M.env(tide, opts)
  opts = opts or {}
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next,
    pairs = pairs, pcall = pcall, xpcall = xpcall, select = select,
    tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
    rawequal = rawequal, rawget = rawget, rawset = rawset,
    setmetatable = setmetatable, getmetatable = getmetatable,
    _VERSION = _VERSION,
    string = copy(string, { dump = true }),
    table = copy(table, {}),
    math = copy(math, {}),
    bit = copy(require("bit"), {}),
    coroutine = copy(coroutine, {}),
    os = limited("os", os, { "time", "clock", "date", "difftime" }),
    tide = tide,
  }
  env.string.dump = denied("string.dump")
  env._G = env

  local function checked_load(chunk, chunkname, _, fenv)
    if type(chunk) == "function" then
      local parts = {}
      while true do
        local piece = chunk()
        if piece == nil or piece == "" then break end
        parts[#parts + 1] = piece
      end
      chunk = table.concat(parts)
    end
    if type(chunk) ~= "string" then
      error("bad argument #1 to 'load' (string expected)", 2)
    end
    if chunk:byte(1) == 27 then
      refuse("loading bytecode")
    end
    return load(chunk, chunkname or "=(load)", "t", fenv or env)
  end
  env.load = checked_load
  env.loadstring = checked_load

  env.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    if opts.print then opts.print(table.concat(parts, "\t")) end
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
