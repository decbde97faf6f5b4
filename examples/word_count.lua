-- Word count, the "hello world" of stream processing: split lines into
-- words, count each word, and write every new count to word-counts.
--
--   in  (lines):       any text; the key is not used
--   out (word-counts): key = the word, value = how many times it was seen
--
-- group_by re-keys the words through a repartition topic
-- (<application.id>.word-count-words-repartition), so that every occurrence
-- of a word is counted in one place, whichever partition its line was on.
-- The counts live in a RocksDB store with a changelog: they survive a crash,
-- a restart and the partition moving to another machine.
tide.stream("lines")
  :flat_map_values(function(line)
    local words = {}
    for word in line:lower():gmatch("%a+") do words[#words + 1] = word end
    return words
  end)
  :group_by(function(_, word) return word end, { name = "words" })
  :count({ name = "counts" })
  :to_stream()
  :to("word-counts")

return tide.topology{
  name = "word-count",
  description = "counts the words of every line",
}
