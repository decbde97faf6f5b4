-- Alerts when a card pays far more than it usually does.
--
--   in  (auths):  {"card", "amount", "currency", "country", "merchant", "time"}
--   out (alerts): {"card", "detector", "reason", "score", "time", "details", "auth"}
--
-- Each card keeps a running mean and variance of its amounts per currency (a
-- card that also pays in yen would otherwise look like a spike every time). An
-- amount is a spike when, after MIN_HISTORY authorisations, it is more than
-- K standard deviations above the mean; or, after only MIN_HISTORY_MULTIPLE,
-- when it is MULTIPLE times the mean: small test payments followed by a large
-- one is the classic pattern on a freshly stolen card.
--
-- State is a plain Lua table in this worker (lost on restart; durable state
-- stores come later). `auths` is keyed by card, so a card's authorisations all
-- reach the same worker, in order.
local MIN_HISTORY = 5           -- authorisations before the deviation rule applies
local K = 4                     -- how many standard deviations is "far"
local MIN_HISTORY_MULTIPLE = 2  -- authorisations before the multiple rule applies
local MULTIPLE = 10             -- this many times the mean is a spike whatever the spread
-- A card that always pays about the same has a tiny deviation, and a slightly
-- dearer coffee would be "many deviations" away: never use less than this
-- share of the mean (nor less than one unit of the currency) as the deviation.
local MIN_STDDEV_SHARE = 0.5
local MIN_STDDEV = 1
-- After this many authorisations the statistics forget old amounts
-- exponentially, so a card whose spending really changes gets a new baseline.
local MEMORY = 100
-- Cards (per currency) held per generation; see `history`.
local MAX_CARDS = 100000

---@class SpikeHistory
---@field n integer authorisations seen (not counting spikes)
---@field mean number
---@field var number population variance

-- At most 2 * MAX_CARDS histories are held (tide.cache); only cards idle for a
-- whole generation are forgotten (they then start learning again and stay
-- silent meanwhile).
local histories = tide.cache(MAX_CARDS)

local function new_history()
  return { n = 0, mean = 0, var = 0 }
end

---@param id string card and currency
---@return SpikeHistory
local function history(id)
  return histories:get_or_create(id, new_history)
end

--- Fold an amount into the statistics (West's incremental mean and variance:
--- with weight 1/n it is the exact running mean and population variance).
---@param h SpikeHistory
---@param x number
local function learn(h, x)
  h.n = h.n + 1
  local weight = 1 / math.min(h.n, MEMORY)
  local diff = x - h.mean
  local step = weight * diff
  h.mean = h.mean + step
  h.var = (1 - weight) * (h.var + diff * step)
end

---@param x number
---@return number x rounded to cents, for people and for stable JSON
local function cents(x)
  return math.floor(x * 100 + 0.5) / 100
end

return {
  inputs = { "auths" },
  outputs = { "alerts" },
  serde = "json",

  ---@param rec table rec.value is a canonical authorisation (normaliser.lua)
  ---@param ctx table
  process = function(rec, ctx)
    local a = rec.value
    if type(a) ~= "table" or type(a.card) ~= "string" or type(a.amount) ~= "number"
      or type(a.currency) ~= "string" then
      error("not a canonical authorisation (card, amount, currency)")
    end
    local h = history(a.card .. " " .. a.currency)
    local stddev = math.sqrt(h.var)
    local spread = math.max(stddev, MIN_STDDEV_SHARE * h.mean, MIN_STDDEV)
    local rule
    if h.n >= MIN_HISTORY and a.amount > h.mean + K * spread then
      rule = "stddev"
    elseif h.n >= MIN_HISTORY_MULTIPLE and h.mean > 0 and a.amount >= MULTIPLE * h.mean then
      rule = "multiple"
    end
    if not rule then
      learn(h, a.amount)
      return
    end
    -- A spike is not learnt: a run of fraudulent payments must not raise the
    -- bar it is measured against.
    ctx:emit("alerts", a.card, {
      card = a.card,
      detector = ctx.detector,
      time = a.time,
      reason = ("%.2f %s is %s this card's usual %.2f %s (%d payments)"):format(
        a.amount, a.currency, h.mean > 0 and ("%.1f times"):format(a.amount / h.mean) or "far above",
        h.mean, a.currency, h.n),
      score = cents((a.amount - h.mean) / spread),
      details = { rule = rule, mean = cents(h.mean), stddev = cents(stddev), n = h.n },
      auth = a,
    })
  end,
}
