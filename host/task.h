/*
 * task.h: a worker's tasks and their state.
 *
 * A task is an input partition number: partition p of every input topic,
 * with the stores of p. The task table owns the store database
 * (<state.dir>/<application.id>/<detector>/rocksdb), the checkpoint, the
 * changelog names and the restorer. A task starts restoring (its input is
 * paused by the worker meanwhile) and becomes ready once every store is back;
 * a commit makes the stores durable and writes the checkpoint.
 *
 * It knows nothing of the consumer group: the worker passes what the group
 * says (a partition assigned, its committed stream time) and acts on what the
 * tasks say back (a task ready: resume its input).
 */
#ifndef TIDE_TASK_H
#define TIDE_TASK_H
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "runtime.h"

typedef struct tide_tasks tide_tasks_t;

typedef struct tide_tasks_cb {
    /* Task `partition` is restored: run it from `stream_time` (-1: none). */
    void (*on_ready)(void *ud, int32_t partition, int64_t stream_time);
    /* One changelog record of in-memory store `store` (val NULL: deleted). */
    void (*restore_memory)(void *ud, int store, int32_t partition, const char *key,
                           size_t klen, const char *val, size_t vlen);
    /* The last acknowledged offset of store's changelog partition, or -1. */
    int64_t (*acked)(void *ud, int store, int32_t partition);
    void *ud;
} tide_tasks_cb_t;

typedef struct tide_tasks_opts {
    const tide_config_t *config;
    const char *bootstraps;
    tide_tasks_cb_t cb;
} tide_tasks_opts_t;

typedef enum tide_task_start {
    TIDE_TASK_READY,     /* nothing to restore: on_ready was called */
    TIDE_TASK_RESTORING, /* pause its input until on_ready */
    TIDE_TASK_FAILED,    /* its state cannot be restored (logged) */
} tide_task_start_t;

/* The tasks exist before the detector is loaded (the runtime opens their
 * database while it loads); tide_tasks_set_info follows the load. */
tide_tasks_t *tide_tasks_new(const tide_tasks_opts_t *o, char **errp);
/* The runtime's open_db callback (tide_open_db_fn): the detector's store
 * database, opened once; one that cannot be opened is wiped and rebuilt
 * from the changelogs, never a crash loop. */
void *tide_tasks_open_db(void *tasks, const char *name, char **errp);
/* Store s's changelog topic, and how many there are (one per store). */
char *const *tide_tasks_changelogs(const tide_tasks_t *t, int *n);
/* <state.dir>/<application.id>/<detector>, once the database is open, else
 * NULL (the global tables keep their checkpoint there). */
const char *tide_tasks_state_dir(const tide_tasks_t *t);
/* The store database (a tide_store_db_t), NULL before it is open. */
void *tide_tasks_db(const tide_tasks_t *t);
/* The global tables whose stores live in the database: their writes commit,
 * roll back and are checkpointed with the tasks' (see global.h). */
struct tide_globals;
void tide_tasks_set_globals(tide_tasks_t *t, struct tide_globals *g);
/* Start restoring: the restorer and its consumer (only with stores). */
int tide_tasks_open_restorer(tide_tasks_t *t, char **errp);
/* The detector's shape (borrowed from its runtime): at the load, then each
 * time a new version (with the same stores) runs. -1: out of memory. */
int tide_tasks_set_info(tide_tasks_t *t, const tide_detector_info_t *info);

/* Task `partition` starts, restoring its stores from the checkpoint (or from
 * the start) with the stream time it had at its last commit. */
tide_task_start_t tide_tasks_start(tide_tasks_t *t, int32_t partition, int64_t stream_time);
/* The stores' cache is over its budget: a commit would relieve it. */
int tide_tasks_pressure(const tide_tasks_t *t);
/* Task `partition` stops (its uncommitted writes are dropped); returns 1
 * when it was running (ready). */
int tide_tasks_stop(tide_tasks_t *t, int32_t partition);
/* A new version runs: every task reloads its in-memory stores from their
 * changelogs (its RocksDB stores stay); `stream_time(ud, p)` is what the
 * old version had seen. Calls on_ready for those with nothing to reload. */
