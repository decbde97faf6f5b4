/*
 * worker_int.h: the parts of one worker, shared by the files that make it
 * (see worker.h for what a worker is).
 *
 *   worker.c            the loop, the batches, the stop (tide_worker_run)
 *   worker_reload.c     the hot swap of a detector's new version
 *   worker_start.c      loading the detector, its topics, the producer, the group
 *   worker_jobs.c       the periodic jobs the loop runs
 *   worker_rebalance.c  the go-between on rebalances: the group's and the tasks' callbacks
 *   worker_step.c       the worker's end and state, the sink handed to the producer
 *
 * Each calls only those below it in this list. Nothing outside these files
 * includes this header.
 */
#ifndef TIDE_WORKER_INT_H
#define TIDE_WORKER_INT_H

#include <stdint.h>

#include "commit.h"
#include "global.h"
#include "group.h"
#include "produce.h"
#include "query.h"
#include "records.h"
#include "runtime.h"
#include "standby.h"
#include "status.h"
#include "task.h"
#include "worker.h"

/* The worker's state, named and logged as Kafka Streams names its own
 * (KafkaStreams.State): REBALANCING from a change of assignment until every
 * task it brought is restored. Only for the logs; the supervisor reads the
 * status block's state instead. */
typedef enum tide_app_state {
    STATE_CREATED,
    STATE_REBALANCING,
    STATE_RUNNING,
    STATE_PENDING_SHUTDOWN,
    STATE_NOT_RUNNING,
    STATE_PENDING_ERROR,
    STATE_ERROR,
} tide_app_state_t;

/* How a step of the loop went. */
typedef enum tide_step {
    TIDE_STEP_OK,      /* go on */
    TIDE_STEP_STOPPED, /* a record failed under on_error = "stop" */
    TIDE_STEP_RENAMED, /* a reload renamed the detector */
    TIDE_STEP_FENCED,  /* another instance took over the producer or the group generation */
    TIDE_STEP_FAILED,  /* the worker must end; the reason is logged */
    TIDE_STEP_STOPPED_EARLY, /* asked to stop before it joined its group */
} tide_step_t;

typedef struct tide_worker tide_worker_t;

/* A job the loop runs every `period_ms` (0: every pass), as Redis's
 * serverCron runs its jobs with run_with_period. */
typedef struct tide_job {
    const char *name;
    int64_t period_ms;
    tide_step_t (*run)(tide_worker_t *w, int64_t now);
    int64_t next_ms;
} tide_job_t;

enum { N_JOBS = 10 };

/* The most a pass spends answering interactive queries, and applying the
 * changelogs of standby replicas. */
#define QUERY_SLICE_MS 20
#define STANDBY_SLICE_MS 50
#define QUERY_COMMIT_EVERY_MS 50

/* Stream time rides with the committed offsets, in their metadata, as in
 * Kafka Streams: a task that moves or restarts keeps its windows closed and
 * its punctuation schedule. */
#define STREAM_TIME_META "tide:stream-time="

struct tide_worker {
    const tide_worker_opts_t *o;
    tide_runtime_t *rt;
    const tide_detector_info_t *info;
    tide_group_t *group;
    tide_tasks_t *tasks;
    tide_producer_t *producer;
    tide_committer_t *committer;
    tide_records_t *records;
    tide_globals_t *globals; /* the global tables, NULL when none */
    tide_query_t *queries;   /* interactive queries from the supervisor, or NULL */
    tide_standby_t *standby; /* standby replicas, and the task map it publishes */
    int64_t query_commit_ms; /* no commit for queries before (monotonic) */
    tide_status_block_t *st; /* shared with the supervisor, or private */
    tide_job_t jobs[N_JOBS];
    int eos;
    int max_batch;
    int shutdown_timeout_ms;
    char dlq[512]; /* <application.id>.<detector>-dlq */
    /* the batch in flight: its records are held until its outputs are all
     * handed to the producer */
    tide_batch_t *batch;
    int held;        /* records taken from the group, released after sending */
    size_t sent;     /* sink entries produced */
    int sending;     /* the sink is not all produced yet (the producer's queue was full) */
    int reload_wanted;
    int64_t wait_until_ms; /* records wait for a service (the schema registry): no batch before */
    char missing[256]; /* an output topic the broker does not have: the inputs are held */
    /* counters */
    uint64_t records_in, batches;
    int64_t first_record_ms, last_record_ms;
    int trimmed; /* memory returned to the OS since the last batch */
    tide_app_state_t state;
    tide_worker_exit_t end; /* TIDE_WORKER_RUNNING until the one reason to end */
};

/* worker_step.c */

/* The one place a worker's end is decided: the first reason wins. */
void tide_worker_end(tide_worker_t *w, tide_worker_exit_t why);
/* The end a step that is not OK means. */
void tide_worker_end_for(tide_worker_t *w, tide_step_t s);
/* Log a change of the worker's state. */
void tide_worker_set_state(tide_worker_t *w, tide_app_state_t to);
/* The assignment changes: REBALANCING until every task is back. */
void tide_worker_begin_rebalance(tide_worker_t *w);
/* After an assignment or a restore step: once every task is restored, RUNNING. */
void tide_worker_settle(tide_worker_t *w);
/* Hand the sink to the producer, waiting at most block_ms for an arena. */
tide_flush_t tide_worker_send_sink(tide_worker_t *w, int block_ms);
/* What a send or commit step means for the loop. */
tide_step_t tide_worker_after(tide_worker_t *w, tide_progress_t p);
/* A send that failed at once rolls back through the committer. */
tide_step_t tide_worker_sent_or_roll_back(tide_worker_t *w, tide_flush_t r);
/* Send what the sink holds, waiting up to the shutdown timeout. */
tide_flush_t tide_worker_drain(tide_worker_t *w);

/* worker_rebalance.c */

/* The worker's callbacks and stream-time metadata into the group's options. */
void tide_worker_group_hooks(tide_worker_t *w, tide_group_opts_t *go);
/* The worker's callbacks for the tasks. */
tide_tasks_cb_t tide_worker_tasks_hooks(tide_worker_t *w);

/* worker_start.c */

/* Load the detector (the tasks first: the runtime opens their database).
 * TIDE_WORKER_RUNNING, or TIDE_WORKER_LOAD_FAILED / _FAILED (logged). */
tide_worker_exit_t tide_worker_open_detector(tide_worker_t *w);
/* The topics, the producer, the committer, the restorer, the global tables
 * and the group. */
tide_step_t tide_worker_connect(tide_worker_t *w);
/* A runtime for the detector's file, or NULL with *errp (caller frees). */
tide_runtime_t *tide_worker_open_runtime(tide_worker_t *w, char **errp);
/* Make the topics tide owns exist; note an output or dead-letter topic missing. */
void tide_worker_ensure_topics(tide_worker_t *w);
/* Subscribe to the detector's inputs: 0, or -1 (logged). */
int tide_worker_subscribe(tide_worker_t *w);

/* worker_jobs.c */

void tide_worker_init_jobs(tide_worker_t *w);
/* The jobs whose time has come; the first step that is not OK. */
tide_step_t tide_worker_run_jobs(tide_worker_t *w);
/* Publish the counters into the status block now. */
void tide_worker_publish(tide_worker_t *w);

/* worker_reload.c */

/* Hot swap at a batch boundary, between transactions. */
tide_step_t tide_worker_reload(tide_worker_t *w);

#endif
