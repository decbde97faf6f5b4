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
-- Written with the DSL: the authorisations of each card are aggregated into
-- its payment count and the countries it was used in, and the aggregate also
-- holds the alert the latest payment raised, if any; the alerts are the
-- aggregates that hold one. `auths` is keyed by card (normaliser.lua), so
-- grouping by key needs no repartition topic.
--
-- The profiles live in a RocksDB store, `countries`, whose every change also
-- goes to the changelog topic <application.id>.new_country-countries-changelog:
-- after a crash, a restart or a move of the partition to another worker, the
-- store is restored from it, so a country the card already used is never news.
local MIN_HISTORY = 5
-- A card seen in this many countries is a traveller: new ones are not news,
-- and its list stops growing.
local MAX_COUNTRIES = 20

---@class CountryProfile
---@field n integer authorisations seen
---@field countries string[] the countries the card was used in, sorted
---@field alert? table the alert the latest payment raised (nil: none)

---@param list string[] sorted
---@param x string
---@return boolean
local function contains(list, x)
  for _, v in ipairs(list) do
    if v == x then return true end
  end
  return false
end

--- The aggregator: count payment `a`, and remember its country.
---@param card CountryProfile the card's aggregate so far
---@param a table a canonical authorisation (normaliser.lua)
---@return CountryProfile
local function visit(card, a)
  if type(a) ~= "table" or type(a.card) ~= "string" then
    error("not a canonical authorisation (card)")
  end
  card.alert = nil
  local country = a.country
  local seen_before = card.n
  card.n = card.n + 1
  local known = card.countries
  if type(country) ~= "string" or #known >= MAX_COUNTRIES or contains(known, country) then
    return card
  end
  -- sorted, so alerts are the same on every run
  card.countries = { country, unpack(known) }
  table.sort(card.countries)
  -- no alert for a young card, nor for one whose history had no countries
  if #known == 0 or seen_before < MIN_HISTORY then return card end
  card.alert = {
    card = a.card,
    time = a.time,
    reason = ("first payment in %s (%d earlier payments, in %s)"):format(
      country, seen_before, table.concat(known, ", ")),
    -- the longer the history without this country, the bigger the surprise
    score = seen_before,
    details = { country = country, known = known },
    auth = a,
  }
  return card
end

tide.stream("auths", "json")
  :group_by_key()
  :aggregate({ n = 0, countries = {} }, visit, { name = "countries" })
  :to_stream()
  :filter(function(_, card) return card.alert ~= nil end)
  :map_values(function(card, _, ctx)
    card.alert.detector = ctx.detector
    return card.alert
  end)
  :to("alerts", "json")

return tide.topology{
  description = "first payment in a country the card was never used in",
}
