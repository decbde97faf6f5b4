/*
 * commit.c: the commit protocol (see commit.h).
 *
 * Owns the order of a commit's steps and of a rollback's, and the list of
 * records to blame after one. Never commits an offset whose records' outputs
 * are not acknowledged (at-least-once) or not in the committed transaction
 * (exactly-once), never writes a store's uncommitted data to RocksDB, and
 * never ends the worker for a broker that is slow or away.
 */
#include "commit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* A record to treat specially when it comes again. */
typedef struct blamed {
    char *topic;
    int32_t partition;
    int64_t offset;
    int guilty;
    char reason[600];
} blamed_t;

typedef enum phase {
    PHASE_IDLE,
    PHASE_COMMITTING,
    PHASE_ABORTING, /* a transaction to abort before the rollback */
} phase_t;

struct tide_committer {
    tide_committer_opts_t o;
    phase_t phase;
    const char *why;
    int64_t started_ms;      /* monotonic, the commit under way */
    int64_t waiting_since;   /* wall, 0: not waiting */
    int64_t last_checkpoint_ms;
    uint64_t commits, rollbacks;
    blamed_t *blamed;
    int n_blamed, cap_blamed;
    const rd_kafka_topic_partition_list_t *going; /* a rollback's partitions about to go */
};

/* A checkpoint flushes RocksDB's memtables: under at-least-once at each
 * commit, under exactly-once (a commit every 100 ms by default) at most this
 * often, besides revokes and shutdown. A crash restores what the changelog
 * has past it. */
#define EOS_CHECKPOINT_EVERY_MS 1000
/* A commit waiting this long is waiting for the broker (status, readiness). */
#define WAITING_AFTER_MS 2000

tide_committer_t *tide_committer_new(const tide_committer_opts_t *o) {
    tide_committer_t *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->o = *o;
    c->last_checkpoint_ms = tide_mono_ms();
    return c;
}

void tide_committer_free(tide_committer_t *c) {
    if (!c) return;
    for (int i = 0; i < c->n_blamed; i++) free(c->blamed[i].topic);
    free(c->blamed);
    free(c);
}

void tide_committer_request(tide_committer_t *c, const char *why) {
    if (c->phase != PHASE_IDLE) return;
    c->phase = PHASE_COMMITTING;
    c->why = why;
    c->started_ms = tide_mono_ms();
}

int tide_committer_busy(const tide_committer_t *c) { return c->phase != PHASE_IDLE; }
int64_t tide_committer_waiting_since(const tide_committer_t *c) { return c->waiting_since; }
uint64_t tide_committer_commits(const tide_committer_t *c) { return c->commits; }
uint64_t tide_committer_rollbacks(const tide_committer_t *c) { return c->rollbacks; }

int tide_committer_dirty(const tide_committer_t *c) {
    if (tide_producer_in_flight(c->o.producer) || tide_producer_in_txn(c->o.producer)) return 1;
    rd_kafka_topic_partition_list_t *l = tide_offsets_pending(tide_group_offsets(c->o.group), NULL);
    int n = l->cnt;
    rd_kafka_topic_partition_list_destroy(l);
    return n > 0;
}

/* ---------------------------------------------------------------- blame */

tide_blame_t tide_committer_blame(const tide_committer_t *c, const char *topic, int32_t partition,
                                  int64_t offset, const char **reason) {
    for (int i = 0; i < c->n_blamed; i++) {
        const blamed_t *b = &c->blamed[i];
        if (b->offset != offset || b->partition != partition || strcmp(b->topic, topic)) continue;
        *reason = b->reason;
        return b->guilty ? TIDE_BLAME_GUILTY : TIDE_BLAME_SUSPECT;
    }
    return TIDE_BLAME_NONE;
}

