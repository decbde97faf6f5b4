---@meta
--- LuaCATS definitions of what a detector author touches, for editors
--- running lua-language-server (see "Editor support" in the README): the
--- detector table, `rec`, `ctx`, the store objects and the `tide` global.
--- Never loaded by tide; the modules in scripts/tide carry their own
--- annotations (tide.testing's driver, tide.cache, tide.kv, ...), which
--- this file uses.
---
--- Start a detector with `---@type tide.Detector` above its `return {`:
--- process(rec, ctx) and the other functions then know their arguments.

---@alias tide.Serde "string"|"bytes"|"json"
---@alias tide.OnError "dlq"|"skip"|"stop"
--- A duration: ms, or a string such as "500ms", "10s", "5m", "1h", "2d".
---@alias tide.Duration number|string

--- The table a detector script returns (tide.fields lists the same names).
---@class tide.Detector
---@field process fun(rec: tide.Rec, ctx: tide.Ctx) called once per input record
---@field name? string letters, digits, '.', '_', '-'; default: the file's (or folder's) name
---@field inputs string[] the input topics (at least one)
---@field outputs? string[] the topics ctx:emit may write (default: none)
---@field serde? tide.Serde value serde of inputs and outputs (default "string")
---@field key_serde? tide.Serde key serde (default "string")
---@field serdes? table<string, tide.Serde|{ key?: tide.Serde, value?: tide.Serde }> per-topic serdes
---@field stores? table<string, tide.StoreDecl> state stores by name (tide.kv(), tide.window{...}): ctx.stores.<name>
---@field punctuate? tide.Punctuator|tide.Punctuator[] functions called on a schedule, per task
---@field on_error? tide.OnError what a failing record gets (default "dlq": a dead letter)
---@field init? fun(ctx: tide.Ctx) called once before the first record
---@field close? fun(ctx: tide.Ctx) called once at shutdown
---@field description? string text shown on the status page
---@field on_task? fun(ctx: tide.Ctx, partition: integer, assigned: boolean) a task (input partition) starts or stops
---@field stream_time_topics? table<string, boolean> the inputs whose timestamps advance stream time (default: all)
---@field timestamps? table<string, fun(value: any, key: any): number> event time (ms) taken from a topic's records
---@field dsl? table set by the DSL (tide.topology): what the script was compiled from

--- A function called on a schedule, for each task (input partition).
---@class tide.Punctuator
---@field every tide.Duration the interval
---@field on? "stream"|"wall" which clock: stream time (default; records' timestamps) or the wall clock
---@field fn fun(ctx: tide.Ctx, now: number) `now`: the time it fires for (ms); what it emits carries it

--- The record being processed. Fields are decoded on first read; the table
--- is reused, valid only during process(): keep a field (`local v =
--- rec.value`) or take rec:copy().
---@class tide.Rec
---@field key any the decoded key (nil: a null key)
---@field value any the decoded value (nil: a tombstone)
---@field topic string the input topic
---@field partition integer the input partition (the task)
---@field offset integer the record's offset
---@field timestamp integer ms since the epoch: the record's, or the event time a `timestamps` function found
---@field headers table<string, string> the record's headers (a null value reads as "")
local Rec = {}

--- A plain table with every field of the record, safe to keep and change.
---@return { key: any, value: any, topic: string, partition: integer, offset: integer, timestamp: integer, headers: table<string, string> }
function Rec:copy() end

--- What a detector's functions get besides the record.
---@class tide.Ctx
---@field detector string the detector's name
---@field version string a hash of its source
---@field stores table<string, tide.KvStore|tide.WindowStore> the declared stores, of the current task
---@field log tide.Log logging into the host's log, tagged with the detector
---@field stream_time number the current task's stream time (ms; -1: none yet)
---@field wall_time number the wall clock (ms) as of the current batch or punctuation
---@field partition integer the current task (input partition)
---@field timestamp? integer the record's timestamp (nil outside process)
---@field topic? string the record's topic (nil outside process)
---@field offset? integer the record's offset (nil outside process)
---@field headers? table<string, string> the record's headers (nil outside process)
local Ctx = {}

--- Emit a record to one of the detector's declared outputs. It carries the
--- timestamp of the record being processed (a punctuator's: the time it
--- fired for). Sent once the batch's offsets are committed with it.
---@param output string a name from the detector's `outputs`
---@param key any encoded with the output's key serde (nil: a null key)
---@param value any encoded with the output's serde (nil: a tombstone)
---@param headers? table<string, string>
function Ctx:emit(output, key, value, headers) end

--- Emit with the headers of the record being processed.
---@param output string a name from the detector's `outputs`
---@param key any
---@param value any
function Ctx:forward(output, key, value) end

--- ctx.log.info("seen %d", n): a message, formatted when arguments follow.
---@class tide.Log
---@field debug fun(msg: string, ...: any)
---@field info fun(msg: string, ...: any)
---@field warn fun(msg: string, ...: any)
---@field error fun(msg: string, ...: any)

--- A store's declaration, made by tide.kv() or tide.window{...}.
---@class tide.StoreDecl
---@field kind "kv"|"window"
---@field memory boolean kept in Lua tables (true) or in RocksDB
---@field size? number a window's size (ms)
---@field grace? number how late a record may still update its window (ms)
---@field retention? number how long windows are kept (ms)
---@field session? boolean a window's value is a session { e = end, ... } (the DSL's session windows)

--- A key-value store of the current task. Values are strings, numbers,
--- booleans or tables (kept as JSON); every write is changelogged.
---@class tide.KvStore
local KvStore = {}

--- The value of key, or nil.
---@param key string|number
---@return any
function KvStore:get(key) end

--- Set key to value (nil deletes it).
---@param key string|number
---@param value any
function KvStore:put(key, value) end

---@param key string|number
function KvStore:delete(key) end

--- The keys from <= k < to (nil: unbounded), in byte order.
---@param from? string
---@param to? string
---@return fun(): string?, any
function KvStore:range(from, to) end

--- The keys that start with prefix, in byte order.
---@param prefix string|number
---@return fun(): string?, any
function KvStore:prefix(prefix) end

--- A windowed store of the current task: per key, one value per window.
---@class tide.WindowStore
---@field size number the window size (ms)
local WindowStore = {}

--- Put value (nil deletes) for key in the window holding ts. Returns false,
--- and changes nothing, when that window closed more than grace ago.
---@param key string|number
---@param value any
---@param ts number ms, usually rec.timestamp
---@return boolean
function WindowStore:put(key, value, ts) end

--- The value of key's window starting at start, or nil.
---@param key string|number
---@param start number
---@return any
function WindowStore:get(key, start) end

--- Key's windows whose start is in [from, to]: for start, v in s:fetch(k, a, b)
---@param key string|number
---@param from? number
---@param to? number
---@return fun(): number?, any
function WindowStore:fetch(key, from, to) end

--- Put value (nil deletes) for key's window starting at start, unchecked.
---@param key string|number
---@param start number
---@param value any
function WindowStore:put_at(key, start, value) end

--- Delete the windows past retention as of now (default: stream time);
--- tide does this itself as stream time advances. Returns how many.
---@param now? number
---@return integer
function WindowStore:expire(now) end

--- The `tide` global of a detector script (the module scripts/tide/init.lua).
tide = require("tide")
