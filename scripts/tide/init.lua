--- The `tide` module, as detectors see it.
local serde = require("tide.serde")

local M = {}

--- JSON null, as decoded by the json serde and accepted by emit.
M.null = serde.null

--- A bounded map for state kept in Lua (see tide.cache).
M.cache = require("tide.cache").new

--- JSON helpers with the json serde's rules.
M.json = {
  encode = serde.json.encode,
  decode = serde.json.decode,
}

return M
