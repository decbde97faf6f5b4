/*
 * worker.c: the record loop of one detector (see worker.h).
 *
 * Composes the parts: the runtime (the detector's Lua), the group (consumer,
 * assignment, offsets), the tasks (stores, restores, checkpoints), the
 * producer and the status block. Its loop polls a batch, hands it to the
 * runtime in one call, produces what the detector emitted and runs the
 * periodic jobs. It is the go-between on rebalances, so the group and the
 * tasks never call each other.
 *
 * At-least-once, honestly: an offset is committed only after the producer has
 * acknowledged every output of the records before it (flush, then commit).
 * Never commits ahead of what is durable; never calls into Lua except through
 * the runtime. A worker ends for one reason, set in one place (worker_end).
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

#include "devbroker.h"
#include "global.h"
#include "group.h"
#include "log.h"
#include "produce.h"
#include "records.h"
#include "runtime.h"
#include "status.h"
#include "task.h"
#include "topics.h"

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
    TIDE_STEP_FAILED,  /* the worker must end; the reason is logged */
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

enum { N_JOBS = 5 };

struct tide_worker {
    const tide_worker_opts_t *o;
    tide_runtime_t *rt;
    const tide_detector_info_t *info;
    tide_group_t *group;
    tide_tasks_t *tasks;
    tide_producer_t *producer;
    tide_globals_t *globals; /* the global tables, NULL when none */
    tide_status_block_t *st; /* shared with the supervisor, or private */
    tide_job_t jobs[N_JOBS];
    tide_records_t *records;
    int max_batch;
    int shutdown_timeout_ms;
    char dlq[512]; /* <application.id>.<detector>-dlq */
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

/* ---------------------------------------------------------------- commits */

/* Stream time rides with the committed offsets, in their metadata, as in
 * Kafka Streams: a task that moves or restarts keeps its windows closed and
 * its punctuation schedule. */
#define STREAM_TIME_META "tide:stream-time="

static size_t stream_time_meta(void *ud, int32_t partition, char *buf, size_t cap) {
    tide_worker_t *w = ud;
    int64_t st = tide_runtime_stream_time(w->rt, partition);
    int n = st >= 0 ? snprintf(buf, cap, STREAM_TIME_META "%lld", (long long)st) : 0;
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* Commit what was processed, for every partition or only those in `only`:
 * the outputs acknowledged first, then the stores made durable, then the
 * offsets. TIDE_STEP_FAILED when outputs or stores are not durable (nothing
 * is committed); a commit the broker defers or refuses is retried later. */
static tide_step_t commit(tide_worker_t *w, const rd_kafka_topic_partition_list_t *only,
                          const char *why, int async) {
    char *err = NULL;
    if (tide_producer_flush(w->producer, w->shutdown_timeout_ms, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "not committing (%s): %s", why, err);
        free(err);
        return TIDE_STEP_FAILED; /* a lost output: restart from the last commit */
    }
    if (tide_tasks_checkpoint(w->tasks)) return TIDE_STEP_FAILED;
    if (w->globals && tide_globals_checkpoint(w->globals, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "global tables' checkpoint failed: %s", err);
        free(err);
        return TIDE_STEP_FAILED;
    }
    tide_group_commit(w->group, only, why, async);
    return TIDE_STEP_OK;
}

/* ---------------------------------------------------------------- rebalances */

static void on_task_ready(void *ud, int32_t partition, int64_t stream_time) {
    tide_worker_t *w = ud;
    tide_runtime_task(w->rt, partition, 1, stream_time);
    tide_group_flow(w->group, partition, 1);
}

/* New partitions: a task per new partition number, restoring its stores
 * first (its input paused meanwhile). Called once per rebalance round, even
 * with nothing new. */
static void on_assigned(void *ud, const rd_kafka_topic_partition_list_t *parts) {
    tide_worker_t *w = ud;
    int before = tide_tasks_count(w->tasks);
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (tide_tasks_has(w->tasks, p)) {
            if (!tide_tasks_ready(w->tasks, p)) tide_group_flow(w->group, p, 0); /* another input */
            continue;
        }
        begin_rebalance(w);
        /* (one broker round trip: only for detectors where time matters) */
        int64_t st = w->info->n_stores || w->info->n_punctuators
                         ? tide_group_committed_number(w->group, p, STREAM_TIME_META)
                         : -1;
        tide_task_start_t r = tide_tasks_start(w->tasks, p, st);
        if (r == TIDE_TASK_RESTORING) tide_group_flow(w->group, p, 0);
        if (r == TIDE_TASK_FAILED) worker_end(w, TIDE_WORKER_FAILED);
    }
    if (!w->last_record_ms) w->last_record_ms = tide_mono_ms();
    char desc[2048], field[2100];
    tide_group_describe(parts, desc, sizeof(desc));
    tide_json_str(field, sizeof(field), desc, strlen(desc));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "partitions assigned", "partitions", field,
               (char *)NULL);
    tide_tasks_log_assignment(w->tasks, tide_tasks_count(w->tasks) - before, NULL, 0);
    settle(w);
}

