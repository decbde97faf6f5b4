/*
 * runtime.h: one detector's Lua runtime, as the C core sees it.
 *
 * The host never includes lua.h: it opens a runtime on a detector file, reads
 * the detector's declared shape (tide_detector_info_t), and hands it batches.
 * Everything Lua-specific (sandbox, allocator cap, the single protected call,
 * the error policy loop) lives behind this header in bindings/.
 */
#ifndef TIDE_RUNTIME_H
#define TIDE_RUNTIME_H
#include <stddef.h>
#include <stdint.h>

#include "runtime_types.h"
#include "sink.h"
#include "tide_ffi.h"

/* Opens the store database of detector `name` (called once, only when the
 * detector declares RocksDB stores); NULL with *errp on failure. */
typedef void *(*tide_open_db_fn)(void *ud, const char *name, char **errp);

typedef struct tide_runtime_opts {
    size_t memory_limit;   /* Lua heap cap in bytes; 0: none */
    tide_open_db_fn open_db; /* NULL: detectors with RocksDB stores are refused */
    void *open_db_ud;
    const tide_api_t *api; /* NULL: bindings' default (test headers) */
    tide_log_fn log;       /* ctx.log and print(); NULL: stderr */
    void *log_ud;
    const char *application_id; /* names a DSL detector's internal topics; NULL: "tide" */
    tide_registry_opts_t registry; /* the avro serde's schema registry */
    /* A folder holding a copy of the detector's files, read instead of
     * them; chunk names, messages and the default name stay the path's.
     * NULL: the process-wide copy of that path if one is set (below), else
     * the files themselves. */
    const char *source_copy;
} tide_runtime_opts_t;

/* The detector's declared shape, owned by the runtime: what
 * scripts/tide/fields.lua lists in M.info (runtime.c reads it by name and
 * refuses a name that only one side knows). */
typedef struct tide_detector_info {
    char *name, *version, *description;
    char **inputs;
    int n_inputs;
    char **outputs;
    int n_outputs;
    tide_on_error_t on_error;
    int n_stores;          /* store ids are 0 .. n_stores-1 */
    char **store_names;
    int *store_memory;     /* 1: in-memory (restored through Lua) */
    char **store_global;   /* a global table's topic (no changelog: the host
                            * reads the topic into it, see host/global.h), or NULL */
    char *topology;        /* the topology's description as JSON (tide.describe) */
    int n_punctuators;
} tide_detector_info_t;

typedef struct tide_runtime tide_runtime_t;

/* Load, validate and init the detector at `path` in a fresh sandboxed state.
 * On failure returns TIDE_ERROR and sets *errp (malloc'd, caller frees) to
 * "file:line: reason". */
tide_status_t tide_runtime_open(const tide_runtime_opts_t *o, const char *path,
                                tide_runtime_t **rtp, char **errp);
/* The detector's declared shape (tide_runtime_info) without running it: its
 * script is loaded and validated, but init is not called and no store is
 * opened; the runtime cannot dispatch. For tools such as `tide reset`. */
tide_status_t tide_runtime_describe(const tide_runtime_opts_t *o, const char *path,
                                    tide_runtime_t **rtp, char **errp);
const tide_detector_info_t *tide_runtime_info(const tide_runtime_t *rt);
/* The sink emits go to; owned by the runtime, cleared by the caller. */
tide_sink_t *tide_runtime_sink(tide_runtime_t *rt);
/* Run the batch from b->cursor to its end. A failed record is reported to
 * on_failure, its emits are dropped, and on_error decides: DLQ appends a
 * dead-letter entry (output TIDE_OUTPUT_DLQ) to the sink, SKIP drops it, STOP
 * returns TIDE_STOPPED with b->cursor at the failed record. TIDE_RETRY: the
 * record at b->cursor needs the schema registry, which cannot be reached now
 * (the runtime waited up to a second first): the records before it are done,
 * it and the rest are not; the host hands them again (rewinds). */
tide_status_t tide_runtime_dispatch(tide_runtime_t *rt, tide_batch_t *b, int64_t now_ms,
                                    tide_failure_fn on_failure, void *ud);
/* Append a dead-letter entry for `rec` to the sink without running the
 * detector (a record quarantined by the supervisor). */
void tide_runtime_dead_letter(tide_runtime_t *rt, const tide_rec_t *rec, const char *cls,
                              const char *message);
/* A task (input partition) starts, its stores restored, with the stream
 * time it had at its last commit (-1: unknown), or stops. */
void tide_runtime_task(tide_runtime_t *rt, int32_t partition, int active, int64_t stream_time);
/* A commit went through: what the in-memory stores hold since the last one
 * is theirs to keep. */
