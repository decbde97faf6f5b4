-- The last stage of the fraud pipeline: alerts from every detector become
-- messages to the cardholder.
--
--   in  (alerts):        {"card", "detector", "reason", "score", "time", "details", "auth"}
--   out (notifications): {"card", "channel", "message", "detector", "time"}
--
-- One alert per card and detector within DEDUP_MS is enough: a customer
-- texted six times about one burst stops reading the texts. The window is a
-- fixed one that opens at the notification sent, measured in the alerts' own
-- time so that a replay notifies exactly as the live run did. Alerts from
-- different detectors are different news and each gets through.
--
-- A detector this notifier does not know still reaches the customer, through
-- DEFAULT_CHANNEL with its own reason: adding a detector needs no change here.
--
-- A plain detector (a table with process), the form to reach for when a
-- detector is a loop over records with its own state rather than a chain of
-- operators.

local DEDUP_MS = 30 * 60 * 1000
-- Money leaving fast is urgent; a card abroad is often just a holiday.
local CHANNELS = { amount_spike = "sms", velocity = "sms", new_country = "push" }
local DEFAULT_CHANNEL = "email"
-- (card, detector) pairs held per generation; see `last_sent`.
local MAX_PAIRS = 100000

-- "Last notified at" per pair: at most 2 * MAX_PAIRS pairs are held
-- (tide.cache); forgetting one older than a whole generation at worst lets one
-- duplicate through. Only sending keeps a pair young.
local sent = tide.cache(MAX_PAIRS)

---@param pair string
---@return number|nil time of the last notification for `pair`
local function last_sent(pair)
  return sent:peek(pair)
end

---@param pair string
---@param t number
local function mark_sent(pair, t)
  sent:set(pair, t)
end

---@param v any
---@return string|nil v if it is a string, nil for null or anything else
local function text(v)
  return type(v) == "string" and v or nil
end

--- "950.00 EUR at Apple Store (FR) on 2026-11-21 10:05 UTC"
---@param auth table a canonical authorisation
---@return string
local function describe_payment(auth)
  local parts = {}
  if type(auth.amount) == "number" then
    parts[#parts + 1] = ("%.2f"):format(auth.amount)
    if text(auth.currency) then parts[#parts + 1] = auth.currency end
  end
  parts[#parts + 1] = "at " .. (text(auth.merchant) or "a merchant")
  if text(auth.country) then parts[#parts + 1] = "(" .. auth.country .. ")" end
  if type(auth.time) == "number" then
    parts[#parts + 1] = os.date("!on %Y-%m-%d %H:%M UTC", math.floor(auth.time / 1000))
  end
  return table.concat(parts, " ")
end

-- What each known detector's alert means to a cardholder. Each returns the
-- middle of the message, between the card and the call to action.
---@type table<string, fun(auth: table): string>
local SAYS = {
  amount_spike = function(auth)
    return "a payment of " .. describe_payment(auth) .. " is much larger than usual."
  end,
  velocity = function(auth)
    return "many payments in a few minutes, the latest " .. describe_payment(auth) .. "."
  end,
  new_country = function(auth)
    return "first use in " .. (text(auth.country) or "a new country") .. ", "
      .. describe_payment(auth) .. ". Travelling? Then all is well."
  end,
}

---@param alert table
---@return string
local function message(alert)
  local card = alert.card
  local says = SAYS[alert.detector]
  local middle
  if says and type(alert.auth) == "table" then
    middle = says(alert.auth)
  else
    middle = ("unusual activity (%s: %s)."):format(
      tostring(alert.detector), text(alert.reason) or "no reason given")
  end
  return ("Card ending %s: %s If it was not you, call us on the number on your card.")
    :format(card:sub(-4), middle)
end

return {
  inputs = { "alerts" },
  outputs = { "notifications" },
  serde = "json",

  ---@param rec table rec.value is an alert (amount_spike.lua, velocity.lua, ...)
  ---@param ctx table
  process = function(rec, ctx)
    local alert = rec.value
    if type(alert) ~= "table" or type(alert.card) ~= "string" or type(alert.detector) ~= "string" then
      error("not an alert: card and detector must be strings")
    end
    -- the authorisation's time; the record's own for an alert without one
    local t = alert.time
    if type(t) ~= "number" then t = rec.timestamp end
    local pair = alert.card .. "\0" .. alert.detector
    local last = last_sent(pair)
    if last and math.abs(t - last) < DEDUP_MS then return end
    mark_sent(pair, t)
    ctx:emit("notifications", alert.card, {
      card = alert.card,
      channel = CHANNELS[alert.detector] or DEFAULT_CHANNEL,
      message = message(alert),
      detector = alert.detector,
      time = t,
    })
  end,
}
