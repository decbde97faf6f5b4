/*
 * task.c: the task table, the store database, checkpoints and restores (see
 * task.h).
 *
 * Owns the RocksDB database of the worker's stores, its checkpoint file and
 * the restorer. A task is ready only once every store of it is back from its
 * changelog, and a checkpoint never claims more than the acknowledged
 * changelog offsets. Never consumes inputs, never commits offsets, never
 * calls into Lua except through the callbacks the worker gave.
 */
#include "task.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "global.h"
#include "log.h"
#include "restore.h"
#include "store.h"

typedef struct tide_task {
    int32_t partition;
    int ready;
    int64_t stream_time; /* at its last commit, -1: none */
    int waiting;         /* its restore waits for the broker: which stores, or 0 */
    int64_t retry_ms;    /* when to ask again (monotonic) */
} tide_task_t;

/* Which stores a task's restore starts (tide_task_t.waiting). */
enum { RESTORE_ALL = 1, RESTORE_MEMORY = 2 };

/* How long a restore that the broker did not answer waits before it asks
 * again. */
#define RESTORE_RETRY_MS 2000

struct tide_tasks {
    const tide_config_t *config;
    const char *bootstraps;
    const tide_detector_info_t *info;
    tide_tasks_cb_t cb;
    tide_task_t *t;
    int n, cap;
    char **changelogs; /* per store: <application.id>.<detector>-<store>-changelog;
                        * NULL for a global table's store (its topic is its log) */
    int n_changelogs;
    tide_store_db_t *db; /* RocksDB stores, NULL when none */
    char state_dir[4096]; /* <state.dir>/<application.id>/<detector> */
    char checkpoint_path[4200];
    tide_checkpoint_t checkpoint;
    tide_restorer_t *restorer;
    int unsaved;              /* the checkpoint in memory is ahead of the file */
    tide_globals_t *globals;  /* the global tables in the database, NULL: none */
    int64_t round_started_ms; /* the restore round under way began, 0: none */
    uint64_t round_records;   /* the restorer's total when it began */
    int64_t unanswered_ms;    /* a restore's query the broker did not answer, then; 0: none */
};

static int name_changelogs(tide_tasks_t *t) {
    const tide_detector_info_t *d = t->info;
    if (!d->n_stores) return 0;
    const char *app = tide_config_str(t->config, TIDE_CFG_APPLICATION_ID);
    t->changelogs = calloc((size_t)d->n_stores, sizeof(char *));
    if (!t->changelogs) return -1;
    t->n_changelogs = d->n_stores;
    for (int s = 0; s < d->n_stores; s++)
        if (!d->store_global[s] &&
            asprintf(&t->changelogs[s], "%s.%s-%s-changelog", app, d->name, d->store_names[s]) < 0)
            return -1;
    return 0;
}

const char *tide_tasks_state_dir(const tide_tasks_t *t) {
    return t->db ? t->state_dir : NULL;
}

void *tide_tasks_db(const tide_tasks_t *t) { return t->db; }

void tide_tasks_set_globals(tide_tasks_t *t, tide_globals_t *g) { t->globals = g; }

tide_tasks_t *tide_tasks_new(const tide_tasks_opts_t *o, char **errp) {
    tide_tasks_t *t = calloc(1, sizeof(*t));
    if (!t) {
        if (asprintf(errp, "tasks: out of memory") < 0) *errp = NULL;
        return NULL;
    }
    t->config = o->config;
    t->bootstraps = o->bootstraps;
    t->cb = o->cb;
    return t;
}

char *const *tide_tasks_changelogs(const tide_tasks_t *t, int *n) {
    *n = t->n_changelogs;
    return t->changelogs;
}

int tide_tasks_set_info(tide_tasks_t *t, const tide_detector_info_t *info) {
    int first = !t->info;
    t->info = info;
    return first ? name_changelogs(t) : 0;
}

int tide_tasks_open_restorer(tide_tasks_t *t, char **errp) {
    if (!t->info->n_stores) return 0;
    char group[600];
    snprintf(group, sizeof(group), "%s.%s-restore",
             tide_config_str(t->config, TIDE_CFG_APPLICATION_ID), t->info->name);
    t->restorer = tide_restorer_new(t->config, t->bootstraps, group, t->changelogs,
                                    t->info->n_stores, errp);
    return t->restorer ? 0 : -1;
}

