--- The faults of `make chaos`, each with a weight (how often it is drawn).
---
--- run(w) applies one and returns a line saying what it did, or nil when it
--- did not apply (no worker to kill, no slot to scale into). A fault with
--- `hold` lasts that many seconds, then undo(w) ends it; only one held fault
--- at a time, while the others keep coming.
---
--- w is the run: w.c (the cluster), w.fleet, w.brokers, w.random(lo, hi),
--- w.pick(list), w.reload() (rewrites a detector file, returns its name).
local M = {}

local PRODUCE_ERRORS = { "NOT_ENOUGH_REPLICAS", "LEADER_NOT_AVAILABLE" }
local COMMIT_ERRORS = { "REQUEST_TIMED_OUT", "COORDINATOR_LOAD_IN_PROGRESS", "NOT_COORDINATOR" }

local function some(w, list)
  local errs = {}
  for i = 1, w.random(1, 3) do errs[i] = w.pick(list) end
  return errs
end

M.list = {
  {
    name = "kill -9 a worker", weight = 4,
    run = function(w)
      local slots = w.fleet:running()
      if #slots == 0 then return nil end
      local slot = w.pick(slots)
      local workers = w.fleet:workers(slot)
      if #workers == 0 then return nil end
      local victim = w.pick(workers)
      if not w.fleet.kill_pid(victim.pid) then return nil end
      return ("worker %d (%s) of instance %d"):format(victim.pid, victim.detector, slot)
    end,
  },
  {
    name = "kill -9 an instance", weight = 1,
    run = function(w)
      local slots = w.fleet:running()
      if #slots == 0 then return nil end
      local slot = w.pick(slots)
      w.fleet:kill(slot)
      return ("instance %d and its workers"):format(slot)
    end,
  },
  {
    name = "scale up", weight = 2,
    run = function(w)
      local slot = w.fleet:start()
      return slot and ("instance %d started (%d running)"):format(slot, #w.fleet:running())
    end,
  },
  {
    name = "scale down", weight = 2,
    run = function(w)
      local slots = w.fleet:running()
      if #slots <= 1 then return nil end
      local slot = w.pick(slots)
      w.fleet:stop(slot)
      return ("instance %d stopped with SIGTERM"):format(slot)
    end,
  },
  {
    name = "hot reload", weight = 2,
    run = function(w) return w.reload() end,
  },
  {
    name = "all brokers down", weight = 2,
    hold = function(w) return w.random(8, 20) end,
    run = function(w)
      w.c:broker_down("all")
      return "every broker"
    end,
    undo = function(w) w.c:broker_up("all") end,
  },
  {
    name = "one broker down", weight = 1,
    hold = function(w) return w.random(5, 15) end,
    run = function(w)
      w.down_id = w.random(1, w.brokers)
      w.c:broker_down(w.down_id)
      return ("broker %d"):format(w.down_id)
    end,
    undo = function(w) w.c:broker_up(w.down_id) end,
  },
  {
    name = "round-trip time", weight = 1,
    hold = function(w) return w.random(5, 10) end,
    run = function(w)
      local ms = w.random(5, 50) * 100
      w.c:rtt("all", ms)
      return ("%d ms on every broker"):format(ms)
    end,
    undo = function(w) w.c:rtt("all", 0) end,
  },
  {
    name = "Produce errors", weight = 1,
    run = function(w)
      local errs = some(w, PRODUCE_ERRORS)
      w.c:push_errors("Produce", errs)
      return table.concat(errs, ",")
    end,
  },
  {
    name = "OffsetCommit errors", weight = 1,
    run = function(w)
      local errs = some(w, COMMIT_ERRORS)
      w.c:push_errors("OffsetCommit", errs)
      return table.concat(errs, ",")
    end,
  },
}

--- Draw a fault by weight; `held` true excludes the held kinds.
function M.draw(w, held)
  local total, pool = 0, {}
  for _, f in ipairs(M.list) do
    if not (held and f.hold) then
      pool[#pool + 1] = f
      total = total + f.weight
    end
  end
  local x = w.random(1, total)
  for _, f in ipairs(pool) do
    x = x - f.weight
    if x <= 0 then return f end
  end
  return pool[#pool]
end

--- Put the cluster back as it was: brokers up, no delay, no queued errors.
function M.calm(w)
  w.c:broker_up("all")
  w.c:rtt("all", 0)
  w.c:clear_errors("Produce")
  w.c:clear_errors("OffsetCommit")
end

return M
