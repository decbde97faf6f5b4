--- The host's way into a detector runtime: bindings/runtime.c calls open()
--- once, in a fresh lua_State that belongs to this one detector.
local core = require("tide.core")
local detector = require("tide.detector")
local dispatch = require("tide.dispatch")
local errors = require("tide.errors")
local fields = require("tide.fields")
local registry = require("tide.registry")

local M = {}

local function log(level, msg)
  core.log(level, msg)
end

--- What the host learns of the detector: the names tide.fields.info lists,
--- which bindings/runtime.c reads.
local function info(spec, d)
  local t = {}
  for _, f in ipairs(fields.info) do
    local v = spec[f.name]
    if f.kind == "stores" then
      v = {}
      for i, e in ipairs(d.stores) do
        v[i] = { name = e.name, memory = e.decl.memory, kind = e.decl.kind, global = e.decl.global }
      end
    elseif f.kind == "count" then
      v = #v
    elseif f.kind == "string" then
      v = v or ""
    end
    t[f.name] = v
  end
  return t
end

--- Load, validate and init the detector at `path`; emits go to `sink_lud`.
--- application_id names a DSL detector's internal (repartition) topics.
--- open_db(name) opens the worker's store database (a lightuserdata), called
--- only when the detector declares RocksDB stores.
--- reg: the schema registry settings (url, user_info, timeout_ms,
--- backoff_max_ms, auto_register, use_latest); without a url, Avro schemas
--- come from the folder schemas/ beside the detector. source_copy, when
--- given, is a folder holding a copy of the detector's files to read instead
--- (named and reported as `path`'s).
--- Raises "file:line: reason" when the detector cannot run.
---@return function run, table info, function close, table hooks
function M.open(path, sink_lud, open_db, application_id, reg, source_copy)
  -- (the sandbox locks the string metatable, ("").dump included)
  local spec, err = detector.load(path, {
    print = function(msg) log("info", msg) end,
    application_id = application_id,
    source_copy = source_copy,
  })
  if not spec then error(err, 0) end
  local db
  for _, decl in pairs(spec.stores) do
    if not decl.memory then
      db = open_db(spec.name)
      break
    end
  end
  local d = dispatch.new(spec, sink_lud, log, M.serde_options(spec, path, reg or {}, log, db))
  if spec.init then
    local ok, ierr, trace = errors.call(spec.init, d.ctx)
    if not ok then error("init failed: " .. errors.describe(ierr) .. "\n" .. trace, 0) end
  end
  local function close()
    if spec.close then spec.close(d.ctx) end
  end
  local queries = require("tide.query").server(d.stores, d.set_task)
  return d.run, info(spec, d), close, { task = d.task, punctuate = d.punctuate,
    restore = d.restore, stream_time = d.stream_time, commit = d.commit, rollback = d.rollback,
    dropped_late = d.dropped_late, query = queries.serve, query_cancel = queries.cancel }
end

--- Does any topic of the detector use the avro serde?
local function uses_avro(spec)
  for _, d in pairs(spec.serdes) do
    if d.key == "avro" or d.value == "avro" then return true end
  end
  return false
end

--- The dispatcher's options: the store database and, for Avro, the
--- registry (made only when a topic needs it).
function M.serde_options(spec, path, reg, logf, db)
  local o = { db = db, auto_register = reg.auto_register ~= false, use_latest = reg.use_latest == true }
  if not uses_avro(spec) then return o end
  if reg.url and reg.url ~= "" then
    o.registry = registry.http({ url = reg.url, user_info = reg.user_info, timeout_ms = reg.timeout_ms,
      backoff_max_ms = reg.backoff_max_ms, log = logf })
  else
    local dir = (path:match("^(.*)/[^/]*$") or ".")
    if not path:match("%.lua$") then dir = path:gsub("/+$", "") end
    o.registry = registry.folder({ dir = reg.schemas_dir or (dir .. "/schemas"),
      same = require("tide.avro_serde").same_schema })
  end
  return o
end

--- The declared shape of the detector at `path` (info, as open returns it),
--- without running it: its script loads and is validated, but init is not
--- called and no store is opened. For tools such as `tide reset`.
---@return table info
function M.describe(path, application_id, source_copy)
  local spec, err = detector.load(path, {
    print = function(msg) log("info", msg) end,
    application_id = application_id,
    source_copy = source_copy,
  })
  if not spec then error(err, 0) end
  local names, stores = {}, {}
  for name in pairs(spec.stores) do names[#names + 1] = name end
  table.sort(names)
  for i, name in ipairs(names) do stores[i] = { name = name, decl = spec.stores[name] } end
  return info(spec, { stores = stores })
end

return M
