--- The tide instances of a `make chaos` run: up to three `tide run DIR` folder
--- hosts with one application.id, each in a slot with its own state
--- directory (kept across restarts of that slot, as a machine's disk is), and
--- the worker processes under them.
---
--- It notes every instance that ends without being asked to: that is a
--- finding, not a fault the run injected.
local ffi = require("ffi")
local cluster = require("helpers.cluster")

local M = {}
M.__index = M

M.SLOTS = 3
M.STOP_TIMEOUT = 60 -- seconds a SIGTERMed instance gets before SIGKILL

--- A fleet on cluster c running the detectors of folder dir. config: the -D
--- settings of every instance (table key -> value).
function M.new(c, dir, app, config)
  return setmetatable({ c = c, dir = dir, app = app, config = config, slots = {}, starts = 0,
    unasked_exits = {}, slow_stops = 0, all_procs = {} }, M)
end

--- Running instances, as a list of slot numbers.
function M:running()
  local list = {}
  for slot = 1, M.SLOTS do
    local s = self.slots[slot]
    if s and not s.stopping and s.proc:running() then list[#list + 1] = slot end
  end
  return list
end

local function free_slot(self)
  for slot = 1, M.SLOTS do
    if not self.slots[slot] then return slot end
  end
end

--- Start an instance in a free slot; returns the slot (nil when all are taken).
function M:start()
  local slot = free_slot(self)
  if not slot then return nil end
  local config = { ["state.dir"] = ("%s/state-%d"):format(self.c.dir, slot) }
  for k, v in pairs(self.config) do config[k] = v end
  self.starts = self.starts + 1
  local p = self.c:run(self.dir, { app = self.app, name = ("instance%d-%d"):format(slot, self.starts),
    config = config })
  self.slots[slot] = { proc = p, started = cluster.now() }
  self.all_procs[#self.all_procs + 1] = p
  return slot
end

--- SIGTERM the instance in `slot`; reaped by poll().
function M:stop(slot)
  local s = assert(self.slots[slot], "no instance in slot " .. slot)
  s.stopping = cluster.now()
  s.proc:kill("TERM")
end

--- SIGKILL the instance in `slot` with its workers (the whole process group).
function M:kill(slot)
  local s = assert(self.slots[slot], "no instance in slot " .. slot)
  s.proc:destroy()
  self.slots[slot] = nil
end

--- Reap ended instances: those asked to stop free their slot; the others are
--- noted in unasked_exits. A stop that takes too long is finished with SIGKILL.
function M:poll()
  for slot = 1, M.SLOTS do
    local s = self.slots[slot]
    if s and s.proc:poll() then
      if not s.stopping then
        self.unasked_exits[#self.unasked_exits + 1] = { slot = slot, name = s.proc.name,
          status = s.proc:status_text(), after = cluster.now() - s.started,
          tail = cluster.info_lines(s.proc, 8) }
      end
      self.slots[slot] = nil
    elseif s and s.stopping and cluster.now() - s.stopping > M.STOP_TIMEOUT * cluster.scale then
      self.slow_stops = self.slow_stops + 1
      s.proc:destroy()
      self.slots[slot] = nil
    end
  end
end

--- The worker processes of the instance in `slot`: { { pid, detector } }.
function M:workers(slot)
  local s = self.slots[slot]
  if not s then return {} end
  local pid = s.proc.pid
  local f = io.open(("/proc/%d/task/%d/children"):format(pid, pid), "r")
  if not f then return {} end
  local text = f:read("*a") or ""
  f:close()
  local list = {}
  for child in text:gmatch("%d+") do
    local cmd = io.open(("/proc/%s/cmdline"):format(child), "rb")
    local argv = cmd and cmd:read("*a") or ""
    if cmd then cmd:close() end
    list[#list + 1] = { pid = tonumber(child), detector = argv:match("([%w_]+)%.lua") or "?" }
  end
  return list
end

--- SIGKILL one process by pid (a worker).
function M.kill_pid(pid)
  return ffi.C.kill(pid, cluster.SIG.KILL) == 0
end

--- Stop every instance (SIGTERM, then SIGKILL after STOP_TIMEOUT); returns
--- how each ended: { name -> status }.
function M:stop_all()
  for _, slot in ipairs(self:running()) do self:stop(slot) end
  local deadline = cluster.now() + M.STOP_TIMEOUT * cluster.scale
  local ended = {}
  while next(self.slots) and cluster.now() < deadline do
    for slot = 1, M.SLOTS do
      local s = self.slots[slot]
      if s and s.proc:poll() then
        ended[s.proc.name] = s.proc:status_text()
        self.slots[slot] = nil
      end
    end
    cluster.pause(50)
  end
  for slot, s in pairs(self.slots) do
    self.slow_stops = self.slow_stops + 1
    s.proc:destroy()
    ended[s.proc.name] = "did not stop within " .. M.STOP_TIMEOUT .. " s: killed"
    self.slots[slot] = nil
  end
  return ended
end

return M
