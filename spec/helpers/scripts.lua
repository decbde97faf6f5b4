--- Detector scripts written by a spec into temporary files, and test drivers
--- on them; every file goes at the end of the spec file (call in a spec
--- file's top level: it registers busted's teardown there).
local testing = require("tide.testing")

local M = {}

--- Returns write(src) -> path and driver(src, opts) -> a test driver.
function M.temporary()
  local files = {}
  local function write(src)
    local base = os.tmpname() -- creates the file: keep only the .lua beside it
    os.remove(base)
    local path = base .. ".lua"
    local f = assert(io.open(path, "w"))
    f:write(src)
    f:close()
    files[#files + 1] = path
    return path
  end
  getfenv(2).teardown(function()
    for _, p in ipairs(files) do os.remove(p) end
  end)
  return write, function(src, opts) return testing.driver(write(src), opts) end
end

return M
