--- Loading and validating a detector script.
---
--- A detector is a Lua file (or a folder with an init.lua) that returns a
--- table; tide.fields lists what it may hold (inputs, outputs, process,
--- serde, stores, punctuate, ...), with each field's type, default and check.
--- A DSL script builds streams instead, compiled into such a table by
--- tide.topology. Every failure says file, line and reason, as Lua's own
--- errors do.
local sandbox = require("tide.sandbox")
local fields = require("tide.fields")
local dsl = require("tide.dsl")
local errors = require("tide.errors")
local topology = require("tide.topology")

local M = {}

--- The line of the chunk's last top-level `return`, where the detector table is.
local function return_line(source)
  local line, n = 1, 0
  for l in (source .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if l:match("^return%f[%W]") then line = n end
  end
  return line
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

local function copy_stores(stores)
  local c = {}
  for name, decl in pairs(stores) do
    local d = {}
    for k, v in next, decl do d[k] = v end -- raw: no metamethod of the detector's runs
    c[name] = d
  end
  return c
end

--- Check a detector table; returns the normalised spec or nil, reason.
---@param det any what the script returned
---@param path string
---@param source string
function M.validate(det, path, source)
  local function fail(msg, line)
    return nil, ("%s:%d: %s"):format(path, line or return_line(source), msg)
  end
  if type(det) ~= "table" then
    return fail("a detector must return a table with inputs and process (got " .. type(det) .. ")")
  end
  local spec, err, line = fields.check(det, { path = path, source = source, default_name = default_name(path) })
  if not spec then return fail(err, line) end
  spec.version = M.version(source)
  spec.inputs, spec.outputs = copy_list(spec.inputs), copy_list(spec.outputs)
  spec.stores = copy_stores(spec.stores)
  return spec
end

--- A require for a folder detector: its own modules, from its own folder,
--- in its own sandbox; nothing else. open(file) opens a module's source.
local function folder_require(dir, env, sources, open)
  local loaded = {}
  return function(name)
    if type(name) ~= "string" or name:find("%.%.") or name:find("^/") or not name:match("^[%w_.-]+$") then
      error(("require('%s'): detectors may only require their own modules by name"):format(tostring(name)), 2)
    end
    if loaded[name] ~= nil then return loaded[name] end
    local rel = name:gsub("%.", "/")
    for _, candidate in ipairs({ dir .. "/" .. rel .. ".lua", dir .. "/" .. rel .. "/init.lua" }) do
      local f = open(candidate)
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

--- Where a detector's files are read from: their own paths, or the same
--- names under a copy (`source_copy`: the supervisor's copy of the last
--- version that validated). Chunk names and messages keep the own paths.
---@param root? string the detector's folder, or the folder holding its file
---@param copy? string
local function opener(root, copy)
  return function(file)
    local rel
    if not copy then
      rel = nil
    elseif not root then
      rel = file
    elseif file:sub(1, #root + 1) == root .. "/" then
      rel = file:sub(#root + 2)
    end
    return io.open(rel and copy .. "/" .. rel or file, "rb")
  end
end

--- Load a detector from `path` inside a fresh sandbox environment: a .lua
--- file, or a folder whose init.lua may require the folder's other modules.
--- With opts.source_copy, the files are read from that copy instead (see
--- opener). Returns spec or nil, "file:line: reason".
---@param path string
---@param opts? { tide?: table, print?: fun(msg: string), source_copy?: string }
function M.load(path, opts)
  opts = opts or {}
  local file, dir = path, nil
  if not path:match("%.lua$") then
    dir = path:gsub("/+$", "")
    file = dir .. "/init.lua"
  elseif path:match("/init%.lua$") then
    dir = path:match("^(.*)/init%.lua$")
  end
  local open = opener(dir or file:match("^(.*)/[^/]*$"), opts.source_copy)
  local f, err = open(file)
  if not f then return nil, err end
  local source = f:read("*a")
  f:close()
  return M.load_source(source, file, opts, dir, open)
end

function M.load_source(source, path, opts, dir, open)
  opts = opts or {}
  local sources = { source }
  local req
  local sopts = { print = opts.print }
  if dir then
    sopts.require = function(name) return req(name) end
  end
  -- the DSL's entry points (tide.stream, ...) build into this load's own builder
  local builder = dsl.builder()
  local env = sandbox.env(dsl.bind(opts.tide or require("tide"), builder), sopts)
  if dir then req = folder_require(dir, env, sources, open or opener(dir)) end
  if source:byte(1) == 27 then
    return nil, path .. ":1: precompiled bytecode is not accepted; deploy the .lua source"
  end
  local chunk, err = load(source, "@" .. path, "t", env)
  if not chunk then return nil, err end
  local ok, det, trace = errors.call(chunk)
  local built = dsl.finish(builder)
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
  if spec and (#sources > 1 or #spec.schema_texts > 0) then
    -- The version covers the modules the detector required and its
    -- schemas too.
    for _, text in ipairs(spec.schema_texts) do sources[#sources + 1] = text end
    spec.version = M.version(table.concat(sources, "\0"))
  end
  if spec then spec.topology = M.topology(spec, opts.application_id) end
  return spec, verr
end

--- What `tide describe --json` prints and the status page draws: the DSL's
--- topology, or a hand-written detector's one processor, as JSON text.
---@param spec table a validated detector
---@param application_id? string names the changelogs (default "tide")
---@return string
function M.topology(spec, application_id)
  local describe = require("tide.describe")
  local t = spec.dsl and spec.dsl.topology or describe.of_detector(spec, function(store)
    return ("%s.%s-%s-changelog"):format(application_id or "tide", spec.name, store)
  end)
  return require("tide.serde").json.encode(t)
end

return M
