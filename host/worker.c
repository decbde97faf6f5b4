/*
 * worker.c: the record loop of one detector (see worker.h).
 *
 * Composes the parts: the runtime (the detector's Lua), the group (consumer,
 * assignment, offsets, record-time order), the tasks (stores, restores,
 * checkpoints), the producer, the committer (commits and rollbacks, under
 * either guarantee) and the status block. Its loop fetches, hands the next
 * batch to the runtime in one call, produces what the detector emitted and
 * runs the periodic jobs. It is the go-between on rebalances, so the group
 * and the tasks never call each other.
 *
 * Never commits ahead of what is durable (the committer's rules); never
 * calls into Lua except through the runtime; never ends because the broker
 * is slow or away. A worker ends for one reason, set in one place
 * (worker_end).
 */
#include "worker.h"

#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "commit.h"
#include "devbroker.h"
#include "global.h"
#include "group.h"
#include "log.h"
#include "produce.h"
#include "query.h"
#include "records.h"
#include "runtime.h"
#include "standby.h"
#include "status.h"
#include "task.h"
#include "topics.h"
#include "txnid.h"

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

static const char *const state_names[] = {
    "CREATED", "REBALANCING", "RUNNING", "PENDING_SHUTDOWN", "NOT_RUNNING", "PENDING_ERROR",
    "ERROR",
};

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

/* The one place a worker's end is decided: the first reason wins. */
static void worker_end(tide_worker_t *w, tide_worker_exit_t why) {
    if (w->end == TIDE_WORKER_RUNNING) w->end = why;
}

static void end_for(tide_worker_t *w, tide_step_t s) {
    switch (s) {
    case TIDE_STEP_OK: break;
    case TIDE_STEP_STOPPED: worker_end(w, TIDE_WORKER_STOPPED_ON_ERROR); break;
    case TIDE_STEP_RENAMED: worker_end(w, TIDE_WORKER_RENAMED); break;
    case TIDE_STEP_FENCED: worker_end(w, TIDE_WORKER_FENCED); break;
    case TIDE_STEP_FAILED: worker_end(w, TIDE_WORKER_FAILED); break;
    case TIDE_STEP_STOPPED_EARLY: worker_end(w, TIDE_WORKER_DONE); break;
    }
}

/* ---------------------------------------------------------------- states */

static void set_state(tide_worker_t *w, tide_app_state_t to) {
    if (w->state == to) return;
    char msg[128], from_s[32], to_s[32];
    const char *a = state_names[w->state], *b = state_names[to];
    snprintf(msg, sizeof(msg), "State transition from %s to %s", a, b);
    tide_json_str(from_s, sizeof(from_s), a, strlen(a));
    tide_json_str(to_s, sizeof(to_s), b, strlen(b));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, msg, "old_state", from_s, "new_state", to_s,
               (char *)NULL);
    w->state = to;
}

/* The assignment changes: RUNNING (or CREATED) until every task is back. */
static void begin_rebalance(tide_worker_t *w) {
    if (w->state == STATE_CREATED || w->state == STATE_RUNNING) set_state(w, STATE_REBALANCING);
}

/* After an assignment or a restore step: once every task is restored, run. */
static void settle(tide_worker_t *w) {
    if (tide_tasks_settled(w->tasks) && w->state == STATE_REBALANCING) set_state(w, STATE_RUNNING);
}

static size_t stream_time_meta(void *ud, int32_t partition, char *buf, size_t cap) {
    tide_worker_t *w = ud;
    int64_t st = tide_runtime_stream_time(w->rt, partition);
    int n = st >= 0 ? snprintf(buf, cap, STREAM_TIME_META "%lld", (long long)st) : 0;
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* ---------------------------------------------------------------- producing */

/* Hand the sink to the producer, waiting at most block_ms for a free arena
 * (its thread produces the last ones meanwhile). The batch's records go
 * with it: the producer releases them once its entries are produced. On a
 * failure nothing was taken: the sink is dropped (a rollback follows) and
 * the records released here. */
static tide_flush_t send_sink(tide_worker_t *w, int block_ms) {
    tide_sink_t *s = tide_runtime_sink(w->rt);
    tide_flush_t r = tide_producer_send(w->producer, s, w->batch, &w->sent, block_ms,
                                        tide_records_messages(w->records, w->held), w->held);
    w->sending = r == TIDE_FLUSH_PENDING;
    if (w->sending) return r;
    tide_sink_clear(s);
    w->sent = 0;
    w->batch = NULL;
    if (r != TIDE_FLUSH_DONE) tide_records_release(w->records, w->held);
    else tide_records_release(w->records, 0); /* the producer has them */
    w->held = 0;
    return r;
}

/* The outcome of a send or a commit step, for the loop. */
static tide_step_t after(tide_worker_t *w, tide_progress_t p) {
    switch (p) {
    case TIDE_PROGRESS_FATAL: return w->eos ? TIDE_STEP_FENCED : TIDE_STEP_FAILED;
    case TIDE_PROGRESS_ROLLED_BACK: {
        const char *missing = tide_producer_missing_topic(w->producer);
        if (missing && !w->missing[0]) {
            snprintf(w->missing, sizeof(w->missing), "%s", missing);
            tide_log(TIDE_LOG_ERROR, (tide_log_at_t){missing, -1, -1},
                     "output topic %s does not exist: holding the inputs of detector %s until "
                     "it does (create it, or set output.topics.create=true)",
                     missing, w->info->name);
            tide_group_pause_all(w->group, TIDE_PAUSE_HOLD, 1);
        }
        return TIDE_STEP_OK;
    }
    default: return TIDE_STEP_OK;
    }
}

/* A send that failed at once rolls back through the committer. */
static tide_step_t sent_or_roll_back(tide_worker_t *w, tide_flush_t r) {
    if (r == TIDE_FLUSH_FATAL) return w->eos ? TIDE_STEP_FENCED : TIDE_STEP_FAILED;
    if (r != TIDE_FLUSH_FAILED) return TIDE_STEP_OK;
    tide_committer_request(w->committer, "failed send");
    return after(w, tide_committer_step(w->committer, 100));
}

/* ---------------------------------------------------------------- rebalances */

static void on_task_ready(void *ud, int32_t partition, int64_t stream_time) {
    tide_worker_t *w = ud;
    tide_runtime_task(w->rt, partition, 1, stream_time);
    tide_group_pause(w->group, partition, TIDE_PAUSE_RESTORE, 0);
}

/* New partitions: a task per new partition number, restoring its stores
 * first (its input paused meanwhile). Called once per rebalance round, even
 * with nothing new. */
static void on_assigned(void *ud, const rd_kafka_topic_partition_list_t *parts) {
    tide_worker_t *w = ud;
    int before = tide_tasks_count(w->tasks);
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (!tide_tasks_has(w->tasks, p)) begin_rebalance(w);
        int64_t st = tide_group_committed_number(w->group, p, STREAM_TIME_META);
        tide_standby_promote(w->standby, p); /* its restore reads only the tail */
        tide_task_start_t r = tide_tasks_start(w->tasks, p, st);
        if (r == TIDE_TASK_RESTORING) tide_group_pause(w->group, p, TIDE_PAUSE_RESTORE, 1);
        if (r == TIDE_TASK_FAILED) worker_end(w, TIDE_WORKER_FAILED);
    }
    if (w->missing[0]) tide_group_pause_all(w->group, TIDE_PAUSE_HOLD, 1);
    if (!w->last_record_ms) w->last_record_ms = tide_mono_ms();
    char desc[2048], field[2100];
    tide_group_describe(parts, desc, sizeof(desc));
    tide_json_str(field, sizeof(field), desc, strlen(desc));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "partitions assigned", "partitions", field,
               (char *)NULL);
    tide_tasks_log_assignment(w->tasks, tide_tasks_count(w->tasks) - before, NULL, 0);
    settle(w);
}

