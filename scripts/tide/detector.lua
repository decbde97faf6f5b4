--- Loading and validating a detector script.
---
--- A detector is a Lua file that returns a table:
---   name      string, default: the file name without .lua
---   inputs    list of topic names (at least one)
---   outputs   list of topic names it may emit to (may be empty)
---   process   function(rec, ctx), called once per input record
---   init      optional function(ctx), called once before the first record
---   close     optional function(ctx), called once at shutdown
---   serde     value serde for inputs and outputs: "string" (default), "bytes", "json"
---   key_serde key serde: "string" (default), "bytes", "json"
---   serdes    per-topic serdes overriding those two: { topic = "json" } or
---             { topic = { key = "string", value = "json" } }
---   on_error  "dlq" (default), "skip" or "stop"
---   stream_time_topics  { topic = true }: the inputs whose record timestamps
---             advance stream time (default: all)
---   on_task   function(ctx, partition, assigned): a task starts or stops
---   timestamps { topic = function(value, key) -> ms }: event time taken from
---             the record instead of its Kafka timestamp
---   description optional text shown on the status page
--- Every failure says file, line and reason, as Lua's own errors do.
local sandbox = require("tide.sandbox")
local serde = require("tide.serde")
local dsl = require("tide.dsl")
local errors = require("tide.errors")
local topology = require("tide.topology")

local M = {}

local known_fields = {
  name = "string", inputs = "table", outputs = "table", process = "function",
  init = "function", close = "function", serde = "string", key_serde = "string",
  on_error = "string", description = "string", stores = "table", punctuate = "table",
  serdes = "table", on_task = "function", stream_time_topics = "table", timestamps = "table",
}

M.policies = { dlq = true, skip = true, stop = true }

