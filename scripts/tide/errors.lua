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
function M.caller()
  for level = 2, 40 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if not info.source:find("[/@]tide/[%w_]+%.lua$") and info.what ~= "C" then
      return ("%s:%d"):format(info.short_src, info.currentline or 0)
    end
  end
  return "?"
end

--- Raise a UsageError for an API misused by the detector at load time: the
--- message names the detector's line, and loading shows no traceback.
function M.usage(message)
  M.raise(M.USAGE, M.caller() .. ": " .. message)
end

return M