/* Send what the sink holds, however long the queue makes us wait (up to
 * the shutdown timeout): a revoke or a shutdown commits after it. */
static tide_flush_t drain(tide_worker_t *w) {
    tide_flush_t r = TIDE_FLUSH_DONE;
    int64_t deadline = tide_mono_ms() + w->shutdown_timeout_ms;
    while (w->sending && (r = send_sink(w, 100)) == TIDE_FLUSH_PENDING && tide_mono_ms() < deadline) {
    }
    return r;
}

/* Partitions about to be taken away: commit (unless lost: they belong to
 * someone else already, and the new owner reprocesses from the last
 * commit; a transaction with their outputs must then be aborted). */
static void on_revoking(void *ud, const rd_kafka_topic_partition_list_t *parts, int lost) {
    tide_worker_t *w = ud;
    begin_rebalance(w);
    if (lost && !w->eos) return; /* their tasks' uncommitted writes go with them */
    tide_flush_t d = drain(w);
    tide_progress_t p = lost || d != TIDE_FLUSH_DONE
                            ? tide_committer_abandon(w->committer, parts)
                            : tide_committer_finish(w->committer, "revoke", parts);
    end_for(w, after(w, p));
}

/* Partitions given up: stop the tasks no input topic holds any more. */
static void on_revoked(void *ud, const rd_kafka_topic_partition_list_t *parts, int lost) {
    tide_worker_t *w = ud;
    int32_t *revoked = calloc((size_t)parts->cnt + 1, sizeof(*revoked));
    int n_revoked = 0;
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (tide_offsets_holds(tide_group_offsets(w->group), p) || !tide_tasks_has(w->tasks, p))
            continue;
        if (tide_tasks_stop(w->tasks, p)) tide_runtime_task(w->rt, p, 0, -1);
        if (revoked) revoked[n_revoked++] = p;
    }
    char desc[2048], field[2100];
    tide_group_describe(parts, desc, sizeof(desc));
    tide_json_str(field, sizeof(field), desc, strlen(desc));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, lost ? "partitions lost" : "partitions revoked",
               "partitions", field, (char *)NULL);
    tide_tasks_log_assignment(w->tasks, 0, revoked, n_revoked);
    free(revoked);
}

/* ---------------------------------------------------------------- batches */

static void on_lua_log(void *ud, tide_log_level_t level, const char *msg, const tide_rec_t *r) {
    (void)ud;
    tide_log(level, r ? (tide_log_at_t){r->topic, r->partition, r->offset} : TIDE_AT_NONE,
             "%s", msg);
}

/* Records that must not run: those the supervisor quarantined (they killed
 * workers), and those whose outputs Kafka refused (when they come again
 * after the rollback). */
static int unrun(void *ud, const char *topic, int32_t partition, int64_t offset, const char **cls,
                 const char **message) {
    tide_worker_t *w = ud;
    for (int i = 0; i < w->o->n_skip; i++) {
        char key[320];
        snprintf(key, sizeof(key), "%s:%d:%lld", topic, (int)partition, (long long)offset);
        if (strcmp(w->o->skip[i], key)) continue;
        *cls = "PoisonPill";
        *message = "the record killed or hung the detector's worker repeatedly and was "
                   "quarantined without running it again";
        return 1;
    }
    if (tide_committer_blame(w->committer, topic, partition, offset, message) != TIDE_BLAME_GUILTY)
        return 0;
    *cls = "ProductionError";
    return 1;
}

/* After a rollback, the records to blame are dealt with one at a time: a
 * record whose outputs shared a refused batch runs alone, with a commit
 * before and after it, so that a refusal names it or clears it; one that is
 * dead-lettered is committed before anything after it runs (a later
 * rollback then cannot send it twice). Returns how many of in[0..n) to
 * process now; the rest go back to their buffers. */
static int isolate(tide_worker_t *w, tide_buffered_t *in, int n) {
    int k = 0;
    tide_blame_t b = TIDE_BLAME_NONE;
    const char *why;
    for (; k < n && b == TIDE_BLAME_NONE; k++)
        b = tide_committer_blame(w->committer, rd_kafka_topic_name(in[k].m->rkt), in[k].m->partition,
                                 in[k].offset, &why);
    if (b == TIDE_BLAME_NONE) return n;
    k--; /* in[k] is the blamed record: it goes alone, between two commits */
    int keep = k > 0 ? k : tide_committer_dirty(w->committer) ? 0 : 1;
    tide_group_unshift(w->group, in + keep, n - keep);
    tide_committer_request(w->committer, b == TIDE_BLAME_GUILTY ? "after a dead letter"
                                                                : "trying a record alone");
    return keep;
}

/* Dispatch the batch laid out in the status block; returns the records
 * done (all, or those before one that stopped the detector or that must
 * wait, *st says which). */