static void blame(tide_committer_t *c, const tide_record_failure_t *f) {
    blamed_t *b = NULL;
    for (int i = 0; i < c->n_blamed && !b; i++)
        if (c->blamed[i].offset == f->source.offset && c->blamed[i].partition == f->source.partition &&
            !strcmp(c->blamed[i].topic, f->source.topic))
            b = &c->blamed[i];
    if (!b) {
        if (c->n_blamed == c->cap_blamed) {
            int cap = c->cap_blamed ? c->cap_blamed * 2 : 8;
            blamed_t *nb = realloc(c->blamed, (size_t)cap * sizeof(*nb));
            if (!nb) return;
            c->blamed = nb;
            c->cap_blamed = cap;
        }
        b = &c->blamed[c->n_blamed++];
        *b = (blamed_t){.topic = strdup(f->source.topic), .partition = f->source.partition,
                        .offset = f->source.offset};
    }
    /* A suspect that fails again alone is guilty. */
    b->guilty = b->guilty || f->guilty || tide_committer_blame(c, f->source.topic, f->source.partition,
                                                               f->source.offset, &(const char *){0}) ==
                                              TIDE_BLAME_SUSPECT;
    snprintf(b->reason, sizeof(b->reason), "Kafka refused the record's output to %s: %s", f->topic,
             f->reason);
    tide_log(TIDE_LOG_WARN, (tide_log_at_t){f->source.topic, f->source.partition, f->source.offset},
             "%s: %s", b->guilty ? "its outputs were refused; it goes to the dead letters when it "
                                   "comes again" : "it shared a refused batch; it is tried alone",
             b->reason);
}

/* Committed past a blamed record: it has been dealt with. */
static void forget_blamed(tide_committer_t *c) {
    tide_offsets_t *o = tide_group_offsets(c->o.group);
    int k = 0;
    for (int i = 0; i < c->n_blamed; i++) {
        blamed_t *b = &c->blamed[i];
        tide_offset_t *p = tide_offsets_find(o, b->topic, b->partition);
        if (p && p->durable > b->offset) {
            free(b->topic);
            continue;
        }
        c->blamed[k++] = *b;
    }
    c->n_blamed = k;
}

/* ---------------------------------------------------------------- after a commit */

static void record_duration(tide_committer_t *c) {
    double secs = (double)(tide_mono_ms() - c->started_ms) / 1000.0;
    c->o.st->commit_hist[tide_status_bucket(secs)]++;
    c->o.st->commit_hist_sum += secs;
}

static int64_t stream_time_of(void *rt, int32_t p) { return tide_runtime_stream_time(rt, p); }

static int checkpoint(tide_committer_t *c) {
    c->last_checkpoint_ms = tide_mono_ms();
    return tide_tasks_checkpoint(c->o.tasks);
}

tide_progress_t tide_committer_tick(tide_committer_t *c) {
    if (c->phase != PHASE_IDLE || !tide_tasks_unsaved(c->o.tasks) ||
        tide_mono_ms() - c->last_checkpoint_ms < EOS_CHECKPOINT_EVERY_MS)
        return TIDE_PROGRESS_IDLE;
    return checkpoint(c) ? TIDE_PROGRESS_FATAL : TIDE_PROGRESS_IDLE;
}

/* The commit is durable: the stores may keep what it covers. */
static tide_progress_t committed(tide_committer_t *c, int force_checkpoint) {
    tide_tasks_commit(c->o.tasks, stream_time_of, *c->o.rt);
    tide_runtime_commit(*c->o.rt);
    tide_tasks_mark(c->o.tasks);
    if ((force_checkpoint || !c->o.eos) && checkpoint(c)) return TIDE_PROGRESS_FATAL;
    record_duration(c);
    c->commits++;
    if (c->o.eos) c->o.st->txn_committed++;
    c->phase = PHASE_IDLE;
    c->waiting_since = 0;
    return TIDE_PROGRESS_DONE;
}

/* ---------------------------------------------------------------- rollback */

/* The stores and the runtime back at the last commit: exactly, or, when
 * RocksDB had received uncommitted writes, by restoring every task. */
static void state_back(tide_committer_t *c) {
    tide_tasks_t *t = c->o.tasks;
    tide_runtime_t *rt = *c->o.rt;
    tide_rollback_t how = tide_tasks_rollback(t);
    int n = tide_tasks_count(t);
    for (int i = 0; i < n; i++) {
        int32_t p = tide_tasks_partition(t, i);
        if (!tide_tasks_ready(t, p)) continue;
        if (how == TIDE_ROLLBACK_EXACT) tide_runtime_rollback(rt, p, tide_tasks_stream_time(t, p));
        else tide_runtime_task(rt, p, 0, -1);
    }
    if (how == TIDE_ROLLBACK_EXACT) return;
    tide_tasks_rebuild(t);
    for (int i = 0; i < n; i++) {
        int32_t p = tide_tasks_partition(t, i);
        if (!tide_tasks_ready(t, p)) tide_group_pause(c->o.group, p, TIDE_PAUSE_RESTORE, 1);
    }
}

