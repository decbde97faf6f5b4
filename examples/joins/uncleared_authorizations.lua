-- Authorizations that no clearing followed within 10 minutes.
--
-- A card authorization (topic `authorizations`, keyed by its id) is normally
-- followed within minutes by its clearing (topic `clearings`, keyed by card,
-- naming the authorization it settles). One that stays alone for 10 minutes
-- is worth a look: a lost clearing file, a reversal that never came, a
-- merchant holding funds.
--
-- A stream-stream left join: every authorization waits 10 minutes (and one
-- more for clearings that arrive late) for a clearing of the same
-- authorization; the ones that found none are passed on, once, when their
-- window has closed. The clearings are keyed by card, so they go through a
-- repartition topic keyed by authorization first, and meet their
-- authorizations on the same partition.
local authorizations = tide.stream("authorizations", "json")
local clearings = tide.stream("clearings", "json")
  :select_key(function(_, clearing) return clearing.authorization end, { name = "by-authorization" })

authorizations
  :left_join(clearings,
    function(auth, clearing) return { auth = auth, cleared = clearing ~= nil } end,
    tide.join_window{ before = "0s", after = "10m", grace = "1m" },
    { name = "authorization-clearing" })
  :filter(function(_, match) return not match.cleared end, { name = "uncleared" })
  :map_values(function(match, id)
    local auth = match.auth
    return { authorization = id, card = auth.card, amount = auth.amount, merchant = auth.merchant,
      reason = "no clearing within 10 minutes" }
  end, { name = "alert" })
  :to("uncleared-authorizations", "json")

return tide.topology{ name = "uncleared-authorizations" }
