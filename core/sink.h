/*
 * sink.h: the records a detector emits, collected in C while a batch runs.
 *
 * A sink is an append-only arena of output records. Every entry remembers the
 * input record (batch cursor) that produced it, so when a record fails, C drops
 * exactly what that record emitted (tide_sink_truncate) and keeps the rest.
 * The host produces the entries to Kafka after the batch; the test driver
 * reads them back into Lua. The sink never talks to Kafka itself.
 */
#ifndef TIDE_SINK_H
#define TIDE_SINK_H
#include <stddef.h>
#include <stdint.h>
#include "tide_ffi.h"

/* Sink output index of dead-letter records (outputs are numbered from 0),
 * and of store `id`'s changelog records. */
#define TIDE_OUTPUT_DLQ (-1)
#define TIDE_OUTPUT_CHANGELOG(id) (-2 - (id))
#define TIDE_OUTPUT_STORE_ID(output) (-2 - (output))


typedef struct tide_sink_hdr {
    size_t name_off, val_off;  /* offsets into the sink's byte arena */
    int32_t name_len, val_len; /* val_len -1: null header value */
} tide_sink_hdr_t;

typedef struct tide_sink_entry {
    int32_t output;    /* index into the detector's outputs, TIDE_OUTPUT_DLQ, or a
                        * store's changelog (TIDE_OUTPUT_CHANGELOG(store)) */
    int32_t source;    /* batch cursor of the input record, -1 outside a batch */
    int32_t partition; /* -1: the partitioner chooses */
    int64_t timestamp; /* ms; -1: unknown, stamped when produced */
    size_t key_off, val_off;
    int32_t key_len, val_len; /* -1: null */
    uint32_t hdr_first, hdr_count;
} tide_sink_entry_t;

struct tide_sink {
    const tide_batch_t *batch; /* the batch being dispatched, or NULL */
    int64_t timestamp;         /* when set (>= 0), what every emit carries; -1: none */
    char *bytes;               /* owned; entries point into it by offset */
    size_t bytes_len, bytes_cap;
    tide_sink_entry_t *entries; /* owned */
    size_t n, cap;
    tide_sink_hdr_t *hdrs; /* owned */
    size_t n_hdrs, cap_hdrs;
    size_t limit; /* most bytes it holds (records and their bookkeeping); 0: none.
                   * The test driver sets it: emits live outside the Lua heap. */
};

void tide_sink_init(tide_sink_t *s);
void tide_sink_free(tide_sink_t *s);
/* Forget every entry; keeps the memory for the next batch. */
void tide_sink_clear(tide_sink_t *s);
/* Exchange the arenas (entries, bytes, headers) of s and other, each
 * keeping its own batch and timestamp: the producer takes a filled arena
 * and leaves an empty one in its place, without copying. */
void tide_sink_swap(tide_sink_t *s, tide_sink_t *other);
/* Give an empty sink's memory back (an idle worker); it grows again on the
 * next emit. */
void tide_sink_shrink(tide_sink_t *s);
/* Drop the entries from index `first` on whose output is above `max_kept`,
 * keeping the others in order (a failed record's emits go, the changelog
 * entries of the store writes it made stay: see tide_lua_dispatch).
 * INT32_MIN drops them all. */
void tide_sink_truncate(tide_sink_t *s, size_t first, int32_t max_kept);
/* Borrowed views into the arena: valid until the next emit, clear or free. */
const char *tide_sink_key(const tide_sink_t *s, const tide_sink_entry_t *e);
const char *tide_sink_val(const tide_sink_t *s, const tide_sink_entry_t *e);
const char *tide_sink_bytes(const tide_sink_t *s, size_t off);

int tide_sink_emit(tide_sink_t *s, int32_t output, const char *key,
                   int32_t key_len, const char *val, int32_t val_len);
int tide_sink_emit_partition(tide_sink_t *s, int32_t output, int32_t partition,
                             const char *key, int32_t key_len, const char *val,
                             int32_t val_len);
int tide_sink_emit_header(tide_sink_t *s, const char *name, int32_t name_len,
                          const char *val, int32_t val_len);

void tide_sink_set_timestamp(tide_sink_t *s, int64_t ms);

/* 1 when buf[0..len) is well-formed UTF-8 (no overlongs, no surrogates). */
int tide_utf8_valid(const char *buf, int32_t len);
/* 1 when JSON text buf[0..len) may hold a number too large for a double:
 * an exponent of three digits or more ("1e999", "2E+308"), or a run of
 * over 300 digits. A cheap scan, so that the record path walks a decoded
 * value for an infinity only then. */
int tide_json_may_overflow(const char *buf, int32_t len);

#endif
