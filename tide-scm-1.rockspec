-- luarocks make: builds the C module tide.core from bindings/ and core/ and installs
-- tide's Lua modules, so detectors and their tests run under plain busted
-- (LuaJIT) without the tide host.
rockspec_format = "3.0"
package = "tide"
version = "scm-1"
source = { url = "git+file://." }
description = {
  summary = "Lua detectors for the tide Kafka stream processor: runtime and test driver",
  license = "Apache-2.0",
}
dependencies = { "lua == 5.1", "lua-cjson" }
-- tide.core links avro-c and libcurl (Debian: libavro-dev, libcurl4-openssl-dev)
build = {
  type = "make",
  build_target = "core",
  build_variables = { CFLAGS = "$(CFLAGS)" },
  install_pass = false,
  install = {
    lib = { ["tide.core"] = "build/lua/tide/core.so" },
    lua = {
      ["tide"] = "scripts/tide/init.lua",
      ["tide.avro"] = "scripts/tide/avro.lua",
      ["tide.avro_serde"] = "scripts/tide/avro_serde.lua",
      ["tide.avro_tool"] = "scripts/tide/avro_tool.lua",
      ["tide.cache"] = "scripts/tide/cache.lua",
      ["tide.cli"] = "scripts/tide/cli.lua",
      ["tide.context"] = "scripts/tide/context.lua",
      ["tide.describe"] = "scripts/tide/describe.lua",
      ["tide.detector"] = "scripts/tide/detector.lua",
      ["tide.dispatch"] = "scripts/tide/dispatch.lua",
      ["tide.dsl"] = "scripts/tide/dsl.lua",
      ["tide.errors"] = "scripts/tide/errors.lua",
      ["tide.ffi"] = "scripts/tide/ffi.lua",
      ["tide.fields"] = "scripts/tide/fields.lua",
      ["tide.registry"] = "scripts/tide/registry.lua",
      ["tide.host"] = "scripts/tide/host.lua",
      ["tide.joins"] = "scripts/tide/joins.lua",
      ["tide.punctuate"] = "scripts/tide/punctuate.lua",
      ["tide.record"] = "scripts/tide/record.lua",
      ["tide.sandbox"] = "scripts/tide/sandbox.lua",
      ["tide.json"] = "scripts/tide/json.lua",
      ["tide.jsonl"] = "scripts/tide/jsonl.lua",
      ["tide.serde"] = "scripts/tide/serde.lua",
      ["tide.store"] = "scripts/tide/store.lua",
      ["tide.tasks"] = "scripts/tide/tasks.lua",
      ["tide.testing"] = "scripts/tide/testing.lua",
      ["tide.topology"] = "scripts/tide/topology.lua",
      ["tide.windows"] = "scripts/tide/windows.lua",
    },
  },
}
