/*
 * avro_codec.h: Avro binary data to and from the flat tokens of tide_ffi.h, on
 * avro-c (Debian's libavro). The Lua side (scripts/tide/avro.lua) turns the
 * tokens into tables and back; this module never sees Lua.
 */
#ifndef TIDE_AVRO_H
#define TIDE_AVRO_H
#include "tide_ffi.h"

/* The table behind tide.core.avro_api(): every function of the codec. */
extern const tide_avro_api_t tide_avro_api;

#endif
