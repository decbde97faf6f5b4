--- bench/fleet.lua: watches a `tide run DIR` host for bench/run.sh.
---
---   luajit bench/fleet.lua watch PORT N RECORDS TIMEOUT_S IDLE_S
---
--- Polls the host's admin API (GET /api/detectors on 127.0.0.1:PORT) every
--- 100 ms until N detectors have their partitions assigned, then until every
--- one of them has read RECORDS records (records_in), sampling each worker's
--- VmRSS from /proc meanwhile; then waits IDLE_S seconds and samples them
--- again, idle. Gives up after TIMEOUT_S seconds (exit 1, with the reason on
--- stderr). Prints, on stdout, one line for the run and one per worker:
---
---   fleet N RECORDS_IN_WINDOW WINDOW_MS RECORDS_BEFORE ASSIGN_MS
---   worker NAME PID BUSY_RSS_KB HWM_KB IDLE_RSS_KB API_IDLE_RSS_BYTES
---
--- The window runs from the first poll that saw every detector assigned to
--- the moment the last one finished; RECORDS_IN_WINDOW counts only the
--- records read inside it (those read before, by detectors assigned earlier,
--- are RECORDS_BEFORE), so RECORDS_IN_WINDOW / WINDOW_MS is the aggregate
--- rate while all of them ran. A detector's finish is interpolated between
--- the last poll that saw it short of RECORDS and the first that saw it done
--- (at its rate between the two), which takes the 100 ms of polling out of
--- short windows. ASSIGN_MS is from the first poll to the all-assigned one.
---
--- Plain LuaJIT: the FFI for the socket and the clock, lua-cjson for the
--- JSON (both come with `make deps`); no LuaSocket, curl or jq needed.
local ffi = require("ffi")
local cjson = require("cjson")

ffi.cdef [[
typedef unsigned int socklen_t;
typedef unsigned short sa_family_t;
struct sockaddr_in { sa_family_t sin_family; uint16_t sin_port; uint32_t sin_addr; char zero[8]; };
struct timeval { long tv_sec; long tv_usec; };
struct timespec { long tv_sec; long tv_nsec; };
int socket(int domain, int type, int protocol);
int connect(int fd, const void *addr, socklen_t len);
int setsockopt(int fd, int level, int name, const void *val, socklen_t len);
long send(int fd, const void *buf, size_t n, int flags);
long recv(int fd, void *buf, size_t n, int flags);
int close(int fd);
int poll(void *fds, unsigned long n, int timeout);
int clock_gettime(int clk, struct timespec *ts);
uint16_t htons(uint16_t v);
]]
local C = ffi.C
local AF_INET, SOCK_STREAM, SOL_SOCKET, SO_RCVTIMEO, SO_SNDTIMEO = 2, 1, 1, 20, 21
local CLOCK_MONOTONIC = 1

local function now_ms()
  local ts = ffi.new("struct timespec")
  C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local function sleep_ms(ms)
  if ms > 0 then C.poll(nil, 0, math.floor(ms)) end
end

