/*
 * worker.h: one detector against Kafka.
 *
 * A worker owns a detector runtime, a consumer in the group
 * <application.id>.<detector>, and a producer. Its loop: poll a batch, lay it
 * out as tide_rec_t, one call into the Lua dispatcher, produce what the
 * detector emitted, and every commit.interval.ms flush the producer and commit
 * the offsets of records whose outputs were acknowledged.
 */
#ifndef TIDE_WORKER_H
#define TIDE_WORKER_H
#include <signal.h>
#include <stdint.h>

#include "config.h"

typedef struct tide_worker_opts {
    const char *path;           /* the detector */
    const char *source_copy;    /* read its files from this copy (the supervisor's last
                                 * version that validated), or NULL (host/sources.h) */
    const tide_config_t *config;
    const char *bootstraps;     /* resolved (may be the dev broker's) */
    uint64_t max_records;       /* stop after this many input records; 0: never */
    int idle_timeout_ms;        /* stop after this long without records; 0: never */
    volatile sig_atomic_t *stop; /* set by a signal handler */
    volatile sig_atomic_t *reload; /* set by SIGHUP: hot swap at the next batch boundary */
    struct tide_devbroker *dev; /* the in-process development broker, or NULL */
    struct tide_status_block *status; /* shared with a supervisor, or NULL */
    int await_topics;           /* the supervisor creates our topics (dev broker) */
    char **skip;                /* "topic:partition:offset" records to dead-letter unrun */
    int n_skip;
} tide_worker_opts_t;

typedef enum tide_worker_exit {
    TIDE_WORKER_RUNNING = -1,   /* not ended (never an exit code) */
    TIDE_WORKER_DONE = 0,       /* stopped as asked, everything committed */
    TIDE_WORKER_LOAD_FAILED = 2, /* the detector did not load */
    TIDE_WORKER_FAILED = 3,     /* a Kafka or delivery failure: restart me */
    TIDE_WORKER_STOPPED_ON_ERROR = 4, /* on_error = "stop" hit a record */
    TIDE_WORKER_RENAMED = 5,    /* a new version renamed the detector: start anew */
    TIDE_WORKER_FENCED = 6,     /* a newer instance took over its transactions, or its
                                 * producer failed fatally: it committed nothing since;
                                 * restart me */
} tide_worker_exit_t;

/* Run until stopped; returns how it ended (used as the exit code). */
tide_worker_exit_t tide_worker_run(const tide_worker_opts_t *o);

#endif
