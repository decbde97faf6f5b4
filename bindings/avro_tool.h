/*
 * avro_tool.h: a topic's values between JSON text and Avro in the schema
 * registry's wire format, for `tide produce --avro` and `tide consume
 * --avro`. The conversion is tide's avro serde (scripts/tide/avro_tool.lua)
 * in a private Lua state, so the tools need no lua.h.
 */
#ifndef TIDE_AVRO_TOOL_H
#define TIDE_AVRO_TOOL_H
#include <stddef.h>

#include "runtime_types.h"

typedef struct tide_avro_tool tide_avro_tool_t;

/* schema_path: the writer schema (produce); NULL to read (consume). NULL
 * with *errp (malloc'd) on failure. */
tide_avro_tool_t *tide_avro_tool_new(const tide_registry_opts_t *reg, const char *topic,
                                     const char *schema_path, char **errp);
/* JSON text -> Avro bytes (encode) or Avro bytes -> JSON text (decode):
 * *out is the tool's, valid until its next call. 0, or -1 with *errp. */
int tide_avro_tool_encode(tide_avro_tool_t *t, const char *in, size_t len, const char **out,
                          size_t *out_len, char **errp);
int tide_avro_tool_decode(tide_avro_tool_t *t, const char *in, size_t len, const char **out,
                          size_t *out_len, char **errp);
void tide_avro_tool_free(tide_avro_tool_t *t);

#endif
