-- tide.fields: the one list of what a detector table may hold.
local fields = require("tide.fields")
local detector = require("tide.detector")

local function load_src(src, path)
  return detector.load_source(src, path or "d.lua")
end

-- A valid value of each field's type, for a detector that has the others.
local samples = {
  string = { name = "n", serde = "json", key_serde = "bytes", on_error = "skip", description = "d" },
  table = { inputs = '{ "in" }', outputs = '{ "out" }', serdes = '{ out = "json" }', stores = "{ s = tide.kv() }",
    punctuate = '{ every = "1s", fn = function() end }', stream_time_topics = '{ ["in"] = true }',
    timestamps = '{ ["in"] = function() return 1 end }', dsl = "{}" },
}

local function literal(f)
  if f.type == "function" then return "function() end" end
  if f.type == "string" then return ("%q"):format(samples.string[f.name]) end
  return samples.table[f.name]
end

--- A detector source with `name = value` and the fields it needs besides.
local function source_with(name, value)
  local parts = { ("%s = %s"):format(name, value) }
  if name ~= "inputs" then parts[#parts + 1] = 'inputs = { "in" }' end
  if name ~= "process" then parts[#parts + 1] = "process = function() end" end
  if name ~= "outputs" then parts[#parts + 1] = 'outputs = { "out" }' end
  return "return { " .. table.concat(parts, ", ") .. " }"
end

describe("tide.fields", function()
  it("accepts every field it lists, with a value of its type", function()
    for _, f in ipairs(fields.list) do
      local src = source_with(f.name, literal(f))
      local spec, err = load_src(src)
      assert.is_table(spec, src .. ": " .. tostring(err))
    end
  end)

  it("refuses a field of the wrong type, naming the type it wants", function()
    for _, f in ipairs(fields.list) do
      local src = source_with(f.name, f.type == "string" and "{}" or '"text"')
      local spec, err = load_src(src)
      assert.is_nil(spec, src)
      assert.matches(("detector field '%s' must be a %s"):format(f.name, f.type), err, 1, true)
    end
  end)

  it("names every known field when refusing an unknown one", function()
    local _, err = load_src('return { inputs = { "in" }, process = function() end, input = "x" }')
    assert.matches("unknown detector field 'input' (known: " .. table.concat(fields.names(), ", ") .. ")", err, 1, true)
  end)

  it("and tide.topology{} agree on what a DSL script may set", function()
    local dsl_script = 'tide.stream("in"):to("out")\nreturn tide.topology{ %s = %s }'
    for _, f in ipairs(fields.list) do
      local src = dsl_script:format(f.name, literal(f))
      local spec, err = load_src(src)
      if f.topology then
        assert.is_table(spec, src .. ": " .. tostring(err))
      else
        assert.is_nil(spec, src)
        assert.matches("tide.topology: unknown option '" .. f.name .. "'", err, 1, true)
      end
    end
  end)

  it("and the editors' definition of tide.Detector (types/tide.lua) list the same fields", function()
    local f = assert(io.open("types/tide.lua"))
    local text = f:read("*a")
    f:close()
    local block = assert(text:match("%-%-%-@class tide%.Detector\n(.-)\n[^-]"), "no tide.Detector class")
    local declared = {}
    for name in block:gmatch("%-%-%-@field ([%w_]+)%??%s") do declared[#declared + 1] = name end
    local listed = fields.names()
    table.sort(declared)
    table.sort(listed)
    assert.same(listed, declared)
  end)

  it("lists for the host names that a loaded detector has", function()
    local spec = assert(load_src('return { inputs = { "in" }, description = "d", process = function() end }'))
    for _, f in ipairs(fields.info) do
      assert.is_not_nil(spec[f.name], f.name)
    end
  end)
end)
