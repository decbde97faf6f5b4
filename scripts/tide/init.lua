--- The `tide` module, as detectors see it.
local serde = require("tide.serde")

local M = {}

--- JSON null, as decoded by the json serde and accepted by emit.
M.null = serde.null

local store = require("tide.store")

--- Declare a key-value store: stores = { seen = tide.kv() }; { memory = true }
--- keeps it in Lua tables. Both are changelogged and restored.
M.kv = store.kv

--- Declare a windowed store: tide.window{ size = "10m", grace = "1m" }.
M.window = store.window

--- A bounded map for state kept in Lua (see tide.cache).
M.cache = require("tide.cache").new

--- JSON helpers with the json serde's rules.
M.json = {
  encode = serde.json.encode,
  decode = serde.json.decode,
}

return M
