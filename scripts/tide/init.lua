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

-- The DSL (tide.dsl): streams and tables, compiled into a detector.
local dsl = require("tide.dsl")
local windows = require("tide.windows")

--- A stream of a topic's records: tide.stream("events", "json").
---@type fun(topic: string|string[], opts?: string|{ key?: string, value?: string, timestamp?: fun(value: any, key: any): number, name?: string }): tide.Stream
M.stream = dsl.stream
--- A table from a topic (latest value per key): tide.table("users", { value = "json" }).
---@type fun(topic: string, opts?: string|{ key?: string, value?: string, name?: string, memory?: boolean }): tide.Table
M.table = dsl.table
--- A table every worker holds in full, for streams to join through a key
--- mapper: tide.global_table("rates", { value = "json" }).
---@type fun(topic: string, opts?: string|{ key?: string, value?: string, name?: string }): tide.GlobalTable
M.global_table = dsl.global_table
--- Detector options of a DSL script: return tide.topology{ name = ..., description = ... }.
---@type fun(opts: { name?: string, description?: string, on_error?: string, serde?: string, key_serde?: string, init?: function, close?: function, stores?: table, punctuate?: table }): table
M.topology = dsl.topology
--- The window of a stream-stream join: tide.join_window{ before =, after =, grace = }
--- (or within = for both before and after).
M.join_window = windows.join_window
--- Windows for windowed_by: tumbling{ size, grace }, hopping{ size, advance, grace },
--- session{ gap, grace }, sliding{ size, grace }.
M.tumbling = windows.tumbling
M.hopping = windows.hopping
M.session = windows.session
M.sliding = windows.sliding

--- JSON helpers with the json serde's rules.
M.json = {
  encode = serde.json.encode,
  decode = serde.json.decode,
}

return M
