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
-- Written with the DSL: the authorisations of each card are aggregated into
-- the card's baselines, and every payment is judged against them before it is
-- learnt. The aggregate also holds the alert the latest payment raised, if
-- any; the alerts are the aggregates that hold one. `auths` is keyed by card
-- (normaliser.lua), so grouping by key needs no repartition topic.
--
-- The baselines live in a RocksDB store, `baselines`, whose every change also
-- goes to the changelog topic <application.id>.amount_spike-baselines-changelog:
-- after a crash, a restart or a move of the partition to another worker, the
-- store is restored from it before the card's next payment is judged.
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

---@class Baseline
---@field n integer authorisations seen (not counting spikes)
---@field mean number
---@field var number population variance

---@class CardBaselines
---@field baselines table<string, Baseline> by currency
---@field alert? table the alert the latest payment raised (nil: none)

--- Fold an amount into the statistics (West's incremental mean and variance:
--- with weight 1/n it is the exact running mean and population variance).
---@param b Baseline
---@param x number
local function learn(b, x)
  b.n = b.n + 1
  local weight = 1 / math.min(b.n, MEMORY)
  local diff = x - b.mean
  local step = weight * diff
  b.mean = b.mean + step
  b.var = (1 - weight) * (b.var + diff * step)
end

---@param x number
---@return number x rounded to cents, for people and for stable JSON
local function cents(x)
  return math.floor(x * 100 + 0.5) / 100
end

--- The aggregator: judge payment `a` against its card's baseline in its
--- currency, then learn it unless it is a spike.
---@param card CardBaselines the card's aggregate so far
---@param a table a canonical authorisation (normaliser.lua)
---@return CardBaselines
local function judge_then_learn(card, a)
  if type(a) ~= "table" or type(a.card) ~= "string" or type(a.amount) ~= "number"
    or type(a.currency) ~= "string" then
    error("not a canonical authorisation (card, amount, currency)")
  end
  card.alert = nil
  local b = card.baselines[a.currency]
  if not b then
    b = { n = 0, mean = 0, var = 0 }
    card.baselines[a.currency] = b
  end
  local stddev = math.sqrt(b.var)
  local spread = math.max(stddev, MIN_STDDEV_SHARE * b.mean, MIN_STDDEV)
  local rule
  if b.n >= MIN_HISTORY and a.amount > b.mean + K * spread then
    rule = "stddev"
  elseif b.n >= MIN_HISTORY_MULTIPLE and b.mean > 0 and a.amount >= MULTIPLE * b.mean then
    rule = "multiple"
  end
  if not rule then
    learn(b, a.amount)
    return card
  end
  -- A spike is not learnt: a run of fraudulent payments must not raise the
  -- bar it is measured against.
  card.alert = {
    card = a.card,
    time = a.time,
    reason = ("%.2f %s is %s this card's usual %.2f %s (%d payments)"):format(
      a.amount, a.currency, b.mean > 0 and ("%.1f times"):format(a.amount / b.mean) or "far above",
      b.mean, a.currency, b.n),
    score = cents((a.amount - b.mean) / spread),
    details = { rule = rule, mean = cents(b.mean), stddev = cents(stddev), n = b.n },
    auth = a,
  }
  return card
end

tide.stream("auths", "json")
  :group_by_key()
  :aggregate({ baselines = {} }, judge_then_learn, { name = "baselines" })
  :to_stream()
  :filter(function(_, card) return card.alert ~= nil end)
  :map_values(function(card, _, ctx)
    card.alert.detector = ctx.detector
    return card.alert
  end)
  :to("alerts", "json")

return tide.topology{
  description = "a payment far above the card's usual amount in that currency",
}
