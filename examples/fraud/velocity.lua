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
-- State is a plain Lua table in this worker (lost on restart; durable state
-- stores come later). `auths` is keyed by card, so a card's authorisations all
-- reach the same worker.
local LIMIT = 5
local WINDOW_MS = 10 * 60 * 1000
-- Cards held per generation; see `recent_times`.
local MAX_CARDS = 100000

---@class VelocityState
---@field times number[] the LIMIT latest authorisation times, oldest first
---@field quiet_until number no alert before this time (ms)

-- At most 2 * MAX_CARDS cards are held (tide.cache); a card idle for a whole
-- generation is forgotten, which costs nothing here once its window has passed.
local states = tide.cache(MAX_CARDS)

local function new_state()
  return { times = {}, quiet_until = -math.huge }
end

---@param card string
---@return VelocityState
local function state_of(card)
  return states:get_or_create(card, new_state)
end

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

return {
  inputs = { "auths" },
  outputs = { "alerts" },
  serde = "json",

  ---@param rec table rec.value is a canonical authorisation (normaliser.lua)
  ---@param ctx table
  process = function(rec, ctx)
    local a = rec.value
    if type(a) ~= "table" or type(a.card) ~= "string" or type(a.time) ~= "number" then
      error("not a canonical authorisation (card, time)")
    end
    local s = state_of(a.card)
    local times = s.times
    remember(times, a.time)
    if #times < LIMIT or a.time < s.quiet_until then return end
    local span = times[LIMIT] - times[1]
    if span >= WINDOW_MS then return end
    s.quiet_until = a.time + WINDOW_MS
    ctx:emit("alerts", a.card, {
      card = a.card,
      detector = ctx.detector,
      time = a.time,
      reason = ("%d payments within %s (alerting at %d within %s)"):format(
        LIMIT, duration(span), LIMIT, duration(WINDOW_MS)),
      -- how many times faster than the limit allows; a burst in the same
      -- millisecond counts as one second rather than infinitely fast
      score = WINDOW_MS / math.max(span, 1000),
      details = { count = LIMIT, span_ms = span, window_ms = WINDOW_MS },
      auth = a,
    })
  end,
}
