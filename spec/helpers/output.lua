-- busted output handler for `make test`.
--
-- Prints one line per test as it ends: "ok - <name>", "FAIL - <name>" (followed
-- by the message and the trace) or "pending - <name>". An error outside any test
-- (a spec file that does not load, a failing setup/teardown/before_each/after_each)
-- is reported as "FAIL - <where>" and counted as a failure: a broken lazy_setup
-- makes busted skip every test below it, and that must not look like success.
--
-- At the end it writes "P F\n" (passed, failed) to the file named by the
-- environment variable TIDE_TEST_COUNTS when set. It prints no summary line of
-- its own: the Makefile prints the one "N passed, N failed" line for all tiers.
local io_write, io_flush = io.write, io.flush

return function(options)
  local busted = require("busted")
  local handler = {}

  local passed, failed, pending = 0, 0, 0
  -- Failure/error reports of tests still running, keyed by the test element:
  -- a test can report twice (its body and its `finally` both fail).
  local reports = setmetatable({}, { __mode = "k" })

  local function full_name(element)
    local names = { element.name or element.descriptor }
    local parent = busted.parent(element)
    while parent and (parent.name or parent.descriptor) and parent.descriptor ~= "file" do
      table.insert(names, 1, parent.name or parent.descriptor)
      parent = busted.parent(parent)
    end
    return table.concat(names, " ")
  end

  local function describe_message(message)
    if message == nil then return "(no message)" end
    if type(message) == "string" then return message end
    local ok, pretty = pcall(require, "pl.pretty")
    if ok then return pretty.write(message) end
    return tostring(message)
  end

  local function indent(text)
    return "    " .. tostring(text):gsub("\n", "\n    ")
  end

  local function report_text(kind, message, trace)
    local lines = { indent(kind .. ": " .. describe_message(message)) }
    if trace then
      if trace.short_src and trace.currentline then
        lines[#lines + 1] = indent("at " .. trace.short_src .. ":" .. tostring(trace.currentline))
      end
      if trace.traceback and trace.traceback ~= "" then
        lines[#lines + 1] = indent((trace.traceback:gsub("^%s+", ""):gsub("%s+$", "")))
      end
    end
    return table.concat(lines, "\n")
  end

  local function on_test_problem(kind)
    return function(element, parent, message, trace)
      local list = reports[element]
      if not list then
        list = {}
        reports[element] = list
      end
      list[#list + 1] = report_text(kind, message, trace)
      return nil, true
    end
  end

  local function on_test_end(element, parent, status)
    local name = full_name(element)
    if status == "success" then
      passed = passed + 1
      io_write("ok - ", name, "\n")
    elseif status == "pending" then
      pending = pending + 1
      io_write("pending - ", name, "\n")
    else
      failed = failed + 1
      io_write("FAIL - ", name, "\n")
      local list = reports[element]
      if list then
        io_write(table.concat(list, "\n"), "\n")
      else
        io_write(indent(status .. ": (no message reported)"), "\n")
      end
    end
    reports[element] = nil
    io_flush()
    return nil, true
  end

  -- Errors outside test bodies: element.descriptor is file, describe,
  -- lazy_setup, strict_teardown, before_each, after_each, output, ...
  local function on_outside_problem(kind)
    return function(element, parent, message, trace)
      if element.descriptor == "it" then return nil, true end
      failed = failed + 1
      local where = element.descriptor or "?"
      local name
      if where == "file" then
        name = element.name or where
      elseif element.name then
        name = full_name(element)
      elseif parent and parent.descriptor ~= "file" and (parent.name or parent.descriptor) then
        name = full_name(parent) .. " " .. where
      else
        name = where
      end
      io_write("FAIL - ", name, " (", where, ")\n", report_text(kind, message, trace), "\n")
      io_flush()
      return nil, true
    end
  end

  local function on_suite_end()
    local path = os.getenv("TIDE_TEST_COUNTS")
    if path and path ~= "" then
      local f, err = io.open(path, "w")
      if f then
        f:write(("%d %d\n"):format(passed, failed))
        f:close()
      else
        io.stderr:write("output.lua: cannot write TIDE_TEST_COUNTS: ", tostring(err), "\n")
      end
    end
    if pending > 0 then
      io_write(("(%d pending)\n"):format(pending))
    end
    io_flush()
    return nil, true
  end

  local function on_suite_reset()
    passed, failed, pending = 0, 0, 0
    return nil, true
  end

  function handler:subscribe(opts)
    busted.subscribe({ "test", "end" }, on_test_end)
    busted.subscribe({ "failure", "it" }, on_test_problem("failure"))
    busted.subscribe({ "error", "it" }, on_test_problem("error"))
    busted.subscribe({ "failure" }, on_outside_problem("failure"))
    busted.subscribe({ "error" }, on_outside_problem("error"))
    busted.subscribe({ "suite", "reset" }, on_suite_reset)
    busted.subscribe({ "suite", "end" }, on_suite_end)
    return self
  end

  return handler
end
