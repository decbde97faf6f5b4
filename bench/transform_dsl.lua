--- bench/transform_dsl.lua: bench/transform.lua written in the DSL, reading
--- bench-in and writing bench-out-dsl, so that bench/run.sh can hold the DSL
--- to the hand-written detector (target: within 10%).
tide.stream("bench-in")
  :filter(function(_, value) return value:find("a", 1, true) ~= nil end)
  :map_values(string.upper)
  :to("bench-out-dsl")

return tide.topology{
  name = "bench-transform-dsl",
  description = "benchmark: the text transformer in the DSL on bench-in",
}