static int dispatch(tide_worker_t *w, tide_batch_t *b, tide_status_t *st) {
    int64_t t = tide_mono_ms();
    if (!w->first_record_ms) w->first_record_ms = t;
    w->last_record_ms = t;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    tide_status_batch_begin(w->st, t);
    tide_status_t s = tide_runtime_dispatch(w->rt, b, tide_wall_ms(), tide_records_on_failure,
                                            w->records);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    tide_status_batch_end(w->st, (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    *st = s;
    return s == TIDE_STOPPED || s == TIDE_RETRY ? b->cursor : b->n;
}

/* The records from `done` on must wait (TIDE_RETRY: the schema registry is
 * unreachable): they go back to their buffers, so nothing past them is
 * committed, the lag shows the wait, and the next try comes a little later. */
static void retry_later(tide_worker_t *w, int done, int n) {
    tide_group_unshift(w->group, tide_records_in(w->records) + done, n - done);
    w->held = done;
    w->wait_until_ms = tide_mono_ms() + 100;
}

/* The next batch: take it in record-time order, run it, produce it. */
static tide_step_t process_batch(tide_worker_t *w) {
    tide_buffered_t *in = tide_records_in(w->records);
    int n = tide_group_take(w->group, in, w->max_batch);
    if (n) n = isolate(w, in, n);
    if (!n) return TIDE_STEP_OK;
    w->held = n;
    w->trimmed = 0;
    tide_batch_t *b = tide_records_lay_out(w->records, n, tide_group_offsets(w->group), w->rt);
    tide_status_t how = TIDE_OK;
    int done = b->n ? dispatch(w, b, &how) : 0;
    w->batch = b;
    if (how == TIDE_RETRY) retry_later(w, tide_records_taken_index(w->records, done), n);
    tide_records_processed(w->records, done);
    w->records_in += (uint64_t)done;
    w->batches += b->n > 0;
    tide_step_t s = sent_or_roll_back(w, send_sink(w, 100));
    if (s != TIDE_STEP_OK || done == b->n || how == TIDE_RETRY) return s;
    const tide_rec_t *r = &b->recs[done];
    tide_log(TIDE_LOG_ERROR, (tide_log_at_t){r->topic, r->partition, r->offset},
             "detector stopped on a failed record (on_error = \"stop\"); "
             "offsets are committed up to the record before it");
    return TIDE_STEP_STOPPED;
}

/* ---------------------------------------------------------------- periodic jobs */

/* Do the stores hold exactly the last commit? Every record processed is in
 * a commit that went through on our side (its outputs durable, its state
 * committed; the broker may still be acknowledging the offsets), nothing is
 * produced or in a transaction since, no commit or send is under way: what
 * a query may read (committed state only). */
static int at_commit(tide_worker_t *w) {
    if (w->sending || tide_committer_busy(w->committer) || tide_producer_in_flight(w->producer) ||
        tide_producer_in_txn(w->producer))
        return 0;
    const tide_offsets_t *o = tide_group_offsets(w->group);
    for (int i = 0; i < o->n; i++)
        if (o->p[i].processed >= 0 && o->p[i].durable <= o->p[i].processed) return 0;
    return 1;
}

/* Interactive queries read committed state: when some wait and the worker
 * has uncommitted work, it commits now (a query waits about one commit; at
 * most one such commit every QUERY_COMMIT_EVERY_MS), then answers them
 * before the next batch, a slice of time a pass. */
static tide_step_t job_queries(tide_worker_t *w, int64_t now) {
    if (!tide_query_poll(w->queries) || w->sending || tide_committer_busy(w->committer))
        return TIDE_STEP_OK;
    if (at_commit(w)) {
        tide_query_serve(w->queries, w->rt, w->tasks, QUERY_SLICE_MS);
    } else if (now >= w->query_commit_ms) {
        w->query_commit_ms = now + QUERY_COMMIT_EVERY_MS;
        tide_committer_request(w->committer, "query");
    }
    return TIDE_STEP_OK;
}

/* The task map for the directory; standby replicas, a slice of time a
 * pass (longer where the worker has nothing else to do). */
static tide_step_t job_replicas(tide_worker_t *w, int64_t now) {
    (void)now;
    tide_standby_sync(w->standby, w->info);
    tide_standby_step(w->standby, at_commit(w) ? STANDBY_SLICE_MS : STANDBY_SLICE_MS / 5);
    return TIDE_STEP_OK;
}

static tide_step_t job_punctuate(tide_worker_t *w, int64_t now) {
    (void)now;
    if (!w->info->n_punctuators && !w->info->n_stores) return TIDE_STEP_OK;
    if (w->sending || tide_committer_busy(w->committer)) return TIDE_STEP_OK;
    if (tide_runtime_punctuate(w->rt, tide_wall_ms()) > 0) tide_records_count_error(w->records);
    return sent_or_roll_back(w, send_sink(w, 100));
}

static tide_step_t job_publish(tide_worker_t *w, int64_t now) {
    (void)now;
    tide_status_sample_t s = {
        .records_in = w->records_in,
        .records_out = tide_producer_sent(w->producer),
        .dlq = tide_producer_dead_lettered(w->producer),
        .errors = tide_records_errors(w->records),
        .dropped = tide_records_dropped(w->records) + tide_group_dropped(w->group),
        .batches = w->batches,
        .rollbacks = tide_committer_rollbacks(w->committer),
        .lua_heap_bytes = tide_runtime_heap_bytes(w->rt),
        .restored_records = tide_tasks_restored_records(w->tasks),
        .store_memory_bytes = tide_tasks_store_memory(w->tasks),
        .assigned_partitions = tide_group_offsets(w->group)->n,
        .restoring_tasks = tide_tasks_restoring(w->tasks),
        .lag = w->st->lag,
    };
    tide_status_publish(w->st, &s);
    return TIDE_STEP_OK;
}

/* Idle: hand the consumer's freed fetch buffers back to the OS, or an idle
 * worker keeps tens of MB it does not use; the partitions' buffers and the
 * arenas go too (they grow again with the next records). */
static tide_step_t job_trim(tide_worker_t *w, int64_t now) {
    if (!w->trimmed && w->last_record_ms && now - w->last_record_ms > 1000) {
        tide_offsets_trim(tide_group_offsets(w->group));
        if (!w->sending) tide_sink_shrink(tide_runtime_sink(w->rt));
        tide_producer_trim(w->producer);
        malloc_trim(0);
        w->trimmed = 1;
    }
    return TIDE_STEP_OK;
}

/* Waiting for the broker: a commit that waits for it, or librdkafka finding
 * none up (an idle worker commits nothing, but is not ready either). */
static void broker_watch(tide_worker_t *w) {
    int64_t a = tide_committer_waiting_since(w->committer);
    int64_t b = tide_group_unreachable_since(w->group);
    int64_t since = a && b ? (a < b ? a : b) : a ? a : b, was = w->st->broker_waiting_since_ms;
    if (since && !was)
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "broker unreachable: %s; nothing is committed "
                 "past what it has acknowledged, and the worker waits for it",
                 b ? "librdkafka finds no broker up" : "a commit waits for its acknowledgements");
    if (!since && was)
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "broker reachable again after %lld s",
                 (long long)((tide_wall_ms() - was) / 1000));
    w->st->broker_waiting_since_ms = since;
}

