---@meta
-- For lua-language-server only; tide never loads this file. A detector runs
-- with the `tide` module as the global `tide`: this says so to the editor,
-- which then completes tide.stream(...):filter(...) and the rest from the
-- annotations in scripts/tide/.
tide = require("tide")
