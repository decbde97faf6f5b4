--- tide's FFI declarations, declared once per Lua state from the header the
--- C side compiles (core/tide_ffi.h, embedded by the build).
local ffi = require("ffi")
local core = require("tide.core")

ffi.cdef(core.cdef)

return {
  batch_ptr = ffi.typeof("tide_batch_t *"),
  sink_ptr = ffi.typeof("tide_sink_t *"),
  api = ffi.cast("const tide_api_t *", core.api()),
  avro = ffi.cast("const tide_avro_api_t *", core.avro_api()),
}
