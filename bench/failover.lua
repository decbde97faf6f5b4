--- bench/failover.lua: watches `tide run DIR` instances for bench/failover.sh.
---
---   luajit bench/failover.lua settled TIMEOUT_S RECORDS REPLICAS PORT...
---     waits until the instances at PORT... (127.0.0.1) run every task of
---     bench-failover between them, have read RECORDS records in all, and,
---     with REPLICAS > 0, each keeps a standby of every task it does not run,
---     caught up (standby lag 0); prints the first instance's tasks
---     ("0,3,5") and its worker's pid
---   luajit bench/failover.lua alone TIMEOUT_S PORT
---     waits until the instance at PORT runs every task, none restoring
---   luajit bench/failover.lua split LOG MARK KILL_WALL_MS OUT_WALL_MS
---     prints how the failover time divides: from the kill to the survivor's
---     first assignment after line MARK of its LOG (the group noticing and
---     rebalancing), and from there to the output (restore, then processing)
---
--- Exit 1 (the reason on stderr) after TIMEOUT_S seconds. LuaSocket and
--- lua-cjson come with `make deps`.
local cjson = require("cjson")
local http = require("socket.http")
local socket = require("socket")

local function detector(port)
  local body, code = http.request(("http://127.0.0.1:%d/api/detectors"):format(port))
  if code ~= 200 then return nil end
  for _, d in ipairs(cjson.decode(body).detectors) do
    if d.name == "bench-failover" and type(d.tasks) == "table" then return d end
  end
end

--- nil and why, or the first instance's detector entry
local function settled(records, replicas, ports)
  local read, tasks, first = 0, 0, nil
  for i, port in ipairs(ports) do
    local d = detector(port)
    if not d then return nil, "no task map on port " .. port end
    first = first or d
    read = read + d.counters.records_in
    tasks = tasks + #d.tasks.active
    if #d.tasks.restoring > 0 then return nil, "restoring on port " .. port end
    if replicas > 0 and #ports > 1 then
      if #d.tasks.standby + #d.tasks.active ~= d.tasks.partitions then
        return nil, ("port %d: %d standby tasks"):format(port, #d.tasks.standby)
      end
      if d.tasks.standby_lag ~= 0 then
        return nil, ("port %d: standby lag %s"):format(port, tostring(d.tasks.standby_lag))
      end
    end
    if #d.tasks.active == 0 then return nil, "port " .. port .. " runs no task" end
  end
  if tasks ~= first.tasks.partitions then return nil, tasks .. " tasks run" end
  if read < records then return nil, read .. " records read" end
  return first
end

--- nil and why, or the detector entry once it runs every task, restored
local function alone(port)
  local d = detector(port)
  if not d then return nil, "no task map" end
  if #d.tasks.restoring > 0 or #d.tasks.active ~= d.tasks.partitions then
    return nil, ("%d tasks run, %d restoring"):format(#d.tasks.active, #d.tasks.restoring)
  end
  return d
end

--- Wall ms of a log line's "ts" (2026-12-04T20:45:21.516Z, UTC).
local function wall_of(ts)
  local y, mo, d, h, mi, s, ms = ts:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.(%d+)Z$")
  y, mo = tonumber(y), tonumber(mo)
  if mo <= 2 then y, mo = y - 1, mo + 12 end
  -- days since 1970-01-01 of a proleptic Gregorian date
  local days = 365 * y + math.floor(y / 4) - math.floor(y / 100) + math.floor(y / 400)
    + math.floor((153 * (mo - 3) + 2) / 5) + tonumber(d) - 719469
  return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000 + tonumber(s) * 1000 + tonumber(ms)
end

if arg[1] == "split" then
  local n, mark, kill, out = 0, tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5])
  for line in io.lines(arg[2]) do
    n = n + 1
    local ok, ev = pcall(cjson.decode, line)
    if n > mark and ok and ev.msg == "partitions assigned" and ev.partitions ~= "" then
      local at = wall_of(ev.ts)
      print(at - kill, out - at)
      os.exit(0)
    end
  end
  print("- -")
  os.exit(0)
end

local cmd = arg[1]
local timeout, records, replicas, ports
if cmd == "settled" then
  timeout, records, replicas = tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4])
  ports = {}
  for i = 5, #arg do ports[#ports + 1] = tonumber(arg[i]) end
elseif cmd == "alone" then
  timeout, ports = tonumber(arg[2]), { tonumber(arg[3]) }
  settled = function() return alone(ports[1]) end
else
  io.stderr:write("usage: luajit bench/failover.lua (settled TIMEOUT_S RECORDS REPLICAS PORT... | "
    .. "alone TIMEOUT_S PORT)\n")
  os.exit(2)
end
local deadline, why = socket.gettime() + timeout, "nothing yet"
while socket.gettime() < deadline do
  local ok, d, reason = pcall(settled, records, replicas, ports)
  if ok and d then
    print(table.concat(d.tasks.active, ","), d.pid)
    os.exit(0)
  end
  why = ok and reason or tostring(d)
  socket.sleep(0.2)
end
io.stderr:write("bench failover: not settled after " .. timeout .. " s: " .. tostring(why) .. "\n")
os.exit(1)