/* Everything back to the last commit: the stores' writes since, the
 * runtime's stream times, the inputs. The producer has nothing in flight. */
static tide_progress_t roll_back(tide_committer_t *c) {
    if (!c->o.eos) tide_producer_reset(c->o.producer);
    tide_sink_clear(tide_runtime_sink(*c->o.rt));
    state_back(c);
    if (tide_group_rewind(c->o.group, c->going)) return TIDE_PROGRESS_FATAL;
    c->rollbacks++;
    if (c->o.eos) c->o.st->txn_aborted++;
    c->phase = PHASE_IDLE;
    c->waiting_since = 0;
    tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "rolled back to the last commit (%s)",
             c->o.eos ? "transaction aborted" : "outputs not all delivered");
    return TIDE_PROGRESS_ROLLED_BACK;
}

static tide_progress_t abort_step(tide_committer_t *c, int slice_ms) {
    char *err = NULL;
    tide_txn_t r = tide_producer_abort_txn(c->o.producer, slice_ms, &err);
    if (r == TIDE_TXN_DONE) return roll_back(c);
    tide_log(r == TIDE_TXN_RETRY ? TIDE_LOG_INFO : TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
    free(err);
    if (r == TIDE_TXN_FATAL) return TIDE_PROGRESS_FATAL;
    return TIDE_PROGRESS_PENDING;
}

/* The records to blame, from the producer's failures (before an abort
 * forgets them). */
static void blame_failures(tide_committer_t *c) {
    int n;
    const char *other;
    const tide_record_failure_t *f = tide_producer_failures(c->o.producer, &n, &other);
    for (int i = 0; i < n; i++) blame(c, &f[i]);
    if (other) tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "%s: processing again from the last commit", other);
}

static tide_progress_t start_rollback(tide_committer_t *c, int slice_ms) {
    blame_failures(c);
    if (!c->o.eos) return roll_back(c);
    c->phase = PHASE_ABORTING;
    return abort_step(c, slice_ms);
}

/* ---------------------------------------------------------------- commit steps */

static void note_waiting(tide_committer_t *c) {
    if (!c->waiting_since && tide_mono_ms() - c->started_ms >= WAITING_AFTER_MS) {
        c->waiting_since = tide_wall_ms();
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE,
                 "commit (%s) waiting for the broker: %lld output record(s) not acknowledged yet",
                 c->why ? c->why : "", (long long)tide_producer_in_flight(c->o.producer));
    }
}

static tide_progress_t alos_step(tide_committer_t *c, int slice_ms, int force_checkpoint,
                                 const rd_kafka_topic_partition_list_t *only) {
    switch (tide_producer_flush(c->o.producer, slice_ms)) {
    case TIDE_FLUSH_PENDING: note_waiting(c); return TIDE_PROGRESS_PENDING;
    case TIDE_FLUSH_FATAL: return TIDE_PROGRESS_FATAL;
    case TIDE_FLUSH_FAILED: return start_rollback(c, slice_ms);
    case TIDE_FLUSH_DONE: break;
    }
    tide_producer_reset(c->o.producer);
    tide_progress_t r = committed(c, force_checkpoint);
    if (r == TIDE_PROGRESS_DONE) tide_group_commit(c->o.group, only, c->why, !force_checkpoint);
    return r;
}