static tide_step_t job_lag(tide_worker_t *w, int64_t now) {
    (void)now;
    broker_watch(w);
    w->st->lag = tide_group_lag(w->group);
    w->st->dropped_late = tide_runtime_dropped_late(w->rt);
    return TIDE_STEP_OK;
}

static tide_step_t job_commit(tide_worker_t *w, int64_t now) {
    (void)now;
    if (tide_committer_dirty(w->committer)) tide_committer_request(w->committer, "interval");
    return TIDE_STEP_OK;
}

static tide_step_t job_checkpoint(tide_worker_t *w, int64_t now) {
    (void)now;
    return tide_committer_tick(w->committer) == TIDE_PROGRESS_FATAL ? TIDE_STEP_FAILED : TIDE_STEP_OK;
}

/* The store cache is over its budget: commit now rather than spill. */
static tide_step_t job_pressure(tide_worker_t *w, int64_t now) {
    (void)now;
    if (tide_tasks_pressure(w->tasks)) tide_committer_request(w->committer, "state cache full");
    return TIDE_STEP_OK;
}

/* A missing output topic: look again; once it exists, resume. */
static tide_step_t job_missing(tide_worker_t *w, int64_t now) {
    (void)now;
    snprintf(w->st->missing_topic, sizeof(w->st->missing_topic), "%s", w->missing);
    if (!w->missing[0]) {
        w->st->missing_topic_since_ms = 0;
        return TIDE_STEP_OK;
    }
    if (!w->st->missing_topic_since_ms) w->st->missing_topic_since_ms = tide_wall_ms();
    if (tide_topics_exists(w->o->config, w->o->bootstraps, w->missing, 2000) != 1)
        return TIDE_STEP_OK;
    tide_log(TIDE_LOG_INFO, (tide_log_at_t){w->missing, -1, -1},
             "output topic %s exists now: resuming", w->missing);
    w->missing[0] = '\0';
    tide_group_pause_all(w->group, TIDE_PAUSE_HOLD, 0);
    return TIDE_STEP_OK;
}

static void init_jobs(tide_worker_t *w) {
    const tide_job_t jobs[N_JOBS] = {
        {"queries", 0, job_queries, 0}, /* first: before anything writes a store */
        {"replicas", 0, job_replicas, 0},
        {"punctuate", 0, job_punctuate, 0},
        {"publish", 0, job_publish, 0},
        {"trim", 0, job_trim, 0},
        {"lag", 1000, job_lag, 0},
        {"commit", tide_config_int(w->o->config, TIDE_CFG_COMMIT_INTERVAL_MS), job_commit, 0},
        {"pressure", 0, job_pressure, 0},
        {"missing topic", 2000, job_missing, 0},
        {"checkpoint", 250, job_checkpoint, 0},
    };
    int64_t now = tide_mono_ms();
    for (int i = 0; i < N_JOBS; i++) {
        w->jobs[i] = jobs[i];
        w->jobs[i].next_ms = now + jobs[i].period_ms;
    }
}

static tide_step_t run_jobs(tide_worker_t *w) {
    int64_t now = tide_mono_ms();
    for (int i = 0; i < N_JOBS; i++) {
        tide_job_t *j = &w->jobs[i];
        if (now < j->next_ms) continue;
        j->next_ms = now + j->period_ms;
        tide_step_t s = j->run(w, now);
        if (s != TIDE_STEP_OK) return s;
    }
    return TIDE_STEP_OK;
}

/* ---------------------------------------------------------------- topics */

static int detector_topics(const tide_worker_t *w, tide_topic_req_t *out, int max) {
    int n_all, n = 0;
    char *const *all = tide_tasks_changelogs(w->tasks, &n_all);
    char *changelogs[TIDE_TOPICS_MAX]; /* (a global table's store has none: NULL) */
    for (int i = 0; i < n_all && n < TIDE_TOPICS_MAX; i++)
        if (all[i]) changelogs[n++] = all[i];
    return tide_topics_of(w->o->config, w->info, w->dlq, changelogs, n, out, max);
}

/* The same, and the topics of the global tables: what a development broker
 * must hold (on any other, a global table's topic is the user's to make). */
static int dev_topics(const tide_worker_t *w, tide_topic_req_t *out, int max) {
    int n = detector_topics(w, out, max);
    for (int s = 0; s < w->info->n_stores && n < max; s++)
        if (w->info->store_global[s])
            out[n++] = (tide_topic_req_t){.name = w->info->store_global[s], .kind = TIDE_TOPIC_SOURCE};
    return n;
}

/* On a broker that does not create our topics itself (a real Kafka, or a
 * `tide broker`), make the ones tide owns exist before the producer or the
 * consumer looks them up; note an output or dead-letter topic missing. */
static void ensure_topics(tide_worker_t *w) {
    if (w->o->dev || w->o->await_topics) return;
    tide_topic_req_t t[TIDE_TOPICS_MAX];
    int n = detector_topics(w, t, TIDE_TOPICS_MAX);
    tide_topics_ensure(w->o->config, w->o->bootstraps, t, n, w->shutdown_timeout_ms);
    for (int i = 0; i < n && !w->missing[0]; i++) {
        if (t[i].partitions != 0 || t[i].kind == TIDE_TOPIC_SOURCE) continue;
        snprintf(w->missing, sizeof(w->missing), "%s", t[i].name);
        tide_log(TIDE_LOG_ERROR, (tide_log_at_t){t[i].name, -1, -1},
                 "topic %s of detector %s does not exist: holding its inputs until it does "
                 "(create it%s)", t[i].name, w->info->name,
                 t[i].kind == TIDE_TOPIC_OUTPUT ? ", or set output.topics.create=true" : "");
    }
}

/* Under a supervisor that runs the development broker, the topics must exist
 * before we subscribe: declare them and wait (bounded) until it says so. */
