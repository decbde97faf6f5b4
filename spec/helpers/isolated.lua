--- Run Lua code, or a tide command, in a process of its own, bounded in time
--- and address space: for tests of what a hostile detector does to the
--- process that runs it (the busted driver's process, `tide test`), which
--- must not be the test runner's own. The code runs under LuaJIT with the
--- runner's LUA_PATH and LUA_CPATH, so `require("tide.testing")` works.
local cluster = require("helpers.cluster")
local cjson = require("cjson").new()

local M = {}

M.ADDRESS_SPACE_KB = 1024 * 1024 -- ulimit -v of a child: a runaway fails, the machine does not

local c -- one cluster (a temporary directory and its processes) per runner

local function cl()
  if not c then c = cluster.new("isolated") end
  return c
end

--- Kill every process started so far (for after_each).
function M.cleanup()
  if c then c:cleanup() end
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- Run argv under `ulimit -v` and wait at most opts.timeout seconds.
--- Returns { code, signal, timed_out, stdout, stderr, elapsed }.
function M.command(argv, opts)
  opts = opts or {}
  local quoted = {}
  for i, a in ipairs(argv) do quoted[i] = shell_quote(a) end
  local script = ("ulimit -v %d && exec %s"):format(opts.address_space_kb or M.ADDRESS_SPACE_KB,
    table.concat(quoted, " "))
  local p = cl():spawn({ "sh", "-c", script }, { name = opts.name or "isolated", stdin = opts.stdin,
    env = opts.env })
  local t0 = cluster.now()
  local ok = pcall(p.wait, p, opts.timeout or 30)
  local res = { elapsed = cluster.now() - t0, timed_out = not ok }
  if not ok then p:destroy() end
  res.code, res.signal = p.exit_code, p.signal
  res.stdout, res.stderr = p:stdout_text(), p:stderr_text()
  return res
end

--- Run `code` (Lua source) in luajit; its stdout lines that are JSON are
--- decoded into res.lines.
function M.lua(code, opts)
  local path = cl():path("script.lua")
  cluster.write_file(path, code)
  local res = M.command({ "luajit", path }, opts)
  res.lines = {}
  for line in res.stdout:gmatch("[^\n]+") do
    local ok, v = pcall(cjson.decode, line)
    if ok then res.lines[#res.lines + 1] = v end
  end
  return res
end

--- A file with `text`, in the runner's directory.
function M.file(label, text)
  local path = cl():path(label)
  cluster.write_file(path, text)
  return path
end

--- Lua code for a child that drives `detector` through the busted test
--- driver with `opts` ({ memory =, timeout_ms = }), pipes `records` (values
--- to its first input) and prints, as JSON lines, each record's errors,
--- then { rss_kb = its peak resident set }.
function M.driver_script(detector, opts, records)
  return ([[
local cjson = require("cjson")
local testing = require("tide.testing")
local ok, d = pcall(testing.driver, %q, %s)
if not ok then
  print(cjson.encode({ load_error = tostring(d) }))
else
  for _, v in ipairs(%s) do
    local t0 = os.clock()
    local pok, perr = pcall(d.pipe, d, d.spec.inputs[1], "k", v)
    local errs = {}
    for _, e in ipairs(d:errors()) do errs[#errs + 1] = { class = e.class, message = e.message } end
    print(cjson.encode({ value = v, errors = errs, raised = not pok and tostring(perr) or nil,
      out = #(d:read(d.spec.outputs[1] or "") or {}), dead = #d:dead_letters(),
      cpu = os.clock() - t0 }))
  end
end
local hwm
for line in io.lines("/proc/self/status") do hwm = hwm or line:match("^VmHWM:%%s*(%%d+)") end
print(cjson.encode({ rss_kb = tonumber(hwm) }))
]]):format(detector, opts, records)
end

return M