static tide_progress_t eos_step(tide_committer_t *c, int slice_ms, int force_checkpoint) {
    switch (tide_producer_flush(c->o.producer, slice_ms)) {
    case TIDE_FLUSH_PENDING: note_waiting(c); return TIDE_PROGRESS_PENDING;
    case TIDE_FLUSH_FATAL: return TIDE_PROGRESS_FATAL;
    case TIDE_FLUSH_FAILED: return start_rollback(c, slice_ms);
    case TIDE_FLUSH_DONE: break;
    }
    rd_kafka_topic_partition_list_t *offsets = tide_group_pending(c->o.group, NULL);
    char *err = NULL;
    tide_txn_t r = TIDE_TXN_DONE;
    if (offsets->cnt && tide_producer_begin_txn(c->o.producer, &err)) r = TIDE_TXN_FATAL;
    if (r == TIDE_TXN_DONE)
        r = tide_producer_commit_txn(c->o.producer, offsets, tide_group_consumer(c->o.group),
                                     slice_ms, &err);
    if (r == TIDE_TXN_DONE) tide_offsets_committed(tide_group_offsets(c->o.group), offsets);
    rd_kafka_topic_partition_list_destroy(offsets);
    if (err) {
        tide_log(r == TIDE_TXN_RETRY ? TIDE_LOG_INFO : TIDE_LOG_WARN, TIDE_AT_NONE, "%s", err);
        free(err);
    }
    switch (r) {
    case TIDE_TXN_DONE: return committed(c, force_checkpoint);
    case TIDE_TXN_RETRY: note_waiting(c); return TIDE_PROGRESS_PENDING;
    case TIDE_TXN_ABORT: return start_rollback(c, slice_ms);
    case TIDE_TXN_FATAL: break;
    }
    return TIDE_PROGRESS_FATAL;
}

static tide_progress_t step(tide_committer_t *c, int slice_ms, int force_checkpoint,
                            const rd_kafka_topic_partition_list_t *only) {
    if (c->phase == PHASE_IDLE) return TIDE_PROGRESS_IDLE;
    if (c->phase == PHASE_ABORTING) return abort_step(c, slice_ms);
    tide_progress_t r = c->o.eos ? eos_step(c, slice_ms, force_checkpoint)
                                 : alos_step(c, slice_ms, force_checkpoint, only);
    if (r == TIDE_PROGRESS_DONE) forget_blamed(c);
    return r;
}

tide_progress_t tide_committer_step(tide_committer_t *c, int slice_ms) {
    return step(c, slice_ms, 0, NULL);
}

tide_progress_t tide_committer_abandon(tide_committer_t *c,
                                       const rd_kafka_topic_partition_list_t *going) {
    c->going = going;
    c->why = "abandoned";
    blame_failures(c);
    tide_progress_t r = TIDE_PROGRESS_ROLLED_BACK;
    if (c->o.eos && tide_producer_in_txn(c->o.producer)) {
        int64_t deadline = tide_mono_ms() + c->o.shutdown_timeout_ms;
        c->phase = PHASE_ABORTING;
        while ((r = abort_step(c, 100)) == TIDE_PROGRESS_PENDING && tide_mono_ms() < deadline) {
        }
        if (r == TIDE_PROGRESS_PENDING) r = TIDE_PROGRESS_FATAL;
    } else if (c->o.eos || tide_producer_in_flight(c->o.producer) == 0) {
        r = roll_back(c);
    }
    c->phase = PHASE_IDLE;
    c->going = NULL;
    return r;
}

tide_progress_t tide_committer_finish(tide_committer_t *c, const char *why,
                                      const rd_kafka_topic_partition_list_t *only) {
    if (c->phase == PHASE_IDLE) {
        c->phase = PHASE_COMMITTING;
        c->why = why;
        c->started_ms = tide_mono_ms();
    }
    int64_t deadline = tide_mono_ms() + c->o.shutdown_timeout_ms;
    tide_progress_t r;
    c->going = only;
    while ((r = step(c, 100, 1, only)) == TIDE_PROGRESS_PENDING && tide_mono_ms() < deadline) {
    }
    if (r != TIDE_PROGRESS_PENDING) {
        c->going = NULL;
        return r;
    }
    tide_log(TIDE_LOG_WARN, TIDE_AT_NONE,
             "commit (%s) not acknowledged within shutdown.timeout.ms (%d ms): rolling back",
             why, c->o.shutdown_timeout_ms);
    if (!c->o.eos) {
        /* Nothing to abort: the records come again from the last commit
         * (here or at the partitions' next owner). */
        c->phase = PHASE_IDLE;
        c->going = NULL;
        return TIDE_PROGRESS_ROLLED_BACK;
    }
    c->phase = PHASE_ABORTING;
    while ((r = abort_step(c, 100)) == TIDE_PROGRESS_PENDING && tide_mono_ms() < deadline + 5000) {
    }
    c->going = NULL;
    return r == TIDE_PROGRESS_PENDING ? TIDE_PROGRESS_FATAL : r;
}