--- GET path on 127.0.0.1:port; the body, or nil and a reason. The server
--- closes the connection after one answer.
local function http_get(port, path)
  local fd = C.socket(AF_INET, SOCK_STREAM, 0)
  if fd < 0 then return nil, "socket failed" end
  local tv = ffi.new("struct timeval", 2, 0)
  C.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, ffi.sizeof(tv))
  C.setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, tv, ffi.sizeof(tv))
  local sa = ffi.new("struct sockaddr_in")
  sa.sin_family = AF_INET
  sa.sin_port = C.htons(port)
  sa.sin_addr = 0x0100007f -- 127.0.0.1, network order on a little-endian host
  if ffi.abi("be") then sa.sin_addr = 0x7f000001 end
  if C.connect(fd, sa, ffi.sizeof(sa)) ~= 0 then
    C.close(fd)
    return nil, "cannot connect to 127.0.0.1:" .. port
  end
  local req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"):format(path, port)
  if C.send(fd, req, #req, 0) ~= #req then
    C.close(fd)
    return nil, "send failed"
  end
  local parts, buf = {}, ffi.new("char[65536]")
  while true do
    local n = tonumber(C.recv(fd, buf, 65536, 0))
    if n <= 0 then break end
    parts[#parts + 1] = ffi.string(buf, n)
  end
  C.close(fd)
  local resp = table.concat(parts)
  local code = tonumber(resp:match("^HTTP/1%.%d (%d+)"))
  local body = resp:match("\r\n\r\n(.*)$")
  if code ~= 200 or not body then return nil, "HTTP " .. tostring(code) end
  return body
end

local function proc_kb(pid, field)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)"))
end

local function detectors(port)
  local body, err = http_get(port, "/api/detectors")
  if not body then return nil, err end
  local ok, doc = pcall(cjson.decode, body)
  if not ok or type(doc) ~= "table" or type(doc.detectors) ~= "table" then
    return nil, "not the JSON expected"
  end
  return doc.detectors
end

local function watch(port, n, records, timeout_s, idle_s)
  local t_start = now_ms()
  local deadline = t_start + timeout_s * 1000
  local busy = {} -- pid -> max VmRSS kB seen while not done
  local t_assigned, before, last_err
  local last = {}
  local prev = {}   -- name -> { t, records_in } of the previous poll
  local finish = {} -- name -> interpolated ms when it reached RECORDS
  while true do
    local t = now_ms()
    if t > deadline then
      local seen = {}
      for _, d in ipairs(last) do
        seen[#seen + 1] = ("%s %s in=%s parts=%s"):format(d.name, d.state,
          tostring(d.counters and d.counters.records_in), tostring(d.assigned_partitions))
      end
      io.stderr:write(("fleet: timed out after %d s %s (%s; last error: %s)\n"):format(timeout_s,
        t_assigned and "waiting for every detector to finish" or "waiting for every detector's partitions",
        #seen > 0 and table.concat(seen, ", ") or "no detectors", tostring(last_err)))
      return 1
    end
    local ds, err = detectors(port)
    if ds then
      last = ds
      local assigned, done, total = 0, 0, 0
      for _, d in ipairs(ds) do
        local rin = d.counters and d.counters.records_in or 0
        total = total + rin
        if (tonumber(d.assigned_partitions) or 0) > 0 then assigned = assigned + 1 end
        if rin >= records then
          done = done + 1
          if not finish[d.name] then
            local p = prev[d.name]
            if p and rin > p.rin and p.rin < records then
              finish[d.name] = p.t + (t - p.t) * (records - p.rin) / (rin - p.rin)
            else
              finish[d.name] = t
            end
          end
        end
        prev[d.name] = { t = t, rin = rin }
        if d.pid and d.pid > 0 and rin < records then
          local kb = proc_kb(d.pid, "VmRSS")
          if kb and kb > (busy[d.pid] or 0) then busy[d.pid] = kb end
        end
      end
      if not t_assigned and #ds == n and assigned == n then
        t_assigned, before = t, total
      end
      if t_assigned and #ds == n and done == n then
        local t_done = t_assigned
        for _, d in ipairs(ds) do
          if finish[d.name] and finish[d.name] > t_done then t_done = finish[d.name] end
        end
        local window = t_done - t_assigned
        print(("fleet %d %d %.0f %d %.0f"):format(n, total - before, window, before,
          t_assigned - t_start))
        io.stdout:flush()
        -- idle: every worker is caught up and only polls
        sleep_ms(idle_s * 1000)
        local idle = detectors(port) or ds
        for _, d in ipairs(idle) do
          local pid = d.pid or 0
          print(("worker %s %d %s %s %s %s"):format(d.name, pid, tostring(busy[pid] or "-"),
            tostring(proc_kb(pid, "VmHWM") or "-"), tostring(proc_kb(pid, "VmRSS") or "-"),
            tostring(d.rss_bytes or "-")))
        end
        return 0
      end
    else
      last_err = err
    end
    sleep_ms(100 - (now_ms() - t))
  end
end

local cmd = arg[1]
if cmd == "watch" and #arg == 6 then
  os.exit(watch(tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5]),
    tonumber(arg[6])))
end
io.stderr:write("usage: luajit bench/fleet.lua watch PORT N RECORDS TIMEOUT_S IDLE_S\n")
os.exit(2)
