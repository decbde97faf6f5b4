-- The classic Kafka Streams example, in tide's DSL: keep the values that
-- contain "a", upper-case them, and write them to another topic, under the
-- same key. (bench/transform.lua is the same detector written by hand.)
tide.stream("text-input")
  :filter(function(key, value) return value ~= nil and value:find("a", 1, true) ~= nil end)
  :map_values(string.upper)
  :to("text-output")

return tide.topology{
  name = "text-transformer",
  description = "keeps the lines with an 'a', upper-cased",
}