/* Partitions about to be taken away: commit them (unless lost: they belong
 * to someone else already, and the new owner reprocesses from the last
 * commit). */
static void on_revoking(void *ud, const rd_kafka_topic_partition_list_t *parts, int lost) {
    tide_worker_t *w = ud;
    if (!lost && commit(w, parts, "revoke", 0) == TIDE_STEP_FAILED) worker_end(w, TIDE_WORKER_FAILED);
    begin_rebalance(w);
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

/* ---------------------------------------------------------------- what Lua calls */

static void on_lua_log(void *ud, tide_log_level_t level, const char *msg, const tide_rec_t *r) {
    (void)ud;
    tide_log(level, r ? (tide_log_at_t){r->topic, r->partition, r->offset} : TIDE_AT_NONE,
             "%s", msg);
}

/* ---------------------------------------------------------------- batches */

/* Produce what the detector emitted, and clear the sink. */
static tide_step_t produce(tide_worker_t *w) {
    tide_sink_t *s = tide_runtime_sink(w->rt);
    if (!s->n) return TIDE_STEP_OK;
    char *err = NULL;
    int rc = tide_producer_send(w->producer, s, &err);
    tide_sink_clear(s);
    if (!rc) return TIDE_STEP_OK;
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
    free(err);
    return TIDE_STEP_FAILED;
}

/* One batch: dispatch, produce, advance the processed offsets. */
static tide_step_t process_batch(tide_worker_t *w, int n) {
    tide_batch_t *b = tide_records_lay_out(w->records, n, tide_group_offsets(w->group), w->rt);
    int nr = b->n;
    tide_status_t st_stop = TIDE_OK;
    if (nr > 0) {
        int64_t t = tide_mono_ms();
        if (!w->first_record_ms) w->first_record_ms = t;
        w->last_record_ms = t;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tide_status_batch_begin(w->st, t);
        st_stop = tide_runtime_dispatch(w->rt, b, tide_wall_ms(), tide_records_on_failure,
                                        w->records);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        tide_status_batch_end(w->st, (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    }
    if (produce(w) == TIDE_STEP_FAILED) return TIDE_STEP_FAILED;
    if (nr == 0) return TIDE_STEP_OK;
    int done = st_stop == TIDE_STOPPED ? b->cursor : nr;
    tide_records_processed(w->records, done);
    w->records_in += (uint64_t)done;
    w->batches++;
    if (st_stop != TIDE_STOPPED) return TIDE_STEP_OK;
    const tide_rec_t *r = &b->recs[done];
    tide_log(TIDE_LOG_ERROR, (tide_log_at_t){r->topic, r->partition, r->offset},
             "detector stopped on a failed record (on_error = \"stop\"); "
             "offsets are committed up to the record before it");
    return TIDE_STEP_STOPPED;
}

/* ---------------------------------------------------------------- periodic jobs */

static tide_step_t job_punctuate(tide_worker_t *w, int64_t now) {
    (void)now;
    if (!w->info->n_punctuators && !w->info->n_stores) return TIDE_STEP_OK;
    if (tide_runtime_punctuate(w->rt, tide_wall_ms()) > 0) tide_records_count_error(w->records);
    return produce(w);
}

static tide_step_t job_publish(tide_worker_t *w, int64_t now) {
    (void)now;
    tide_status_sample_t s = {
        .records_in = w->records_in,
        .records_out = tide_producer_sent(w->producer),
        .dlq = tide_producer_dead_lettered(w->producer),
        .errors = tide_records_errors(w->records),
        .dropped = tide_records_dropped(w->records),
        .batches = w->batches,
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
 * worker keeps tens of MB it does not use. */
static tide_step_t job_trim(tide_worker_t *w, int64_t now) {
    if (!w->trimmed && w->last_record_ms && now - w->last_record_ms > 1000) {
        malloc_trim(0);
        w->trimmed = 1;
    }
    return TIDE_STEP_OK;
}

static tide_step_t job_lag(tide_worker_t *w, int64_t now) {
    (void)now;
    w->st->lag = tide_group_lag(w->group);
    return TIDE_STEP_OK;
}

static tide_step_t job_commit(tide_worker_t *w, int64_t now) {
    (void)now;
    return commit(w, NULL, "interval", 1);
}

static void init_jobs(tide_worker_t *w) {
    const tide_job_t jobs[N_JOBS] = {
        {"punctuate", 0, job_punctuate, 0},
        {"publish", 0, job_publish, 0},
        {"trim", 0, job_trim, 0},
        {"lag", 1000, job_lag, 0},
        {"commit", tide_config_int(w->o->config, TIDE_CFG_COMMIT_INTERVAL_MS), job_commit, 0},
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

/* Every topic the detector uses: inputs, outputs, dead letters, changelogs,
 * its global tables' topics. Returns how many were put in out[0..max). */
static int detector_topics(const tide_worker_t *w, const char **out, int max) {
    int n = 0, n_changelogs;
    char *const *changelogs = tide_tasks_changelogs(w->tasks, &n_changelogs);
    for (int i = 0; i < w->info->n_inputs && n < max; i++) out[n++] = w->info->inputs[i];
    for (int i = 0; i < w->info->n_outputs && n < max; i++) out[n++] = w->info->outputs[i];
    if (n < max) out[n++] = w->dlq;
    for (int i = 0; i < n_changelogs && n < max; i++)
        if (changelogs[i]) out[n++] = changelogs[i];
    for (int i = 0; i < w->info->n_stores && n < max; i++)
        if (w->info->store_global[i]) out[n++] = w->info->store_global[i];
    return n;
}

/* What `topic` is to the detector: a changelog of its stores, one of its
 * DSL repartition topics (<application.id>.<detector>-...-repartition), or
 * a topic it does not own (TIDE_TOPIC_SOURCE). */
static tide_topic_kind_t topic_kind(const tide_worker_t *w, const char *topic) {
    int n_changelogs;
    char *const *changelogs = tide_tasks_changelogs(w->tasks, &n_changelogs);
    for (int i = 0; i < n_changelogs; i++)
        if (changelogs[i] && !strcmp(changelogs[i], topic)) return TIDE_TOPIC_CHANGELOG;
    static const char suffix[] = "-repartition";
    char prefix[600];
    int n = snprintf(prefix, sizeof(prefix), "%s.%s-",
                     tide_config_str(w->o->config, TIDE_CFG_APPLICATION_ID), w->info->name);
    size_t len = strlen(topic), ns = sizeof(suffix) - 1;
    /* (the prefix's last '-' may be the suffix's first) */
    if (n > 0 && !strncmp(topic, prefix, (size_t)n) && len + 1 >= (size_t)n + ns &&
        !strcmp(topic + len - ns, suffix))
        return TIDE_TOPIC_REPARTITION;
    return TIDE_TOPIC_SOURCE;
}

/* On a broker that does not create our topics itself (a real Kafka, or a
 * `tide broker`), make the internal ones exist before the producer or the
 * consumer looks them up: the inputs tide does not own size the others. */
static void ensure_internal_topics(tide_worker_t *w) {
    if (w->o->dev || w->o->await_topics) return;
    const char *names[TIDE_STATUS_TOPICS];
    tide_topic_req_t topics[TIDE_STATUS_TOPICS];
    int n = detector_topics(w, names, TIDE_STATUS_TOPICS), k = 0, internal = 0;
    for (int i = 0; i < n; i++) {
        tide_topic_kind_t kind = topic_kind(w, names[i]);
        int dup = 0;
        for (int j = 0; j < k; j++) dup |= !strcmp(topics[j].name, names[i]);
        if (dup || (kind == TIDE_TOPIC_SOURCE && i >= w->info->n_inputs)) continue;
        topics[k++] = (tide_topic_req_t){names[i], kind};
        internal += kind != TIDE_TOPIC_SOURCE;
    }
    if (internal) tide_topics_ensure(w->o->config, w->o->bootstraps, topics, k, w->shutdown_timeout_ms);
}

/* Under a supervisor that runs the development broker, the topics must exist
 * before we subscribe: declare them and wait (bounded) until it says so. */
static void declare_topics(tide_worker_t *w) {
    tide_status_block_t *st = w->st;
    if (!w->o->await_topics) return;
    st->topics_ready = 0;
    const char *topics[TIDE_STATUS_TOPICS];
    int n = detector_topics(w, topics, TIDE_STATUS_TOPICS);
    for (int i = 0; i < n; i++) snprintf(st->declared[i], sizeof(st->declared[0]), "%s", topics[i]);
    __atomic_store_n(&st->n_declared, n, __ATOMIC_RELEASE);
    for (int i = 0; i < 300 && !__atomic_load_n(&st->topics_ready, __ATOMIC_ACQUIRE); i++) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Our own in-process broker starts empty: give the detector its topics. */
static void create_dev_topics(tide_worker_t *w) {
    if (!w->o->dev) return;
    const char *topics[64];
    int n = detector_topics(w, topics, 64);
    char *err = NULL;
    for (int i = 0; i < n; i++) {
        if (!tide_devbroker_create_topic(w->o->dev, topics[i], 0, &err)) continue;
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
    };
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

/* Swap to the validated runtime nrt: the old version's close(ctx) may emit,
 * which is produced before it goes; the tasks restart on the new one. */
static tide_step_t swap(tide_worker_t *w, tide_runtime_t *nrt, int topics_changed) {
    tide_runtime_stop(w->rt);
    tide_step_t s = produce(w);
    tide_tasks_restart(w->tasks, old_stream_time, w); /* reads the old runtime's times */
    tide_runtime_close(w->rt);
    w->rt = nrt;
    w->info = tide_runtime_info(nrt);
    tide_tasks_set_info(w->tasks, w->info);
    if (topics_changed) ensure_internal_topics(w);
    tide_producer_set_outputs(w->producer, w->info->outputs, w->info->n_outputs);
    if (s == TIDE_STEP_OK) s = commit(w, NULL, "swap", 0);
    return s;
}

/* Hot swap at a batch boundary: compile and validate the file in a fresh
 * runtime while the old one stays; swap only if it is sound. Offsets, group
 * membership and the producer stay. */
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

/* ---------------------------------------------------------------- start and stop */

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
    snprintf(drop, sizeof(drop), "%" PRIu64, tide_records_dropped(w->records));
    snprintf(el, sizeof(el), "%" PRId64, elapsed);
    snprintf(rate, sizeof(rate), "%.0f", elapsed > 0 ? w->records_in * 1000.0 / elapsed : 0.0);
    snprintf(rss, sizeof(rss), "%ld", ru.ru_maxrss);
    snprintf(heap, sizeof(heap), "%zu", w->rt ? tide_runtime_heap_peak(w->rt) : (size_t)0);
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "stopped", "records_in", in, "records_out", out,
               "dlq", dlq, "errors", errs, "dropped", drop, "elapsed_ms", el, "rate", rate,
               "max_rss_kb", rss, "lua_heap_peak_bytes", heap, (char *)NULL);
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

static int open_group(tide_worker_t *w) {
    char id[512], *err = NULL;
    snprintf(id, sizeof(id), "%s.%s", tide_config_str(w->o->config, TIDE_CFG_APPLICATION_ID),
             w->info->name);
    tide_group_opts_t go = {
        .config = w->o->config, .bootstraps = w->o->bootstraps, .group_id = id,
        .co_partitioned = co_partitioned(w),
        .cb = {.on_assigned = on_assigned, .on_revoking = on_revoking, .on_revoked = on_revoked, .ud = w},
        .meta = stream_time_meta, .meta_ud = w,
    };
    w->group = tide_group_new(&go, &err);
    if (!w->group) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        return -1;
    }
    if (subscribe(w)) return -1;
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "joining consumer group %s", id);
    if (co_partitioned(w))
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE,
                 "stateful with %d inputs: co-partitioned range assignment (eager rebalances); "
                 "the inputs must have as many partitions", w->info->n_inputs);
    return 0;
}

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
        fprintf(stderr, "tide: cannot load %s:\n%s\n", w->o->path, err);
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

/* The detector's global tables, read to their end before it processes any
 * record (see global.h). 0, 1 when asked to stop meanwhile, -1 failed. */
static int open_globals(tide_worker_t *w) {
    const tide_detector_info_t *d = w->info;
    tide_global_spec_t specs[64];
    int n = 0;
    for (int s = 0; s < d->n_stores && n < 64; s++)
        if (d->store_global[s]) specs[n++] = (tide_global_spec_t){d->store_global[s], s, d->store_names[s]};
    if (!n) return 0;
    char path[4300], *err = NULL;
    snprintf(path, sizeof(path), "%s/global-checkpoint", tide_tasks_state_dir(w->tasks));
    w->globals = tide_globals_open(w->o->config, w->o->bootstraps, tide_tasks_db(w->tasks), path,
                                   specs, n, &err);
    tide_global_result_t r = w->globals ? tide_globals_bootstrap(w->globals, w->o->stop, &err)
                                        : TIDE_GLOBAL_FAILED;
    if (r == TIDE_GLOBAL_OK) return 0;
    if (r == TIDE_GLOBAL_STOPPED) return 1;
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err ? err : "global tables: out of memory");
    free(err);
    return -1;
}

/* The producer, the topics, the restorer, the global tables and the group. */
static int connect_kafka(tide_worker_t *w) {
    char *err = NULL;
    snprintf(w->dlq, sizeof(w->dlq), "%s.%s-dlq",
             tide_config_str(w->o->config, TIDE_CFG_APPLICATION_ID), w->info->name);
    ensure_internal_topics(w);
    create_dev_topics(w);
    w->producer = tide_producer_new(w->o->config, w->o->bootstraps, w->info->outputs,
                                    w->info->n_outputs, w->dlq, &err);
    int n_changelogs;
    char *const *changelogs = tide_tasks_changelogs(w->tasks, &n_changelogs);
    if (!w->producer ||
        (n_changelogs && tide_producer_set_changelogs(w->producer, (char **)changelogs, n_changelogs)) ||
        tide_tasks_open_restorer(w->tasks, &err))
        goto fail;
    int g = open_globals(w);
    if (g) return g;
    return open_group(w);
fail:
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err ? err : "out of memory");
    free(err);
    return -1;
}

/* One pass of the loop: a reload if asked, a restore step, a batch, the
 * jobs. Returns what ends the worker, or TIDE_STEP_OK. */
static tide_step_t pass(tide_worker_t *w) {
    const tide_worker_opts_t *o = w->o;
    tide_step_t s = TIDE_STEP_OK;
    if (o->reload && *o->reload) {
        *o->reload = 0;
        s = reload(w);
        if (s != TIDE_STEP_OK) return s;
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
    ssize_t n = tide_group_poll(w->group, tide_records_msgs(w->records), (size_t)w->max_batch,
                                restoring ? 0 : 100);
    if (n > 0) {
        s = process_batch(w, (int)n);
        tide_records_release(w->records, (int)n);
        w->trimmed = 0;
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
        switch (pass(w)) {
        case TIDE_STEP_OK: break;
        case TIDE_STEP_STOPPED: worker_end(w, TIDE_WORKER_STOPPED_ON_ERROR); break;
        case TIDE_STEP_RENAMED: worker_end(w, TIDE_WORKER_RENAMED); break;
        case TIDE_STEP_FAILED: worker_end(w, TIDE_WORKER_FAILED); break;
        }
        if (run_done(w)) worker_end(w, TIDE_WORKER_DONE);
    }
    worker_end(w, TIDE_WORKER_DONE); /* stopped by a signal */
}

/* Did the worker end as asked (not on an error)? */
static int exit_ok(tide_worker_exit_t e) {
    return e == TIDE_WORKER_DONE || e == TIDE_WORKER_RENAMED;
}

/* Shutdown: close(ctx) may still emit; produce that, then flush, commit and
 * leave the group (the revoke that follows finds nothing to commit). A
 * final commit that races a rebalance is not a failure: the revoke that
 * closing the consumer causes commits the same offsets. Never hang on the way
 * out: a group that does not let go is left to its session timeout. */
static void shut_down(tide_worker_t *w) {
    set_state(w, exit_ok(w->end) ? STATE_PENDING_SHUTDOWN : STATE_PENDING_ERROR);
    w->st->state = TIDE_WS_STOPPING;
    signal(SIGALRM, on_shutdown_timeout);
    alarm((unsigned)(w->shutdown_timeout_ms / 1000) * 2 + 5);
    tide_runtime_stop(w->rt);
    if (w->end != TIDE_WORKER_FAILED &&
        (produce(w) == TIDE_STEP_FAILED || commit(w, NULL, "shutdown", 0) == TIDE_STEP_FAILED))
        w->end = TIDE_WORKER_FAILED; /* the one place an ending's reason is revised */
    job_publish(w, 0);
    log_stopped(w, tide_mono_ms());
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "leaving consumer group");
    tide_group_close(w->group);
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "left consumer group");
}

static void worker_free(tide_worker_t *w) {
    tide_globals_free(w->globals);
    tide_group_free(w->group);
    tide_producer_free(w->producer);
    tide_runtime_close(w->rt);
    tide_tasks_free(w->tasks);
    tide_records_free(w->records);
    if (!w->o->status) tide_status_unmap(w->st);
}

tide_worker_exit_t tide_worker_run(const tide_worker_opts_t *o) {
    tide_worker_t wk = {.o = o, .end = TIDE_WORKER_RUNNING}, *w = &wk;
    w->st = o->status ? o->status : tide_status_private();
    if (!w->st) return TIDE_WORKER_FAILED;
    w->st->pid = (int32_t)getpid();
    w->st->state = TIDE_WS_STARTING;
    w->max_batch = (int)tide_config_int(o->config, TIDE_CFG_MAX_POLL_RECORDS);
    w->shutdown_timeout_ms = (int)tide_config_int(o->config, TIDE_CFG_SHUTDOWN_TIMEOUT_MS);
    tide_records_opts_t ro = {.max = w->max_batch, .st = w->st, .skip = o->skip, .n_skip = o->n_skip};
    w->records = tide_records_new(&ro);
    if (!w->records) worker_end(w, TIDE_WORKER_FAILED);
    else worker_end(w, open_detector(w));
    if (w->end == TIDE_WORKER_RUNNING) {
        int c = connect_kafka(w);
        if (c) worker_end(w, c > 0 ? TIDE_WORKER_DONE : TIDE_WORKER_FAILED);
    }
    if (w->end == TIDE_WORKER_RUNNING) {
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
