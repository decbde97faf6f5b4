--- The checker of `make chaos`: what the outputs hold against the input.
---
--- The input topic is the truth: numbered, keyed records, value "KEY:SEQ"
--- with SEQ counting from 1 per key. The stateless detector copies each one
--- (value "KEY:SEQ|vVERSION"); the stateful one counts per key and writes
--- "SEQ:COUNT|vVERSION". Measured as Jepsen's Kafka workload names them:
--- lost writes (an input record with no output), duplicates (more than one
--- output for one input), and nonmonotonic order (within an output partition,
--- a key's SEQ going backwards). A replay after a crash goes backwards by
--- design under at-least-once, so order is counted twice: over every output
--- record, and over first deliveries only (a record delivered for the first
--- time after a later one of its key: a real reordering).
---
--- Records are tables { partition, offset, key, value } as `tide consume
--- --json` prints them. Pure functions: no I/O.
local M = {}

--- "k017:000123" -> "k017", 123 (nil when the value is not one of ours).
function M.parse_input(value)
  local key, seq = tostring(value or ""):match("^(.-):(%d+)$")
  if not key then return nil end
  return key, tonumber(seq)
end

--- The stateless output: "k017:000123|v3" -> 123, 3.
function M.parse_copy(value)
  local seq, version = tostring(value or ""):match("^.-:(%d+)|v(%d+)$")
  if not seq then return nil end
  return tonumber(seq), tonumber(version)
end

--- The stateful output: "000123:57|v3" -> 123, 3, 57 (seq, version, count).
function M.parse_count(value)
  local seq, count, version = tostring(value or ""):match("^(%d+):(%d+)|v(%d+)$")
  if not seq then return nil end
  return tonumber(seq), tonumber(version), tonumber(count)
end

local function id(key, seq) return key .. "#" .. seq end

local function by_offset(records)
  local sorted = {}
  for i, r in ipairs(records) do sorted[i] = r end
  table.sort(sorted, function(a, b)
    if a.partition ~= b.partition then return a.partition < b.partition end
    return a.offset < b.offset
  end)
  return sorted
end

--- What the input holds: { ids = set of "key#seq", per_key = { key -> n },
--- total (distinct records), records (as read), duplicates (copies beyond the
--- first), malformed, truncated (partitions whose first offset is not 0: the
--- mock dropped their oldest records, so they cannot be judged) }.
function M.truth(input)
  local t = { ids = {}, per_key = {}, total = 0, records = #input, duplicates = 0, malformed = 0,
    truncated = {} }
  local first = {}
  for _, r in ipairs(input) do
    if first[r.partition] == nil or r.offset < first[r.partition] then first[r.partition] = r.offset end
    local key, seq = M.parse_input(r.value)
    if not key or key ~= r.key then
      t.malformed = t.malformed + 1
    elseif t.ids[id(key, seq)] then
      t.duplicates = t.duplicates + 1
    else
      t.ids[id(key, seq)] = true
      t.per_key[key] = (t.per_key[key] or 0) + 1
      t.total = t.total + 1
    end
  end
  for p, o in pairs(first) do
    if o > 0 then t.truncated[#t.truncated + 1] = p end
  end
  table.sort(t.truncated)
  return t
end

local function sample_add(list, v, max)
  if #list < (max or 10) then list[#list + 1] = v end
end

--- One output stream against the truth. parse(value) -> seq, version, ...
--- Returns { records, lost, lost_sample, duplicates (extra copies),
--- duplicated (records with more than one copy), unexpected, malformed,
--- reorder_first, reorder_all, reorder_sample, split_keys, versions = {v -> n} }.
function M.stream(truth, output, parse)
  local r = { records = #output, lost = 0, lost_sample = {}, duplicates = 0, duplicated = 0,
    unexpected = 0, malformed = 0, reorder_first = 0, reorder_all = 0, reorder_sample = {},
    split_keys = 0, versions = {} }
  local copies, key_partition, split = {}, {}, {}
  local max_all, max_first = {}, {}
  local partition
  for _, rec in ipairs(by_offset(output)) do
    if rec.partition ~= partition then
      partition, max_all, max_first = rec.partition, {}, {}
    end
    local seq, version = parse(rec.value)
    local key = rec.key
    if not seq or key == nil then
      r.malformed = r.malformed + 1
    else
      r.versions[version] = (r.versions[version] or 0) + 1
      if key_partition[key] == nil then key_partition[key] = rec.partition
      elseif key_partition[key] ~= rec.partition and not split[key] then
        split[key] = true
        r.split_keys = r.split_keys + 1
      end
      local rid = id(key, seq)
      local n = (copies[rid] or 0) + 1
      copies[rid] = n
      if not truth.ids[rid] then r.unexpected = r.unexpected + 1 end
      if n == 2 then r.duplicated = r.duplicated + 1 end
      if n >= 2 then r.duplicates = r.duplicates + 1 end
      if max_all[key] and seq < max_all[key] then r.reorder_all = r.reorder_all + 1 end
      if n == 1 and max_first[key] and seq < max_first[key] then
        r.reorder_first = r.reorder_first + 1
        sample_add(r.reorder_sample, ("%s: %d after %d (partition %d, offset %d)"):format(
          key, seq, max_first[key], rec.partition, rec.offset))
      end
      if not max_all[key] or seq > max_all[key] then max_all[key] = seq end
      if n == 1 and (not max_first[key] or seq > max_first[key]) then max_first[key] = seq end
    end
  end
  for rid in pairs(truth.ids) do
    if not copies[rid] then
      r.lost = r.lost + 1
      sample_add(r.lost_sample, rid)
    end
  end
  table.sort(r.lost_sample)
  return r
end

--- The stateful output's counts against the truth: each key's final count
--- (its output record with the highest offset) against its number of input
--- records, and each output's count against its SEQ (equal under
--- exactly-once; above it after a replay under at-least-once; below it only
--- when an update was lost).
--- Returns { keys, exact, high, excess, high_max, low, deficit, low_sample,
--- missing (keys with no output), count_above_seq, count_below_seq }.
function M.counts(truth, output)
  local r = { keys = 0, exact = 0, high = 0, excess = 0, high_max = 0, low = 0, deficit = 0,
    low_sample = {}, missing = 0, count_above_seq = 0, count_below_seq = 0 }
  local final = {}
  for _, rec in ipairs(by_offset(output)) do
    local seq, _, count = M.parse_count(rec.value)
    if seq and rec.key ~= nil then
      final[rec.key] = count -- by_offset: the last one wins
      if count > seq then r.count_above_seq = r.count_above_seq + 1
      elseif count < seq then r.count_below_seq = r.count_below_seq + 1 end
    end
  end
  for key, want in pairs(truth.per_key) do
    r.keys = r.keys + 1
    local got = final[key]
    if got == nil then
      r.missing = r.missing + 1
      r.low = r.low + 1
      r.deficit = r.deficit + want
      sample_add(r.low_sample, ("%s: none of %d"):format(key, want))
    elseif got == want then
      r.exact = r.exact + 1
    elseif got > want then
      r.high = r.high + 1
      r.excess = r.excess + (got - want)
      if got - want > r.high_max then r.high_max = got - want end
    else
      r.low = r.low + 1
      r.deficit = r.deficit + (want - got)
      sample_add(r.low_sample, ("%s: %d of %d"):format(key, got, want))
    end
  end
  return r
end

--- Has any record been lost? (The only failure: duplicates and excess counts
--- are what at-least-once allows, and are reported.)
function M.lost_anything(copy, count_stream, counts)
  return copy.lost > 0 or count_stream.lost > 0 or counts.low > 0
end

return M