/* ---------------------------------------------------------------- the database */

static int mkdirs(const char *dir, char **errp) {
    char mk[4200];
    snprintf(mk, sizeof(mk), "%s", dir);
    for (char *q = mk + 1; *q; q++)
        if (*q == '/') {
            *q = '\0';
            mkdir(mk, 0755);
            *q = '/';
        }
    if (mkdir(mk, 0755) && errno != EEXIST) {
        if (asprintf(errp, "%s: %s", mk, strerror(errno)) < 0) *errp = NULL;
        return -1;
    }
    return 0;
}

void *tide_tasks_open_db(void *tasks, const char *name, char **errp) {
    tide_tasks_t *t = tasks;
    if (t->db) return t->db;
    const tide_config_t *c = t->config;
    snprintf(t->state_dir, sizeof(t->state_dir), "%s/%s/%s", tide_config_str(c, TIDE_CFG_STATE_DIR),
             tide_config_str(c, TIDE_CFG_APPLICATION_ID), name);
    if (mkdirs(t->state_dir, errp)) return NULL;
    char path[4200];
    snprintf(path, sizeof(path), "%s/rocksdb", t->state_dir);
    snprintf(t->checkpoint_path, sizeof(t->checkpoint_path), "%s/checkpoint", t->state_dir);
    tide_store_opts_t so = {path, (size_t)tide_config_int(c, TIDE_CFG_STATE_BLOCK_CACHE_BYTES),
                            (size_t)tide_config_int(c, TIDE_CFG_STATE_WRITE_BUFFER_BYTES),
                            (size_t)tide_config_int(c, TIDE_CFG_STATE_CACHE_BYTES)};
    char *err = NULL;
    t->db = tide_store_open(&so, &err);
    if (!t->db) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE,
                 "state store %s unusable (%s): wiping it; the changelogs rebuild it", path, err);
        free(err);
        err = NULL;
        unlink(t->checkpoint_path);
        if (tide_store_wipe(path, &err) || !(t->db = tide_store_open(&so, &err))) {
            *errp = err;
            return NULL;
        }
    }
    if (tide_checkpoint_load(&t->checkpoint, t->checkpoint_path, &err)) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "%s: restoring every task from the start", err);
        free(err);
        memset(&t->checkpoint, 0, sizeof(t->checkpoint));
    }
    return t->db;
}

/* Forget what the database holds for store s of partition p, to restore it
 * from the start of its changelog; returns that start (0). */
static int64_t store_wipe(tide_tasks_t *t, int s, int32_t p) {
    char *err = NULL;
    if (tide_store_delete_range(t->db, (uint8_t)s, p, NULL, 0, NULL, 0, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
    }
    return 0;
}

void tide_tasks_mark(tide_tasks_t *t) {
    if (!t->db) return;
    const tide_detector_info_t *d = t->info;
    for (int i = 0; i < t->n; i++) {
        if (!t->t[i].ready) continue;
        for (int s = 0; s < d->n_stores; s++) {
            if (d->store_memory[s] || d->store_global[s]) continue;
            int64_t off = t->cb.acked(t->cb.ud, s, t->t[i].partition);
            if (off < 0 || off + 1 <= tide_checkpoint_get(&t->checkpoint, d->store_names[s],
                                                          t->t[i].partition))
                continue;
            tide_checkpoint_set(&t->checkpoint, d->store_names[s], t->t[i].partition, off + 1);
            t->unsaved = 1;
        }
    }
}

int tide_tasks_unsaved(const tide_tasks_t *t) {
    return t->unsaved || (t->globals && tide_globals_unsaved(t->globals));
}

int tide_tasks_checkpoint(tide_tasks_t *t) {
    if (!t->db || !tide_tasks_unsaved(t)) return 0;
    char *err = NULL;
    if (tide_store_flush(t->db, &err) ||
        (t->unsaved && tide_checkpoint_save(&t->checkpoint, t->checkpoint_path, &err)) ||
        (t->globals && tide_globals_checkpoint(t->globals, &err))) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "state checkpoint failed: %s", err);
        free(err);
        return -1;
    }
    t->unsaved = 0;
    return 0;
}

/* ---------------------------------------------------------------- the table */

