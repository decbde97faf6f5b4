-- Accounts whose balance is over their credit limit, kept up to date.
--
-- Two tables keyed by account: the credit limits (topic `credit-limits`) and
-- the balances (topic `balances`). Their join is a table that changes when
-- either side does: a balance moving over the limit, or a limit lowered under
-- the balance, puts the account in `over-limit`; a payment or a raised limit
-- takes it out again (a tombstone, a null value, for that account).
local limits = tide.table("credit-limits", { value = "json", name = "limits" })
local balances = tide.table("balances", { value = "json", name = "balances" })

balances
  :join(limits, function(balance, limit)
    return { balance = balance.amount, limit = limit.amount, currency = balance.currency }
  end, { name = "balance-vs-limit" })
  :filter(function(_, account) return account.balance > account.limit end, { name = "over" })
  :to_stream()
  :to("over-limit", "json")

return tide.topology{ name = "over-limit" }
