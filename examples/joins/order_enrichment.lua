-- Orders enriched with their customer, which is not their key.
--
-- Orders (topic `orders`) are keyed by order id and name their customer;
-- customers (topic `customers`) are keyed by customer id. A foreign-key join
-- (KIP-213) gives each order its customer's current record, and follows both:
-- an order moved to another customer, or a customer who changes segment,
-- updates the enriched order. An order whose customer is not known yet is
-- passed on without one (a left join) and completed when the customer comes.
local orders = tide.table("orders", { value = "json", name = "orders" })
local customers = tide.table("customers", { value = "json", name = "customers" })

orders
  :left_join(customers,
    function(order) return order.customer end,
    function(order, customer)
      return { item = order.item, amount = order.amount, customer = order.customer,
        name = customer and customer.name, segment = customer and customer.segment or "unknown" }
    end,
    { name = "order-customer" })
  :to_stream()
  :to("enriched-orders", "json")

return tide.topology{ name = "order-enrichment" }
