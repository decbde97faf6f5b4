-- make chaos, the stateless detector: copies every input record to
-- chaos-out under its key, tagged with this file's version. The runner
-- rewrites VERSION to hot-swap it; the checker reads the tag back.
local VERSION = 1

return {
  name = "chaos-copy",
  inputs = { "chaos-in" },
  outputs = { "chaos-out" },
  process = function(rec, ctx)
    ctx:emit("chaos-out", rec.key, rec.value .. "|v" .. VERSION)
  end,
}
