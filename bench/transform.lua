--- bench/transform.lua: the classic text transformer on the benchmark topics.
---
--- The same logic as examples/text_transformer.lua (keep the values that
--- contain an "a", upper-case them, keep the key), reading bench-in and
--- writing bench-out-tide, so that bench/run.sh can compare it with
--- bench/plain_transform.c, which does exactly this by hand in C.
return {
  name = "bench-transform",
  description = "benchmark: the text transformer on bench-in",
  inputs = { "bench-in" },
  outputs = { "bench-out-tide" },
  process = function(rec, ctx)
    if rec.value:find("a", 1, true) then
      ctx:emit("bench-out-tide", rec.key, rec.value:upper())
    end
  end,
}
