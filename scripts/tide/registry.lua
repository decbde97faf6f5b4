--- Where Avro schemas come from: a Confluent Schema Registry over HTTP, or a
--- folder of .avsc files (offline: tests, `tide test`, `tide replay --file`).
---
--- Both answer the same questions; a failure says which kind it is:
---   "unknown"     the registry answered: no such id / subject / schema
---   "unavailable" no answer (refused, timed out, 5xx, 401/403, 429): try
---                 again later; while the registry is down, calls fail at
---                 once until the backoff has passed
---   "error"       any other answer (not Avro, malformed)
---
---   reg:schema(id)              -> text | nil, kind, msg   (cached)
---   reg:latest(subject)         -> id, text | nil, kind, msg
---   reg:register(subject, text) -> id | nil, kind, msg
---   reg:lookup(subject, text)   -> id | nil, kind, msg
---
--- The HTTP client follows the REST API of Confluent Schema Registry 5.x to
--- 7.x: GET /schemas/ids/{id}, GET /subjects/{subject}/versions/latest,
--- POST /subjects/{subject}/versions (register), POST /subjects/{subject}
--- (look up), errors as { "error_code": 40403, "message": ... }.
local cjson = require("cjson").new()
local core = require("tide.core")

local M = {}

local function decode_json(s)
  local ok, v = pcall(cjson.decode, s)
  if ok and type(v) == "table" then return v end
  return nil
end

local function url_escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--------------------------------------------------------------------------------
-- HTTP

local Http = {}
Http.__index = Http

