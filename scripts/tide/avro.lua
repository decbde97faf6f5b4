--- Avro values as Lua values: schemas, and the code that turns the codec's
--- tokens (core/avro.c, on avro-c) into tables and back.
---
--- How Avro maps to Lua (the README has the table):
---   null -> nil; boolean -> boolean; int, long, float, double -> number
---   (a long beyond 2^53 loses its last digits); string, bytes, fixed -> string;
---   enum -> its symbol (a string); array -> list; map -> table with string
---   keys; record -> table with a key per field; union -> the value of its
---   branch (null as nil, so an optional field is simply absent).
---   Logical types: decimal (bytes or fixed) -> number (value / 10^scale, a
---   double); timestamp-millis and local-timestamp-millis -> ms since the
---   epoch, as rec.timestamp; timestamp-micros -> µs; date -> days since
---   1970-01-01; time-millis / time-micros -> ms / µs after midnight;
---   uuid -> string.
---
--- For each schema, Lua source is generated once (one function per record,
--- a table constructor with the field names as constant keys) and compiled:
--- the JIT then reads a record's tokens straight into a table.
local ffi = require("ffi")
local cjson = require("cjson").new()
local tffi = require("tide.ffi")

local M = {}

local aapi = tffi.avro
local NULL = cjson.null
local tok_array = ffi.typeof("tide_avro_tok_t[?]")
local out_p = ffi.new("const char *[1]")

local PRIMITIVE = { null = true, boolean = true, int = true, long = true, float = true,
  double = true, bytes = true, string = true }

--------------------------------------------------------------------------------
-- Schemas

local function fullname(name, ns)
  if name:find(".", 1, true) or not ns or ns == "" then return name end
  return ns .. "." .. name
end

local function namespace_of(full)
  return full:match("^(.*)%.[^.]*$")
end

local function short(full)
  return full:match("([^.]*)$")
end

local parse_node

local function parse_named(j, ns, names, kind)
  if type(j.name) ~= "string" or j.name == "" then
    error(("a %s needs a name"):format(kind), 0)
  end
  local full = fullname(j.name, type(j.namespace) == "string" and j.namespace or ns)
  local node = { type = kind, name = full }
  names[full] = node
  if kind == "record" then
    node.fields = {}
    local fns = namespace_of(full)
    if type(j.fields) ~= "table" then error(("record %s needs fields"):format(full), 0) end
    for i, f in ipairs(j.fields) do
      if type(f) ~= "table" or type(f.name) ~= "string" then
        error(("record %s: field %d needs a name"):format(full, i), 0)
      end
      node.fields[i] = { name = f.name, type = parse_node(f.type, fns, names), default = f.default,
        has_default = f.default ~= nil }
    end
  elseif kind == "enum" then
    node.symbols, node.default = j.symbols, j.default
  else
    node.size = j.size
  end
  return node
end

function parse_node(j, ns, names)
  local t = type(j)
  if t == "string" then
    if PRIMITIVE[j] then return { type = j } end
    local n = names[fullname(j, ns)] or names[j]
    if not n then error(("unknown type '%s'"):format(j), 0) end
    return n
  end
  if t ~= "table" then error("a schema is a name, an object or a list", 0) end
  if j.type == nil then -- a JSON array: a union
    local node = { type = "union", branches = {} }
    for i, b in ipairs(j) do node.branches[i] = parse_node(b, ns, names) end
    return node
  end
  local ty = j.type
  if type(ty) == "table" then return parse_node(ty, ns, names) end
  local node
  if ty == "record" or ty == "error" then
    node = parse_named(j, ns, names, "record")
  elseif ty == "enum" or ty == "fixed" then
    node = parse_named(j, ns, names, ty)
  elseif ty == "array" then
    node = { type = "array", items = parse_node(j.items, ns, names) }
  elseif ty == "map" then
    node = { type = "map", values = parse_node(j.values, ns, names) }
  elseif PRIMITIVE[ty] then
    node = { type = ty }
  else
    return parse_node(ty, ns, names) -- a named type's name
  end
  if type(j.logicalType) == "string" then
    node.logical = j.logicalType
    node.scale = tonumber(j.scale) or 0
    node.precision = tonumber(j.precision)
  end
  return node
