/*
 * state.c: store calls for the FFI (see state.h). Thin: the store engine is
 * core/store.c; this adds the changelog record of every write, in the
 * same order as the writes, so replaying a changelog rebuilds the store.
 * Failures are reported as -1 (Lua raises); the engine's message goes to
 * stderr, as nothing else would see it.
 */
#include "state.h"

#include <stdio.h>
#include <stdlib.h>

#include "store.h"

static int report(char *err) {
    fprintf(stderr, "tide: store: %s\n", err ? err : "out of memory");
    free(err);
    return -1;
}

int tide_state_get(void *db, int32_t store, int32_t partition, const char *key, size_t klen,
                   const char **val, size_t *vlen) {
    char *err = NULL;
    int r = tide_store_get(db, (uint8_t)store, partition, key, klen, val, vlen, &err);
    return r < 0 ? report(err) : r;
}

int tide_state_put(tide_sink_t *sink, void *db, int32_t store, int32_t partition,
                   const char *key, size_t klen, const char *val, int32_t vlen) {
    char *err = NULL;
    int r = vlen < 0 ? tide_store_delete(db, (uint8_t)store, partition, key, klen, &err)
                     : tide_store_put(db, (uint8_t)store, partition, key, klen, val,
                                      (size_t)vlen, &err);
    if (r) return report(err);
    return tide_sink_emit_partition(sink, TIDE_OUTPUT_CHANGELOG(store), partition, key,
                                    (int32_t)klen, vlen < 0 ? NULL : val, vlen);
}

void *tide_state_iter(void *db, int32_t store, int32_t partition, const char *from,
                      size_t flen, const char *to, size_t tlen, const char *prefix, size_t plen) {
    if (prefix) return tide_store_iter_prefix(db, (uint8_t)store, partition, prefix, plen);
    return tide_store_iter(db, (uint8_t)store, partition, from, flen, to, tlen);
}

int tide_state_iter_next(void *it, const char **key, size_t *klen, const char **val,
                         size_t *vlen) {
    int r = tide_store_iter_next(it, key, klen, val, vlen);
    return r < 0 ? report(NULL) : r;
}

void tide_state_iter_free(void *it) { tide_store_iter_free(it); }
