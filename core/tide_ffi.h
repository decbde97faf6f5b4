/*
 * tide_ffi.h: the one boundary between tide's C core and its Lua dispatcher.
 *
 * Both sides read this file: C includes it, and the build embeds its text so
 * that scripts/tide/dispatch.lua can pass it to ffi.cdef() (lines starting
 * with '#' are dropped for the FFI). Keep it plain C declarations only: no
 * macros, no includes, fixed-width types.
 *
 * The hot path is here: records are laid out by C as an array of tide_rec_t,
 * Lua reads them in place, and emits come back through tide_api_t function
 * pointers, which LuaJIT compiles into direct calls.
 */
#ifndef TIDE_FFI_H
#define TIDE_FFI_H
#include <stddef.h>
#include <stdint.h>

/* One input record. Every pointer is borrowed from the consumer's message and
 * is valid only while the batch is being dispatched. A length of -1 means
 * null (a Kafka tombstone has a null value). */
typedef struct tide_rec {
    const char *key;
    const char *val;
    const char *topic;  /* NUL-terminated */
    int32_t key_len;
    int32_t val_len;
    int32_t partition;
    int32_t index;      /* position in the batch */
    int64_t offset;
    int64_t timestamp;  /* ms since the epoch, -1 when unknown */
    void *msg;          /* the rd_kafka_message_t, for headers; may be NULL */
} tide_rec_t;

/* A batch handed to the dispatcher. The dispatcher writes `cursor` before it
 * calls process() on a record, so when the batch call fails, C knows which
 * record failed and resumes after it. */
typedef struct tide_batch {
    tide_rec_t *recs;
    int32_t n;
    int32_t cursor;
} tide_batch_t;

/* Where emitted records go (owned by C, see core/sink.h). */
typedef struct tide_sink tide_sink_t;

/* The functions Lua calls per record. One static instance lives in C;
 * Lua gets a pointer to it through tide.core.api(). */
typedef struct tide_api {
    /* Append one output record for the record at batch->cursor.
     * Copies key and value. A length of -1 is null. Returns 0, or -1 when
     * memory is exhausted. */
    int (*emit)(tide_sink_t *sink, int32_t output, const char *key,
                int32_t key_len, const char *val, int32_t val_len);
    /* Add a header to the record emitted last. Returns 0 or -1. */
    int (*emit_header)(tide_sink_t *sink, const char *name, int32_t name_len,
                       const char *val, int32_t val_len);
    /* 1 when buf[0..len) is well-formed UTF-8. */
    int (*utf8_valid)(const char *buf, int32_t len);
    /* Number of headers of a record, and the idx-th one (0 or -1). */
    int (*header_count)(const tide_rec_t *rec);
    int (*header_get)(const tide_rec_t *rec, int32_t idx, const char **name,
                      const void **val, size_t *val_len);
    /* Like emit, to a given partition (a changelog record). */
    int (*emit_partition)(tide_sink_t *sink, int32_t output, int32_t partition,
                          const char *key, int32_t key_len, const char *val,
                          int32_t val_len);
    /* State (core/state.c). `db` is the worker's store database. get: 1
     * found (value valid until the next get), 0 absent, -1 error. put writes
     * the store and appends the changelog record to the sink; val_len -1
     * deletes (a tombstone). */
    int (*store_get)(void *db, int32_t store, int32_t partition, const char *key,
                     size_t key_len, const char **val, size_t *val_len);
    int (*store_put)(tide_sink_t *sink, void *db, int32_t store, int32_t partition,
                     const char *key, size_t key_len, const char *val,
                     int32_t val_len);
    /* An iterator over [from, to) or over a prefix (non-NULL) of one
     * (store, partition); NULL on error. next: 1 with an entry, 0 at the end. */
    void *(*store_iter)(void *db, int32_t store, int32_t partition, const char *from,
                        size_t from_len, const char *to, size_t to_len,
                        const char *prefix, size_t prefix_len);
    int (*store_iter_next)(void *it, const char **key, size_t *key_len,
                           const char **val, size_t *val_len);
    void (*store_iter_free)(void *it);
    /* The timestamp of records emitted outside a batch (a punctuator's time;
     * 0: when produced). */
    void (*sink_timestamp)(tide_sink_t *sink, int64_t ms);
    /* 1 when JSON text buf[0..len) may hold a number too large for a
     * double (an exponent of three digits or more, or over 300 digits in a
     * row): only then is the decoded value searched for an infinity. */
    int (*json_may_overflow)(const char *buf, int32_t len);
} tide_api_t;

/* --- Avro (core/avro_codec.c), on avro-c ------------------------------------- */

/* One value of a record laid out flat, the form Avro data takes between C
 * and Lua. A record's fields take consecutive tokens (a block); a field that
 * is itself a record holds the index of its block in v.i. `type` is avro-c's
 * avro_type_t of the value held, `branch` its union branch (-1: not in a
 * union). Decoded arrays and maps are chains of cells: the array's token
 * holds the count in n and the first cell in v.i (0: none); a cell holds
 * the next cell in `next` (0: the last), a map key in v.p/n, and its value
 * is the token after it. Arrays and maps given to encode are contiguous
 * instead: elements from v.i on, a map's as key, value, key, value. Strings,
 * bytes and fixed are v.p and n (bytes, no NUL counted). */
typedef struct tide_avro_tok {
    int32_t type;
    int32_t branch;
    int32_t n;
    int32_t next;
    union {
        int64_t i;
        double d;
        const char *p;
    } v;
} tide_avro_tok_t;

/* The codec's functions, reached through one table like tide_api_t (the
 * Lua side gets it from tide.core.avro_api()). A schema handle is an avro-c
 * schema with what encoding needs; a codec reads data written with one
 * schema into the shape of another (avro-c's resolution). Handles are
 * freed by their *_free; returned pointers are owned by the handle and valid
 * until its next call. Errors: NULL or -1, and last_error() says why. */
typedef struct tide_avro_api {
    void *(*schema_new)(const char *json, int32_t len);
    void (*schema_free)(void *schema);
    int (*schema_equal)(void *a, void *b);
    /* reader NULL: values come out in the writer's shape */
    void *(*codec_new)(void *writer, void *reader);
    void (*codec_free)(void *codec);
    /* The tokens of the value in buf[0..len), token 0 the root. NULL when
     * the bytes do not hold one value of the writer schema, exactly. */
    const tide_avro_tok_t *(*decode)(void *codec, const char *buf, int32_t len);
    /* Encode the value whose root is tape[0] with `schema`; with id >= 0
     * behind the wire format's header (a zero byte, the id big-endian).
     * Returns the length of *out, or -1. */
    int32_t (*encode)(void *schema, const tide_avro_tok_t *tape, int32_t id, const char **out);
    const char *(*last_error)(void);
    /* A decimal's two's-complement big-endian bytes as a number, and back:
     * the bytes of round(value * 10^scale) into out (size bytes when size >
     * 0, else as few as hold it; at most 32), -1 when it does not fit. */
    double (*decimal_value)(const char *p, int32_t n, int32_t scale);
    int32_t (*decimal_bytes)(double value, int32_t scale, int32_t size, char *out);
} tide_avro_api_t;

#endif
