--- What a detector table may hold: the one list of its fields, each with its
--- type, default, meaning and check. tide.detector validates a script's
--- table with it; tide.topology passes on the fields tide.topology{} takes;
--- the LuaCATS class tide.Detector (types/tide.lua) lists the same
--- names (a unit spec holds them together).
---
--- `M.info` is the other list: what the host (bindings/runtime.c, which
--- reads it by a table of the same names) learns of a loaded detector.
local serde = require("tide.serde")

local M = {}

M.policies = { dlq = true, skip = true, stop = true }

local function list_of_names(t)
  if #t == 0 and next(t) ~= nil then return false end
  for k, v in pairs(t) do
    if type(k) ~= "number" or type(v) ~= "string" or v == "" then return false end
  end
  return true
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

--- The key and value serde of every input and output topic: the detector's
--- `serde`/`key_serde`, overridden per topic by `serdes`.
local function topic_serdes(det, inputs, outputs)
  local known, all = {}, {}
  for _, t in ipairs(inputs) do known[t] = true end
  for _, t in ipairs(outputs) do known[t] = true end
  for t in pairs(known) do
    all[t] = { key = det.key_serde or "string", value = det.serde or "string" }
  end
  for t, d in pairs(det.serdes or {}) do
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
          return nil, ("serdes['%s'].%s '%s' is not one of string, bytes, json, avro"):format(t, which, tostring(name))
        end
        all[t][which] = name
      end
    end
    for _, f in ipairs({ "schema", "key_schema" }) do
      if d[f] ~= nil then
        if type(d[f]) ~= "string" then
          return nil, ("serdes['%s'].%s must be the path of an .avsc file"):format(t, f)
        end
        all[t][f] = d[f]
      end
    end
  end
  for t, d in pairs(all) do
    if d.schema and d.value ~= "avro" then
      return nil, ("serdes['%s']: a schema goes with the avro serde, but the value serde is '%s'"):format(t, d.value)
    end
    if d.key_schema and d.key ~= "avro" then
      return nil, ("serdes['%s']: a key_schema goes with the avro serde, but the key serde is '%s'"):format(t, d.key)
    end
  end
  return all
end