static int task_index(const tide_tasks_t *t, int32_t p) {
    for (int i = 0; i < t->n; i++)
        if (t->t[i].partition == p) return i;
    return -1;
}

int tide_tasks_count(const tide_tasks_t *t) { return t->n; }
int32_t tide_tasks_partition(const tide_tasks_t *t, int i) { return t->t[i].partition; }
int tide_tasks_has(const tide_tasks_t *t, int32_t p) { return task_index(t, p) >= 0; }

int tide_tasks_ready(const tide_tasks_t *t, int32_t p) {
    int i = task_index(t, p);
    return i >= 0 && t->t[i].ready;
}

int tide_tasks_restoring(const tide_tasks_t *t) {
    int n = 0;
    for (int i = 0; i < t->n; i++) n += !t->t[i].ready;
    return n;
}

static void make_ready(tide_tasks_t *t, int i) {
    if (t->t[i].ready) return;
    t->t[i].ready = 1;
    t->cb.on_ready(t->cb.ud, t->t[i].partition, t->t[i].stream_time);
}

/* A task starts restoring: the round's clock starts with the first one. */
static void round_begin(tide_tasks_t *t) {
    if (t->round_started_ms) return;
    t->round_started_ms = tide_mono_ms();
    t->round_records = tide_restorer_records(t->restorer);
}

/* Restore store s of task p from the checkpoint, or from the start (wiping
 * what the database holds of it) without one. 0, -1 failed (logged), or
 * TIDE_RESTORE_RETRY: the broker did not answer (logged once a task: *told). */
static int restore_store(tide_tasks_t *t, int s, int32_t p, int *told) {
    const tide_detector_info_t *d = t->info;
    int64_t from = 0;
    char *err = NULL;
    if (!d->store_memory[s]) {
        from = tide_checkpoint_get(&t->checkpoint, d->store_names[s], p);
        if (from < 0) from = store_wipe(t, s, p);
    }
    int rc = tide_restorer_add(t->restorer, s, p, from, &err);
    if (rc == TIDE_RESTORE_STALE) rc = tide_restorer_add(t->restorer, s, p, store_wipe(t, s, p), &err);
    t->unanswered_ms = rc == TIDE_RESTORE_RETRY ? tide_mono_ms() : 0;
    if (rc == TIDE_RESTORE_RETRY && !*told)
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "restore of partition %d waits for the broker (%s): "
                 "its input stays paused, and the restore is asked again every %d s",
                 (int)p, err, RESTORE_RETRY_MS / 1000);
    else if (rc && rc != TIDE_RESTORE_RETRY)
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "cannot restore store %s of partition %d: %s",
                 d->store_names[s], (int)p, err);
    *told |= rc == TIDE_RESTORE_RETRY;
    free(err);
    return rc;
}

/* Start the restore of task i's stores (which: RESTORE_ALL or
 * RESTORE_MEMORY), all or none: 0 started, -1 failed, TIDE_RESTORE_RETRY
 * when the broker did not answer (restore_later then). Within
 * RESTORE_RETRY_MS of a query it did not answer, no task asks again: each
 * query waits up to the restorer's timeout, and tasks by the dozen would
 * hold the loop (or an assignment) for minutes. */
static int start_restore(tide_tasks_t *t, int i, int which) {
    const tide_detector_info_t *d = t->info;
    int32_t p = t->t[i].partition;
    int rc = 0, told = t->t[i].waiting != 0;
    for (int s = 0; s < d->n_stores && t->restorer && !rc; s++) {
        if (d->store_global[s] || (which == RESTORE_MEMORY && !d->store_memory[s]))
            continue; /* a global table's store is not a task's */
        if (t->unanswered_ms && tide_mono_ms() - t->unanswered_ms < RESTORE_RETRY_MS)
            rc = TIDE_RESTORE_RETRY;
        else
            rc = restore_store(t, s, p, &told);
    }
    if (rc) tide_restorer_remove(t->restorer, p); /* none, then all again */
    return rc;
}

/* Task i's restore (which stores) is asked for again by tide_tasks_poll:
 * the broker did not answer, or a rebuild could not start. The task never
 * runs half-restored meanwhile. */
static void restore_later(tide_tasks_t *t, int i, int which) {
    t->t[i].waiting = which;
    t->t[i].retry_ms = tide_mono_ms() + RESTORE_RETRY_MS;
    round_begin(t);
}

