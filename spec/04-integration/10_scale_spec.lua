-- Scaling a stateful detector up and down: three tide instances with one
-- application.id share the partitions of count_per_key (a RocksDB store with
-- its changelog). Partitions and their tasks move as instances come and go;
-- each instance logs every change of assignment as Kafka Streams does
-- ("Handle new assignment with: ...", "State transition from X to Y",
-- "Restoration took N ms for all tasks [...]"), and the counts stay right:
-- exact where every move was a clean hand-over, at least the truth where an
-- instance was killed.
--
-- Rebalances are awaited on those log lines: an instance has settled when its
-- last assignment line lists what it holds and its last state is RUNNING.
local cluster = require("helpers.cluster")

local COUNT = cluster.example("count_per_key.lua")
local APP = "scale"
local CHANGELOG = APP .. ".count-per-key-counts-changelog"
local N_PARTS = 6
local N_KEYS = 120
local BATCH = 2000

local function task_name(p) return "count-per-key_" .. p end

local function is_assignment(ev)
  return type(ev.msg) == "string" and ev.msg:find("^Handle new assignment with: ") ~= nil
end

local function is_transition(ev)
  return type(ev.msg) == "string" and ev.msg:find("^State transition from ") ~= nil
end

local function last(list) return list[#list] end

--- The tasks a member holds by its last assignment line, and its state.
local function member_view(p)
  local a = last(p:find_events(is_assignment))
  local s = last(p:find_events(is_transition))
  return a and a.active_tasks or {}, s and s.new_state
end

--- The members' views, or why they have not settled: every member RUNNING,
--- every task held by exactly one of them, as evenly as can be.
local function check_split(members)
  local owner, least, most = {}, math.huge, 0
  for _, p in ipairs(members) do
    local tasks, state = member_view(p)
    if state ~= "RUNNING" then return nil, ("%s is %s"):format(p.name, tostring(state)) end
    for _, t in ipairs(tasks) do
      if owner[t] then return nil, ("%s is held by %s and %s"):format(t, owner[t], p.name) end
      owner[t] = p.name
    end
    least, most = math.min(least, #tasks), math.max(most, #tasks)
  end
  for p = 0, N_PARTS - 1 do
    if not owner[task_name(p)] then return nil, task_name(p) .. " is held by no member" end
  end
  if most - least > 1 then return nil, ("uneven split: %d to %d tasks"):format(least, most) end
  return owner
end

--- Poll until the members have settled (see check_split); returns
--- { [task] = member name }.
local function await_split(members, timeout)
  local names = {}
  for i, p in ipairs(members) do names[i] = p.name end
  return cluster.eventually(function() return check_split(members) end, timeout, {
    what = "the group of " .. table.concat(names, ", ") .. " to settle", watch = members,
    tail = function(p) return table.concat(cluster.info_lines(p, 12), "\n") end })
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function sorted_keys(set)
  local l = {}
  for k in pairs(set) do l[#l + 1] = k end
  table.sort(l)
  return l
end

--- The tasks p took on and the tasks it gave up after its first `from` events.
local function moves_after(p, from)
  local new, revoked = {}, {}
  for _, ev in ipairs(p:events_after(from, is_assignment)) do
    for _, t in ipairs(ev.new_tasks) do new[t] = true end
    for _, t in ipairs(ev.revoked_tasks) do revoked[t] = true end
  end
  return new, revoked
end

--- `task restored` records per partition logged by p after its first `from` events.
local function restored_after(p, from)
  local by_p = {}
  for _, ev in ipairs(p:events_after(from, "task restored")) do
    by_p[task_name(ev.partition)] = tonumber(ev.records)
  end
  return by_p
end

--- The assignment lines agree with the `partitions assigned/revoked` ones.
local function assert_same_view(p)
  local tasks = member_view(p)
  local _, held = cluster.holding(p, "words")
  local from_partitions = {}
  for part in pairs(held) do from_partitions[#from_partitions + 1] = task_name(part) end
  table.sort(from_partitions)
  local copy = { unpack(tasks) }
  table.sort(copy)
  assert.are.same(from_partitions, copy, p.name .. ": tasks vs. partitions assigned")
end

describe("integration: scaling a stateful detector up and down", function()
  local c = cluster.suite("scale", {
    ("words:%d"):format(N_PARTS), ("counts:%d"):format(N_PARTS),
    ("%s:%d"):format(CHANGELOG, N_PARTS),
  })

  -- Fast group settling, as in 08_state_spec: the mock notices a killed
  -- member when its session expires.
  local config = {
    ["commit.interval.ms"] = 200,
    ["consumer.session.timeout.ms"] = 3000,
    ["consumer.heartbeat.interval.ms"] = 500,
  }

  --- Records per key on `words`, and the partition of each key.
  local function truth()
    local counts, part_of = {}, {}
    for _, r in ipairs(c:consume("words", { idle_ms = 1500, timeout = 90 })) do
      counts[r.key] = (counts[r.key] or 0) + 1
      part_of[r.key] = r.partition
    end
    return counts, part_of
  end

  --- The latest count emitted on `counts` for every key.
  local function latest_counts()
    local latest = {}
    for k, values in pairs(cluster.by_key(c:consume("counts", { idle_ms = 1500, timeout = 90 }))) do
      latest[k] = tonumber(values[#values])
    end
    return latest
  end

  --- Poll `counts` until every key's latest count reaches the truth.
  local function await_counts(want, members, timeout)
    return cluster.eventually(function()
      local latest, behind = latest_counts(), {}
      for k, n in pairs(want) do
        if (latest[k] or 0) < n then behind[#behind + 1] = ("%s: %s < %d"):format(k, tostring(latest[k]), n) end
      end
      if #behind == 0 then return latest end
      return nil, ("%d keys behind, e.g. %s"):format(#behind, table.concat(behind, ", ", 1, math.min(5, #behind)))
    end, timeout, { what = "every key's latest count to reach its records", watch = members, every = 200 })
  end

  it("moves tasks and their state as instances join, leave and die, and keeps every count", function()
    local t0 = cluster.now()
    local a = c:run(COUNT, { app = APP, config = config, name = "a" })
    await_split({ a }, 30)
    c:produce("words", cluster.keyed_records(1, BATCH, "a", N_KEYS), { key_separator = ":" })
    await_counts(truth(), { a }, 60)

    -- Scale up: two more instances; a hands each some of its tasks.
    local a_mark = #a:events()
    local b = c:run(COUNT, { app = APP, config = config, name = "b" })
    -- c never commits on its own (only a revoke would): when it dies, all it
    -- did since it joined is done again by its successor.
    local c_config = {}
    for k, v in pairs(config) do c_config[k] = v end
    c_config["commit.interval.ms"] = 600000
    local cc = c:run(COUNT, { app = APP, config = c_config, name = "c" })
    local owner = await_split({ a, b, cc }, 60)
    local _, a_gave = moves_after(a, a_mark)
    local moved = {}
    for _, p in ipairs({ b, cc }) do
      -- What it holds is what its assignment lines brought, less what they
      -- took away (b may hand a task on to c when c joins after it).
      local tasks = member_view(p)
      local new, revoked = moves_after(p, 0)
      for t in pairs(revoked) do new[t] = nil end
      assert.are.same(sorted_keys(set_of(tasks)), sorted_keys(new), p.name .. ": new tasks less revoked ones")
      local restored = restored_after(p, 0)
      local round = last(p:find_events(function(ev)
        return type(ev.msg) == "string" and ev.msg:find("^Restoration took %d+ ms for all tasks %[") ~= nil
      end))
      assert.is_table(round, p.name .. ": no 'Restoration took' line\n" .. p:log_tail(20))
      local in_round = set_of(round.tasks)
      for _, t in ipairs(tasks) do
        moved[t] = true
        assert.is_true((restored[t] or 0) > 0, ("%s restored no record for %s"):format(p.name, t))
        assert.is_true(in_round[t], ("%s: %s missing from its last restore round"):format(p.name, t))
      end
      assert_same_view(p)
    end
    assert.are.same(sorted_keys(moved), sorted_keys(a_gave), "the tasks a gave up are those b and c took")
    assert_same_view(a)
    local split_up = {}
    for t, name in pairs(owner) do split_up[#split_up + 1] = t:match("%d+$") .. "=" .. name end
    table.sort(split_up)

    c:produce("words", cluster.keyed_records(BATCH + 1, 2 * BATCH, "b", N_KEYS), { key_separator = ":" })
    await_counts(truth(), { a, b, cc }, 60)

    -- Scale down: c dies, b stops cleanly; a takes every task back, restoring
    -- what b and c wrote to the changelog since.
    a_mark = #a:events()
    local c_tasks = set_of((member_view(cc)))
    assert.is_true(cc:kill("KILL"))
    assert.is_true(b:kill("TERM"))
    assert.are.equal(0, b:wait(20), "b on SIGTERM: " .. b:status_text() .. "\n" .. b:log_tail(20))
    local _, sig = cc:wait(10)
    assert.are.equal(9, sig, "c: " .. cc:status_text())
    assert.are.equal("NOT_RUNNING", select(2, member_view(b)), "b's last state")
    await_split({ a }, 60)
    local a_took = moves_after(a, a_mark)
    assert.are.same(sorted_keys(moved), sorted_keys(a_took), "a takes back every task it gave")
    local restored = restored_after(a, a_mark)
    for t in pairs(a_took) do
      assert.is_true((restored[t] or 0) > 0, ("a restored no record for %s after the scale-down"):format(t))
    end
    assert_same_view(a)

    c:produce("words", cluster.keyed_records(2 * BATCH + 1, 3 * BATCH, "c", N_KEYS), { key_separator = ":" })
    local want, part_of = truth()
    await_counts(want, { a }, 60)
    assert.is_true(a:kill("TERM"))
    assert.are.equal(0, a:wait(20), "a on SIGTERM: " .. a:status_text() .. "\n" .. a:log_tail(20))

    -- At least once everywhere; exactly once where no instance died.
    local latest = latest_counts()
    local missing, low, dup_exact, dup_killed = {}, {}, {}, 0
    for k, n in pairs(want) do
      local got = latest[k]
      if got == nil then
        missing[#missing + 1] = k
      elseif got < n then
        low[#low + 1] = ("%s: %d < %d"):format(k, got, n)
      elseif got > n and c_tasks[task_name(part_of[k])] then
        dup_killed = dup_killed + 1
      elseif got > n then
        dup_exact[#dup_exact + 1] = ("%s (partition %d): %d > %d"):format(k, part_of[k], got, n)
      end
    end
    table.sort(missing)
    table.sort(low)
    table.sort(dup_exact)
    assert.are.equal(N_KEYS, #sorted_keys(want))
    assert.are.equal(0, #missing, "keys without a count: " .. table.concat(missing, ", ", 1, math.min(10, #missing)))
    assert.are.equal(0, #low, "keys counted short (a lost update): " .. table.concat(low, ", ", 1, math.min(10, #low)))
    assert.are.equal(0, #dup_exact, "keys over their count on partitions no killed instance held: " ..
      table.concat(dup_exact, ", ", 1, math.min(10, #dup_exact)))
    -- c's uncommitted records were counted again on top of its changelog:
    -- what at-least-once allows, and proof that a restored c's writes.
    assert.is_true(dup_killed > 0, "no key on c's partitions was counted twice: the kill went unnoticed")
    io.stdout:write(("    note: scaled 1 -> 3 -> 1 in %.1fs; split %s; c (killed) held %s; " ..
      "%d key(s) on its partitions over their true count\n"):format(cluster.now() - t0,
      table.concat(split_up, " "), table.concat(sorted_keys(c_tasks), ","), dup_killed))
  end)
end)