void tide_runtime_commit(tide_runtime_t *rt);
/* Back to the last commit for task `partition`: its in-memory stores' writes
 * since are undone, its stream time is `stream_time` again (-1: none) and
 * its punctuators are rescheduled from it. */
void tide_runtime_rollback(tide_runtime_t *rt, int32_t partition, int64_t stream_time);
/* Records the detector dropped as late (past their window's grace), ever. */
uint64_t tide_runtime_dropped_late(tide_runtime_t *rt);
/* A task's stream time (largest record timestamp seen), -1 when none. */
int64_t tide_runtime_stream_time(tide_runtime_t *rt, int32_t partition);
/* Fire due punctuators and expire old windows; `now_ms` is the wall clock.
 * Returns the number of punctuators that failed (logged). */
int tide_runtime_punctuate(tide_runtime_t *rt, int64_t now_ms);
/* Restore one changelog record into in-memory store `store` (val NULL:
 * a tombstone). */
void tide_runtime_restore(tide_runtime_t *rt, int store, int32_t partition, const char *key,
                          size_t klen, const char *val, size_t vlen);
/* Interactive queries (host/query.c): reads of the detector's stores, never
 * writes (scripts/tide/query.lua). */
typedef enum tide_query_step {
    TIDE_QUERY_DONE, /* answered: *status and *body are set */
    TIDE_QUERY_MORE, /* its slice of time is spent: call again with the same id */
} tide_query_step_t;

/* Go on answering query `id`: `req` is its JSON text ({"store": ..., "key":
 * ...}), parts[0..n) the tasks to read (held and restored here). Works for
 * up to about budget_ms. DONE with the HTTP status and *body (malloc'd
 * JSON, the caller frees), or MORE. */
tide_query_step_t tide_runtime_query(tide_runtime_t *rt, uint32_t id, const char *req,
                                     size_t len, const int32_t *parts, int n, int budget_ms,
                                     int *status, char **body, size_t *body_len);
/* Forget query `id`, answered or not (its asker gave up). */
void tide_runtime_query_cancel(tide_runtime_t *rt, uint32_t id);
/* Lua heap bytes in use, and the peak. */
size_t tide_runtime_heap_bytes(const tide_runtime_t *rt);
size_t tide_runtime_heap_peak(const tide_runtime_t *rt);
/* Call the detector's close(ctx) once (errors are logged); what it emits is
 * left in the sink. */
void tide_runtime_stop(tide_runtime_t *rt);
/* Stop if not stopped yet, then free everything (NULL is fine). */
void tide_runtime_close(tide_runtime_t *rt);

const char *tide_on_error_name(tide_on_error_t p);

/* --- `tide test` and `tide replay` (scripts/tide/cli.lua) --- */

/* Offsets `from`..`to` (inclusive) of a partition; to -1: the end as of startup. */
typedef struct tide_cli_range {
    int32_t partition;
    int64_t from, to;
} tide_cli_range_t;

/* A record the host read for the CLI. Everything is borrowed, valid during
 * the callback only; a length of -1 is null. */
typedef struct tide_cli_record {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp; /* -1: none */
    const char *key, *value;
    int32_t key_len, value_len;
    size_t n_headers;
    const char **header_names;
    const char **header_values; /* an entry is NULL for a null value */
    const size_t *header_lens;
} tide_cli_record_t;

typedef void (*tide_cli_record_fn)(void *ud, const tide_cli_record_t *r);

/* Reads `ranges` of `topic` (n 0: every partition, from the beginning to the
 * end as of the call) and calls fn once per record; bootstrap NULL: the
 * environment's. 0, or -1 with *errp (malloc'd). */
typedef int (*tide_cli_reader_fn)(const char *bootstrap, const char *topic,
                                  const tide_cli_range_t *ranges, int n, tide_cli_record_fn fn,
                                  void *ud, char **errp);

/* What `tide test` and `tide replay` run with. */
typedef struct tide_cli_opts {
    size_t memory_limit;       /* detector.memory.limit.bytes: each detector's heap cap */
    int64_t timeout_ms;        /* detector.batch.timeout.ms: each call's budget */
    tide_cli_reader_fn reader; /* reads topics for `replay --from`; NULL: none */
} tide_cli_opts_t;

/* Runs require("tide.cli").main(command, args, host) in a fresh Lua state
 * holding tide's scripts and returns the exit code; errors are printed.
 * Detectors run in the test driver's sandbox with the limits of `o`
 * (bindings/guard.h): a record that passes them fails, located; a call stuck
 * in C ends the process with TIDE_EXIT_LIMIT. */
int tide_runtime_cli(const char *command, int argc, char **argv, const tide_cli_opts_t *o);

#endif
