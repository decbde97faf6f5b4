--- Tasks and time, as one detector runtime sees them.
---
--- A task is an input partition. Each has a stream time: the largest record
--- timestamp seen on it (only records of `timed` topics count, when the
--- detector names them), carried across restarts by the host's commits.
--- Stores, ctx.stream_time and punctuators work on the current task: the
--- partition of the record being processed, or of the task a punctuator runs
--- for. The wall clock is the host's, handed in with each batch and
--- punctuate call.
local M = {}

---@class tide.Tasks
---@field current integer the current task (input partition)
---@field wall number the wall clock (ms) as of the last batch or punctuate call
---@field times table<integer, number> stream time per task
---@field active table<integer, true> the tasks this runtime holds
---@field stream_time fun(p?: integer): number
---@field advance fun(p: integer, ts: number, rec: tide.Rec)
---@field start fun(p: integer, st?: number)
---@field stop fun(p: integer)
---@field rollback fun(p: integer, st?: number)

--- Tasks and their stream time. `timed`: the set of topics whose records
--- advance stream time (nil: every input).
---@param timed? table<string, boolean>
---@return tide.Tasks
function M.new(timed)
  local self = { current = 0, wall = 0, times = {}, active = {} }
  local times = self.times

  --- The stream time of task p (default: the current one); -1 when none.
  function self.stream_time(p)
    return times[p or self.current] or -1
  end

  --- A record of task p with timestamp ts was read: ts becomes the task's
  --- stream time if later. `rec` is the record (its topic is read only when
  --- the detector names timed topics).
  function self.advance(p, ts, rec)
    local st = times[p]
    if (st == nil or ts > st) and (timed == nil or timed[rec.topic]) then times[p] = ts end
  end

  --- Task p starts, with stream time st from its last commit (or nil).
  function self.start(p, st)
    self.active[p] = true
    if st and st > (times[p] or -1) then times[p] = st end
  end

  --- Task p goes back to its last commit: stream time st (nil: none).
  function self.rollback(p, st)
    times[p] = st
  end

  --- Task p stops (revoked): it forgets its stream time.
  function self.stop(p)
    self.active[p] = nil
    times[p] = nil
  end
  return self
end

return M
