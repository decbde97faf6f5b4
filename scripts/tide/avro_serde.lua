--- The `avro` serde: Avro in the Confluent wire format (a zero byte, the
--- schema id as 4 bytes big-endian, then the Avro binary), as Kafka Streams,
--- Kafka Connect, ksqlDB and confluent-kafka write it.
---
--- Reading looks the writer's schema up by id (cached) and reads the record
--- in the shape of the detector's schema for the topic when it declares one
--- (the reader schema: fields added since, with defaults, read as their
--- defaults), else in the writer's. Writing uses the subject of the topic
--- (TopicNameStrategy: <topic>-value, <topic>-key):
---   the detector's schema, auto.register.schemas = true -> registered
---   the detector's schema, use.latest.version = true    -> the subject's latest
---   the detector's schema, neither                      -> looked up, must exist
---   no schema                                           -> the subject's latest
---
--- A registry that cannot be reached never fails a record: prepare() runs
--- before the detector sees a record and raises errors.RETRY, and the host
--- hands the record again later (the worker's lag grows meanwhile).
local ffi = require("ffi")
local avro = require("tide.avro")
local core = require("tide.core")
local errors = require("tide.errors")

local M = {}

local byte_p = ffi.typeof("const uint8_t *")
local DECODE, RETRY = errors.DECODE, errors.RETRY

--- Whether two schema texts are the same schema (avro-c compares them).
function M.same_schema(a, b)
  local ok1, sa = pcall(avro.schema, a)
  local ok2, sb = pcall(avro.schema, b)
  return ok1 and ok2 and avro.equal(sa, sb)
end

--- While the registry is down: wait a little (at most a second, well within
--- the watchdog's batch budget) so that a worker handing the same records
--- again does not spin, then ask for a retry.
local function retry(reg, msg)
  local wait = reg:wait_ms()
  if wait > 0 then core.sleep_ms(math.min(wait, 1000)) end
  errors.raise(RETRY, msg)
end

---@param opts { topic: string, which: "key"|"value", schema?: string, registry: table, auto_register?: boolean, use_latest?: boolean }
function M.new(opts)
  local reg, topic, which = opts.registry, opts.topic, opts.which
  local subject = topic .. "-" .. which
  local declared = opts.schema and avro.schema(opts.schema) -- raises on a bad schema
  local decoders, failed = {}, {}
  local writer -- { id, encode } once resolved

  --- The decoder of schema id `id`, or nil, kind, msg.
  local function decoder_of(id)
    local d = decoders[id]
    if d then return d end
    if failed[id] then return nil, "unknown", failed[id] end
    local text, kind, msg = reg:schema(id)
    if not text then
      if kind ~= "unavailable" then failed[id] = msg end
      return nil, kind, msg
    end
    local ok, dec = pcall(function() return avro.decoder(avro.schema(text), declared) end)
    if not ok then
      failed[id] = ("schema id %d: %s"):format(id, tostring(dec))
      return nil, "error", failed[id]
    end
    decoders[id] = dec
    return dec
  end

  local function id_of(p)
    local b = ffi.cast(byte_p, p)
    return ((b[1] * 256 + b[2]) * 256 + b[3]) * 256 + b[4]
  end

  local s = { name = "avro", subject = subject }

  function s.decode(p, len, what)
    if len < 0 then return nil end
    local b = ffi.cast(byte_p, p)
    if len < 5 or b[0] ~= 0 then
      errors.raise(DECODE, ("%s is not Avro in the schema registry's wire format: %s (it starts with a zero byte and a 4-byte schema id)")
        :format(what, len < 5 and ("only %d bytes"):format(len) or ("unknown magic byte %d"):format(b[0])))
    end
    local id = id_of(p)
    local dec = decoders[id]
    if not dec then
      local kind, msg
      dec, kind, msg = decoder_of(id)
      if not dec then
        if kind == "unavailable" then retry(reg, msg) end
        errors.raise(DECODE, ("%s: %s"):format(what, msg))
      end
    end
    local v, err = dec(p + 5, len - 5)
    if err then errors.raise(DECODE, ("%s (schema id %d): %s"):format(what, id, err)) end
    return v
  end

  --- Make sure the record's schema is at hand; raises RETRY when the
  --- registry cannot be asked now. Any other failure is the decode's to report.
  function s.prepare(p, len)
    if len < 5 then return end
    local b = ffi.cast(byte_p, p)
    if b[0] ~= 0 then return end
    local id = id_of(p)
    if decoders[id] or failed[id] then return end
    local _, kind, msg = decoder_of(id)
    if kind == "unavailable" then retry(reg, msg) end
  end

  --- The writer schema and its id; nil, kind, msg.
  local function resolve_writer()
    local id, text, kind, msg
    if declared and opts.auto_register then
      id, kind, msg = reg:register(subject, declared.text)
      text = declared.text
    elseif declared and not opts.use_latest then
      id, kind, msg = reg:lookup(subject, declared.text)
      text = declared.text
    else
      local a, b, c = reg:latest(subject)
      if a then id, text = a, b else kind, msg = b, c end
    end
    if not id then return nil, kind, msg end
    local ok, sch = pcall(avro.schema, text)
    if not ok then return nil, "error", ("%s: schema id %d: %s"):format(subject, id, tostring(sch)) end
    writer = { id = id, encode = avro.encoder(sch) }
    return writer
  end

  function s.prepare_output()
    if writer then return end
    local ok, kind, msg = resolve_writer()
    if not ok and kind == "unavailable" then retry(reg, msg) end
  end

  function s.encode(v, what)
    if v == nil then return nil end
    if not writer then
      local ok, kind, msg = resolve_writer()
      if not ok then
        if kind == "unavailable" then retry(reg, msg) end
        error(("cannot write %s as Avro to %s: %s"):format(what, topic, tostring(msg)), 3)
      end
    end
    local ok, bytes = pcall(writer.encode, v, writer.id, what)
    if not ok then error(("%s (Avro, subject %s)"):format(tostring(bytes), subject), 3) end
    return bytes
  end

  return s
end

return M
