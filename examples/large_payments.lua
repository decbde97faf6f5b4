-- A JSON detector: payments arrive as JSON objects; any payment above a card's
-- limit (or 1000 by default) becomes an alert, also JSON.
--   in:  {"card": "c-1", "amount": 1250.5, "limit": 1000}
--   out: {"card": "c-1", "amount": 1250.5, "over_by": 250.5}
local DEFAULT_LIMIT = 1000

---@type tide.Detector
return {
  name = "large-payments",
  inputs = { "payments" },
  outputs = { "payment-alerts" },
  serde = "json",

  process = function(rec, ctx)
    local p = rec.value
    if type(p) ~= "table" or type(p.amount) ~= "number" then
      error("payment without a numeric amount")
    end
    local limit = p.limit ~= nil and p.limit ~= tide.null and p.limit or DEFAULT_LIMIT
    if p.amount > limit then
      ctx:emit("payment-alerts", p.card, {
        card = p.card,
        amount = p.amount,
        over_by = p.amount - limit,
      })
    end
  end,
}
