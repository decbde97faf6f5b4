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

---@param class string
---@param message string
function M.new(class, message)
  return setmetatable({ class = class, message = message }, mt)
end

--- Raise a classified error (no position: the traceback says where).
function M.raise(class, message)
  error(M.new(class, message), 0)
end

return M
