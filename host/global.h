/*
 * global.h: a worker's global tables (the DSL's tide.global_table): every
 * partition of each global topic, read into the table's store, in full, by
 * every worker of the detector.
 *
 * The worker opens them once its store database is open, bootstraps them
 * (reads every table to the end its topic had) before it processes any
 * record, polls them between batches, and checkpoints them at each commit,
 * after the stores are flushed. This unit reads topics and writes the store
 * database and its own checkpoint file; it never calls into Lua, never
 * touches a task's state, and never joins a consumer group.
 */
#ifndef TIDE_GLOBAL_H
#define TIDE_GLOBAL_H
#include <signal.h>
#include <stdint.h>

#include "config.h"
#include "store.h"

/* The partition a global table's rows are kept under in its store: one key
 * space for the whole topic, apart from every task's (a task is an input
 * partition). scripts/tide/store.lua reads them there (GLOBAL_PARTITION). */
#define TIDE_GLOBAL_PARTITION INT32_MAX

/* One global table: its topic and its store (id and name). Borrowed: valid
 * while the tables are open. */
typedef struct tide_global_spec {
    const char *topic;
    int store;
    const char *store_name;
} tide_global_spec_t;

typedef struct tide_globals tide_globals_t;

typedef enum tide_global_result {
    TIDE_GLOBAL_OK = 0,
    TIDE_GLOBAL_FAILED, /* *errp says why */
    TIDE_GLOBAL_STOPPED, /* the worker was asked to stop meanwhile */
} tide_global_result_t;

/* Open the tables' consumer. `checkpoint_path`: the file that keeps the
 * offsets the store holds (it is read at bootstrap). NULL with *errp. */
tide_globals_t *tide_globals_open(const tide_config_t *c, const char *bootstraps,
                                  tide_store_db_t *db, const char *checkpoint_path,
                                  const tide_global_spec_t *tables, int n, char **errp);
/* Read every table to the end its topic has now: from the checkpoint, or
 * (none, or one the topic no longer has) from the start after emptying the
 * table. Blocks until done, as Kafka Streams' global thread does (a broker
 * that is slow or away only makes it wait, with a log line every 10 s), or
 * until *stop is set. */
tide_global_result_t tide_globals_bootstrap(tide_globals_t *g, const volatile sig_atomic_t *stop,
                                            char **errp);
/* Apply what the topics have brought since (without waiting). */
tide_global_result_t tide_globals_poll(tide_globals_t *g, char **errp);
/* The store database committed (its record cache written back): what was
 * applied so far is covered. */
void tide_globals_committed(tide_globals_t *g);
/* The store database rolled back its writes since the last commit: read
 * the topics again from there. */
void tide_globals_rollback(tide_globals_t *g);
/* Committed offsets the checkpoint file does not have yet. */
int tide_globals_unsaved(const tide_globals_t *g);
/* Save the committed offsets. Call after the store database is flushed
 * (tide_tasks_checkpoint does): a crash in between only reads some records
 * again. */
tide_global_result_t tide_globals_checkpoint(tide_globals_t *g, char **errp);
/* Records applied since open. */
uint64_t tide_globals_records(const tide_globals_t *g);
void tide_globals_free(tide_globals_t *g);

#endif
