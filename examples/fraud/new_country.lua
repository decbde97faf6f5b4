-- Alerts when a card is used in a country it has never been used in before,
-- once it has enough history for "never" to mean something.
--
--   in  (auths):  {"card", "amount", "currency", "country", "merchant", "time"}
--   out (alerts): {"card", "detector", "reason", "score", "time", "details", "auth"}
--
-- The new country is remembered at once: the second payment there is no news.
-- Authorisations without a merchant country (null) count as history but say
-- nothing about where the card is.
--
-- State is a plain Lua table in this worker (lost on restart; durable state
-- stores come later). `auths` is keyed by card, so a card's authorisations all
-- reach the same worker, in order.
local MIN_HISTORY = 5
-- A card seen in this many countries is a traveller: new ones are not news,
-- and its set stops growing.
local MAX_COUNTRIES = 20
-- Cards held per generation; see `profile`.
local MAX_CARDS = 100000

---@class CountryProfile
---@field n integer authorisations seen
---@field countries string "|FR|DE|": one short string per card instead of a
---  table of countries, which would take several times the memory
---@field n_countries integer

-- At most 2 * MAX_CARDS profiles are held (tide.cache); only cards idle for a
-- whole generation are forgotten (they then rebuild their history before
-- alerting again).
local profiles = tide.cache(MAX_CARDS)

local function new_profile()
  return { n = 0, countries = "|", n_countries = 0 }
end

---@param card string
---@return CountryProfile
local function profile(card)
  return profiles:get_or_create(card, new_profile)
end

---@param countries string "|FR|DE|"
---@return string[] sorted, so alerts are the same on every run
local function country_list(countries)
  local list = {}
  for c in countries:gmatch("[^|]+") do list[#list + 1] = c end
  table.sort(list)
  return list
end

return {
  inputs = { "auths" },
  outputs = { "alerts" },
  serde = "json",

  ---@param rec table rec.value is a canonical authorisation (normaliser.lua)
  ---@param ctx table
  process = function(rec, ctx)
    local a = rec.value
    if type(a) ~= "table" or type(a.card) ~= "string" then
      error("not a canonical authorisation (card)")
    end
    local p = profile(a.card)
    local country = a.country
    local seen_before = p.n
    p.n = p.n + 1
    if type(country) ~= "string" or p.n_countries >= MAX_COUNTRIES
      or p.countries:find("|" .. country .. "|", 1, true) then
      return
    end
    local known = p.n_countries > 0 and seen_before >= MIN_HISTORY and country_list(p.countries)
    p.countries = p.countries .. country .. "|"
    p.n_countries = p.n_countries + 1
    -- no alert for a young card, nor for one whose history had no countries
    if not known then return end
    ctx:emit("alerts", a.card, {
      card = a.card,
      detector = ctx.detector,
      time = a.time,
      reason = ("first payment in %s (%d earlier payments, in %s)"):format(
        country, seen_before, table.concat(known, ", ")),
      -- the longer the history without this country, the bigger the surprise
      score = seen_before,
      details = { country = country, known = known },
      auth = a,
    })
  end,
}
