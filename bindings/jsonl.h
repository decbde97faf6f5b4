/*
 * jsonl.h: reading records written as JSON lines, for `tide produce --json`.
 * Parsing is lua-cjson's, through a small private Lua state, so the host's C
 * stays free of lua.h and of a JSON parser of its own.
 */
#ifndef TIDE_JSONL_H
#define TIDE_JSONL_H
#include <stddef.h>
#include <stdint.h>

#include "runtime_types.h"

typedef struct tide_jsonl tide_jsonl_t;

/* One parsed line. Pointers are owned by the parser and valid until the next
 * parse. A length of -1 is null. */
typedef struct tide_jsonl_rec {
    const char *key, *value;
    int32_t key_len, value_len;
    int32_t partition; /* -1: let the partitioner choose */
    int64_t timestamp; /* ms since the epoch; -1: none given */
    int n_headers;
    const char **header_names;
    const char **header_values;
    const size_t *header_lens;
} tide_jsonl_rec_t;

/* NULL with *errp (malloc'd) when the parser cannot start. */
tide_jsonl_t *tide_jsonl_new(char **errp);
/* Parse {"key":..., "value":..., "headers":{...}, "partition":n,
 * "timestamp":ms} (scripts/tide/jsonl.lua). A value that is not a string is
 * stored as its JSON text. TIDE_OK, or TIDE_ERROR with *errp (malloc'd). */
tide_status_t tide_jsonl_parse(tide_jsonl_t *j, const char *line, size_t len, tide_jsonl_rec_t *out,
                     char **errp);
void tide_jsonl_free(tide_jsonl_t *j);

#endif