end

--- A schema from its JSON text: { text, root (the tree above), handle (the
--- codec's, freed with the schema) }. Raises "not a valid Avro schema: ...".
---@param text string
function M.schema(text)
  local ok, j = pcall(cjson.decode, text)
  if not ok then error("not a valid Avro schema: " .. tostring(j), 0) end
  local names = {}
  local pok, root = pcall(parse_node, j, nil, names)
  if not pok then error("not a valid Avro schema: " .. tostring(root), 0) end
  local h = aapi.schema_new(text, #text)
  if h == nil then error(ffi.string(aapi.last_error()), 0) end
  return { text = text, root = root, handle = ffi.gc(h, aapi.schema_free) }
end

--------------------------------------------------------------------------------
-- Schema text of a tree (a pruned reader schema, for avro-c)

local function json_string(s)
  return cjson.encode(s)
end

local function tree_json(node, done)
  local ty = node.type
  if ty == "record" or ty == "enum" or ty == "fixed" then
    if done[node.name] then return json_string(node.name) end
    done[node.name] = true
  end
  if ty == "record" then
    local fields = {}
    for i, f in ipairs(node.fields) do
      fields[i] = ('{"name":%s,"type":%s}'):format(json_string(f.name), tree_json(f.type, done))
    end
    return ('{"type":"record","name":%s,"fields":[%s]}'):format(json_string(node.name), table.concat(fields, ","))
  elseif ty == "enum" then
    local syms = {}
    for i, s in ipairs(node.symbols) do syms[i] = json_string(s) end
    return ('{"type":"enum","name":%s,"symbols":[%s]}'):format(json_string(node.name), table.concat(syms, ","))
  elseif ty == "fixed" then
    return ('{"type":"fixed","name":%s,"size":%d}'):format(json_string(node.name), node.size)
  elseif ty == "array" then
    return ('{"type":"array","items":%s}'):format(tree_json(node.items, done))
  elseif ty == "map" then
    return ('{"type":"map","values":%s}'):format(tree_json(node.values, done))
  elseif ty == "union" then
    local b = {}
    for i, n in ipairs(node.branches) do b[i] = tree_json(n, done) end
    return "[" .. table.concat(b, ",") .. "]"
  end
  return json_string(ty)
end

--------------------------------------------------------------------------------
-- Resolution: avro-c resolves a writer schema against a reader schema, but
-- cannot fill in the defaults of fields the writer does not have. So the
-- reader schema given to avro-c leaves those fields out (they are kept in
-- `missing`), and the generated reader adds their defaults.

local function kind_key(n)
  if n.type == "record" or n.type == "enum" or n.type == "fixed" then return short(n.name) end
  return n.type
end

--- The writer's counterpart of reader node r: w itself, or w's union branch
--- of the same kind (named types: the same unqualified name, as the Avro
--- spec resolves them).
local function counterpart(r, w)
  if w.type ~= "union" then return w end
  local k = kind_key(r)
  for _, b in ipairs(w.branches) do
    if kind_key(b) == k then return b end
  end
  return nil
end

local function prune(r, w, memo)
  if r.type == "union" then
    local copy = { type = "union", branches = {} }
    for i, b in ipairs(r.branches) do
      local cw = counterpart(b, w)
      copy.branches[i] = cw and prune(b, cw, memo) or b
    end
    return copy
  end
  w = counterpart(r, w)
  if not w or w.type ~= r.type then return r end
  if r.type == "array" then return { type = "array", items = prune(r.items, w.items, memo) } end
  if r.type == "map" then return { type = "map", values = prune(r.values, w.values, memo) } end
  if r.type ~= "record" then return r end
  if memo[r] then return memo[r] end
  local copy = { type = "record", name = r.name, fields = {}, missing = {} }
  memo[r] = copy
  local by_name = {}
  for _, f in ipairs(w.fields) do by_name[f.name] = f end
  for _, f in ipairs(r.fields) do
    local wf = by_name[f.name]
    if wf then
      copy.fields[#copy.fields + 1] = { name = f.name, type = prune(f.type, wf.type, memo),
        default = f.default, has_default = f.has_default }
    elseif f.has_default then
      copy.missing[#copy.missing + 1] = f
    else
      error(("the reader schema's field '%s' of %s is not in the writer schema and has no default")
        :format(f.name, r.name), 0)
    end
  end
  return copy
end

--------------------------------------------------------------------------------
-- Defaults: a field's JSON default as the Lua value a reader gets.

local function latin1(s)
  -- bytes and fixed defaults are JSON strings of code points 0-255
  return (s:gsub("[\194\195][\128-\191]", function(c)
    return string.char((c:byte(1) - 192) * 64 + c:byte(2) - 128)
  end))
end

local function default_value(node, d)
  if d == nil or d == NULL then return nil end
  local ty = node.type
  if ty == "union" then return default_value(node.branches[1], d) end
  if ty == "record" then
    local t = {}
    for _, f in ipairs(node.fields) do
      local v = d[f.name]
      if v == nil then v = f.default end
      t[f.name] = default_value(f.type, v)
    end
    return t
  elseif ty == "array" then
    local t = {}
    for i, v in ipairs(d) do t[i] = default_value(node.items, v) end
    return t
  elseif ty == "map" then
    local t = {}
    for k, v in pairs(d) do t[k] = default_value(node.values, v) end
    return t
  elseif (ty == "bytes" or ty == "fixed") and type(d) == "string" then
    local b = latin1(d)
    if node.logical == "decimal" then return aapi.decimal_value(b, #b, node.scale) end
    return b
  end
  return d
end

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deep_copy(x) end
  return t
end

--------------------------------------------------------------------------------
-- Code generation

--- A chunk being generated: its functions and the constants they use.
local function generator()
  local g = { defs = {}, consts = {}, fns = {}, n = 0 }
  function g.const(v)
    g.consts[#g.consts + 1] = v
    return ("K[%d]"):format(#g.consts)
  end
  function g.fn()
    g.n = g.n + 1
    return "F" .. g.n
  end
  function g.source(prelude, root)
    local locals = {}
    for i = 1, g.n do locals[i] = "F" .. i end
    return table.concat({ prelude,
      #locals > 0 and ("local " .. table.concat(locals, ", ")) or "",
      table.concat(g.defs, "\n"), root }, "\n")
  end
  return g
end

local function literal(v)
  local t = type(v)
  if t == "string" then return ("%q"):format(v) end
  if t == "number" then return ("%.17g"):format(v) end
  if t == "boolean" then return tostring(v) end
  return nil
end

-- Decoding: an expression reading the value of `node` at token index `s`.
local read_expr

local function read_record(g, node)
  if g.fns[node] then return g.fns[node] end
  local f = g.fn()
  g.fns[node] = f
  local parts = {}
  for i, fd in ipairs(node.fields) do
    parts[#parts + 1] = ("[%q] = %s"):format(fd.name, read_expr(g, fd.type, i == 1 and "b" or ("b + " .. (i - 1))))
  end
  for _, fd in ipairs(node.missing or {}) do
    local v = default_value(fd.type, fd.default)
    if v ~= nil then
      local lit = literal(v)
      parts[#parts + 1] = ("[%q] = %s"):format(fd.name, lit or ("copy(" .. g.const(v) .. ")"))
    end
  end
  g.defs[#g.defs + 1] = ("%s = function(t, b)\n  return { %s }\nend"):format(f, table.concat(parts, ",\n    "))
  return f
end

local function read_list(g, node, is_map)
  local f = g.fn()
  local item = read_expr(g, is_map and node.values or node.items, "c + 1")
  local store = is_map and ("out[ffi_string(t[c].v.p, t[c].n)] = %s"):format(item)
    or ("i = i + 1; out[i] = %s"):format(item)
  g.defs[#g.defs + 1] = ([[
%s = function(t, s)
  local out, c, i = new_table(%s), tonumber(t[s].v.i), 0
  while c ~= 0 do
    %s
    c = t[c].next
  end
  return out
end]]):format(f, is_map and "0, t[s].n" or "t[s].n, 0", store)
  return f
end

local function read_union(g, node)
  local f = g.fn()
  local arms = {}
  for i, b in ipairs(node.branches) do
    arms[#arms + 1] = ("%s br == %d then return %s"):format(i == 1 and "if" or "elseif", i - 1, read_expr(g, b, "s"))
  end
  g.defs[#g.defs + 1] = ("%s = function(t, s)\n  local br = t[s].branch\n  %s\n  end\nend"):format(f, table.concat(arms, "\n  "))
  return f
end

function read_expr(g, node, s)
  local ty, tok = node.type, "t[" .. s .. "]"
  if ty == "null" then return "nil" end
  if ty == "boolean" then return ("(%s.v.i ~= 0)"):format(tok) end
  if ty == "int" or ty == "long" then return ("tonumber(%s.v.i)"):format(tok) end
  if ty == "float" or ty == "double" then return tok .. ".v.d" end
  if ty == "string" or ty == "bytes" or ty == "fixed" then
    if node.logical == "decimal" then
      return ("decimal_value(%s.v.p, %s.n, %d)"):format(tok, tok, node.scale)
    end
    return ("ffi_string(%s.v.p, %s.n)"):format(tok, tok)
  end
  if ty == "enum" then
    local syms = {}
    for i, sym in ipairs(node.symbols) do syms[i - 1] = sym end
    return ("%s[tonumber(%s.v.i)]"):format(g.const(syms), tok)
  end
  if ty == "record" then return ("%s(t, tonumber(%s.v.i))"):format(read_record(g, node), tok) end
  if ty == "array" then return ("%s(t, %s)"):format(read_list(g, node, false), s) end
  if ty == "map" then return ("%s(t, %s)"):format(read_list(g, node, true), s) end
  if ty == "union" then return ("%s(t, %s)"):format(read_union(g, node), s) end
  error("cannot read Avro type " .. tostring(ty))
end

local function compile(source, name, consts, env)
  local chunk, err = load(source, "=" .. name)
  if not chunk then error(err .. "\n" .. source, 0) end
  return chunk(consts, env)
end

local READ_PRELUDE = [[
local K, E = ...
local tonumber, ffi_string, new_table, copy, decimal_value =
  tonumber, E.ffi_string, E.new_table, E.copy, E.decimal_value]]

local read_env = {
  ffi_string = ffi.string,
  new_table = require("table.new"),
  copy = deep_copy,
  decimal_value = aapi.decimal_value,
}

--- A reader of tokens: function(tokens) -> the Lua value of tree `root`.
local function reader(root)
  local g = generator()
  local src = g.source(READ_PRELUDE, "return function(t)\n  return " .. read_expr(g, root, "0") .. "\nend")
  return compile(src, "avro reader", g.consts, read_env)
end

-- Encoding: a statement writing Lua value `v` into token index `s`; `path`
-- names the value in errors.
local write_stmt

local function describe(v)
  local t = type(v)
  if v == NULL then return "null" end
  if t == "string" then return ("the string %q"):format(#v > 40 and v:sub(1, 40) .. "..." or v) end
  if t == "number" or t == "boolean" then return ("%s %s"):format(t, tostring(v)) end
  return "a " .. t
end

local function nullable(node)
  if node.type == "null" then return true end
  if node.type ~= "union" then return false end
  for _, b in ipairs(node.branches) do
    if b.type == "null" then return true end
  end
  return false
end

local function write_record(g, node, path)
  local key = node
  if g.fns[key] then return g.fns[key] end
  local f = g.fn()
  g.fns[key] = f
  local lines = {}
  for i, fd in ipairs(node.fields) do
    local fpath = path .. "." .. fd.name
    local get = ("local x = v[%q]"):format(fd.name)
    local dv = fd.has_default and default_value(fd.type, fd.default) or nil
    local fill
    if dv ~= nil then
      fill = ("if x == nil then x = %s end"):format(literal(dv) or ("copy(" .. g.const(dv) .. ")"))
    elseif not nullable(fd.type) and not fd.has_default then
      fill = ("if x == nil then missing(%q) end"):format(fpath)
    end
    lines[#lines + 1] = ("  do\n    %s\n    %s\n    %s\n  end"):format(get, fill or "",
      write_stmt(g, fd.type, "x", "b + " .. (i - 1), fpath))
  end
  g.defs[#g.defs + 1] = ([[
%s = function(v, s)
  if type(v) ~= "table" then wrong(%q, "a table (Avro record %s)", v) end
  local b = take(%d)
  tok[s].v.i = b
%s
end]]):format(f, path, node.name, #node.fields, table.concat(lines, "\n"))
  return f
end

local function write_list(g, node, path, is_map)
  local f = g.fn()
  local body
  if is_map then
    body = ([[
  local count = 0
  for k in pairs(v) do
    if type(k) ~= "string" then wrong(%q, "string keys (Avro map)", k) end
    count = count + 1
  end
  local first, j = take(2 * count), 0
  tok[s].v.i = first
  tok[s].n = count
  for k, x in pairs(v) do
    local at = first + 2 * j
    tok[at].v.p = k
    tok[at].n = #k
    %s
    j = j + 1
  end]]):format(path, write_stmt(g, node.values, "x", "at + 1", path .. "[]"))
  else
    body = ([[
  local count = #v
  local first = take(count)
  tok[s].v.i = first
  tok[s].n = count
  for i = 1, count do
    local x = v[i]
    %s
  end]]):format(write_stmt(g, node.items, "x", "first + i - 1", path .. "[]"))
  end
  g.defs[#g.defs + 1] = ([[
%s = function(v, s)
  if type(v) ~= "table" then wrong(%q, "a table (Avro %s)", v) end
%s
end]]):format(f, path, is_map and "map" or "array", body)
  return f
end

--- The branch a Lua value goes to: by its type, the first branch that takes it.
local function union_choice(g, node, path)
  local arms = {}
  local function arm(cond, i)
    arms[#arms + 1] = ("if %s then br = %d"):format(cond, i - 1)
  end
  for i, b in ipairs(node.branches) do
    local ty = b.type
    if ty == "null" then
      arm("v == nil or v == NULL", i)
    elseif ty == "boolean" then
      arm('t == "boolean"', i)
    elseif ty == "int" then
      arm('t == "number" and v % 1 == 0 and v >= -2147483648 and v <= 2147483647', i)
    elseif ty == "long" then
      arm('t == "number" and v % 1 == 0', i)
    elseif ty == "float" or ty == "double" then
      arm('t == "number"', i)
    elseif b.logical == "decimal" then
      arm('t == "number"', i)
    elseif ty == "string" or ty == "bytes" then
      arm('t == "string"', i)
    elseif ty == "enum" then
      local idx = {}
      for j, sym in ipairs(b.symbols) do idx[sym] = j - 1 end
      arm(("t == \"string\" and %s[v] ~= nil"):format(g.const(idx)), i)
    elseif ty == "fixed" then
      arm(('t == "string" and #v == %d'):format(b.size), i)
    elseif ty == "array" then
      arm('t == "table" and (v[1] ~= nil or next(v) == nil)', i)
    elseif ty == "map" then
      arm('t == "table"', i)
    elseif ty == "record" then
      local need = {}
      for _, fd in ipairs(b.fields) do
        if not fd.has_default and not nullable(fd.type) then need[#need + 1] = ("v[%q] ~= nil"):format(fd.name) end
      end
      arm('t == "table"' .. (#need > 0 and (" and " .. table.concat(need, " and ")) or ""), i)
    end
  end
  local src = {}
  for i, a in ipairs(arms) do src[i] = (i == 1 and "" or "else") .. a end
  return ("local t, br = type(v), nil\n    %s end\n    if br == nil then wrong(%q, %q, v) end")
    :format(table.concat(src, "\n    "), path, "a value of one of the union's branches")
end

local function write_union(g, node, path)
  local f = g.fn()
  local arms = {}
  for i, b in ipairs(node.branches) do
    arms[#arms + 1] = ("%s br == %d then\n    %s"):format(i == 1 and "if" or "elseif", i - 1,
      write_stmt(g, b, "v", "s", path))
  end
  g.defs[#g.defs + 1] = ("%s = function(v, s)\n    %s\n  tok[s].branch = br\n  %s\n  end\nend")
    :format(f, union_choice(g, node, path), table.concat(arms, "\n  "))
  return f
end

local TYPE_NAMES = { int = "an integer (Avro int)", long = "an integer (Avro long)",
  float = "a number (Avro float)", double = "a number (Avro double)",
  string = "a string (Avro string)", bytes = "a string (Avro bytes)", boolean = "a boolean (Avro boolean)" }

function write_stmt(g, node, v, s, path)
  local ty, tok = node.type, "tok[" .. s .. "]"
  local function check(cond, want)
    return ("if not (%s) then wrong(%q, %q, %s) end"):format(cond, path, want, v)
  end
  if ty == "null" then
    return check(("%s == nil or %s == NULL"):format(v, v), "nil (Avro null)")
  elseif ty == "boolean" then
    return check(('type(%s) == "boolean"'):format(v), TYPE_NAMES.boolean)
      .. ("\n    %s.v.i = %s and 1 or 0"):format(tok, v)
  elseif node.logical == "decimal" then
    return ("%s.v.p, %s.n = decimal(%s, %d, %d, %s, %q)"):format(tok, tok, v, node.scale,
      ty == "fixed" and node.size or 0, node.precision or 0, path)
  elseif ty == "int" then
    return check(('type(%s) == "number" and %s %% 1 == 0 and %s >= -2147483648 and %s <= 2147483647')
      :format(v, v, v, v), TYPE_NAMES.int) .. ("\n    %s.v.i = %s"):format(tok, v)
  elseif ty == "long" then
    return check(('type(%s) == "number" and %s %% 1 == 0 and %s >= -9223372036854775808 and %s < 9223372036854775808')
      :format(v, v, v, v), TYPE_NAMES.long) .. ("\n    %s.v.i = %s"):format(tok, v)
  elseif ty == "float" or ty == "double" then
    return check(('type(%s) == "number"'):format(v), TYPE_NAMES[ty]) .. ("\n    %s.v.d = %s"):format(tok, v)
  elseif ty == "string" or ty == "bytes" then
    return check(('type(%s) == "string"'):format(v), TYPE_NAMES[ty])
      .. ("\n    %s.v.p = %s\n    %s.n = #%s"):format(tok, v, tok, v)
  elseif ty == "fixed" then
    return check(('type(%s) == "string" and #%s == %d'):format(v, v, node.size),
      ("a string of %d bytes (Avro fixed %s)"):format(node.size, node.name))
      .. ("\n    %s.v.p = %s\n    %s.n = #%s"):format(tok, v, tok, v)
  elseif ty == "enum" then
    local idx = {}
    for i, sym in ipairs(node.symbols) do idx[sym] = i - 1 end
    local k = g.const(idx)
    return check(("%s[%s] ~= nil"):format(k, v), "one of " .. table.concat(node.symbols, ", ")
      .. " (Avro enum " .. node.name .. ")") .. ("\n    %s.v.i = %s[%s]"):format(tok, k, v)
  elseif ty == "record" then
    return ("%s(%s, %s)"):format(write_record(g, node, path), v, s)
  elseif ty == "array" then
    return ("%s(%s, %s)"):format(write_list(g, node, path, false), v, s)
  elseif ty == "map" then
    return ("%s(%s, %s)"):format(write_list(g, node, path, true), v, s)
  elseif ty == "union" then
    return ("%s(%s, %s)"):format(write_union(g, node, path), v, s)
  end
  error("cannot write Avro type " .. tostring(ty))
end

local WRITE_PRELUDE = [[
local K, E = ...
local type, pairs, next, NULL, copy = type, pairs, next, E.NULL, E.copy
local tok, cap, used, anchors = E.tokens(64), 64, 0, {}
local path = "value" -- what the value being written is called in errors
local function wrong(path, want, v)
  error(("%s must be %s, got %s"):format(path, want, E.describe(v)), 0)
end
local function missing(path)
  error(("%s is missing (the field has no default and is not optional)"):format(path), 0)
end
local function take(k)
  local at = used
  used = used + k
  if used > cap then
    while used > cap do cap = cap * 2 end
    local bigger = E.tokens(cap)
    E.copy_tokens(bigger, tok, at)
    tok = bigger
  end
  return at
end
local function decimal(v, scale, size, precision, path)
  local s = E.decimal(v, scale, size, precision, path)
  anchors[#anchors + 1] = s
  return s, #s
end]]

local dec_buf = ffi.new("char[32]")

local write_env = {
  NULL = NULL,
  copy = deep_copy,
  describe = describe,
  tokens = function(n) return tok_array(n) end,
  copy_tokens = function(dst, src, n) ffi.copy(dst, src, n * ffi.sizeof("tide_avro_tok_t")) end,
  decimal = function(v, scale, size, precision, path)
    local n = tonumber(v)
    if type(v) == "table" or n == nil then
      error(("%s must be a number (Avro decimal), got %s"):format(path, describe(v)), 0)
    end
    if precision > 0 and math.abs(n) * 10 ^ scale >= 10 ^ precision then
      error(("%s: %s does not fit the Avro decimal(%d, %d)"):format(path, tostring(v), precision, scale), 0)
    end
    local len = aapi.decimal_bytes(n, scale, size, dec_buf)
    if len < 0 then error(("%s: %s does not fit the Avro decimal"):format(path, tostring(v)), 0) end
    return ffi.string(dec_buf, len)
  end,
}

local ROOT = "<ROOT>"

--- A writer: function(value, path) -> tokens (valid until the next call),
--- raising "path.field must be ..., got ..." for a value the schema refuses.
local function writer(root)
  local g = generator()
  local body = write_stmt(g, root, "v", "0", ROOT)
  -- the root's name is the caller's ("value", "key"), set at each call
  local src = g.source(WRITE_PRELUDE, ([[
local root = function(v)
  %s
end
return function(v, name)
  used = 0
  path = name
  take(1)
  local ok, err = pcall(root, v)
  for i = #anchors, 1, -1 do anchors[i] = nil end
  if not ok then error(err, 0) end
  return tok
end]]):format(body))
  -- every generated path starts with the ROOT placeholder
  src = src:gsub('"' .. ROOT, 'path .. "')
  return compile(src, "avro writer", g.consts, write_env)
end

--------------------------------------------------------------------------------
-- Decoders and encoders

--- A decoder for data written with `writer_schema`, read in the shape of
--- `reader_schema` (nil: the writer's): function(ptr, len) -> value, or
--- nil, reason. Raises when the schemas cannot be resolved.
function M.decoder(writer_schema, reader_schema)
  local shape, rhandle = writer_schema.root, nil
  if reader_schema and reader_schema.text ~= writer_schema.text then
    shape = prune(reader_schema.root, writer_schema.root, {})
    local text = tree_json(shape, {})
    local pruned = M.schema(text)
    rhandle = pruned.handle
    -- keep the pruned schema alive as long as the codec
    reader_schema = pruned
  end
  local codec = aapi.codec_new(writer_schema.handle, rhandle)
  if codec == nil then error(ffi.string(aapi.last_error()), 0) end
  codec = ffi.gc(codec, aapi.codec_free)
  local build = reader(shape)
  local decode, last_error = aapi.decode, aapi.last_error
  local keep = { writer_schema, reader_schema }
  return function(p, len)
    local _ = keep
    local t = decode(codec, p, len)
    if t == nil then
      return nil, ffi.string(last_error())
    end
    return build(t)
  end
end

--- An encoder: function(value, id, path) -> bytes (with the wire format's
--- header when id >= 0). Raises "path... must be ..." on a value the schema
--- refuses.
function M.encoder(schema)
  local write = writer(schema.root)
  local encode, handle = aapi.encode, schema.handle
  return function(v, id, path)
    local t = write(v, path or "value")
    local n = encode(handle, t, id or -1, out_p)
    if n < 0 then error((path or "value") .. ": " .. ffi.string(aapi.last_error()), 0) end
    return ffi.string(out_p[0], n)
  end
end

--- Whether two schemas are the same (avro-c's comparison).
function M.equal(a, b)
  return aapi.schema_equal(a.handle, b.handle) ~= 0
end

M.null = NULL

return M
