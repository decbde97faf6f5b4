--- Process management for the integration tier (spec/04-integration).
---
--- Each spec file makes one cluster: a `tide broker` (librdkafka's mock cluster)
--- in its own process on 127.0.0.1, and the `tide run`, `tide produce` and
--- `tide consume` processes its tests start against it. Processes are started
--- with fork/exec through LuaJIT's FFI, each in its own process group, and with
--- PR_SET_PDEATHSIG so that none outlives the test runner even when it is killed.
--- Exit codes come from waitpid, not from wrapper shells.
---
--- Nothing here sleeps to synchronise: every wait polls a condition (a log line,
--- a file, an exit) against a bounded deadline and raises, with the tail of the
--- process's log, when the deadline passes.
---
--- Environment: TIDE_TEST_BIN (the tide binary), TIDE_TEST_TMP (a fresh directory
--- per test run), TIDE_TEST_WRAP (optional command prefix for `tide run`, e.g.
--- valgrind).
local ffi = require("ffi")
local cjson = require("cjson").new()

cjson.decode_invalid_numbers(false)

local C = ffi.C

-- One declaration per cdef: another spec running in the same busted process may
-- have declared some of these already, and LuaJIT refuses a redefinition.
for _, decl in ipairs({
  "int fork(void);",
  "int execvpe(const char *file, char *const argv[], char *const envp[]);",
  "extern char **environ;",
  "void _exit(int status);",
  "int open(const char *path, int flags, ...);",
  "int close(int fd);",
  "long write(int fd, const void *buf, unsigned long count);",
  "int dup2(int oldfd, int newfd);",
  "int kill(int pid, int sig);",
  "int waitpid(int pid, int *status, int options);",
  "int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5);",
  "int setpgid(int pid, int pgid);",
  "int getpid(void);",
  "int getppid(void);",
  "int close_range(unsigned int first, unsigned int last, int flags);",
  "int mkdir(const char *path, unsigned int mode);",
  "char *strerror(int errnum);",
}) do
  pcall(ffi.cdef, decl)
end

-- Resolved now, in the parent: the forked child must not need the dynamic linker.
local c_fork, c_execvpe, c_exit = C.fork, C.execvpe, C._exit
local c_open, c_close, c_dup2 = C.open, C.close, C.dup2
local c_kill, c_waitpid = C.kill, C.waitpid
local c_prctl, c_setpgid, c_getppid = C.prctl, C.setpgid, C.getppid
local has_close_range, c_close_range = pcall(function() return C.close_range end)

local O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC, O_NONBLOCK = 0, 1, 0x40, 0x200, 0x800
local WNOHANG = 1
local PR_SET_PDEATHSIG = 1
local SIG = { HUP = 1, INT = 2, KILL = 9, TERM = 15, CONT = 18, STOP = 19 }

local M = { SIG = SIG }

local wait = require("helpers.eventually")

-- Under a wrapper such as valgrind everything is slower: TIDE_TEST_TIME_SCALE
-- (default 10 with TIDE_TEST_WRAP, else 1) multiplies every deadline here.
M.scale = wait.scale

-- Bounds: every wait in this file ends.
M.START_TIMEOUT = 15      -- broker address on stdout
M.EXIT_TIMEOUT = 30       -- a short-lived command (produce, consume)
M.LOG_TIMEOUT = 30        -- default for wait_for_log
M.CONTROL_TIMEOUT = 15    -- a broker's answer to a control command

-- A monotonic clock in seconds, and the pause between two polls of a
-- condition (helpers.eventually).
M.now, M.pause = wait.now, wait.pause

--- Poll fn until it returns a truthy value (see helpers.eventually).
M.eventually = wait.eventually

local function errno_msg()
  return ffi.string(C.strerror(ffi.errno()))
end

local function shell_quote(s)
  if s:match("^[%w%._/:=,@%-+]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
M.read_file = read_file

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  assert(f:write(s))
  assert(f:close())
end
M.write_file = write_file

local function mkdir_p(path)
  local acc = path:sub(1, 1) == "/" and "" or "."
  for part in path:gmatch("[^/]+") do
    acc = acc .. "/" .. part
    C.mkdir(acc, tonumber("755", 8))
  end
end

local function tail(s, n)
  if not s or s == "" then return "(empty)" end
  local lines = {}
  for l in s:gmatch("[^\n]*") do
    if l ~= "" then lines[#lines + 1] = l end
  end
  local from = math.max(1, #lines - n + 1)
  return table.concat(lines, "\n", from)
end

-- Paths ---------------------------------------------------------------------

local here = debug.getinfo(1, "S").source:match("^@(.*)/helpers/cluster%.lua$")
  or "spec"
if here:sub(1, 1) ~= "/" then
  here = (os.getenv("PWD") or ".") .. "/" .. here
end
M.spec_dir = here
M.root = here:match("^(.*)/spec$") or (here .. "/..")

function M.fixture(name)
  return M.spec_dir .. "/fixtures/" .. name
end

function M.example(name)
  return M.root .. "/examples/" .. name
end

function M.bin()
  local bin = os.getenv("TIDE_TEST_BIN")
  if not bin or bin == "" then bin = M.root .. "/build/tide" end
  return bin
end

local function tmp_root()
  local t = os.getenv("TIDE_TEST_TMP")
  if not t or t == "" then t = M.root .. "/build/test-tmp" end
  return t
end

--- The line number of the first line of `path` containing `needle` (plain).
function M.line_of(path, needle)
  local n = 0
  for line in assert(io.lines(path)) do
    n = n + 1
    if line:find(needle, 1, true) then return n end
  end
  error(("line_of: %q not found in %s"):format(needle, path), 2)
end

-- Processes -----------------------------------------------------------------

--- The environment of a started process: ours without any TIDE_* variable
--- (the runner's own TIDE_TEST_* included: tide reads TIDE_* as configuration,
--- and a developer's TIDE_BOOTSTRAP_SERVERS must not redirect a test), plus `extra`.
local function child_environment(extra)
  local list = {}
  local i = 0
  while C.environ[i] ~= nil do
    local kv = ffi.string(C.environ[i])
    if not kv:match("^TIDE_") then list[#list + 1] = kv end
    i = i + 1
  end
  for k, v in pairs(extra or {}) do list[#list + 1] = k .. "=" .. v end
  return list
end

local function c_string_array(list, keep)
  local arr = ffi.new("char *[?]", #list + 1)
  for i, s in ipairs(list) do
    local cs = ffi.new("char[?]", #s + 1, s)
    keep[#keep + 1] = cs
    arr[i - 1] = cs
  end
  arr[#list] = nil
  keep[#keep + 1] = arr
  return arr
end

local Proc = {}
Proc.__index = Proc

--- Start argv (a list of strings) in the background.
--- opts: stdin (path, default /dev/null), stdout (path), stderr (path), name,
--- env (extra variables), max_stderr (bytes; more is a runaway, see check_output).
local function spawn(argv, opts)
  -- Everything the child touches is built here, before fork.
  local keep = {}
  local cargv = c_string_array(argv, keep)
  local cenv = c_string_array(child_environment(opts.env), keep)
  local stdin_path = opts.stdin or "/dev/null"
  local stdout_path = opts.stdout or "/dev/null"
  local stderr_path = opts.stderr or "/dev/null"
  local parent_pid = C.getpid()
  local mode = ffi.cast("int", 420) -- 0644; a vararg wants a C int, not a double

  local pid = c_fork()
  if pid < 0 then
    error("fork failed: " .. errno_msg())
  end
  if pid == 0 then
    -- Child: only async-signal-safe calls, then exec.
    c_setpgid(0, 0)
    c_prctl(PR_SET_PDEATHSIG, SIG.KILL, 0, 0, 0)
    if c_getppid() ~= parent_pid then c_exit(126) end
    local fd0 = c_open(stdin_path, O_RDONLY)
    local fd1 = c_open(stdout_path, O_WRONLY + O_CREAT + O_TRUNC, mode)
    local fd2 = c_open(stderr_path, O_WRONLY + O_CREAT + O_TRUNC, mode)
    if fd0 < 0 or fd1 < 0 or fd2 < 0 then c_exit(126) end
    c_dup2(fd0, 0)
    c_dup2(fd1, 1)
    c_dup2(fd2, 2)
    if has_close_range then
      c_close_range(3, 0xffffffff, 0)
    else
      for fd = 3, 1023 do c_close(fd) end
    end
    c_execvpe(cargv[0], cargv, cenv)
    c_exit(127)
  end
  -- Parent: the group is set on both sides so that a kill of the group right
  -- after spawn cannot miss the child.
  c_setpgid(pid, pid)
  local p = setmetatable({
    pid = pid,
    argv = argv,
    name = opts.name or argv[2] or argv[1],
    stdout = stdout_path,
    stderr = stderr_path,
    started = M.now(),
    _log_pos = 0,
    _log_partial = "",
    _events = {},
    _keep = keep,
    max_stderr = opts.max_stderr or 64 * 1024 * 1024,
  }, Proc)
  return p
end
M.spawn = spawn

--- The command line, quoted for a shell (for messages).
function Proc:command()
  local parts = {}
  for i, a in ipairs(self.argv) do parts[i] = shell_quote(a) end
  return table.concat(parts, " ")
end

--- Reap the process if it has exited. Returns true when it has.
function Proc:poll()
  if self.exited then return true end
  local status = ffi.new("int[1]")
  local r = c_waitpid(self.pid, status, WNOHANG)
  if r == self.pid then
    local st = status[0]
    local sig = bit.band(st, 0x7f)
    if sig == 0 then
      self.exit_code = bit.band(bit.rshift(st, 8), 0xff)
    else
      self.signal = sig
    end
    self.exited = true
    self.ended = M.now()
    return true
  elseif r < 0 then
    -- Not our child any more (already reaped): treat as gone.
    self.exited = true
    self.ended = M.now()
    return true
  end
  return false
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local size = f:seek("end") or 0
  f:close()
  return size
end

--- Raise (after killing the process) when its stderr has grown past
--- max_stderr: a process that logs in a loop must not fill the disk.
function Proc:check_output()
  if file_size(self.stderr) > self.max_stderr then
    self:destroy()
    local f = io.open(self.stderr, "rb")
    local head = f and f:read(600) or ""
    if f then f:close() end
    error(("%s (pid %d) wrote more than %d bytes to stderr, killed: %s\n-- stderr head:\n%s"):format(
      self.name, self.pid, self.max_stderr, self:command(), head), 3)
  end
end

function Proc:running()
  return not self:poll()
end

--- Send a signal ("TERM", "KILL", ... or a number) to the process only.
function Proc:kill(sig)
  sig = type(sig) == "string" and assert(SIG[sig], "unknown signal " .. sig) or sig or SIG.TERM
  if self:poll() then return false end
  return c_kill(self.pid, sig) == 0
end

--- Kill the process's whole group with SIGKILL and reap it. Idempotent.
function Proc:destroy()
  if not self.exited then
    c_kill(-self.pid, SIG.KILL)
    local deadline = M.now() + 5
    while not self:poll() and M.now() < deadline do M.pause(10) end
  else
    -- The leader is gone; children it left in its group are not welcome either.
    c_kill(-self.pid, SIG.KILL)
  end
end

--- Wait for exit up to `timeout` seconds. Returns exit_code, signal; raises on
--- timeout (the process keeps running: teardown kills it).
function Proc:wait(timeout)
  timeout = (timeout or M.EXIT_TIMEOUT) * M.scale
  local deadline = M.now() + timeout
  local delay = 2
  while not self:poll() do
    self:check_output()
    if M.now() >= deadline then
      error(("%s (pid %d) still running after %gs: %s\n-- stderr tail:\n%s"):format(
        self.name, self.pid, timeout, self:command(), tail(self:stderr_text(), 30)), 2)
    end
    M.pause(delay)
    if delay < 50 then delay = delay * 2 end
  end
  return self.exit_code, self.signal
end

--- A description of how it ended, for assertion messages.
function Proc:status_text()
  if not self.exited then return "running" end
  if self.signal then return "killed by signal " .. self.signal end
  return "exit code " .. tostring(self.exit_code)
end

function Proc:stderr_text()
  return read_file(self.stderr) or ""
end

function Proc:stdout_text()
  return read_file(self.stdout) or ""
end

function Proc:log_tail(n)
  return tail(self:stderr_text(), n or 30)
end

--- Read new complete lines of the stderr file and decode the JSON ones.
--- A line that is not JSON becomes { raw = line }.
function Proc:read_log()
  local f = io.open(self.stderr, "rb")
  if not f then return self._events end
  f:seek("set", self._log_pos)
  local chunk = f:read("*a") or ""
  f:close()
  if chunk == "" then return self._events end
  self._log_pos = self._log_pos + #chunk
  local data = self._log_partial .. chunk
  local last = 1
  for line, stop in data:gmatch("([^\n]*)\n()") do
    last = stop
    if line ~= "" then
      local ok, ev = pcall(cjson.decode, line)
      if not ok or type(ev) ~= "table" then ev = { raw = line } end
      self._events[#self._events + 1] = ev
    end
  end
  self._log_partial = data:sub(last)
  return self._events
end

--- Every log event so far (decoded).
function Proc:events()
  return self:read_log()
end

local function matcher(pred)
  if type(pred) == "function" then return pred end
  if type(pred) == "string" then
    return function(ev) return ev.msg == pred end
  end
  if type(pred) == "table" then
    return function(ev)
      for k, v in pairs(pred) do
        if ev[k] ~= v then return false end
      end
      return true
    end
  end
  error("wait_for_log: predicate must be a function, msg string or field table", 3)
end

--- Events after the first `from` ones that match pred (see wait_for_log):
--- what happened since a mark taken with #proc:events().
function Proc:events_after(from, pred)
  local match = matcher(pred)
  local found, events = {}, self:read_log()
  for i = from + 1, #events do
    if match(events[i]) then found[#found + 1] = events[i] end
  end
  return found
end

--- Events matching pred (see wait_for_log) so far.
function Proc:find_events(pred)
  return self:events_after(0, pred)
end

--- Poll the log until an event matches `pred`: a function(event) -> bool, a
--- string (the event's msg, exactly) or a table of fields that must all be
--- equal. Returns the event. Raises after `timeout` seconds, or as soon as the
--- process has exited without logging it, with the tail of the log.
function Proc:wait_for_log(pred, timeout)
  local match = matcher(pred)
  timeout = (timeout or M.LOG_TIMEOUT) * M.scale
  local deadline = M.now() + timeout
  local seen = 0
  local delay = 2
  while true do
    local exited = self:poll()
    if not exited then self:check_output() end
    local events = self:read_log()
    for i = seen + 1, #events do
      if match(events[i]) then return events[i], i end
    end
    seen = #events
    if exited then
      -- Read once more: the last lines may have landed after our read.
      events = self:read_log()
      for i = seen + 1, #events do
        if match(events[i]) then return events[i], i end
      end
      error(("%s exited (%s) without logging the awaited event\n-- command: %s\n-- stderr tail:\n%s"):format(
        self.name, self:status_text(), self:command(), self:log_tail(30)), 2)
    end
    if M.now() >= deadline then
      error(("%s: awaited log event did not come within %gs\n-- command: %s\n-- stderr tail:\n%s"):format(
        self.name, timeout, self:command(), self:log_tail(30)), 2)
    end
    M.pause(delay)
    if delay < 50 then delay = delay * 2 end
  end
end

-- A cluster: a broker and every process a spec file starts ---------------------

local Cluster = {}
Cluster.__index = Cluster

local sequence = 0

--- A new cluster for one spec file. `name` names its temporary directory;
--- the clock in its name keeps two spec files apart even when busted loads
--- this module afresh for each (insulation), counting from 1 again.
function M.new(name)
  sequence = sequence + 1
  local dir = ("%s/%s-%d-%d-%d"):format(tmp_root(), name:gsub("[^%w_-]", "_"), C.getpid(), sequence,
    math.floor(M.now() * 1000))
  mkdir_p(dir)
  return setmetatable({
    name = name,
    dir = dir,
    procs = {},
    files = 0,
    apps = 0,
  }, Cluster)
end

--- A fresh path in this cluster's directory.
function Cluster:path(label)
  self.files = self.files + 1
  return ("%s/%03d-%s"):format(self.dir, self.files, (label or "f"):gsub("[^%w%._-]", "_"))
end

--- A fresh application.id (consumer groups never meet across tests).
function Cluster:app_id(label)
  self.apps = self.apps + 1
  return ("%s-%d"):format((label or "app"):gsub("[^%w_-]", "-"), self.apps)
end

function Cluster:spawn(argv, opts)
  opts = opts or {}
  local label = opts.name or argv[2] or "proc"
  opts.stdout = opts.stdout or self:path(label .. ".out")
  opts.stderr = opts.stderr or self:path(label .. ".err")
  local p = spawn(argv, opts)
  p.cluster = self
  self.procs[#self.procs + 1] = p
  return p
end

--- Start `tide broker --topic t:n ...` and wait for its address on stdout.
--- topics: list of "name:partitions" strings. opts: partitions (for topics
--- given without a count), brokers (how many, ids 1..n; default 1), down
--- (start with every broker down), control (false: no control FIFO; by
--- default there is one, for the fault helpers below), timeout.
--- Returns the address ("127.0.0.1:port[,127.0.0.1:port...]").
function Cluster:start_broker(topics, opts)
  opts = opts or {}
  local argv = { M.bin(), "broker" }
  for _, t in ipairs(topics or {}) do
    argv[#argv + 1] = "--topic"
    argv[#argv + 1] = t
  end
  if opts.partitions then
    argv[#argv + 1] = "--partitions"
    argv[#argv + 1] = tostring(opts.partitions)
  end
  if opts.brokers then
    argv[#argv + 1] = "--brokers"
    argv[#argv + 1] = tostring(opts.brokers)
  end
  if opts.down then argv[#argv + 1] = "--down" end
  self.control_path = nil
  if opts.control ~= false then
    self.control_path = self:path("broker.control")
    argv[#argv + 1] = "--control"
    argv[#argv + 1] = self.control_path
  end
  local p = self:spawn(argv, { name = "broker" })
  self.broker = p
  local deadline = M.now() + (opts.timeout or M.START_TIMEOUT) * M.scale
  while true do
    local out = read_file(p.stdout) or ""
    local first = out:match("^([^\n]*)\n")
    if first then
      local addr = first:match("^%s*(.-)%s*$")
      if addr == "" or (addr .. ","):gsub("127%.0%.0%.1:%d+,", "") ~= "" then
        p:destroy()
        error(("tide broker: first stdout line should be 127.0.0.1:PORT[,...], got %q\n-- stderr tail:\n%s")
          :format(first, p:log_tail(20)), 2)
      end
      self.addr = addr
      self.control_pos = #first + 2
      return addr
    end
    if p:poll() then
      error(("tide broker exited (%s) before printing its address\n-- stderr tail:\n%s")
        :format(p:status_text(), p:log_tail(20)), 2)
    end
    if M.now() >= deadline then
      p:destroy()
      error(("tide broker printed no address within %gs\n-- stderr tail:\n%s")
        :format(opts.timeout or M.START_TIMEOUT, p:log_tail(20)), 2)
    end
    M.pause(10)
  end
end

-- Faults: the broker's control channel ----------------------------------------
--
-- Each helper writes one command to the broker's control FIFO and waits for
-- the broker's answer on its stdout ("ok COMMAND[: RESULT]" or "error
-- COMMAND: REASON"): when it returns, the mock cluster has applied the
-- command. A refused command raises with the broker's reason. A command may
-- take up to about a second: the mock serves its command queue on its own
-- poll loop.

local function write_control(path, line)
  local fd = c_open(path, O_WRONLY + O_NONBLOCK)
  if fd < 0 then
    return nil, ("cannot open the broker's control FIFO %s: %s (is the broker running?)")
      :format(path, errno_msg())
  end
  local n = C.write(fd, line, #line)
  local err = n ~= #line and errno_msg() or nil
  c_close(fd)
  if err then return nil, "writing to the control FIFO: " .. err end
  return true
end

--- Send one command line to the broker (see `tide broker --help`) and wait
--- for its answer. Returns the result text after "ok COMMAND: " ("" when
--- there is none). Raises when the broker refuses it, exits, or does not
--- answer within `timeout` seconds (default CONTROL_TIMEOUT).
function Cluster:broker_command(command, timeout)
  local b = assert(self.broker, "no broker")
  assert(self.control_path, "the broker was started without a control FIFO")
  local words = {}
  for w in command:gmatch("%S+") do words[#words + 1] = w end
  local line = table.concat(words, " ")
  assert(line ~= "" and not line:find("\n", 1, true), "one command line")
  local ok, err = write_control(self.control_path, line .. "\n")
  if not ok then error(err .. "\n-- broker stderr tail:\n" .. b:log_tail(10), 2) end
  timeout = (timeout or M.CONTROL_TIMEOUT) * M.scale
  local deadline = M.now() + timeout
  local ok_plain, ok_prefix, err_prefix = "ok " .. line, "ok " .. line .. ": ", "error " .. line .. ": "
  while true do
    local out = read_file(b.stdout) or ""
    local pos = self.control_pos or 1
    while true do
      local nl = out:find("\n", pos, true)
      if not nl then break end
      local reply = out:sub(pos, nl - 1)
      pos = nl + 1
      if reply == ok_plain then
        self.control_pos = pos
        return ""
      elseif reply:sub(1, #ok_prefix) == ok_prefix then
        self.control_pos = pos
        return reply:sub(#ok_prefix + 1)
      elseif reply:sub(1, #err_prefix) == err_prefix then
        self.control_pos = pos
        error(("tide broker refused %q: %s"):format(line, reply:sub(#err_prefix + 1)), 2)
      end
    end
    if b:poll() then
      error(("tide broker exited (%s) before answering %q\n-- stderr tail:\n%s")
        :format(b:status_text(), line, b:log_tail(20)), 2)
    end
    if M.now() >= deadline then
      error(("tide broker did not answer %q within %gs\n-- stderr tail:\n%s")
        :format(line, timeout, b:log_tail(20)), 2)
    end
    M.pause(5)
  end
end

local function broker_id(id)
  if id == nil or id == "all" or id == -1 then return "all" end
  return tostring(math.floor(assert(tonumber(id), "a broker id or 'all'")))
end

local function error_list(errs)
  if type(errs) == "string" then return errs end
  assert(type(errs) == "table" and #errs > 0, "a list of error names")
  return table.concat(errs, ",")
end

--- Broker `id` (1..n, or "all"/nil for every broker) refuses connections and
--- drops the ones it has (rd_kafka_mock_broker_set_down). Its partitions do
--- not move to another broker.
function Cluster:broker_down(id) return self:broker_command("down " .. broker_id(id)) end

--- Broker `id` (or all) accepts connections again, on the same port.
function Cluster:broker_up(id) return self:broker_command("up " .. broker_id(id)) end

--- Every response of broker `id` (or all) is delayed by `ms` (0 clears).
function Cluster:rtt(id, ms) return self:broker_command(("rtt %s %d"):format(broker_id(id), ms)) end

--- The next requests of type `api` ("Produce", "OffsetCommit", ... or a
--- number), on any broker, fail one each with the errors `errs` (names such
--- as "NOT_ENOUGH_REPLICAS", or "_TRANSPORT" for a disconnect), in order.
--- Returns how many were queued.
function Cluster:push_errors(api, errs)
  local r = self:broker_command(("errors %s %s"):format(api, error_list(errs)))
  return tonumber(r:match("^(%d+) queued"))
end

--- Drop the errors still queued for `api` by push_errors.
function Cluster:clear_errors(api) return self:broker_command(("errors %s clear"):format(api)) end

--- Like push_errors on broker `id` only; an entry "ERR:MS" also delays that
--- answer by MS milliseconds. Count what is left with pending_errors.
function Cluster:broker_errors(id, api, errs)
  local r = self:broker_command(("broker-errors %s %s %s"):format(broker_id(id), api, error_list(errs)))
  return tonumber(r:match("^(%d+) queued"))
end

--- Errors broker_errors queued on broker `id` for `api` that no request has
--- met yet.
function Cluster:pending_errors(id, api)
  return tonumber(self:broker_command(("pending %s %s"):format(broker_id(id), api)))
end

--- Create `topic` with `partitions` partitions (and `rf` replicas; default
--- min(3, brokers)). Raises if it exists.
function Cluster:create_topic(topic, partitions, rf)
  return self:broker_command(("create %s %d%s"):format(topic, partitions, rf and (" " .. rf) or ""))
end

--- Delete `topic` and its records. Raises if there is none.
function Cluster:delete_topic(topic) return self:broker_command("delete " .. topic) end

--- The partition count of `topic`, or nil when the cluster has no such topic,
--- asked as a client that never auto-creates one.
function Cluster:topic_partitions(topic)
  local r = self:broker_command("exists " .. topic)
  if r == "missing" then return nil end
  local n = r:match("^partitions=(%d+)$")
  if not n then error("tide broker: unexpected answer to exists: " .. r, 2) end
  return tonumber(n)
end

--- Make broker `id` the leader of topic/partition (-1: no leader).
function Cluster:set_leader(topic, partition, id)
  return self:broker_command(("leader %s %d %d"):format(topic, partition, id))
end

--- Metadata answers `err` for `topic` ("NO_ERROR" clears). The mock creates
--- the topic first if it does not exist.
function Cluster:topic_error(topic, err) return self:broker_command(("topic-error %s %s"):format(topic, err)) end

--- Broker `id` coordinates `key`: kind "txn" (a transactional.id) or "group".
function Cluster:set_coordinator(kind, key, id)
  return self:broker_command(("coordinator %s %s %d"):format(kind, key, id))
end

--- Start (true) or stop (false) recording the requests the brokers receive.
function Cluster:track_requests(on) return self:broker_command(on == false and "track off" or "track on") end

--- Forget the requests recorded so far.
function Cluster:clear_requests() return self:broker_command("track clear") end

--- Requests recorded since tracking began (on broker `id`, or all), counted by
--- request type: { Produce = 3, Fetch = 12, ... }; a type not sent is absent.
function Cluster:requests(id)
  local r = self:broker_command("requests" .. (id and (" " .. broker_id(id)) or ""))
  local counts = {}
  for name, n in r:gmatch("(%w+)=(%d+)") do counts[name] = tonumber(n) end
  return counts
end

--- Start `tide run FILE -b ADDR -D application.id=APP ...`; stderr is its log.
--- opts: app (application.id, default a fresh one), config (table key -> value,
--- passed as -D; state.dir defaults to a fresh directory), args (extra
--- arguments), count, idle_timeout_ms, name, stdin, env (extra environment
--- variables: the runner's TIDE_* ones are never passed on), bootstrap (an
--- address, or false for none), no_wrap (ignore TIDE_TEST_WRAP).
function Cluster:run(file, opts)
  opts = opts or {}
  local app = opts.app or self:app_id(opts.name or "run")
  local argv = {}
  local wrap = os.getenv("TIDE_TEST_WRAP")
  if wrap and wrap ~= "" and not opts.no_wrap then
    for w in wrap:gmatch("%S+") do argv[#argv + 1] = w end
  end
  for _, a in ipairs({ M.bin(), "run", file }) do argv[#argv + 1] = a end
  if self.addr and opts.bootstrap ~= false then
    argv[#argv + 1] = "-b"
    argv[#argv + 1] = opts.bootstrap or self.addr
  end
  argv[#argv + 1] = "-D"
  argv[#argv + 1] = "application.id=" .. app
  local config = {}
  for k, v in pairs(opts.config or {}) do config[k] = v end
  if config["state.dir"] == nil then
    -- One per process: two members of a group never share local state.
    config["state.dir"] = self:path("state-" .. app)
  end
  local keys = {}
  for k in pairs(config) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    argv[#argv + 1] = "-D"
    argv[#argv + 1] = k .. "=" .. tostring(config[k])
  end
  if opts.count then
    argv[#argv + 1] = "--count"
    argv[#argv + 1] = tostring(opts.count)
  end
  if opts.idle_timeout_ms then
    argv[#argv + 1] = "--idle-timeout-ms"
    argv[#argv + 1] = tostring(opts.idle_timeout_ms)
  end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  local p = self:spawn(argv, { name = opts.name or "run", stdin = opts.stdin, env = opts.env })
  p.app = app
  return p
end

local function encode_records(records)
  local plain = true
  for _, r in ipairs(records) do
    if type(r) ~= "string" or r:find("\n", 1, true) then
      plain = false
      break
    end
  end
  local lines = {}
  if plain then
    for i, r in ipairs(records) do lines[i] = r end
  else
    for i, r in ipairs(records) do
      if type(r) == "string" then r = { value = r } end
      local o = { key = r.key, value = r.value, headers = r.headers, partition = r.partition,
        timestamp = r.timestamp }
      if o.key == nil then o.key = cjson.null end
      if o.value == nil then o.value = cjson.null end
      lines[i] = cjson.encode(o)
    end
  end
  lines[#lines + 1] = ""
  return table.concat(lines, "\n"), plain
end

--- Start `tide produce TOPIC` on `records` without waiting: records are strings
--- (values, one per line) or tables { key=, value=, headers=, partition=, timestamp= }
--- (sent with --json). opts.key_separator sends plain "key<SEP>value" lines.
function Cluster:produce_async(topic, records, opts)
  opts = opts or {}
  local input = self:path("produce-" .. topic .. ".in")
  local text, plain = encode_records(records)
  write_file(input, text)
  local argv = { M.bin(), "produce", topic, "-b", (assert(self.addr, "no broker")) }
  if opts.key_separator then
    assert(plain, "key_separator needs plain string records")
    argv[#argv + 1] = "--key-separator"
    argv[#argv + 1] = opts.key_separator
  elseif not plain then
    argv[#argv + 1] = "--json"
  end
  local p = self:spawn(argv, { name = "produce", stdin = input, max_stderr = 4 * 1024 * 1024 })
  p.count = #records
  return p
end

--- Produce and wait for `tide produce` to exit 0 (it waits for deliveries).
function Cluster:produce(topic, records, opts)
  local p = self:produce_async(topic, records, opts)
  local code = p:wait((opts and opts.timeout) or 60)
  if code ~= 0 then
    error(("tide produce %s failed (%s)\n-- stderr tail:\n%s"):format(
      topic, p:status_text(), p:log_tail(20)), 2)
  end
  return #records
end

--- `tide consume TOPIC --json --from-beginning`: every record, decoded, as
--- { topic, partition, offset, timestamp, key, value, headers }.
--- opts: max (--max-messages), idle_ms (--idle-timeout-ms, default 1500), timeout.
function Cluster:consume(topic, opts)
  opts = opts or {}
  local argv = { M.bin(), "consume", topic, "-b", (assert(self.addr, "no broker")),
    "--from-beginning", "--json", "--idle-timeout-ms", tostring(opts.idle_ms or 1500) }
  if opts.max then
    argv[#argv + 1] = "--max-messages"
    argv[#argv + 1] = tostring(opts.max)
  end
  local p = self:spawn(argv, { name = "consume", max_stderr = 4 * 1024 * 1024 })
  local code = p:wait(opts.timeout or 60)
  if code ~= 0 then
    error(("tide consume %s failed (%s)\n-- stderr tail:\n%s"):format(
      topic, p:status_text(), p:log_tail(20)), 2)
  end
  local out = p:stdout_text()
  local records = {}
  for line in out:gmatch("[^\n]+") do
    local ok, rec = pcall(cjson.decode, line)
    if not ok or type(rec) ~= "table" then
      error(("tide consume --json printed a line that is not a JSON object: %q"):format(line:sub(1, 200)), 2)
    end
    if rec.key == cjson.null then rec.key = nil end
    if rec.value == cjson.null then rec.value = nil end
    if rec.headers == cjson.null then rec.headers = nil end
    records[#records + 1] = rec
  end
  -- The stdout of a big consume is large: drop the file now.
  os.remove(p.stdout)
  return records
end

--- Poll `topic` until it holds at least n records; returns them. Raises after
--- `timeout` seconds with how many there were, or when opts.watch exits.
function Cluster:wait_for_records(topic, n, timeout, opts)
  opts = opts or {}
  return M.eventually(function()
    local got = self:consume(topic, { max = n, idle_ms = opts.idle_ms or 700 })
    if #got >= n then return got end
    return nil, ("%s holds %d"):format(topic, #got)
  end, timeout or 30, { what = ("%d records on %s"):format(n, topic), watch = opts.watch, every = 100, tail = 30 })
end

--- Kill (SIGKILL, whole group) every process still running except the broker.
--- Call from after_each: it runs even when the test failed.
function Cluster:cleanup()
  for _, p in ipairs(self.procs) do
    if p ~= self.broker then p:destroy() end
  end
  local keep = {}
  if self.broker then keep[1] = self.broker end
  self.procs = keep
end

--- Stop everything, the broker last (SIGTERM, then SIGKILL after 5 s).
function Cluster:shutdown()
  self:cleanup()
  local b = self.broker
  if b and not b.exited then
    b:kill("TERM")
    local deadline = M.now() + 5
    while not b:poll() and M.now() < deadline do M.pause(10) end
    b:destroy()
  end
  self.procs = {}
end

-- Helpers for assertions -------------------------------------------------------

--- Log lines of `proc` that break the log contract (one JSON object per line
--- with ts, level and msg), as strings; empty when all is well.
function M.bad_log_lines(proc)
  local bad = {}
  for _, ev in ipairs(proc:events()) do
    if ev.raw then
      bad[#bad + 1] = ev.raw
    elseif type(ev.ts) ~= "string" or type(ev.level) ~= "string" or type(ev.msg) ~= "string" then
      bad[#bad + 1] = cjson.encode(ev)
    end
  end
  return bad
end

--- tide's own log lines (not librdkafka's debug lines) as "ts level msg".
function M.info_lines(proc, n)
  local lines = {}
  for _, ev in ipairs(proc:events()) do
    if ev.raw then
      lines[#lines + 1] = ev.raw
    elseif type(ev.msg) == "string" and not ev.msg:find("^librdkafka") and ev.msg ~= "configuration" then
      lines[#lines + 1] = ("%s %s %s"):format(tostring(ev.ts), tostring(ev.level), ev.msg)
    end
  end
  n = n or 30
  return { unpack(lines, math.max(1, #lines - n + 1)) }
end

--- The first event with msg "stopped" (or nil).
function M.stopped(proc)
  return proc:find_events("stopped")[1]
end

--- Group records into { [key or "\0nil"] = { values in order } }, in
--- (partition, offset) order: the records of one key share a partition.
function M.by_key(records)
  table.sort(records, function(a, b)
    if a.partition ~= b.partition then return a.partition < b.partition end
    return a.offset < b.offset
  end)
  local groups = {}
  for _, r in ipairs(records) do
    local k = r.key == nil and "\0nil" or r.key
    local g = groups[k]
    if not g then
      g = {}
      groups[k] = g
    end
    g[#g + 1] = r.value
  end
  return groups
end

--- The name of key number i: "key-007".
function M.key_name(i)
  return ("key-%03d"):format(i)
end

--- Records "key-NNN:<tag><i>" for i in [from, to] (produce them with
--- key_separator = ":"), over n_keys keys: deterministic, with uneven counts.
function M.keyed_records(from, to, tag, n_keys)
  local recs = {}
  for i = from, to do
    -- Knuth's multiplicative hash, squared index folded in: uneven counts.
    local k = ((i * 2654435761) % 4294967296 + (i * i) % 7) % n_keys + 1
    recs[#recs + 1] = M.key_name(k) .. ":" .. tag .. i
  end
  return recs
end

--- "topic[0,2]" -> { "topic/0", "topic/2" } (the "partitions" log field).
function M.parse_partitions(field)
  local list = {}
  for topic, nums in tostring(field or ""):gmatch("([^%[%],%s]+)%[([%d,%s]*)%]") do
    for num in nums:gmatch("%d+") do
      list[#list + 1] = topic .. "/" .. num
    end
  end
  return list
end

--- What a process holds according to its assigned/revoked/lost log lines:
--- count, set. The set's keys are "topic/partition", or with `topic` given,
--- that topic's partition numbers.
function M.holding(proc, topic)
  local held = {}
  for _, ev in ipairs(proc:events()) do
    local assigned = ev.msg == "partitions assigned"
    if assigned or ev.msg == "partitions revoked" or ev.msg == "partitions lost" then
      for _, tp in ipairs(M.parse_partitions(ev.partitions)) do
        local t, p = tp:match("^(.*)/(%d+)$")
        if not topic then held[tp] = assigned or nil
        elseif t == topic then held[tonumber(p)] = assigned or nil end
      end
    end
  end
  local n = 0
  for _ in pairs(held) do n = n + 1 end
  return n, held
end

--- Wait until members a and b each hold partitions of `topic` (nil: of any
--- topic) and together hold `total` of them; raises, with their logs, when
--- one exits or after `timeout` seconds. Returns a's and b's holdings.
function M.await_split(a, b, topic, total, timeout)
  return M.eventually(function()
    local na, held_a = M.holding(a, topic)
    local nb, held_b = M.holding(b, topic)
    if na > 0 and nb > 0 and na + nb == total then return held_a, held_b end
    return nil, ("%s holds %d, %s holds %d"):format(a.name, na, b.name, nb)
  end, timeout, { what = ("%s and %s to split %d partitions"):format(a.name, b.name, total),
    watch = { a, b }, tail = 15 })
end

--- The usual shape of a spec file: call inside `describe`. Returns a cluster
--- whose broker (with `topics`) starts before the first test; every process a
--- test started is killed after it, and the broker after the last one.
function M.suite(name, topics)
  -- busted's lazy_setup & co. live in the spec file's environment
  local busted = getfenv(2)
  local c = M.new(name)
  busted.lazy_setup(function()
    c:start_broker(topics)
  end)
  busted.lazy_teardown(function()
    c:shutdown()
  end)
  busted.after_each(function()
    c:cleanup()
  end)
  return c
end

return M
