--- Error classes raised inside a detector's record path.
--- A classified error is a table { class = ..., message = ... }; the C message
--- handler reads `class` into the dead-letter header `tide.error.class`. Any
--- other error raised by a detector is a ProcessError.
local M = {}

local mt = {
  __tostring = function(e)
    return e.class .. ": " .. e.message
  end,
}

M.DECODE = "DecodeError"
M.PROCESS = "ProcessError"
M.MEMORY = "MemoryError"
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