static void declare_topics(tide_worker_t *w) {
    tide_status_block_t *st = w->st;
    if (!w->o->await_topics) return;
    st->topics_ready = 0;
    tide_topic_req_t t[TIDE_STATUS_TOPICS];
    int n = dev_topics(w, t, TIDE_STATUS_TOPICS);
    for (int i = 0; i < n; i++) snprintf(st->declared[i], sizeof(st->declared[0]), "%s", t[i].name);
    __atomic_store_n(&st->n_declared, n, __ATOMIC_RELEASE);
    for (int i = 0; i < 300 && !__atomic_load_n(&st->topics_ready, __ATOMIC_ACQUIRE); i++) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Our own in-process broker starts empty: give the detector its topics. */
static void create_dev_topics(tide_worker_t *w) {
    if (!w->o->dev) return;
    tide_topic_req_t t[TIDE_TOPICS_MAX];
    int n = dev_topics(w, t, TIDE_TOPICS_MAX);
    char *err = NULL;
    for (int i = 0; i < n; i++) {
        if (!tide_devbroker_create_topic(w->o->dev, t[i].name, 0, &err)) continue;
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        return;
    }
}

/* Subscribe to the detector's inputs (again, after a swap changed them). */
static int subscribe(tide_worker_t *w) {
    declare_topics(w);
    begin_rebalance(w);
    char *err = NULL;
    if (!tide_group_subscribe(w->group, w->info->inputs, w->info->n_inputs, &err)) return 0;
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
    free(err);
    return -1;
}

/* ---------------------------------------------------------------- reload */

static tide_runtime_t *open_runtime(tide_worker_t *w, char **errp) {
    tide_runtime_opts_t ro = {
        .memory_limit = (size_t)tide_config_int(w->o->config, TIDE_CFG_DETECTOR_MEMORY_LIMIT_BYTES),
        .log = on_lua_log,
        .api = &tide_records_api,
        .open_db = tide_tasks_open_db,
        .open_db_ud = w->tasks,
        .application_id = tide_config_str(w->o->config, TIDE_CFG_APPLICATION_ID),
        .source_copy = w->o->source_copy,
    };
    tide_config_registry(w->o->config, &ro.registry);
    tide_runtime_t *rt = NULL;
    if (tide_runtime_open(&ro, w->o->path, &rt, errp) != TIDE_OK) return NULL;
    return rt;
}

/* Do two detector versions declare the same stores? (Store ids are their
 * positions, so the database layout depends on it.) */
static int same_stores(const tide_detector_info_t *a, const tide_detector_info_t *b) {
    if (a->n_stores != b->n_stores) return 0;
    for (int i = 0; i < a->n_stores; i++)
        if (strcmp(a->store_names[i], b->store_names[i]) || a->store_memory[i] != b->store_memory[i] ||
            !a->store_global[i] != !b->store_global[i] ||
            (a->store_global[i] && strcmp(a->store_global[i], b->store_global[i])))
            return 0;
    return 1;
}

static int same_list(char **a, int na, char **b, int nb) {
    if (na != nb) return 0;
    for (int i = 0; i < na; i++)
        if (strcmp(a[i], b[i])) return 0;
    return 1;
}

/* A new version that does not validate changes nothing; say why, where the
 * supervisor and the status page see it. */
static tide_step_t reload_refused(tide_worker_t *w, tide_runtime_t *nrt, const char *why) {
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "reload refused, the running version stays: %s", why);
    tide_status_reload(w->st, NULL, why);
    w->st->state = TIDE_WS_RUNNING;
    tide_runtime_close(nrt);
    return TIDE_STEP_OK;
}

static int64_t old_stream_time(void *ud, int32_t p) {
    return tide_runtime_stream_time(((tide_worker_t *)ud)->rt, p);
}

/* Swap to the validated runtime nrt between two transactions: what the old
 * version did is committed, then its close(ctx) runs and what that emits is
 * committed too; the tasks restart on the new version. */
static tide_step_t swap(tide_worker_t *w, tide_runtime_t *nrt, int topics_changed) {
    tide_step_t s = after(w, tide_committer_finish(w->committer, "swap", NULL));
    tide_runtime_stop(w->rt);
    if (s == TIDE_STEP_OK && drain(w) == TIDE_FLUSH_DONE)
        s = after(w, tide_committer_finish(w->committer, "swap", NULL));
    tide_sink_clear(tide_runtime_sink(w->rt));
    tide_tasks_restart(w->tasks, old_stream_time, w); /* reads the old runtime's times */
    tide_runtime_close(w->rt);
    w->rt = nrt;
    w->info = tide_runtime_info(nrt);
    tide_tasks_set_info(w->tasks, w->info);
    if (topics_changed) ensure_topics(w);
    tide_producer_set_outputs(w->producer, w->info->outputs, w->info->n_outputs);
    return s;
}

/* Hot swap at a batch boundary, between transactions: compile and validate
 * the file in a fresh runtime while the old one stays; swap only if it is
 * sound. Offsets, group membership and the producer stay. */
static tide_step_t reload(tide_worker_t *w) {
    w->st->state = TIDE_WS_RELOADING;
    char *err = NULL;
    tide_runtime_t *nrt = open_runtime(w, &err);
    if (!nrt) {
        tide_step_t s = reload_refused(w, NULL, err);
        free(err);
        return s;
    }
    const tide_detector_info_t *ni = tide_runtime_info(nrt);
    if (!same_stores(ni, w->info)) {
        char msg[4400];
        snprintf(msg, sizeof(msg), "%s: the new version declares different stores; a hot swap "
                 "keeps the same stores (rename the detector to start it anew with new ones)",
                 w->o->path);
        return reload_refused(w, nrt, msg);
    }
    if (strcmp(ni->name, w->info->name)) {
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "the new version renames the detector to %s: "
                 "stopping this one", ni->name);
        tide_runtime_close(nrt);
        return TIDE_STEP_RENAMED;
    }
    int inputs_changed = !same_list(ni->inputs, ni->n_inputs, w->info->inputs, w->info->n_inputs);
    int topics_changed = inputs_changed ||
        !same_list(ni->outputs, ni->n_outputs, w->info->outputs, w->info->n_outputs);
    tide_step_t s = swap(w, nrt, topics_changed);
    char v[64];
    tide_json_str(v, sizeof(v), ni->version, strlen(ni->version));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "detector reloaded", "version", v, (char *)NULL);
    if (s == TIDE_STEP_OK && inputs_changed) {
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "inputs changed: re-subscribing");
        if (subscribe(w)) s = TIDE_STEP_FAILED;
    }
    tide_records_policy(w->records, ni->on_error);
    tide_status_reload(w->st, ni->version, NULL);
    tide_status_detector(w->st, ni->name, ni->version, ni->description);
    tide_status_topology(w->st, ni->topology);
    w->st->state = TIDE_WS_RUNNING;
    return s;
}

/* ---------------------------------------------------------------- start */

static void on_restore_memory(void *ud, int store, int32_t partition, const char *key, size_t klen,
                              const char *val, size_t vlen) {
    tide_runtime_restore(((tide_worker_t *)ud)->rt, store, partition, key, klen, val, vlen);
}

static int64_t on_acked(void *ud, int store, int32_t partition) {
    return tide_producer_changelog_offset(((tide_worker_t *)ud)->producer, store, partition);
}

