--- bench/read_values.lua: the read-path benchmark detector.
---
--- It reads every input value as a Lua string and adds its length to a
--- counter, and does nothing else: bench/plain_consume.c does the same work by
--- hand in C (it sums every byte), and bench/run.sh compares the two rates.
--- It must stay this small; any extra work here would be charged to tide.
local bytes = 0

return {
  name = "read-values",
  description = "benchmark: read every value, count its bytes",
  inputs = { "bench-in" },
  outputs = {},
  process = function(rec, ctx)
    local v = rec.value
    bytes = bytes + #v
  end,
}
