-- Alerts when a card is used many times in a short time: a stolen card is
-- emptied fast, often by a script trying small payments one after another.
--
--   in  (auths):  {"card", "amount", "currency", "country", "merchant", "time"}
--   out (alerts): {"card", "detector", "reason", "score", "time", "details", "auth"}
--
-- LIMIT authorisations of one card within WINDOW_MS raise one alert; the card
-- then stays quiet for a window, so a burst of fifty is one alert, not
-- forty-six. Time is the authorisation's own time (`time`), never the wall
-- clock: replaying yesterday's topic must give yesterday's alerts, and a
-- consumer catching up after a pause must not see a burst that never was.
--
-- Written with the DSL: the authorisations of each card are aggregated into
-- its LIMIT latest times, and the aggregate also holds the alert the latest
-- payment raised, if any; the alerts are the aggregates that hold one. Not
-- windowed_by: DSL windows follow the records' Kafka timestamps, not `time`,
-- and a burst is any LIMIT payments within WINDOW_MS, which tumbling and
-- hopping windows split at their boundaries and a session window lets grow.
-- `auths` is keyed by card (normaliser.lua), so grouping by key needs no
-- repartition topic.
--
-- The times live in a RocksDB store, `recent`, whose every change also goes
-- to the changelog topic <application.id>.velocity-recent-changelog: after a
-- crash, a restart or a move of the partition to another worker, the store is
-- restored from it before the card's next payment is counted.
local LIMIT = 5
local WINDOW_MS = 10 * 60 * 1000

---@class RecentPayments
---@field times number[] the LIMIT latest authorisation times, oldest first
---@field quiet_until? number no alert before this time (ms); nil: none yet
---@field alert? table the alert the latest payment raised (nil: none)

--- Insert `t` in order (authorisations may arrive slightly out of order) and
--- keep only the LIMIT latest: LIMIT numbers per card, however busy it is.
---@param times number[]
---@param t number
local function remember(times, t)
  local i = #times
  while i > 0 and times[i] > t do
    times[i + 1] = times[i]
    i = i - 1
  end
  times[i + 1] = t
  if #times > LIMIT then table.remove(times, 1) end
end

---@param ms number
---@return string "4m05s"
local function duration(ms)
  local s = math.floor(ms / 1000)
  return ("%dm%02ds"):format(math.floor(s / 60), s % 60)
end

--- The aggregator: remember payment `a`, then look at the card's LIMIT
--- latest payments.
---@param card RecentPayments the card's aggregate so far
---@param a table a canonical authorisation (normaliser.lua)
---@return RecentPayments
local function count_payment(card, a)
  if type(a) ~= "table" or type(a.card) ~= "string" or type(a.time) ~= "number" then
    error("not a canonical authorisation (card, time)")
  end
  card.alert = nil
  local times = card.times
  remember(times, a.time)
  if #times < LIMIT or (card.quiet_until and a.time < card.quiet_until) then return card end
  local span = times[LIMIT] - times[1]
  if span >= WINDOW_MS then return card end
  card.quiet_until = a.time + WINDOW_MS
  card.alert = {
    card = a.card,
    time = a.time,
    reason = ("%d payments within %s (alerting at %d within %s)"):format(
      LIMIT, duration(span), LIMIT, duration(WINDOW_MS)),
    -- how many times faster than the limit allows; a burst in the same
    -- millisecond counts as one second rather than infinitely fast
    score = WINDOW_MS / math.max(span, 1000),
    details = { count = LIMIT, span_ms = span, window_ms = WINDOW_MS },
    auth = a,
  }
  return card
end

tide.stream("auths", "json")
  :group_by_key()
  :aggregate({ times = {} }, count_payment, { name = "recent" })
  :to_stream()
  :filter(function(_, card) return card.alert ~= nil end)
  :map_values(function(card, _, ctx)
    card.alert.detector = ctx.detector
    return card.alert
  end)
  :to("alerts", "json")

return tide.topology{
  description = "5 payments of one card within 10 minutes of authorisation time",
}