/* Load the detector; the tasks exist first, as the runtime opens their
 * database. TIDE_WORKER_LOAD_FAILED when the detector does not load. */
static tide_worker_exit_t open_detector(tide_worker_t *w) {
    char *err = NULL;
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "loading %s", w->o->path);
    tide_tasks_opts_t to = {
        .config = w->o->config, .bootstraps = w->o->bootstraps,
        .cb = {.on_ready = on_task_ready, .restore_memory = on_restore_memory,
               .acked = on_acked, .ud = w},
    };
    w->tasks = tide_tasks_new(&to, &err);
    if (w->tasks) w->rt = open_runtime(w, &err);
    if (!w->rt) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "detector %s refused: %s", w->o->path, err);
        w->st->last_reload_ok = 0;
        snprintf(w->st->last_reload_error, sizeof(w->st->last_reload_error), "%s", err);
        w->st->last_reload_ms = tide_wall_ms();
        free(err);
        return TIDE_WORKER_LOAD_FAILED;
    }
    w->info = tide_runtime_info(w->rt);
    if (tide_tasks_set_info(w->tasks, w->info)) return TIDE_WORKER_FAILED;
    tide_log_set_detector(w->info->name);
    char v[64];
    tide_json_str(v, sizeof(v), w->info->version, strlen(w->info->version));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "detector loaded", "version", v, (char *)NULL);
    tide_status_detector(w->st, w->info->name, w->info->version, w->info->description);
    tide_status_topology(w->st, w->info->topology);
    tide_records_policy(w->records, w->info->on_error);
    return TIDE_WORKER_RUNNING;
}

/* A detector with state and more than one input needs each partition
 * number of all its inputs in one place: a join reads the table's store of
 * the stream record's partition, and a repartitioned aggregation's task is
 * that of its input partition. Kafka Streams has its own assignor for this;
 * librdkafka's range assignor gives the same (partition i of every topic to
 * one member, when the topics have as many partitions), at the price of
 * eager rebalances. Everything else stays cooperative. */
static int co_partitioned(const tide_worker_t *w) {
    return w->info->n_inputs > 1 && w->info->n_stores > 0;
}

/* The worker's group.instance.id into buf, or NULL for dynamic membership:
 * auto is <application.id>.<detector>-<process id>, the process id kept in
 * state.dir (txnid.h), so a restart on this host is the same member. */
static const char *instance_id(tide_worker_t *w, char *buf, size_t cap) {
    const char *v = tide_config_str(w->o->config, TIDE_CFG_GROUP_INSTANCE_ID);
    if (!*v || !strcmp(v, "none")) return NULL;
    if (strcmp(v, "auto")) return v;
    char *err = NULL;
    if (!tide_txnid_make(w->o->config, w->info->name, buf, cap, &err)) return buf;
    tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "no group.instance.id (%s): dynamic membership", err);
    free(err);
    return NULL;
}

static int open_group(tide_worker_t *w) {
    char id[512], member[600], *err = NULL;
    const tide_config_t *c = w->o->config;
    snprintf(id, sizeof(id), "%s.%s", tide_config_str(c, TIDE_CFG_APPLICATION_ID), w->info->name);
    tide_group_opts_t go = {
        .config = c, .bootstraps = w->o->bootstraps, .group_id = id,
        .co_partitioned = co_partitioned(w), .transactional = w->eos,
        .buffered_max = (int)tide_config_int(c, TIDE_CFG_BUFFERED_RECORDS_PER_PARTITION),
        .order = {.idle_ms = tide_config_int(c, TIDE_CFG_MAX_TASK_IDLE_MS), .lag_wait_ms = 5000},
        .cb = {.on_assigned = on_assigned, .on_revoking = on_revoking, .on_revoked = on_revoked, .ud = w},
        .meta = stream_time_meta, .meta_ud = w, .instance_id = instance_id(w, member, sizeof(member)),
    };
    w->group = tide_group_new(&go, &err);
    if (!w->group) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        return -1;
    }
    if (subscribe(w)) return -1;
    if (go.instance_id)
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "joining consumer group %s as static member %s", id,
                 go.instance_id);
    else
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "joining consumer group %s", id);
    if (co_partitioned(w))
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE,
                 "stateful with %d inputs: co-partitioned range assignment (eager rebalances); "
                 "the inputs must have as many partitions", w->info->n_inputs);
    return 0;
}

/* Under exactly-once: fence any older instance of this worker and get the
 * producer ready, waiting for the broker as long as it takes (or a stop). */
static tide_step_t init_transactions(tide_worker_t *w) {
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE,
             "exactly_once_v2: transactional.id %s; group fencing (KIP-447) needs brokers 2.5 "
             "or later (older ones keep transactions atomic without the generation check)",
             w->st->transactional_id);
    for (;;) {
        char *err = NULL;
        tide_txn_t r = tide_producer_init_txn(w->producer, 5000, &err);
        if (r == TIDE_TXN_DONE) {
            tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "transactions ready: an older instance with this "
                     "transactional.id is fenced, and its open transaction aborted");
            return TIDE_STEP_OK;
        }
        tide_log(r == TIDE_TXN_FATAL ? TIDE_LOG_ERROR : TIDE_LOG_WARN, TIDE_AT_NONE, "%s", err);
        free(err);
        if (r == TIDE_TXN_FATAL) return TIDE_STEP_FENCED;
        if (*w->o->stop) return TIDE_STEP_FAILED;
    }
}

static int open_producer(tide_worker_t *w) {
    char *err = NULL, txn_id[600];
    if (w->eos && tide_txnid_make(w->o->config, w->info->name, txn_id, sizeof(txn_id), &err))
        goto fail;
    if (w->eos) snprintf(w->st->transactional_id, sizeof(w->st->transactional_id), "%s", txn_id);
    tide_producer_opts_t po = {
        .config = w->o->config, .bootstraps = w->o->bootstraps, .outputs = w->info->outputs,
        .n_outputs = w->info->n_outputs, .dlq = w->dlq, .transactional_id = w->eos ? txn_id : NULL,
    };
    w->producer = tide_producer_new(&po, &err);
    int n_changelogs;
    char *const *changelogs = tide_tasks_changelogs(w->tasks, &n_changelogs);
    if (!w->producer || (n_changelogs && tide_producer_set_changelogs(w->producer, changelogs, n_changelogs)))
        goto fail;
    return 0;
fail:
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err ? err : "out of memory");
    free(err);
    return -1;
}

/* librdkafka's mock cluster (the development broker, `tide broker`) names
 * itself mockCluster...: say once what exactly-once there cannot do. */
