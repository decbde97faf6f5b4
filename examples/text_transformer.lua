-- The classic Kafka Streams example: keep the values that contain "a",
-- upper-case them, and write them to another topic.
return {
  name = "text-transformer",
  inputs = { "text-input" },
  outputs = { "text-output" },

  ---@param rec table the record: key, value, topic, partition, offset, timestamp, headers
  ---@param ctx table emit, log
  process = function(rec, ctx)
    local v = rec.value
    if v and v:find("a", 1, true) then
      ctx:emit("text-output", rec.key, v:upper())
    end
  end,
}