--- opts: url (comma-separated: tried in turn), user_info ("user:password"),
--- timeout_ms, backoff_max_ms, log(level, msg).
function M.http(opts)
  local urls = {}
  for u in tostring(opts.url):gmatch("[^,%s]+") do urls[#urls + 1] = (u:gsub("/+$", "")) end
  return setmetatable({
    urls = urls, user_info = opts.user_info ~= "" and opts.user_info or nil,
    timeout_ms = opts.timeout_ms or 5000, backoff_max_ms = opts.backoff_max_ms or 10000,
    log = opts.log or function() end, client = core.http_client(),
    by_id = {}, backoff_ms = 0, down_until = 0, down_since = nil,
  }, Http)
end

--- The registry's URL with any user:password@ left out, for messages.
function Http:describe()
  return "the schema registry at " .. (self.urls[1] or "?"):gsub("//[^/@]*@", "//")
end

--- Milliseconds until the next try when the registry is down, else 0.
function Http:wait_ms()
  return math.max(0, self.down_until - core.now_ms())
end

function Http:_down(msg)
  local now = core.now_ms()
  self.backoff_ms = math.min(math.max(self.backoff_ms * 2, 100), self.backoff_max_ms)
  self.down_until = now + self.backoff_ms
  if not self.down_since then
    self.down_since = now
    self.log("warn", ("%s is unavailable (%s): records that need it wait, retried with backoff up to %d ms")
      :format(self:describe(), msg, self.backoff_max_ms))
  end
  return nil, "unavailable", ("%s is unavailable: %s"):format(self:describe(), msg)
end

function Http:_up()
  if self.down_since then
    self.log("info", ("%s is back after %d ms"):format(self:describe(), core.now_ms() - self.down_since))
  end
  self.down_since, self.backoff_ms, self.down_until = nil, 0, 0
end

--- One call: the decoded JSON body of a 2xx answer, or nil, kind, msg.
function Http:_call(method, path, body)
  if core.now_ms() < self.down_until then
    return nil, "unavailable", ("%s is unavailable (retrying in %d ms)"):format(self:describe(), self:wait_ms())
  end
  local status, resp, why
  for _, base in ipairs(self.urls) do
    status, resp = self.client:request(method, base .. path, body, self.user_info, self.timeout_ms)
    if status then break end
    why = resp
  end
  if not status then return self:_down(why or "no URL") end
  local j = decode_json(resp)
  if status >= 200 and status < 300 then
    self:_up()
    if not j then return nil, "error", ("%s answered %s with no JSON object"):format(self:describe(), path) end
    return j
  end
  local msg = ("HTTP %d%s"):format(status, j and j.message and (": " .. tostring(j.message)) or "")
  if status >= 500 or status == 401 or status == 403 or status == 408 or status == 429 then
    return self:_down(msg)
  end
  self:_up()
  if status == 404 then return nil, "unknown", msg end
  return nil, "error", ("%s refused %s %s: %s"):format(self:describe(), method, path, msg)
end

local function avro_only(j, what)
  if j.schemaType ~= nil and j.schemaType ~= "AVRO" then
    return nil, "error", ("%s is a %s schema, not Avro"):format(what, tostring(j.schemaType))
  end
  if type(j.schema) ~= "string" then return nil, "error", what .. ": the answer has no schema" end
  return j.schema
end

function Http:schema(id)
  local hit = self.by_id[id]
  if hit then return hit end
  local j, kind, msg = self:_call("GET", ("/schemas/ids/%d"):format(id))
  if not j then
    if kind == "unknown" then msg = ("unknown schema id %d (%s has none)"):format(id, self:describe()) end
    return nil, kind, msg
  end
  local text, k2, m2 = avro_only(j, "schema id " .. id)
  if not text then return nil, k2, m2 end
  self.by_id[id] = text
  return text
end

function Http:latest(subject)
  local j, kind, msg = self:_call("GET", ("/subjects/%s/versions/latest"):format(url_escape(subject)))
  if not j then
    if kind == "unknown" then msg = ("subject %s has no schema in %s (%s)"):format(subject, self:describe(), msg) end
    return nil, kind, msg
  end
  local text, k2, m2 = avro_only(j, "the latest schema of " .. subject)
  if not text or type(j.id) ~= "number" then return nil, k2 or "error", m2 or "no id in the answer" end
  self.by_id[j.id] = text
  return j.id, text
end

local function post(self, path, subject, text, what)
  local j, kind, msg = self:_call("POST", path, cjson.encode({ schema = text }))
  if not j then
    if kind == "unknown" then msg = ("%s: the schema is not registered under subject %s (%s)"):format(what, subject, msg) end
    return nil, kind, msg
  end
  if type(j.id) ~= "number" then return nil, "error", what .. ": no id in the answer" end
  self.by_id[j.id] = text
  return j.id
end

function Http:register(subject, text)
  return post(self, ("/subjects/%s/versions"):format(url_escape(subject)), subject, text, "register")
end

function Http:lookup(subject, text)
  return post(self, ("/subjects/%s"):format(url_escape(subject)), subject, text, "look up")
end

--------------------------------------------------------------------------------
-- A folder: schemas/<id>.avsc (a schema by its id) and schemas/<subject>.avsc
-- (a subject's latest schema). Schemas registered offline get ids of their
-- own, above every file's, for the life of the process.

local Folder = {}
Folder.__index = Folder

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function list(dir)
  local names = {}
  local p = io.popen(("ls -1 '%s' 2>/dev/null"):format(dir:gsub("'", "'\\''")))
  if p then
    for line in p:lines() do names[#names + 1] = line end
    p:close()
  end
  return names
end

--- opts: dir, same(a, b) -> whether two schema texts are one schema.
function M.folder(opts)
  local self = setmetatable({ dir = opts.dir, same = opts.same or function(a, b) return a == b end,
    by_id = {}, subjects = {}, next_id = 1 }, Folder)
  for _, name in ipairs(list(opts.dir)) do
    local base = name:match("^(.*)%.avsc$")
    if base and base:match("^%d+$") then
      local id = tonumber(base)
      self.by_id[id] = slurp(opts.dir .. "/" .. name)
      if id >= self.next_id then self.next_id = id + 1 end
    elseif base then
      self.subjects[base] = { file = opts.dir .. "/" .. name }
    end
  end
  return self
end

function Folder:describe() return "the schemas folder " .. self.dir end
function Folder:wait_ms() return 0 end

function Folder:schema(id)
  local text = self.by_id[id]
  if text then return text end
  return nil, "unknown", ("unknown schema id %d (no %s/%d.avsc)"):format(id, self.dir, id)
end

--- The id of a schema text: a file's with the same schema, or a new one.
function Folder:_id_of(text)
  for id, t in pairs(self.by_id) do
    if t == text or self.same(t, text) then return id end
  end
  local id = self.next_id
  self.next_id = id + 1
  self.by_id[id] = text
  return id
end

function Folder:latest(subject)
  local s = self.subjects[subject]
  if not s then
    return nil, "unknown", ("subject %s has no schema (no %s/%s.avsc)"):format(subject, self.dir, subject)
  end
  if not s.text then
    s.text = slurp(s.file)
    if not s.text then return nil, "error", "cannot read " .. s.file end
  end
  if not s.id then s.id = self:_id_of(s.text) end
  return s.id, s.text
end

function Folder:register(subject, text)
  local id = self:_id_of(text)
  self.subjects[subject] = { text = text, id = id }
  return id
end

Folder.lookup = Folder.register

return M