void tide_tasks_restart(tide_tasks_t *t, int64_t (*stream_time)(void *ud, int32_t p), void *ud);

int tide_tasks_count(const tide_tasks_t *t);
int32_t tide_tasks_partition(const tide_tasks_t *t, int i);
int tide_tasks_has(const tide_tasks_t *t, int32_t partition);
int tide_tasks_ready(const tide_tasks_t *t, int32_t partition);
/* Tasks still restoring. */
int tide_tasks_restoring(const tide_tasks_t *t);
/* Read the changelogs (up to timeout_ms) into the stores; tasks whose
 * stores are all back become ready. A restore the broker did not answer is
 * asked for again. -1 when one fails for good (logged), else 0. */
int tide_tasks_poll(tide_tasks_t *t, int timeout_ms);
/* Every task ready, and a restore round under way just ended (it is logged). */
int tide_tasks_settled(tide_tasks_t *t);

/* A commit went through: the stores keep their writes (into RocksDB), and
 * each ready task remembers `stream_time(ud, p)` as its stream time at
 * this commit. */
void tide_tasks_commit(tide_tasks_t *t, int64_t (*stream_time)(void *ud, int32_t p), void *ud);
/* Task p's stream time at the last commit, -1: none. */
int64_t tide_tasks_stream_time(const tide_tasks_t *t, int32_t p);

typedef enum tide_rollback {
    TIDE_ROLLBACK_EXACT,   /* the stores are back at the last commit */
    TIDE_ROLLBACK_REBUILD, /* uncommitted writes had reached RocksDB: the tasks must be
                            * stopped (in-memory stores dropped) and tide_tasks_rebuild called */
} tide_rollback_t;

/* Drop the stores' writes since the last commit. */
tide_rollback_t tide_tasks_rollback(tide_tasks_t *t);
/* Restore every task from the start of its changelogs (after a
 * TIDE_ROLLBACK_REBUILD); on_ready follows for each. */
void tide_tasks_rebuild(tide_tasks_t *t);

/* The stores' part of a commit, once it went through: the acknowledged
 * changelog offsets are what the database holds now (in memory until
 * tide_tasks_checkpoint). */
void tide_tasks_mark(tide_tasks_t *t);
/* The checkpoint in memory is newer than the file. */
int tide_tasks_unsaved(const tide_tasks_t *t);
/* Make the database durable (RocksDB has no write-ahead log: the changelog
 * is one) and write the checkpoint. 0, or -1 (logged). */
int tide_tasks_checkpoint(tide_tasks_t *t);

/* ---- standby replicas (host/standby.c): a standby writes the database
 * only from the changelog, and only where no task has uncommitted writes */
/* The changelog offset the database holds store s of partition p up to
 * (the checkpoint); without one, or with `wipe` (the checkpoint is not that
 * changelog's), what it holds of it is wiped and 0 is returned. */
int64_t tide_tasks_local_offset(tide_tasks_t *t, int s, int32_t p, int wipe);
/* The database holds store s of partition p up to changelog offset next
 * (committed by the caller): the checkpoint says so from now on. */
void tide_tasks_local_advance(tide_tasks_t *t, int s, int32_t p, int64_t next);

/* Changelog records applied, ever, and store memory in bytes. */
uint64_t tide_tasks_restored_records(const tide_tasks_t *t);
uint64_t tide_tasks_store_memory(const tide_tasks_t *t);

/* Tasks ps[0..n) in partition order, named <detector>_<partition>, as a
 * JSON array (["d_0","d_1"]) or as text ([d_0, d_1]) into buf. */
void tide_tasks_list(const tide_tasks_t *t, const int32_t *ps, int n, int json, char *buf,
                     size_t cap);
/* A new assignment: the tasks it brought (the last n_fresh started), those
 * kept, those given up; one log line as Kafka Streams writes it. */
void tide_tasks_log_assignment(const tide_tasks_t *t, int n_fresh, const int32_t *revoked,
                               int n_revoked);

void tide_tasks_free(tide_tasks_t *t);

#endif
