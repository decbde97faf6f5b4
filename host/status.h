/*
 * status.h: what a worker tells its supervisor, through shared memory.
 *
 * The supervisor creates one tide_status_block_t per worker in a memfd, maps it, and
 * hands the fd to the worker. The worker writes, the
 * supervisor reads (`tide worker FILE --status-fd N`): counters, the last
 * error, and the batch in flight. The
 * batch itself (tide_batch_t and its records' positions) lives here too, so
 * the dispatcher's cursor is visible to the supervisor: when a worker hangs or
 * dies, the supervisor knows exactly which record it was on.
 *
 * Single writer, single reader, no locks: counters are 64-bit aligned words
 * (torn reads cannot happen on x86-64), strings may be read mid-update, which
 * a status page tolerates. Never put a pointer here that the reader would
 * follow: the two processes have different address spaces.
 */
#ifndef TIDE_STATUS_H
#define TIDE_STATUS_H
#include <stdint.h>

#include "tide_ffi.h"

#define TIDE_STATUS_MAGIC 0x74696465u /* "tide" */
#define TIDE_STATUS_MAX_BATCH 10000   /* max.poll.records cannot exceed it in a worker */
#define TIDE_STATUS_TOPICS 32
#define TIDE_STATUS_HIST 12

/* Where a worker is. */
typedef enum tide_worker_state {
    TIDE_WS_STARTING = 0, /* loading, joining the group */
    TIDE_WS_RUNNING,
    TIDE_WS_RELOADING,    /* validating a new version */
    TIDE_WS_STOPPING,
} tide_worker_state_t;

/* Upper bounds, in seconds, of the batch processing-time histogram buckets
 * (the last bucket is +Inf). */
extern const double tide_status_hist_bounds[TIDE_STATUS_HIST - 1];

typedef struct tide_status_block {
    uint32_t magic;
    int32_t state; /* tide_worker_state_t */
    int32_t pid;
    int32_t assigned_partitions;

    char detector[128];
    char version[32];
    char description[512]; /* the detector's, or its DSL graph */
    /* its topology as JSON (scripts/tide/describe.lua, what `tide describe
     * --json` prints), for the status page's graph; "" when it does not fit */
    char topology[16384];

    /* counters since the worker started */
    uint64_t records_in, records_out, dlq, errors, dropped, batches;
    uint64_t reloads, reload_failures;
    int64_t lag;            /* records behind the log end, over assigned partitions; -1 unknown */
    uint64_t lua_heap_bytes;
    int32_t restoring_tasks;   /* tasks whose stores are being restored */
    uint64_t restored_records; /* changelog records applied, ever */
    uint64_t store_memory_bytes;
    uint64_t hist[TIDE_STATUS_HIST]; /* batch processing time, non-cumulative */
    double hist_sum;                 /* seconds */

    /* the last record that failed */
    int64_t last_error_ms; /* wall clock, ms since the epoch; 0: none */
    char last_error_class[32];
    char last_error_topic[256];
    int32_t last_error_partition;
    int64_t last_error_offset;
    char last_error[1024];
    char last_traceback[4096];

    /* the last reload that failed validation */
    int64_t last_reload_ms;
    int32_t last_reload_ok;
    char last_reload_version[32];
    char last_reload_error[2048];

    /* Topics the detector uses (inputs, outputs, dead letters), for a
     * supervisor that runs the development broker to create before the
     * worker subscribes: the worker fills them and waits for topics_ready. */
    char declared[TIDE_STATUS_TOPICS][256];
    int32_t n_declared;
    volatile int32_t topics_ready;

    /* the batch in flight: batch_started_ms is 0 between batches. The
     * dispatcher writes batch.cursor; rec_topic indexes topics[]. */
    int64_t batch_started_ms; /* CLOCK_MONOTONIC ms */
    tide_batch_t batch;       /* batch.recs points into the WORKER's memory */
    char topics[TIDE_STATUS_TOPICS][256];
    uint16_t rec_topic[TIDE_STATUS_MAX_BATCH];
    int32_t rec_partition[TIDE_STATUS_MAX_BATCH];
    int64_t rec_offset[TIDE_STATUS_MAX_BATCH];

    /* commits, and the broker as the worker sees it */
    char guarantee[24];               /* at_least_once, exactly_once_v2 */
    char transactional_id[600];       /* exactly-once: the producer's, "" otherwise */
    uint64_t txn_committed, txn_aborted; /* transactions (exactly-once) */
    uint64_t rollbacks;               /* back to the last commit, either guarantee */
    uint64_t commit_hist[TIDE_STATUS_HIST]; /* commit duration, non-cumulative */
    double commit_hist_sum;           /* seconds */
    int64_t broker_waiting_since_ms;  /* wall: a commit waits for the broker; 0: not */
    char missing_topic[256];          /* an output topic the broker does not have, "" none */
    int64_t missing_topic_since_ms;   /* wall, 0: none */
    uint64_t dropped_late;            /* records dropped as late (windows past grace) */
} tide_status_block_t;

/* Create a status block in a memfd: returns the mapping and the fd, or NULL. */
tide_status_block_t *tide_status_create(int *fd);
/* A block nobody else reads (a worker without a supervisor), so that the
 * worker writes one way whether it is watched or not. NULL on failure. */
tide_status_block_t *tide_status_private(void);
/* Map the block behind fd (in the worker). NULL on failure. */
tide_status_block_t *tide_status_map(int fd);
void tide_status_unmap(tide_status_block_t *s);
/* The time bucket of a batch that took `seconds`. */
int tide_status_bucket(double seconds);

/* ---------------------------------------------------------------- the worker's side */

/* What a worker publishes at a batch boundary. */
typedef struct tide_status_sample {
    uint64_t records_in, records_out, dlq, errors, dropped, batches, rollbacks;
    uint64_t lua_heap_bytes, restored_records, store_memory_bytes;
    int32_t assigned_partitions, restoring_tasks;
    int64_t lag; /* -1: unknown */
} tide_status_sample_t;

void tide_status_publish(tide_status_block_t *st, const tide_status_sample_t *s);
/* Record i of the batch in flight is (topic, partition, offset), for the
 * supervisor to name the record a dead or hung worker was on. */
void tide_status_record(tide_status_block_t *st, int i, const char *topic, int32_t partition,
                        int64_t offset);
/* The batch starts (its records laid out in st->batch), and ends. */
void tide_status_batch_begin(tide_status_block_t *st, int64_t mono_ms);
void tide_status_batch_end(tide_status_block_t *st, double seconds);
/* The last record that failed. */
void tide_status_failure(tide_status_block_t *st, const char *cls, const char *topic,
                         int32_t partition, int64_t offset, const char *message,
                         const char *traceback);
/* The detector that runs: its name, version and description. */
void tide_status_detector(tide_status_block_t *st, const char *name, const char *version,
                          const char *description);
/* The detector's topology, as JSON ("" when it does not fit the block). */
void tide_status_topology(tide_status_block_t *st, const char *json);
/* A reload validated (version) or was refused (error). */
void tide_status_reload(tide_status_block_t *st, const char *version, const char *error);

#endif
