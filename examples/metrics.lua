-- Metrics aggregation: many instances each report their own counters, and
-- we want one total per metric that stays right when a counter moves on or
-- an instance goes away.
--
--   in  (instance-metrics): key = "<instance>/<metric>",
--                           value = {"metric": "requests", "value": 1234}
--                           (a null value: the instance is gone)
--   out (metric-totals):    key = the metric, value = the sum over instances
--
-- tide.table keeps the latest value per instance counter. Regrouping it by
-- metric sends, for every change, the old value out of its group (subtract)
-- and the new one in (add), so a total is always the sum of the latest
-- counters: never a counter counted twice.
tide.table("instance-metrics", { value = "json", name = "latest" })
  :group_by(function(_, counter) return counter.metric, counter.value end, { name = "by-metric" })
  :reduce(
    function(total, value) return total + value end,  -- a counter joins the metric
    function(total, value) return total - value end,  -- a counter leaves it
    { name = "totals" })
  :to_stream()
  :to("metric-totals")

return tide.topology{
  name = "metrics",
  description = "sums per-instance counters into one total per metric",
}