/* Ready now when nothing is restoring for it, else the round goes on. */
static tide_task_start_t ready_or_restoring(tide_tasks_t *t, int i) {
    if (!t->restorer || !tide_restorer_busy(t->restorer, t->t[i].partition)) {
        make_ready(t, i);
        return TIDE_TASK_READY;
    }
    round_begin(t);
    return TIDE_TASK_RESTORING;
}

tide_task_start_t tide_tasks_start(tide_tasks_t *t, int32_t p, int64_t stream_time) {
    if (task_index(t, p) >= 0) return tide_tasks_ready(t, p) ? TIDE_TASK_READY : TIDE_TASK_RESTORING;
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 16;
        tide_task_t *nt = realloc(t->t, (size_t)cap * sizeof(*nt));
        if (!nt) return TIDE_TASK_FAILED;
        t->t = nt;
        t->cap = cap;
    }
    int i = t->n++;
    t->t[i] = (tide_task_t){p, 0, stream_time, 0, 0};
    int rc = start_restore(t, i, RESTORE_ALL);
    if (rc == TIDE_RESTORE_RETRY) {
        restore_later(t, i, RESTORE_ALL);
        return TIDE_TASK_RESTORING;
    }
    if (rc) return TIDE_TASK_FAILED;
    return ready_or_restoring(t, i);
}

int tide_tasks_pressure(const tide_tasks_t *t) { return t->db && tide_store_pressure(t->db); }

int tide_tasks_stop(tide_tasks_t *t, int32_t p) {
    int i = task_index(t, p);
    if (i < 0) return 0;
    int was_ready = t->t[i].ready;
    if (t->restorer) tide_restorer_remove(t->restorer, p);
    /* Writes not committed belong to records the next owner processes
     * again: they must not reach RocksDB at our next commit. */
    if (t->db) tide_store_rollback(t->db, p);
    t->t[i] = t->t[--t->n];
    return was_ready;
}

void tide_tasks_restart(tide_tasks_t *t, int64_t (*stream_time)(void *ud, int32_t p), void *ud) {
    for (int i = 0; i < t->n; i++) {
        int32_t p = t->t[i].partition;
        int64_t seen = stream_time(ud, p);
        if (seen > t->t[i].stream_time) t->t[i].stream_time = seen;
        t->t[i].ready = 0;
        /* In-memory stores start empty in the new runtime: read again. A
         * task whose restore waits for the broker waits as it was. */
        if (t->t[i].waiting) restore_later(t, i, t->t[i].waiting);
        else if (start_restore(t, i, RESTORE_MEMORY)) restore_later(t, i, RESTORE_MEMORY);
        else ready_or_restoring(t, i);
    }
}

/* ---------------------------------------------------------------- restoring */

static void on_restore_apply(void *ud, int store, int32_t partition, const char *key,
                             size_t klen, const char *val, size_t vlen) {
    tide_tasks_t *t = ud;
    if (t->info->store_memory[store]) {
        t->cb.restore_memory(t->cb.ud, store, partition, key, klen, val, vlen);
        return;
    }
    /* Committed already (it comes from the changelog): written as such, so
     * that it never waits for a commit nor goes with a rollback. */
    char *err = NULL;
    if (tide_store_put_committed(t->db, (uint8_t)store, partition, key, klen, val, vlen, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "restore: %s", err);
        free(err);
    }
}

static void on_restore_done(void *ud, int32_t partition, uint64_t records, int64_t ms) {
    tide_tasks_t *t = ud;
    char n[32], el[32], rate[32];
    snprintf(n, sizeof(n), "%" PRIu64, records);
    snprintf(el, sizeof(el), "%" PRId64, ms);
    snprintf(rate, sizeof(rate), "%.0f", ms > 0 ? (double)records * 1000.0 / (double)ms : 0.0);
    tide_logkv(TIDE_LOG_INFO, (tide_log_at_t){NULL, partition, -1}, "task restored", "records", n,
               "elapsed_ms", el, "records_per_s", rate, (char *)NULL);
    int i = task_index(t, partition);
    if (i >= 0) make_ready(t, i);
}

