/*
 * restore.h: what gives a task (an input partition) its state back: the
 * local checkpoint (changelog offsets the store database holds up to) and
 * the restorer, which replays changelog partitions into the stores.
 *
 * The tasks (task.h) decide what to restore and apply what the restorer
 * reads; this unit only reads changelogs and files.
 */
#ifndef TIDE_RESTORE_H
#define TIDE_RESTORE_H
#include <stdint.h>

#include "config.h"

/* ---------------------------------------------------------------- checkpoint */

/* Next changelog offset to read, per (store, partition): what the local
 * database already holds. */
typedef struct tide_checkpoint_entry {
    char store[128];
    int32_t partition;
    int64_t offset;
} tide_checkpoint_entry_t;

typedef struct tide_checkpoint {
    tide_checkpoint_entry_t *e;
    int n, cap;
} tide_checkpoint_t;

/* Read `path` (a missing file is an empty checkpoint). 0, or -1 with *errp
 * when the file is unreadable or malformed (the caller then trusts nothing). */
int tide_checkpoint_load(tide_checkpoint_t *cp, const char *path, char **errp);
/* Write atomically (temporary file, fsync, rename). */
int tide_checkpoint_save(const tide_checkpoint_t *cp, const char *path, char **errp);
/* The offset for (store, partition), or -1. */
int64_t tide_checkpoint_get(const tide_checkpoint_t *cp, const char *store, int32_t partition);
void tide_checkpoint_set(tide_checkpoint_t *cp, const char *store, int32_t partition,
                         int64_t offset);
void tide_checkpoint_free(tide_checkpoint_t *cp);

/* ---------------------------------------------------------------- restorer */

typedef struct tide_restorer tide_restorer_t;

/* One changelog record read back: store id, partition, key, value (NULL for a
 * tombstone). */
typedef void (*tide_restore_apply_fn)(void *ud, int store, int32_t partition, const char *key,
                                      size_t klen, const char *val, size_t vlen);
/* Every store of `partition` is up to date: `records` applied in `ms`. */
typedef void (*tide_restore_done_fn)(void *ud, int32_t partition, uint64_t records,
                                     int64_t ms);

/* changelogs[i] is store i's changelog topic. */
tide_restorer_t *tide_restorer_new(const tide_config_t *c, const char *bootstraps,
                                   const char *group, char **changelogs, int n_stores,
                                   char **errp);
/* What tide_restorer_add found besides success (0) and failure (-1). */
enum {
    TIDE_RESTORE_STALE = 1, /* the checkpoint is past the changelog's end */
    TIDE_RESTORE_RETRY = 2, /* the broker did not answer (down, slow, moving a leader) */
};

/* Restore store `store` of `partition` from changelog offset `from` (-1: the
 * start) to its end. The partition is done (done_fn) once all its stores are.
 * TIDE_RESTORE_STALE: the local state belongs to another changelog (a broker
 * that was reset, a topic recreated): nothing was started; wipe the store's
 * partition and call again from 0. TIDE_RESTORE_RETRY: nothing was started
 * either; *errp says why; call again later. */
int tide_restorer_add(tide_restorer_t *r, int store, int32_t partition, int64_t from,
                      char **errp);
/* Stop restoring `partition` (revoked). */
void tide_restorer_remove(tide_restorer_t *r, int32_t partition);
/* (store, partition)s still restoring, and whether `partition` is one. */
int tide_restorer_pending(const tide_restorer_t *r);
int tide_restorer_busy(const tide_restorer_t *r, int32_t partition);
/* Read what is there (up to timeout_ms) and apply it. */
void tide_restorer_poll(tide_restorer_t *r, int timeout_ms, tide_restore_apply_fn apply,
                        tide_restore_done_fn done, void *ud);
uint64_t tide_restorer_records(const tide_restorer_t *r);
void tide_restorer_free(tide_restorer_t *r);

#endif
