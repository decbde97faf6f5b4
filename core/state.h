/*
 * state.h: the store calls of tide_api_t (see tide_ffi.h), shared by the
 * host's api and tide.core's: each write goes to the store and, as a
 * changelog record for the same partition, to the sink.
 */
#ifndef TIDE_STATE_H
#define TIDE_STATE_H
#include <stddef.h>
#include <stdint.h>

#include "sink.h"

int tide_state_get(void *db, int32_t store, int32_t partition, const char *key, size_t klen,
                   const char **val, size_t *vlen);
int tide_state_put(tide_sink_t *sink, void *db, int32_t store, int32_t partition,
                   const char *key, size_t klen, const char *val, int32_t vlen);
void *tide_state_iter(void *db, int32_t store, int32_t partition, const char *from,
                      size_t flen, const char *to, size_t tlen, const char *prefix, size_t plen);
/* 1 with an entry, 0 at the end, -1 on error (out of memory, reported). */
int tide_state_iter_next(void *it, const char **key, size_t *klen, const char **val,
                         size_t *vlen);
void tide_state_iter_free(void *it);

#endif