static void warn_if_mock(tide_worker_t *w) {
    char *id = rd_kafka_clusterid(tide_producer_handle(w->producer), 2000);
    if (id && !strncmp(id, "mockCluster", 11))
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE,
                 "exactly_once_v2 on the development broker: transactions run, but its readers "
                 "see aborted records and it stores no transactional offsets (a restart reads "
                 "from the start); only a real Kafka shows exactly-once");
    if (id) rd_kafka_mem_free(NULL, id);
}

/* The detector's global tables, read to their end before it joins its group
 * (see global.h); their store writes commit and roll back with the tasks'.
 * 0, 1 when asked to stop meanwhile, -1 failed. */
static int open_globals(tide_worker_t *w) {
    const tide_detector_info_t *d = w->info;
    tide_global_spec_t specs[64];
    int n = 0;
    for (int s = 0; s < d->n_stores && n < 64; s++)
        if (d->store_global[s]) specs[n++] = (tide_global_spec_t){d->store_global[s], s, d->store_names[s]};
    if (!n) return 0;
    char path[4300], *err = NULL;
    const char *dir = tide_tasks_state_dir(w->tasks); /* (a global table is in RocksDB) */
    if (!dir) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "global tables need the store database");
        return -1;
    }
    snprintf(path, sizeof(path), "%s/global-checkpoint", dir);
    w->globals = tide_globals_open(w->o->config, w->o->bootstraps, tide_tasks_db(w->tasks), path,
                                   specs, n, &err);
    tide_global_result_t r = w->globals ? tide_globals_bootstrap(w->globals, w->o->stop, &err)
                                        : TIDE_GLOBAL_FAILED;
    if (r == TIDE_GLOBAL_OK) {
        tide_tasks_set_globals(w->tasks, w->globals);
        return 0;
    }
    if (r == TIDE_GLOBAL_STOPPED) return 1;
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err ? err : "global tables: out of memory");
    free(err);
    return -1;
}

/* The topics, the producer, the committer, the restorer, the global tables
 * and the group. */
static tide_step_t connect_kafka(tide_worker_t *w) {
    char *err = NULL;
    snprintf(w->dlq, sizeof(w->dlq), "%s.%s-dlq",
             tide_config_str(w->o->config, TIDE_CFG_APPLICATION_ID), w->info->name);
    snprintf(w->st->guarantee, sizeof(w->st->guarantee), "%s", w->eos ? "exactly_once_v2" : "at_least_once");
    ensure_topics(w);
    create_dev_topics(w);
    if (open_producer(w)) return TIDE_STEP_FAILED;
    if (w->eos) warn_if_mock(w);
    if (tide_tasks_open_restorer(w->tasks, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        return TIDE_STEP_FAILED;
    }
    tide_step_t s = w->eos ? init_transactions(w) : TIDE_STEP_OK;
    if (s != TIDE_STEP_OK) return s;
    int g = open_globals(w);
    if (g > 0) return TIDE_STEP_STOPPED_EARLY;
    if (g < 0) return TIDE_STEP_FAILED;
    /* (The group calls back into the committer only while it polls.) */
    if (open_group(w)) return TIDE_STEP_FAILED;
    tide_committer_opts_t co = {
        .group = w->group, .producer = w->producer, .tasks = w->tasks, .rt = &w->rt, .st = w->st,
        .eos = w->eos, .shutdown_timeout_ms = w->shutdown_timeout_ms,
    };
    w->committer = tide_committer_new(&co);
    tide_standby_opts_t so = {
        .config = w->o->config, .bootstraps = w->o->bootstraps, .tasks = w->tasks,
        .consumer = tide_group_consumer(w->group), .input_topic = w->info->inputs[0], .st = w->st,
    };
    w->standby = tide_standby_new(&so);
    return w->committer && w->standby ? TIDE_STEP_OK : TIDE_STEP_FAILED;
}

/* ---------------------------------------------------------------- the loop */

/* Fetch, waiting only when there is nothing to do: nothing buffered, or
 * only what must wait for a partition that has nothing yet (spinning then
 * would take the core the fetch needs). */
static void fetch(tide_worker_t *w, int restoring) {
    int idle = !restoring && !w->sending && !tide_committer_busy(w->committer) &&
               (!tide_offsets_buffered(tide_group_offsets(w->group)) || tide_group_starved(w->group));
    tide_group_fill(w->group, idle ? 100 : 0);
}

/* One pass of the loop: a restore step, a fetch, then one of: the sink
 * still being produced, the commit under way, a reload, or the next batch;
 * then the jobs. Returns what ends the worker, or TIDE_STEP_OK. */
static tide_step_t pass(tide_worker_t *w) {
    if (w->o->reload && *w->o->reload) {
        *w->o->reload = 0;
        w->reload_wanted = 1;
    }
    int restoring = tide_tasks_restoring(w->tasks);
    if (restoring) {
        tide_tasks_poll(w->tasks, 10);
        w->last_record_ms = tide_mono_ms(); /* restoring is not idle */
        settle(w);
    }
    char *err = NULL;
    if (w->globals && tide_globals_poll(w->globals, &err) != TIDE_GLOBAL_OK) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "global tables: %s", err ? err : "failed");
        free(err);
        return TIDE_STEP_FAILED;
    }
    fetch(w, restoring);
    if (tide_group_fatal(w->group)) return TIDE_STEP_FENCED;
    tide_step_t s = TIDE_STEP_OK;
    if (w->sending) s = sent_or_roll_back(w, send_sink(w, 100));
    else if (tide_committer_busy(w->committer)) s = after(w, tide_committer_step(w->committer, 100));
    else if (w->reload_wanted) {
        w->reload_wanted = 0;
        s = reload(w);
    } else if (!w->missing[0] && tide_mono_ms() >= w->wait_until_ms) {
        s = process_batch(w);
    }
    tide_producer_poll(w->producer);
    if (s == TIDE_STEP_OK) s = run_jobs(w);
    return s;
}

/* Is the run over as asked (a record count or an idle time reached)? */
static int run_done(const tide_worker_t *w) {
    const tide_worker_opts_t *o = w->o;
    if (o->max_records && w->records_in >= o->max_records) return 1;
    return o->idle_timeout_ms && tide_group_assigned_once(w->group) &&
           tide_mono_ms() - w->last_record_ms >= o->idle_timeout_ms;
}

static void loop(tide_worker_t *w) {
    while (w->end == TIDE_WORKER_RUNNING && !*w->o->stop) {
        end_for(w, pass(w));
        if (run_done(w)) worker_end(w, TIDE_WORKER_DONE);
    }
    worker_end(w, TIDE_WORKER_DONE); /* stopped by a signal */
}

/* ---------------------------------------------------------------- stop */

