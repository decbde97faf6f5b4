--- Waiting for an observable condition, for the integration tier: poll it
--- until it holds, within a bounded time, and fail with what was awaited and
--- what was last seen. Nothing in the specs sleeps to synchronise.
---
---   local got = wait.eventually(function()
---     local n = count()
---     if n >= 10 then return n end
---     return nil, n .. " of 10 so far"
---   end, 30, { what = "ten records", watch = proc })
local system = require("system")

local M = {}

-- Under a wrapper such as valgrind everything is slower: TIDE_TEST_TIME_SCALE
-- (default 10 with TIDE_TEST_WRAP, else 1) multiplies every timeout.
M.scale = tonumber(os.getenv("TIDE_TEST_TIME_SCALE") or "") or
  ((os.getenv("TIDE_TEST_WRAP") or "") ~= "" and 10 or 1)

-- A monotonic clock in seconds (lua-system, which busted itself needs).
M.now = system.monotime

--- Wait `ms` milliseconds. Only for the gap between two polls of a condition.
function M.pause(ms)
  system.sleep(ms / 1000)
end

local function as_list(watch)
  if watch == nil then return {} end
  if watch.poll then return { watch } end
  return watch
end

--- The first watched process that has exited, or nil.
local function exited(procs)
  for _, p in ipairs(procs) do
    if p:poll() then return p end
  end
end

--- The last lines each watched process logged; `tail`: how many (default
--- 20), or a function(proc) -> text.
local function tails(procs, tail)
  local t = {}
  for _, p in ipairs(procs) do
    t[#t + 1] = "-- " .. p.name .. ":\n" .. (type(tail) == "function" and tail(p) or p:log_tail(tail or 20))
  end
  return table.concat(t, "\n")
end

--- Call fn() until it returns a truthy value, and return what it returned.
--- While the condition does not hold, fn returns nil or false and, if it
--- likes, a description of what it sees, for the failure message. Raises
--- after `timeout` seconds (times M.scale): "timed out after Ns waiting for
--- WHAT (last seen: WHY)", with the log tails of the watched processes; or
--- as soon as a watched process exits. An error fn raises goes through.
---@param fn fun(): any, string?
---@param timeout number seconds
---@param opts string|{ what: string, every?: number, watch?: table, tail?: integer }
---   what: names the condition; every: ms between polls (default 50); watch:
---   a process (spec/helpers/cluster.lua) or a list of them that must keep
---   running; tail: log lines shown per process (default 20), or a
---   function(proc) -> text
function M.eventually(fn, timeout, opts)
  if type(opts) == "string" then opts = { what = opts } end
  assert(type(fn) == "function" and type(timeout) == "number" and type(opts) == "table" and opts.what,
    "eventually(fn, timeout seconds, what | { what = ..., every =, watch = })")
  local procs = as_list(opts.watch)
  local limit = timeout * M.scale
  local deadline = M.now() + limit
  local why
  while true do
    local results = { fn() }
    if results[1] then return unpack(results, 1, table.maxn(results)) end
    why = results[2]
    local gone = exited(procs)
    if gone then
      error(("%s exited (%s) while waiting for %s%s\n%s"):format(gone.name, gone:status_text(),
        opts.what, why and (" (last seen: " .. tostring(why) .. ")") or "", tails(procs, opts.tail)), 2)
    end
    if M.now() >= deadline then
      error(("timed out after %gs waiting for %s%s%s"):format(limit, opts.what,
        why and (" (last seen: " .. tostring(why) .. ")") or "", #procs > 0 and ("\n" .. tails(procs, opts.tail)) or ""), 2)
    end
    M.pause(opts.every or 50)
  end
end

return M
