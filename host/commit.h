/*
 * commit.h: the commit protocol of a worker, under both guarantees.
 *
 * at_least_once: wait until every output of the records processed is
 * acknowledged, make the stores durable, then commit the input offsets.
 * exactly_once_v2: the outputs, changelog records and dead letters since the
 * last commit are one transaction; the input offsets join it
 * (send_offsets_to_transaction with the consumer's group metadata) and it
 * commits, then the stores are made durable.
 *
 * Neither mode ever gives up because the broker is slow or away: a commit
 * waits (the worker keeps polling and publishing meanwhile) until the broker
 * answers. A failure rolls everything back to the last commit: the
 * transaction aborted, the stores' writes since then dropped, the inputs
 * rewound; a record whose own outputs Kafka refused is dead-lettered when it
 * comes again (ProductionError), one that only shared a refused batch is
 * tried alone first. Only a fenced or fatally broken producer ends the
 * worker.
 */
#ifndef TIDE_COMMIT_H
#define TIDE_COMMIT_H
#include <stdint.h>

#include "group.h"
#include "produce.h"
#include "runtime.h"
#include "status.h"
#include "task.h"

typedef struct tide_committer tide_committer_t;

typedef struct tide_committer_opts {
    tide_group_t *group;
    tide_producer_t *producer;
    tide_tasks_t *tasks;
    tide_runtime_t **rt;      /* the runtime in use (a hot swap replaces it) */
    tide_status_block_t *st;
    int eos;                  /* exactly_once_v2 */
    int shutdown_timeout_ms;  /* bound of a synchronous commit */
} tide_committer_opts_t;

typedef enum tide_progress {
    TIDE_PROGRESS_IDLE,        /* no commit under way */
    TIDE_PROGRESS_PENDING,     /* waiting for acknowledgements or the coordinator */
    TIDE_PROGRESS_DONE,        /* committed */
    TIDE_PROGRESS_ROLLED_BACK, /* it failed: everything is back at the last commit */
    TIDE_PROGRESS_FATAL,       /* fenced, or a fatal producer error: the worker must end */
} tide_progress_t;

/* What a record coming in must be, after a rollback. */
typedef enum tide_blame {
    TIDE_BLAME_NONE,    /* run it */
    TIDE_BLAME_GUILTY,  /* Kafka refused its outputs: dead-letter it unrun */
    TIDE_BLAME_SUSPECT, /* it shared a refused batch: run it alone, then commit */
} tide_blame_t;

tide_committer_t *tide_committer_new(const tide_committer_opts_t *o);
/* Ask for a commit; the loop's steps carry it out. */
void tide_committer_request(tide_committer_t *c, const char *why);
/* A commit or a rollback is under way: process no new record. */
int tide_committer_busy(const tide_committer_t *c);
/* Carry the commit under way on, waiting at most slice_ms. */
tide_progress_t tide_committer_step(tide_committer_t *c, int slice_ms);
/* Between commits: write the checkpoint that the last ones left in memory
 * (exactly-once writes it at most once a second). FATAL when it fails. */
tide_progress_t tide_committer_tick(tide_committer_t *c);
/* Commit now and wait (revoke, shutdown, swap), up to the shutdown timeout;
 * on a failure, or when the broker does not answer in time, roll back
 * (`only`: the partitions about to go; NULL: all). Returns DONE, ROLLED_BACK
 * or FATAL. */
tide_progress_t tide_committer_finish(tide_committer_t *c, const char *why,
                                      const rd_kafka_topic_partition_list_t *only);
/* Give up what was done since the last commit, without trying to commit
 * it (partitions lost, a shutdown that cannot produce): the transaction is
 * aborted, the state rolled back. ROLLED_BACK, or FATAL when the abort itself
 * cannot complete. */
tide_progress_t tide_committer_abandon(tide_committer_t *c,
                                       const rd_kafka_topic_partition_list_t *going);
tide_blame_t tide_committer_blame(const tide_committer_t *c, const char *topic, int32_t partition,
                                  int64_t offset, const char **reason);
/* Anything produced or processed since the last commit. */
int tide_committer_dirty(const tide_committer_t *c);
/* Since when (wall ms) a commit has waited for the broker, 0: none. */
int64_t tide_committer_waiting_since(const tide_committer_t *c);
uint64_t tide_committer_commits(const tide_committer_t *c);
uint64_t tide_committer_rollbacks(const tide_committer_t *c);
void tide_committer_free(tide_committer_t *c);

#endif