static void on_shutdown_timeout(int sig) {
    static const char msg[] =
        "{\"level\":\"error\",\"msg\":\"shutdown took too long: exiting without leaving the group\"}\n";
    (void)sig;
    ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    _exit(TIDE_WORKER_FAILED);
}

static void log_stopped(tide_worker_t *w, int64_t end_ms) {
    char in[32], out[32], dlq[32], errs[32], drop[32], el[32], rate[32], rss[32], heap[32];
    int64_t elapsed = w->first_record_ms ? end_ms - w->first_record_ms : 0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    snprintf(in, sizeof(in), "%" PRIu64, w->records_in);
    snprintf(out, sizeof(out), "%" PRIu64, tide_producer_sent(w->producer));
    snprintf(dlq, sizeof(dlq), "%" PRIu64, tide_producer_dead_lettered(w->producer));
    snprintf(errs, sizeof(errs), "%" PRIu64, tide_records_errors(w->records));
    snprintf(drop, sizeof(drop), "%" PRIu64, tide_records_dropped(w->records) + tide_group_dropped(w->group));
    snprintf(el, sizeof(el), "%" PRId64, elapsed);
    snprintf(rate, sizeof(rate), "%.0f", elapsed > 0 ? w->records_in * 1000.0 / elapsed : 0.0);
    snprintf(rss, sizeof(rss), "%ld", ru.ru_maxrss);
    snprintf(heap, sizeof(heap), "%zu", w->rt ? tide_runtime_heap_peak(w->rt) : (size_t)0);
    char late[32], commits[32], rollbacks[32];
    snprintf(late, sizeof(late), "%" PRIu64, tide_runtime_dropped_late(w->rt));
    snprintf(commits, sizeof(commits), "%" PRIu64, tide_committer_commits(w->committer));
    snprintf(rollbacks, sizeof(rollbacks), "%" PRIu64, tide_committer_rollbacks(w->committer));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "stopped", "records_in", in, "records_out", out,
               "dlq", dlq, "errors", errs, "dropped", drop, "dropped_late", late,
               "commits", commits, "rollbacks", rollbacks, "elapsed_ms", el, "rate", rate,
               "max_rss_kb", rss, "lua_heap_peak_bytes", heap, (char *)NULL);
}

/* Did the worker end as asked (not on an error)? */
static int exit_ok(tide_worker_exit_t e) {
    return e == TIDE_WORKER_DONE || e == TIDE_WORKER_RENAMED;
}

/* Shutdown: close(ctx) may still emit; produce that, commit (the
 * transaction ends, committed or aborted: never left open) and leave the
 * group (the revoke that follows finds nothing to commit). A fenced worker
 * commits nothing. Never hang on the way out: a group that does not let go
 * is left to its session timeout. */
static void shut_down(tide_worker_t *w) {
    set_state(w, exit_ok(w->end) ? STATE_PENDING_SHUTDOWN : STATE_PENDING_ERROR);
    w->st->state = TIDE_WS_STOPPING;
    signal(SIGALRM, on_shutdown_timeout);
    alarm((unsigned)(w->shutdown_timeout_ms / 1000) * 2 + 5);
    if (w->end != TIDE_WORKER_FENCED) {
        if (w->end != TIDE_WORKER_FAILED) tide_runtime_stop(w->rt);
        tide_progress_t p = drain(w) == TIDE_FLUSH_DONE && w->end != TIDE_WORKER_FAILED
                                ? tide_committer_finish(w->committer, "shutdown", NULL)
                                : tide_committer_abandon(w->committer, NULL);
        if (p == TIDE_PROGRESS_FATAL) w->end = TIDE_WORKER_FAILED; /* the one revision of an end */
    }
    job_publish(w, 0);
    log_stopped(w, tide_mono_ms());
    /* A static member leaves only when asked to stop, never on a failure:
     * its restart takes its partitions back (leave.group.on.close). */
    int leave = exit_ok(w->end) &&
                !strcmp(tide_config_str(w->o->config, TIDE_CFG_LEAVE_GROUP_ON_CLOSE), "true");
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "leaving consumer group");
    if (tide_group_close(w->group, leave))
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "left consumer group");
    else
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "closed without leaving the consumer group: a static "
                 "member's partitions wait for it until session.timeout.ms");
}

static void worker_free(tide_worker_t *w) {
    if (w->held) tide_records_release(w->records, w->held);
    tide_committer_free(w->committer);
    /* before the consumer goes: arenas not produced still hold its messages */
    tide_producer_free(w->producer);
    tide_group_free(w->group);
    tide_runtime_close(w->rt);
    tide_globals_free(w->globals);
    tide_tasks_free(w->tasks);
    tide_records_free(w->records);
    tide_query_free(w->queries);
    tide_standby_free(w->standby);
    if (!w->o->status) tide_status_unmap(w->st);
}

tide_worker_exit_t tide_worker_run(const tide_worker_opts_t *o) {
    tide_worker_t wk = {.o = o, .end = TIDE_WORKER_RUNNING}, *w = &wk;
    /* Blocks of 256 KiB and more (a fetch's buffers: up to 10 MB on the
     * development broker) are mapped and unmapped each time. glibc's moving
     * threshold would instead keep them in the fetching thread's heap, whose
     * free top malloc_trim cannot give back: idle workers kept 17 MB more,
     * for about 1% of the read rate. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    w->st = o->status ? o->status : tide_status_private();
    if (!w->st) return TIDE_WORKER_FAILED;
    w->st->pid = (int32_t)getpid();
    w->st->state = TIDE_WS_STARTING;
    w->eos = tide_config_eos(o->config);
    w->max_batch = (int)tide_config_int(o->config, TIDE_CFG_MAX_POLL_RECORDS);
    w->shutdown_timeout_ms = (int)tide_config_int(o->config, TIDE_CFG_SHUTDOWN_TIMEOUT_MS);
    tide_records_opts_t ro = {.max = w->max_batch, .st = w->st, .unrun = unrun, .ud = w};
    w->records = tide_records_new(&ro);
    if (!w->records) worker_end(w, TIDE_WORKER_FAILED);
    else worker_end(w, open_detector(w));
    if (w->end == TIDE_WORKER_RUNNING) end_for(w, connect_kafka(w));
    if (w->group && w->committer) {
        if (o->query_fd > 0) w->queries = tide_query_new(o->query_fd);
        w->st->state = TIDE_WS_RUNNING;
        init_jobs(w);
        loop(w);
        shut_down(w);
    }
    set_state(w, exit_ok(w->end) ? STATE_NOT_RUNNING : STATE_ERROR);
    tide_worker_exit_t end = w->end;
    worker_free(w);
    alarm(0);
    return end;
}
