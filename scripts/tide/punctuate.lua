--- What the host's periodic punctuate call runs, between batches: the
--- detector's punctuators, per active task, and the expiry of old windows
--- in its window stores.
---
--- Errors in a punctuator are logged and counted; they do not stop the
--- others, nor the records.
local errors = require("tide.errors")

local M = {}

--- When a punctuator that fired at t next falls due. A wall-clock one keeps
--- its own beat (from the time it was first due); a stream-time one falls on
--- multiples of its interval (as Kafka Streams' do), after a first call at
--- the task's first stream time. Either way one call covers the intervals
--- that records skipped.
local function next_due(pu, due, t)
  local from = pu.on == "wall" and due or 0
  return from + pu.every * (math.floor((t - from) / pu.every) + 1)
end

--- Call punctuator pu for task p at time t, its emits stamped t; true when
--- it ran without error.
local function fire(pu, p, t, env)
  env.tasks.current = p
  env.stamp.set(t) -- what it emits carries the time it fired for
  -- on a coroutine of its own, as C calls do: a stack overflow or a hostile
  -- error object cannot turn into "error in error handling"
  local ok, err, trace = errors.call(pu.fn, env.ctx, t)
  env.stamp.set(-1)
  if not ok then
    env.log("error", ("punctuator (%s, every %d ms) failed for partition %d: %s\n%s"):format(
      pu.on, pu.every, p, errors.describe(err), trace))
  end
  return ok
end

--- Fire the punctuators that are due; returns how many failed.
local function punctuators(list, now, env)
  local failures = 0
  local tasks = env.tasks
  for _, pu in ipairs(list) do
    local wall = pu.on == "wall"
    for p in pairs(tasks.active) do
      local t = wall and now or tasks.times[p]
      if t ~= nil and t >= 0 then
        local due = pu.next[p]
        if due == nil and wall then
          pu.next[p] = t + pu.every
        elseif due == nil or t >= due then
          if not fire(pu, p, t, env) then failures = failures + 1 end
          pu.next[p] = next_due(pu, due, t)
        end
      end
    end
  end
  return failures
end

--- Expire the windows of each window store, per active task, once its
--- stream time has moved half a retention since the last sweep.
local function expire_windows(store_list, swept, tasks)
  for _, e in ipairs(store_list) do
    if e.decl.kind == "window" then
      for p in pairs(tasks.active) do
        local st = tasks.times[p]
        local key = e.name .. "/" .. p
        if st and st - (swept[key] or -math.huge) >= e.decl.retention / 2 then
          tasks.current = p
          e.store:expire(st)
          swept[key] = st
        end
      end
    end
  end
end

--- The punctuate step of a detector.
---@param list table the detector's punctuators ({ every, on, fn }, tide.detector)
---@param env table tasks (tide.tasks), ctx, stamp (tide.context), log(level, msg),
---   stores (the store list of tide.store.open)
---@return table { run(now) -> failures, drop(p) }
function M.new(list, env)
  for _, pu in ipairs(list) do pu.next = {} end
  local swept = {}
  local self = {}
  --- Fire due punctuators and expire old windows; `now` is the wall clock (ms).
  function self.run(now)
    env.tasks.wall = now
    local failures = punctuators(list, now, env)
    expire_windows(env.stores, swept, env.tasks)
    return failures
  end
  --- Task p stopped: its punctuators start afresh if it comes back.
  function self.drop(p)
    for _, pu in ipairs(list) do pu.next[p] = nil end
  end
  --- A commit went through: the schedule as it is now is the one to go
  --- back to.
  local committed = {}
  function self.commit()
    for i, pu in ipairs(list) do
      local c = committed[i] or {}
      for p in pairs(c) do c[p] = nil end
      for p, due in pairs(pu.next) do c[p] = due end
      committed[i] = c
    end
  end
  --- Task p goes back to its last commit: its punctuators are due when
  --- they were then (none fires twice for a time already committed), and its
  --- windows are swept again.
  function self.rollback(p)
    for i, pu in ipairs(list) do pu.next[p] = committed[i] and committed[i][p] end
    for key in pairs(swept) do
      if key:match("/(%d+)$") == tostring(p) then swept[key] = nil end
    end
  end
  return self
end

return M