int tide_tasks_poll(tide_tasks_t *t, int timeout_ms) {
    int64_t now = tide_mono_ms();
    for (int i = 0; i < t->n; i++) {
        if (!t->t[i].waiting || now < t->t[i].retry_ms) continue;
        int rc = start_restore(t, i, t->t[i].waiting);
        if (rc == TIDE_RESTORE_RETRY) {
            restore_later(t, i, t->t[i].waiting);
            continue;
        }
        if (rc) return -1;
        t->t[i].waiting = 0;
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE,
                 "restore of partition %d started: the broker answered", (int)t->t[i].partition);
        ready_or_restoring(t, i);
    }
    if (t->restorer && tide_restorer_pending(t->restorer))
        tide_restorer_poll(t->restorer, timeout_ms, on_restore_apply, on_restore_done, t);
    return 0;
}

void tide_tasks_commit(tide_tasks_t *t, int64_t (*stream_time)(void *ud, int32_t p), void *ud) {
    for (int i = 0; i < t->n; i++) {
        if (!t->t[i].ready) continue;
        int64_t st = stream_time(ud, t->t[i].partition);
        if (st > t->t[i].stream_time) t->t[i].stream_time = st;
    }
    char *err = NULL;
    if (t->db && tide_store_commit(t->db, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "state commit: %s", err);
        free(err);
    } else if (t->globals) {
        tide_globals_committed(t->globals); /* what they applied is in RocksDB now */
    }
}

int64_t tide_tasks_stream_time(const tide_tasks_t *t, int32_t p) {
    int i = task_index(t, p);
    return i >= 0 ? t->t[i].stream_time : -1;
}

tide_rollback_t tide_tasks_rollback(tide_tasks_t *t) {
    if (!t->db) return TIDE_ROLLBACK_EXACT;
    int spilled = tide_store_uncommitted_spilled(t->db);
    tide_store_rollback(t->db, -1);
    /* the global tables' writes since the commit went too: read them again */
    if (t->globals) tide_globals_rollback(t->globals);
    if (!spilled) return TIDE_ROLLBACK_EXACT;
    /* RocksDB holds writes the commit never covered: every task is rebuilt
     * from its changelog (whose uncommitted records a read_committed
     * restore does not see). */
    tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "state held uncommitted writes: restoring every task "
             "from its changelog");
    for (int i = 0; i < t->n; i++) {
        for (int s = 0; s < t->info->n_stores; s++) {
            if (t->info->store_global[s]) continue; /* not a task's */
            if (!t->info->store_memory[s]) store_wipe(t, s, t->t[i].partition);
            tide_checkpoint_set(&t->checkpoint, t->info->store_names[s], t->t[i].partition, 0);
        }
    }
    char *err = NULL;
    if (tide_checkpoint_save(&t->checkpoint, t->checkpoint_path, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "state checkpoint failed: %s", err);
        free(err);
    }
    return TIDE_ROLLBACK_REBUILD;
}

void tide_tasks_rebuild(tide_tasks_t *t) {
    for (int i = 0; i < t->n; i++) {
        t->t[i].ready = 0;
        t->t[i].waiting = 0;
        if (t->restorer) tide_restorer_remove(t->restorer, t->t[i].partition);
        if (start_restore(t, i, RESTORE_ALL)) restore_later(t, i, RESTORE_ALL);
        else ready_or_restoring(t, i);
    }
}

/* The restore round is over: how long it took, for every task held. */
static void log_round(tide_tasks_t *t) {
    char text[3072], json[3072], msg[3200], el[32], n[32];
    int64_t ms = tide_mono_ms() - t->round_started_ms;
    int32_t *ps = malloc((size_t)(t->n + 1) * sizeof(*ps));
    int np = 0;
    for (int i = 0; ps && i < t->n; i++) ps[np++] = t->t[i].partition;
    tide_tasks_list(t, ps, np, 0, text, sizeof(text));
    tide_tasks_list(t, ps, np, 1, json, sizeof(json));
    free(ps);
    snprintf(msg, sizeof(msg), "Restoration took %" PRId64 " ms for all tasks %s", ms, text);
    snprintf(el, sizeof(el), "%" PRId64, ms);
    snprintf(n, sizeof(n), "%" PRIu64, tide_restorer_records(t->restorer) - t->round_records);
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, msg, "elapsed_ms", el, "records", n, "tasks", json,
               (char *)NULL);
    t->round_started_ms = 0;
}