--- Read the schema files the serdes name (relative to the detector's
--- folder) into schema_text / key_schema_text, checking each is a schema.
--- Returns the texts read (they count in the detector's version), or nil,
--- reason.
local function read_schemas(serdes, path)
  local dir = path:match("^(.*)/[^/]*$") or "."
  local texts, topics = {}, {}
  for t in pairs(serdes) do topics[#topics + 1] = t end
  table.sort(topics) -- the texts feed the version: always in one order
  for _, t in ipairs(topics) do
    local d = serdes[t]
    for _, f in ipairs({ "schema", "key_schema" }) do
      if d[f] then
        local file = d[f]:sub(1, 1) == "/" and d[f] or (dir .. "/" .. d[f])
        local h = io.open(file, "rb")
        if not h then return nil, ("%s of topic '%s': cannot read %s"):format(f, t, file) end
        local text = h:read("*a")
        h:close()
        local ok, err = pcall(require("tide.avro").schema, text)
        if not ok then return nil, ("%s of topic '%s' (%s): %s"):format(f, t, file, tostring(err)) end
        d[f .. "_text"] = text
        texts[#texts + 1] = text
      end
    end
  end
  return texts
end

--- One declared punctuator, normalised to { every (ms), on, fn }.
local function punctuator(i, pu)
  if type(pu) ~= "table" or type(pu.fn) ~= "function" then
    return nil, ("punctuate[%d] needs fn = function(ctx, now) ... end"):format(i)
  end
  local on = pu.on or "stream"
  if on ~= "stream" and on ~= "wall" then
    return nil, ("punctuate[%d]: on must be \"stream\" or \"wall\", got %s"):format(i, tostring(on))
  end
  local ok, every = pcall(require("tide.store").duration, pu.every, "punctuate every")
  if not ok or every <= 0 then
    return nil, ("punctuate[%d]: every must be a positive duration like \"10s\""):format(i)
  end
  return { every = every, on = on, fn = pu.fn }
end

-- Checks: check(v, det, spec, env) with the field's value v (nil when
-- absent) and the whole table det; it sets what the field becomes in the
-- normalised `spec` and returns nil, or an error message and its line.
-- env: { path, source, default_name }. They run in the list's order, so a
-- check may use what an earlier one set.
local checks = {}

function checks.process(v, _, spec)
  if not v then return "detector has no 'process' function: add process = function(rec, ctx) ... end" end
  spec.process = v
end

function checks.name(v, _, spec, env)
  local name = v or env.default_name
  if not name:match("^[%w][%w._-]*$") then
    return ("detector name '%s' may only use letters, digits, '.', '_' and '-'"):format(name)
  end
  spec.name = name
end

function checks.inputs(v, _, spec)
  if not v or #v == 0 or not list_of_names(v) then
    return "'inputs' must be a non-empty list of topic names, e.g. inputs = { \"events\" }"
  end
  spec.inputs, spec.inputs_set = v, {}
  for _, t in ipairs(v) do spec.inputs_set[t] = true end
end

function checks.outputs(v, _, spec, env)
  local outputs = v or {}
  if not list_of_names(outputs) then
    return "'outputs' must be a list of topic names, e.g. outputs = { \"alerts\" }"
  end
  spec.outputs, spec.out_index = outputs, {}
  for i, o in ipairs(outputs) do spec.out_index[o] = i - 1 end
  for _, e in ipairs(literal_emits(env.source)) do
    if not spec.out_index[e.name] then
      return ("emit to unknown output '%s' (declared outputs: %s)"):format(
        e.name, #outputs > 0 and table.concat(outputs, ", ") or "none"), e.line
    end
  end
end

local function serde_name(field, into)
  return function(v, _, spec)
    if v and not serde.names[v] then
      return ("%s '%s' is not one of string, bytes, json, avro"):format(field, v)
    end
    spec[into] = v or "string"
  end
end
checks.serde = serde_name("serde", "value_serde")
checks.key_serde = serde_name("key_serde", "key_serde")

function checks.serdes(_, det, spec, env)
  local all, err = topic_serdes(det, spec.inputs, spec.outputs)
  if not all then return err end
  local texts, serr = read_schemas(all, env.path)
  if not texts then return serr end
  spec.serdes, spec.schema_texts = all, texts
end

function checks.stores(v, _, spec)
  local stores = v or {}
  for sname, decl in pairs(stores) do
    if type(sname) ~= "string" or not sname:match("^[%w][%w_-]*$") then
      return ("store name '%s' may only use letters, digits, '_' and '-'"):format(tostring(sname))
    end
    if type(decl) ~= "table" or (decl.kind ~= "kv" and decl.kind ~= "window") then
      return ("store '%s' must be declared with tide.kv() or tide.window{...}"):format(sname)
    end
  end
  spec.stores = stores
end

function checks.punctuate(v, _, spec)
  local list = v or {}
  if list.fn ~= nil or list.every ~= nil then list = { list } end
  spec.punctuators = {}
  for i, pu in ipairs(list) do
    local p, err = punctuator(i, pu)
    if not p then return err end
    spec.punctuators[i] = p
  end
end

function checks.on_error(v, _, spec)
  local on_error = v or "dlq"
  if not M.policies[on_error] then
    return ("on_error '%s' is not one of dlq, skip, stop"):format(on_error)
  end
  spec.on_error = on_error
end

--- The fields, in the order they are checked. `topology`: tide.topology{}
--- takes it too, for a DSL script.
M.list = {
  { name = "process", type = "function", doc = "function(rec, ctx), called once per input record" },
  { name = "name", type = "string", topology = true,
    doc = "letters, digits, '.', '_', '-'; default: the file's (or folder's) name" },
  { name = "inputs", type = "table", doc = "the input topics: a non-empty list of names" },
  { name = "outputs", type = "table", doc = "the topics ctx:emit may write: a list of names (default none)" },
  { name = "serde", type = "string", topology = true,
    doc = "value serde of inputs and outputs: \"string\" (default), \"bytes\", \"json\", \"avro\"" },
  { name = "key_serde", type = "string", topology = true,
    doc = "key serde: \"string\" (default), \"bytes\", \"json\", \"avro\"" },
  { name = "serdes", type = "table",
    doc = "per-topic serdes: { topic = \"json\" } or { topic = { key = ..., value = ... } }; with "
      .. "avro, { value = \"avro\", schema = \"schemas/x.avsc\", key_schema = ... }: the topic's "
      .. "schema file, beside the detector" },
  { name = "stores", type = "table", topology = true,
    doc = "state stores by name: tide.kv(), tide.window{...}; reached as ctx.stores.<name>" },
  { name = "punctuate", type = "table", topology = true,
    doc = "{ every = \"10s\", on = \"stream\"|\"wall\", fn = function(ctx, now) } or a list of them" },
  { name = "on_error", type = "string", topology = true,
    doc = "what a failing record gets: \"dlq\" (default), \"skip\", \"stop\"" },
  { name = "init", type = "function", topology = true, doc = "function(ctx), once before the first record" },
  { name = "close", type = "function", topology = true, doc = "function(ctx), once at shutdown" },
  { name = "description", type = "string", topology = true, doc = "text shown on the status page" },
  { name = "on_task", type = "function",
    doc = "function(ctx, partition, assigned): a task (input partition) starts or stops" },
  { name = "stream_time_topics", type = "table",
    doc = "{ topic = true }: the inputs whose timestamps advance stream time (default: all)" },
  { name = "timestamps", type = "table",
    doc = "{ topic = function(value, key) -> ms }: event time taken from the record" },
  { name = "dsl", type = "table",
    doc = "set by the DSL (tide.topology): what the script was compiled from, { topology = its description }" },
}

M.by_name = {}
for _, f in ipairs(M.list) do
  f.check = checks[f.name]
  M.by_name[f.name] = f
end

--- The names of the fields, in the list's order.
function M.names()
  local names = {}
  for i, f in ipairs(M.list) do names[i] = f.name end
  return names
end

--- Check a detector table; returns the normalised spec, or nil, a message
--- and (when not the table's) its line.
---@param det table
---@param env { path: string, source: string, default_name: string }
function M.check(det, env)
  for k, v in pairs(det) do
    local f = M.by_name[k]
    if not f then
      return nil, ("unknown detector field '%s' (known: %s)"):format(tostring(k), table.concat(M.names(), ", "))
    end
    if type(v) ~= f.type then
      return nil, ("detector field '%s' must be a %s, got %s"):format(k, f.type, type(v))
    end
  end
  local spec = { path = env.path }
  for _, f in ipairs(M.list) do
    if f.check then
      local err, line = f.check(det[f.name], det, spec, env)
      if err then return nil, err, line end
    elseif det[f.name] ~= nil then
      spec[f.name] = det[f.name]
    end
  end
  return spec
end

--- What the host learns of a loaded detector (bindings/runtime.c reads
--- these names, and refuses a table with others): kind "string", "list"
--- (of strings), "count", or "stores" ({ { name, memory, kind, global } } in
--- id order: global, a global table's topic). topology: the detector's
--- description as JSON (tide describe --json), for the status page.
M.info = {
  { name = "name", kind = "string" },
  { name = "version", kind = "string" },
  { name = "description", kind = "string" },
  { name = "inputs", kind = "list" },
  { name = "outputs", kind = "list" },
  { name = "on_error", kind = "string" },
  { name = "stores", kind = "stores" },
  { name = "punctuators", kind = "count" },
  { name = "topology", kind = "string" },
}

return M
