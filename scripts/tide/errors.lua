--- Error classes raised inside a detector's record path.
--- A classified error is a table { class = ..., message = ... } with this
--- module's metatable; C (bindings/lua_call.c) reads `class` into the
--- dead-letter header `tide.error.class` only for a table with that very
--- metatable, which detectors cannot reach: any other error a detector raises,
--- whatever its fields, is a ProcessError.
local M = {}

local rawget, type, tostring, pcall = rawget, type, tostring, pcall

local mt = {
  __tostring = function(e)
    return tostring(rawget(e, "class")) .. ": " .. tostring(rawget(e, "message"))
  end,
  __metatable = "tide.error",
}
debug.getregistry()["tide.error.mt"] = mt

--- A description of any error value that never lets it run away: a string
--- as it is, a tide error as "Class: message", anything else through a
--- protected tostring (a __tostring that fails gives a plain description;
--- one that hangs is stopped by the driver's watchdog, see bindings/guard.h).
---@param e any
---@return string
function M.describe(e)
  local t = type(e)
  if t == "string" then return e end
  if t == "number" or t == "nil" or t == "boolean" then return tostring(e) end
  if t == "table" and debug.getmetatable(e) == mt then
    local c, m = rawget(e, "class"), rawget(e, "message")
    if type(c) == "string" and type(m) == "string" then return c .. ": " .. m end
  end
  local ok, s = pcall(tostring, e)
  if ok and type(s) == "string" then return s end
  return "(error object is a " .. t .. " value)"
end

local co_create, co_resume, co_status = coroutine.create, coroutine.resume, coroutine.status

local function finish(co, ok, ...)
  if ok and co_status(co) == "dead" then return true, ... end
  local e = ok and "coroutine.yield outside a coroutine of the detector's own" or ...
  return false, e, debug.traceback(co)
end

--- Call fn(...) on a coroutine of its own, as C calls into Lua do (see
--- bindings/lua_call.c): true and its results, or false, the error and the
--- traceback from where it was raised. No handler has to run at the point of
--- the error, so a stack overflow or an error object with a hostile
--- __tostring cannot turn into "error in error handling".
function M.call(fn, ...)
  local co = co_create(fn)
  return finish(co, co_resume(co, ...))
end

--- Is e one of tide's own error objects?
function M.is(e)
  return type(e) == "table" and debug.getmetatable(e) == mt
end

M.DECODE = "DecodeError"
M.PROCESS = "ProcessError"
M.MEMORY = "MemoryError"
M.TIMEOUT = "TimeoutError"
M.USAGE = "UsageError"
--- Not a failure of the record: something it needs (the schema registry) is
--- unavailable now. The record and those after it are handed again later;
--- nothing is dead-lettered (bindings/lua_call.c, TIDE_RETRY).
M.RETRY = "RetryLater"

---@param class string
---@param message string
function M.new(class, message)
  return setmetatable({ class = class, message = message }, mt)
end

--- Raise a classified error (no position: the traceback says where).
function M.raise(class, message)
  error(M.new(class, message), 0)
end

--- "file:line" of the first stack frame outside tide's own modules: where a
--- detector called the API it misused.
--- nil when the caller's frame is gone (`return tide.topology{...}` is a
--- tail call): the search stops at the first C frame, the loader's xpcall.
function M.caller()
  for level = 2, 40 do
    local info = debug.getinfo(level, "Sl")
    if not info or info.what == "C" then break end
    if not info.source:find("[/@]tide/[%w_]+%.lua$") then
      return ("%s:%d"):format(info.short_src, info.currentline or 0)
    end
  end
  return nil
end

--- Raise a UsageError for an API misused by the detector at load time: the
--- message names the detector's line (e.where; nil when the loader must say
--- it), and loading shows no traceback.
function M.usage(message)
  local at = M.caller()
  local e = M.new(M.USAGE, at and (at .. ": " .. message) or message)
  e.where = at
  error(e, 0)
end

return M