int tide_tasks_settled(tide_tasks_t *t) {
    if (tide_tasks_restoring(t)) return 0;
    if (t->round_started_ms) log_round(t);
    return 1;
}

/* ---------------------------------------------------------------- standby */

int64_t tide_tasks_local_offset(tide_tasks_t *t, int s, int32_t p, int wipe) {
    int64_t from = tide_checkpoint_get(&t->checkpoint, t->info->store_names[s], p);
    if (from >= 0 && !wipe) return from;
    store_wipe(t, s, p);
    if (from >= 0) {
        tide_checkpoint_set(&t->checkpoint, t->info->store_names[s], p, 0);
        t->unsaved = 1;
    }
    return 0;
}

void tide_tasks_local_advance(tide_tasks_t *t, int s, int32_t p, int64_t next) {
    if (next <= tide_checkpoint_get(&t->checkpoint, t->info->store_names[s], p)) return;
    tide_checkpoint_set(&t->checkpoint, t->info->store_names[s], p, next);
    t->unsaved = 1;
}

uint64_t tide_tasks_restored_records(const tide_tasks_t *t) {
    return t->restorer ? tide_restorer_records(t->restorer) : 0;
}

uint64_t tide_tasks_store_memory(const tide_tasks_t *t) {
    return t->db ? tide_store_memory_bytes(t->db) : 0;
}

/* ---------------------------------------------------------------- logs */

static int cmp_partition(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

void tide_tasks_list(const tide_tasks_t *t, const int32_t *ps, int n, int json, char *buf,
                     size_t cap) {
    int32_t *sorted = n ? malloc((size_t)n * sizeof(*sorted)) : NULL;
    if (sorted) {
        memcpy(sorted, ps, (size_t)n * sizeof(*sorted));
        qsort(sorted, (size_t)n, sizeof(*sorted), cmp_partition);
    } else {
        n = 0;
    }
    size_t o = 1;
    buf[0] = '[';
    for (int i = 0; i < n; i++) {
        char id[300], quoted[620];
        snprintf(id, sizeof(id), "%s_%d", t->info->name, (int)sorted[i]);
        const char *item = id;
        if (json) {
            tide_json_str(quoted, sizeof(quoted), id, strlen(id));
            item = quoted;
        }
        if (o + strlen(item) + 4 >= cap) break;
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", !i ? "" : json ? "," : ", ", item);
    }
    snprintf(buf + o, cap - o, "]");
    free(sorted);
}

void tide_tasks_log_assignment(const tide_tasks_t *t, int n_fresh, const int32_t *revoked,
                               int n_revoked) {
    enum { CAP = 2048 };
    char nt[CAP], et[CAP], rt[CAP], nj[CAP], ej[CAP], rj[CAP], aj[CAP], msg[3 * CAP + 128];
    int32_t *all = malloc((size_t)(t->n + 1) * sizeof(*all));
    if (!all) return;
    for (int i = 0; i < t->n; i++) all[i] = t->t[i].partition;
    int n_existing = t->n - n_fresh;
    tide_tasks_list(t, all + n_existing, n_fresh, 0, nt, CAP);
    tide_tasks_list(t, all, n_existing, 0, et, CAP);
    tide_tasks_list(t, revoked, n_revoked, 0, rt, CAP);
    tide_tasks_list(t, all + n_existing, n_fresh, 1, nj, CAP);
    tide_tasks_list(t, all, n_existing, 1, ej, CAP);
    tide_tasks_list(t, revoked, n_revoked, 1, rj, CAP);
    tide_tasks_list(t, all, t->n, 1, aj, CAP);
    free(all);
    snprintf(msg, sizeof(msg), "Handle new assignment with: new active tasks %s, existing "
             "active tasks %s, revoked tasks %s", nt, et, rt);
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, msg, "new_tasks", nj, "existing_tasks", ej,
               "revoked_tasks", rj, "active_tasks", aj, (char *)NULL);
}

void tide_tasks_free(tide_tasks_t *t) {
    if (!t) return;
    tide_restorer_free(t->restorer);
    tide_store_close(t->db);
    tide_checkpoint_free(&t->checkpoint);
    for (int i = 0; i < t->n_changelogs; i++) free(t->changelogs[i]);
    free(t->changelogs);
    free(t->t);
    free(t);
}
