-- The first stage of the fraud pipeline: raw card authorisations, as the
-- acquirers send them, become one canonical shape that every detector reads.
--
--   in  (auths-raw): {"card_number": "4111-1111-1111-1111", "amt": "12.50",
--                     "currency": "eur", "merchant": {"country": "fr", "name": "Cafe"},
--                     "ts": "2026-11-21T10:00:00Z"}
--   out (auths, keyed by card): {"card": "4111111111111111", "amount": 12.5,
--                     "currency": "EUR", "country": "FR", "merchant": "Cafe",
--                     "time": 1795255200000}
--
-- Keying by card puts every authorisation of a card on one partition of
-- `auths`, so each downstream detector sees a card's history in order and in
-- one worker: that is what lets them keep per-card state.
--
-- A record that cannot be made canonical raises: with the default on_error
-- ("dlq") it goes, unchanged, to the dead-letter topic with the reason, and the
-- detectors downstream never see half-parsed data.
--
-- An authorisation without a time takes its Kafka record's timestamp
-- (ctx.timestamp: operators see the record they work on through ctx).
local null = tide.null

-- Upstream systems disagree on field names; the first present name wins.
local ALIASES = {
  card = { "card_number", "pan", "card" },
  amount = { "amt", "amount" },
  currency = { "currency", "ccy" },
  time = { "ts", "timestamp", "time" },
  country = { "merchant_country", "country" },
}

-- Epoch numbers below this are seconds, above it milliseconds: 1e11 seconds is
-- the year 5138, 1e11 milliseconds is March 1973, so no real time is ambiguous.
local EPOCH_MS_FROM = 1e11

--- Raise a data error; level 2 makes the message point at the failed check.
---@param fmt string
local function reject(fmt, ...)
  error("malformed authorisation: " .. fmt:format(...), 2)
end

--- A value as a message shows it: strings quoted, tables by their type.
---@param v any
---@return string
local function show(v)
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) == "table" then return "a JSON " .. (#v > 0 and "array" or "object") end
  return tostring(v)
end

---@param raw table
---@param names string[]
---@return any value the first field among `names` that is present and not null
local function field(raw, names)
  for _, n in ipairs(names) do
    local v = raw[n]
    if v ~= nil and v ~= null then return v end
  end
  return nil
end

--- The card number without its separators. Only the last four digits appear in
--- messages: dead-letter reasons end up in logs.
---@param v any
---@return string
local function card_id(v)
  if v == nil then
    reject("no card number (card_number)")
  end
  if type(v) ~= "string" then
    -- a 16-digit number does not fit a double exactly: its digits are already lost
    reject("card number must be a JSON string, got %s", type(v))
  end
  local digits = v:gsub("[%s%-]", "")
  if not digits:match("^%d+$") or #digits < 12 or #digits > 19 then
    reject("card number ending %q is not 12 to 19 digits", v:sub(-4))
  end
  return digits
end

---@param v any a number or a decimal string such as "12.50"
---@return number
local function amount(v)
  if v == nil then
    reject("no amount (amt)")
  end
  local n
  if type(v) == "number" then
    n = v
  elseif type(v) == "string" then
    -- plain decimals only: tonumber would also take "0x1A", "1e3" and " inf"
    local s = v:match("^%s*(%d+%.?%d*)%s*$") or v:match("^%s*(%.%d+)%s*$")
    n = s and tonumber(s)
  end
  if n == nil then
    reject("amount %s is not a number", show(v))
  end
  if n < 0 then
    reject("amount %s is negative", tostring(n))
  end
  return n
end

---@param v any
---@return string an ISO 4217 code, upper-case
local function currency(v)
  if v == nil then
    reject("no currency")
  end
  local code = type(v) == "string" and v:match("^%s*(%a%a%a)%s*$")
  if not code then
    reject("currency %s is not a 3-letter code", show(v))
  end
  return code:upper()
end

---@param v any
---@return string|userdata an ISO 3166 alpha-2 code, upper-case, or tide.null when unknown
local function country(v)
  if v == nil then return null end
  local code = type(v) == "string" and v:match("^%s*(%a%a)%s*$")
  if not code then
    reject("merchant country %s is not a 2-letter code", show(v))
  end
  return code:upper()
end

--- Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
--- days_from_civil). os.time would read the table as local time.
---@param y integer
---@param m integer
---@param d integer
---@return integer
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

--- "2026-11-21T10:00:00Z", "2026-11-21 10:00:00.250+01:00" (no zone: UTC).
---@param s string
---@return integer|nil ms since the epoch, nil when `s` is not ISO 8601
local function iso8601_ms(s)
  local y, mo, d, h, mi, sec, frac, zone =
    s:match("^%s*(%d%d%d%d)-(%d%d)-(%d%d)[T ](%d%d):(%d%d):(%d%d)(%.?%d*)(.-)%s*$")
  if not y then return nil end
  y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or sec > 60 then return nil end
  local offset = 0
  if zone ~= "" and zone ~= "Z" and zone ~= "z" then
    local sign, zh, zm = zone:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(zh) * 60 + tonumber(zm)) * 60000
    if sign == "-" then offset = -offset end
  end
  local ms = frac ~= "" and frac ~= "." and math.floor(tonumber("0" .. frac) * 1000 + 0.5) or 0
  local secs = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + sec
  return secs * 1000 + ms - offset
end

--- The authorisation's own time: the record's time in Kafka is when it was
--- produced, which may be long after the card was used.
---@param v any
---@param fallback number the Kafka record timestamp, -1 when unknown
---@return integer ms since the epoch
local function event_time(v, fallback)
  if v == nil then
    if fallback and fallback >= 0 then return fallback end
    reject("no time (ts) and no record timestamp")
  end
  local n = type(v) == "number" and v or (type(v) == "string" and v:match("^%s*%d+%s*$") and tonumber(v))
  if n then
    if n < 0 then
      reject("time %s is before 1970", show(v))
    end
    if n < EPOCH_MS_FROM then n = n * 1000 end
    return math.floor(n)
  end
  local ms = type(v) == "string" and iso8601_ms(v)
  if not ms then
    reject("time %s is neither epoch milliseconds nor ISO 8601", show(v))
  end
  return ms
end

--- The canonical authorisation of a raw one (a JSON object), or an error.
---@param raw any
---@param ctx table ctx.timestamp: the record's, for authorisations without a time
local function canonical(raw, _, ctx)
  if type(raw) ~= "table" then
    reject("expected a JSON object, got %s", raw == null and "null" or type(raw))
  end
  -- merchant is either {"name": ..., "country": ...} or just the name
  local merchant, merchant_country = raw.merchant, nil
  if type(merchant) == "table" then
    merchant, merchant_country = merchant.name, merchant.country
    if merchant_country == null then merchant_country = nil end
  end
  if type(merchant) ~= "string" then merchant = null end
  return {
    card = card_id(field(raw, ALIASES.card)),
    amount = amount(field(raw, ALIASES.amount)),
    currency = currency(field(raw, ALIASES.currency)),
    country = country(merchant_country or field(raw, ALIASES.country)),
    merchant = merchant,
    time = event_time(field(raw, ALIASES.time), ctx.timestamp),
  }
end

tide.stream("auths-raw", "json")
  :map_values(canonical)
  :select_key(function(_, auth) return auth.card end) -- keyed by card
  :to("auths", "json")

return tide.topology{
  description = "raw authorisations to the canonical shape, keyed by card",
}
