-- Payments converted to euros with a rate table every worker holds.
--
-- Exchange rates (topic `fx-rates`, keyed by currency) are few and change
-- rarely: a global table. Each worker reads the whole topic before its
-- first payment and keeps reading it, so a payment of any partition finds
-- its currency's rate, without a repartition. A payment in a currency
-- without a rate goes to `unpriced-payments`.
local rates = tide.global_table("fx-rates", { value = "json", name = "rates" })

local priced = tide.stream("payments", "json")
  :left_join(rates,
    function(_, payment) return payment.currency end,
    function(payment, rate)
      payment.eur = rate and math.floor(payment.amount * rate.eur * 100 + 0.5) / 100
      return payment
    end,
    { name = "with-rate" })

local split = priced:split({ name = "priced" })
  :branch(function(_, payment) return payment.eur ~= nil end, "known")
  :default_branch("unknown")
split.known:to("payments-eur", "json")
split.unknown:to("unpriced-payments", "json")

return tide.topology{ name = "payments-in-eur" }
