-- `tide produce` against a broker in its own process: every record either
-- reaches the topic or is named, by its input line, with the reason.
local cluster = require("helpers.cluster")

describe("integration: tide produce", function()
  local c = cluster.suite("produce", { "words:1" })

  --- `tide produce TOPIC ARGS...` on `text`; its result.
  local function produce(topic, text, args)
    local input = c:path("produce.in")
    cluster.write_file(input, text)
    local argv = { cluster.bin(), "produce", topic, "-b", c.addr }
    for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
    local p = c:spawn(argv, { name = "produce", stdin = input })
    local code = p:wait(60)
    return code, p:stderr_text()
  end

  it("stops at a record the broker refuses, names its line and says how many were sent", function()
    local big = string.rep("x", 5000)
    local code, err = produce("words", "one\ntwo\n" .. big .. "\nfour\nfive\n", { "-D", "message.max.bytes=2000" })
    assert.equal(1, code, err)
    assert.matches("tide: stdin:3: not sent: Broker: Message size too large", err, 1, true)
    assert.matches("2 of 2 record%(s%) sent to words were acknowledged; the first that failed is on stdin:3; "
      .. "stopped after stdin:3: the rest of the input was not sent", err)
    local got = c:consume("words")
    local values = {}
    for i, r in ipairs(got) do values[i] = r.value end
    assert.same({ "one", "two" }, values)
  end)

  it("names every line the broker refused after it took them (a topic that does not exist)", function()
    local code, err = produce("no-such-topic", "a\nb\nc\n", { "-D", "allow.auto.create.topics=false",
      "-D", "topic.metadata.propagation.max.ms=500", "-D", "message.timeout.ms=5000" })
    assert.equal(1, code, err)
    for line = 1, 3 do
      assert.matches("tide: stdin:" .. line .. ": not sent: [^\n]*[Uu]nknown topic", err)
    end
    assert.matches("0 of 3 record%(s%) sent to no%-such%-topic were acknowledged; the first that failed is on stdin:1", err)
  end)

  it("says how many records it produced when all went", function()
    local code, err = produce("words", "six\nseven\n")
    assert.equal(0, code, err)
    assert.matches("tide: produced 2 record%(s%) to words", err)
  end)
end)