--- The line of the chunk's last top-level `return`, where the detector table is.
local function return_line(source)
  local line, n = 1, 0
  for l in (source .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if l:match("^return%f[%W]") then line = n end
  end
  return line
end

--- Literal output names passed to emit, with their lines: ctx:emit("name", ...).
local function literal_emits(source)
  local found, n = {}, 0
  for l in (source .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if not l:match("^%s*%-%-") then
      for name in l:gmatch("emit%s*%(%s*[\"']([^\"']*)[\"']") do
        found[#found + 1] = { name = name, line = n }
      end
    end
  end
  return found
end

local function list_of_names(t)
  if #t == 0 and next(t) ~= nil then return false end
  for k, v in pairs(t) do
    if type(k) ~= "number" or type(v) ~= "string" or v == "" then return false end
  end
  return true
end

--- The key and value serde of every input and output topic: the detector's
--- `serde`/`key_serde`, overridden per topic by `serdes`.
local function topic_serdes(det, inputs, outputs)
  local declared = det.serdes or {}
  local known = {}
  for _, t in ipairs(inputs) do known[t] = true end
  for _, t in ipairs(outputs) do known[t] = true end
  local all = {}
  for t in pairs(known) do
    all[t] = { key = det.key_serde or "string", value = det.serde or "string" }
  end
  for t, d in pairs(declared) do
    if not known[t] then
      return nil, ("serdes: '%s' is neither an input nor an output"):format(tostring(t))
    end
    if type(d) == "string" then d = { value = d } end
    if type(d) ~= "table" then
      return nil, ("serdes['%s'] must be a serde name or { key = ..., value = ... }"):format(t)
    end
    for _, which in ipairs({ "key", "value" }) do
      local name = d[which]
      if name ~= nil then
        if not serde.names[name] then
          return nil, ("serdes['%s'].%s '%s' is not one of string, bytes, json"):format(t, which, tostring(name))
        end
        all[t][which] = name
      end
    end
  end
  return all
end

--- A short hash of the script source: the detector's version.
function M.version(source)
  return require("tide.core").hash(source)
end

--- The name of a detector that sets none: its file's (or folder's).
local function default_name(path)
  local base = path:match("([^/]+)%.lua$") or path:match("([^/]+)/init%.lua$") or path
  if base == "init" then base = path:match("([^/]+)/init%.lua$") or base end
  return base
end

--- Copies of what tide keeps from the detector's table: tide reads them
--- long after the detector's code ran (the CLI prints under the output
--- names), so the detector must not be able to change them afterwards.
local function copy_list(t)
  local c = {}
  for i = 1, #t do c[i] = rawget(t, i) end
  return c
end

local STORE_FIELDS = { "kind", "memory", "size", "grace", "retention", "session" }
local function copy_stores(stores)
  local c = {}
  for name, decl in pairs(stores) do
    local d = {}
    for _, f in ipairs(STORE_FIELDS) do d[f] = rawget(decl, f) end
    c[name] = d
  end
  return c
end

--- Check a detector table; returns the normalised spec or nil, reason.
---@param det any what the script returned
---@param path string
---@param source string
function M.validate(det, path, source)
  local rline = return_line(source)
  local function fail(msg, line)
    return nil, ("%s:%d: %s"):format(path, line or rline, msg)
  end
  if type(det) ~= "table" then
    return fail("a detector must return a table with inputs and process (got " .. type(det) .. ")")
  end
  for k, v in pairs(det) do
    local want = known_fields[k]
    if not want then
      return fail(("unknown detector field '%s' (known: inputs, outputs, process, init, close, name, serde, key_serde, serdes, on_error, description, stores, punctuate, on_task, stream_time_topics, timestamps)"):format(tostring(k)))
    end
    if type(v) ~= want then
      return fail(("detector field '%s' must be a %s, got %s"):format(k, want, type(v)))
    end
  end
  if not det.process then
    return fail("detector has no 'process' function: add process = function(rec, ctx) ... end")
  end
  local name = det.name or default_name(path)
  if not name:match("^[%w][%w._-]*$") then
    return fail(("detector name '%s' may only use letters, digits, '.', '_' and '-'"):format(name))
  end
  local inputs = det.inputs
  if not inputs or #inputs == 0 or not list_of_names(inputs) then
    return fail("'inputs' must be a non-empty list of topic names, e.g. inputs = { \"events\" }")
  end
  local outputs = det.outputs or {}
  if not list_of_names(outputs) then
    return fail("'outputs' must be a list of topic names, e.g. outputs = { \"alerts\" }")
  end
  local out_index, inputs_set = {}, {}
  for i, o in ipairs(outputs) do out_index[o] = i - 1 end
  for _, t in ipairs(inputs) do inputs_set[t] = true end
  for _, e in ipairs(literal_emits(source)) do
    if not out_index[e.name] then
      return fail(("emit to unknown output '%s' (declared outputs: %s)"):format(
        e.name, #outputs > 0 and table.concat(outputs, ", ") or "none"), e.line)
    end
  end
  for _, f in ipairs({ "serde", "key_serde" }) do
    if det[f] and not serde.names[det[f]] then
      return fail(("%s '%s' is not one of string, bytes, json"):format(f, det[f]))
    end
  end
  local serdes, serr = topic_serdes(det, inputs, outputs)
  if not serdes then return fail(serr) end
  local stores = det.stores or {}
  for sname, decl in pairs(stores) do
    if type(sname) ~= "string" or not sname:match("^[%w][%w_-]*$") then
      return fail(("store name '%s' may only use letters, digits, '_' and '-'"):format(tostring(sname)))
    end
    if type(decl) ~= "table" or (rawget(decl, "kind") ~= "kv" and rawget(decl, "kind") ~= "window") then
      return fail(("store '%s' must be declared with tide.kv() or tide.window{...}"):format(sname))
    end
  end
  local punctuators = {}
  if det.punctuate then
    local list = det.punctuate
    if list.fn ~= nil or list.every ~= nil then list = { list } end
    for i, pu in ipairs(list) do
      if type(pu) ~= "table" or type(pu.fn) ~= "function" then
        return fail(("punctuate[%d] needs fn = function(ctx, now) ... end"):format(i))
      end
      local on = pu.on or "stream"
      if on ~= "stream" and on ~= "wall" then
        return fail(("punctuate[%d]: on must be \"stream\" or \"wall\", got %s"):format(i, tostring(on)))
      end
      local ok, every = pcall(require("tide.store").duration, pu.every, "punctuate every")
      if not ok or every <= 0 then
        return fail(("punctuate[%d]: every must be a positive duration like \"10s\""):format(i))
      end
      punctuators[#punctuators + 1] = { every = every, on = on, fn = pu.fn }
    end
  end
  local on_error = det.on_error or "dlq"
  if not M.policies[on_error] then
    return fail(("on_error '%s' is not one of dlq, skip, stop"):format(on_error))
  end
  return {
    name = name,
    path = path,
    version = M.version(source),
    description = det.description,
    inputs = copy_list(inputs),
    inputs_set = inputs_set,
    outputs = copy_list(outputs),
    out_index = out_index,
    value_serde = det.serde or "string",
    key_serde = det.key_serde or "string",
    serdes = serdes,
    on_error = on_error,
    on_task = det.on_task,
    stream_time_topics = det.stream_time_topics,
    timestamps = det.timestamps,
    process = det.process,
    init = det.init,
    close = det.close,
    stores = copy_stores(stores),
    punctuators = punctuators,
  }
end

--- A require for a folder detector: its own modules, from its own folder,
--- in its own sandbox; nothing else.
local function folder_require(dir, env, sources)
  local loaded = {}
  return function(name)
    if type(name) ~= "string" or name:find("%.%.") or name:find("^/") or not name:match("^[%w_.-]+$") then
      error(("require('%s'): detectors may only require their own modules by name"):format(tostring(name)), 2)
    end
    if loaded[name] ~= nil then return loaded[name] end
    local rel = name:gsub("%.", "/")
    for _, candidate in ipairs({ dir .. "/" .. rel .. ".lua", dir .. "/" .. rel .. "/init.lua" }) do
      local f = io.open(candidate, "rb")
      if f then
        local src = f:read("*a")
        f:close()
        sources[#sources + 1] = src
        local chunk, err = load(src, "@" .. candidate, "t", env)
        if not chunk then error(err, 0) end
        local v = chunk(name)
        if v == nil then v = true end
        loaded[name] = v
        return v
      end
    end
    error(("module '%s' not found in %s (detectors may only require their own modules)"):format(name, dir), 2)
  end
end

--- Load a detector from `path` inside a fresh sandbox environment: a .lua
--- file, or a folder whose init.lua may require the folder's other modules.
--- Returns spec or nil, "file:line: reason".
---@param path string
---@param opts? { tide?: table, print?: fun(msg: string) }
function M.load(path, opts)
  opts = opts or {}
  local file, dir = path, nil
  if not path:match("%.lua$") then
    dir = path:gsub("/+$", "")
    file = dir .. "/init.lua"
  elseif path:match("/init%.lua$") then
    dir = path:match("^(.*)/init%.lua$")
  end
  local f, err = io.open(file, "rb")
  if not f then return nil, err end
  local source = f:read("*a")
  f:close()
  return M.load_source(source, file, opts, dir)
end

function M.load_source(source, path, opts, dir)
  opts = opts or {}
  local sources = { source }
  local req
  local sopts = { print = opts.print }
  if dir then
    sopts.require = function(name) return req(name) end
  end
  local env = sandbox.env(opts.tide or require("tide"), sopts)
  if dir then req = folder_require(dir, env, sources) end
  if source:byte(1) == 27 then
    return nil, path .. ":1: precompiled bytecode is not accepted; deploy the .lua source"
  end
  local chunk, err = load(source, "@" .. path, "t", env)
  if not chunk then return nil, err end
  dsl.begin()
  local ok, det, trace = errors.call(chunk)
  local built = dsl.finish()
  if not ok then
    -- a misused API already names the detector's line: no traceback
    if errors.is(det) and rawget(det, "class") == errors.USAGE then
      local at, msg = rawget(det, "where"), tostring(rawget(det, "message"))
      if at then return nil, msg end
      return nil, ("%s:%d: %s"):format(path, return_line(source), msg)
    end
    return nil, errors.describe(det) .. "\n" .. trace
  end
  if built then
    if not dsl.is_dsl(det, built) then
      return nil, ("%s:%d: this script builds streams (tide.stream, tide.table) but returns %s: "
        .. "return one of its streams, or tide.topology{ ... }"):format(path, return_line(source), type(det))
    end
    local cok, compiled = pcall(topology.compile, built, default_name(path), opts.application_id or "tide")
    if not cok then return nil, ("%s:%d: %s"):format(path, return_line(source), errors.describe(compiled)) end
    det = compiled
  end
  local spec, verr = M.validate(det, path, source)
  if spec and #sources > 1 then
    -- The version covers the modules the detector required too.
    spec.version = M.version(table.concat(sources, "\0"))
  end
  return spec, verr
end

return M
