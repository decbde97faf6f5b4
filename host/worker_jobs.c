/*
 * worker_jobs.c: the jobs a worker's loop runs every period (worker_int.h),
 * as Redis's serverCron runs its jobs with run_with_period: commits at
 * their interval, checkpoints, punctuation, the status block, lag and the
 * broker's reachability, memory given back when idle, interactive queries,
 * standby replicas and a missing output topic looked for again.
 *
 * A job never blocks the loop for long: each does one slice and returns.
 */
#include <malloc.h>
#include <stdio.h>

#include "log.h"
#include "topics.h"
#include "worker_int.h"

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
    return tide_worker_sent_or_roll_back(w, tide_worker_send_sink(w, 100));
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

void tide_worker_init_jobs(tide_worker_t *w) {
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

tide_step_t tide_worker_run_jobs(tide_worker_t *w) {
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

void tide_worker_publish(tide_worker_t *w) {
    job_publish(w, 0);
}
