/*
 * worker.c: the record path of one detector (see worker.h).
 *
 * Owns: the consumer, the per-partition offsets (what was processed, what was
 * committed), the producer and the runtime. At-least-once, honestly: an
 * offset is committed only after the producer has acknowledged every output
 * of the records before it (flush, then commit), at the commit interval, on
 * revoke and at shutdown. Never commits ahead of what is durable; never calls
 * into Lua except through the runtime.
 */
#include "worker.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "devbroker.h"
#include "log.h"
#include "produce.h"
#include "runtime.h"
#include "state.h"
#include "status.h"
#include "store.h"
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

/* What tide knows of one assigned input partition. */
typedef struct tide_partition {
    char *topic;
    int32_t partition;
    int64_t processed; /* last offset processed, -1 none in this assignment */
    int64_t committed; /* next offset committed, -1 none */
} tide_partition_t;

typedef struct tide_worker {
    const tide_worker_opts_t *o;
    tide_runtime_t *rt;
    const tide_detector_info_t *info;
    rd_kafka_t *consumer;
    rd_kafka_queue_t *queue;
    tide_producer_t *producer;
    tide_partition_t *parts;
    int n_parts, cap_parts, last_hit;
    int max_batch;
    rd_kafka_message_t **msgs;
    tide_rec_t *recs;
    tide_partition_t **rec_part; /* partition of each laid-out record */
    int fatal;
    int shutdown_timeout_ms;
    /* counters */
    uint64_t records_in, errors, dropped, batches;
    int64_t first_record_ms, last_record_ms;
    int assigned_once;
    tide_status_block_t *st; /* shared with the supervisor, or NULL */
    int64_t next_lag_ms;
    int trimmed;             /* memory returned to the OS since the last batch */
    /* state: tasks are input partition numbers */
    tide_store_db_t *db;     /* RocksDB stores, NULL when none */
    char state_dir[4096];    /* <state.dir>/<application.id>/<detector> */
    char checkpoint_path[4200];
    tide_checkpoint_t checkpoint;
    tide_restorer_t *restorer;
    char dlq[512];           /* <application.id>.<detector>-dlq */
    char **changelogs;       /* per store */
    int n_changelogs;
    int32_t *tasks;
    int *task_ready;
    int64_t *task_st;        /* stream time at the task's last commit, -1 none */
    int n_tasks, cap_tasks;
    tide_app_state_t state;
    int64_t restore_started_ms; /* the restore round under way began, 0 none */
    uint64_t restore_records;   /* the restorer's total when it began */
    /* error-log rate limit */
    int64_t err_window_ms;
    int err_in_window;
    uint64_t err_suppressed;
} tide_worker_t;

/* ---------------------------------------------------------------- partitions */

static tide_partition_t *part_find(tide_worker_t *w, const char *topic, int32_t partition) {
    if (w->last_hit < w->n_parts) {
        tide_partition_t *p = &w->parts[w->last_hit];
        if (p->partition == partition && !strcmp(p->topic, topic)) return p;
    }
    for (int i = 0; i < w->n_parts; i++) {
        tide_partition_t *p = &w->parts[i];
        if (p->partition == partition && !strcmp(p->topic, topic)) {
            w->last_hit = i;
            return p;
        }
    }
    return NULL;
}

static tide_partition_t *part_add(tide_worker_t *w, const char *topic, int32_t partition) {
    tide_partition_t *p = part_find(w, topic, partition);
    if (p) return p;
    if (w->n_parts == w->cap_parts) {
        int cap = w->cap_parts ? w->cap_parts * 2 : 16;
        tide_partition_t *np = realloc(w->parts, (size_t)cap * sizeof(*np));
        if (!np) return NULL;
        w->parts = np;
        w->cap_parts = cap;
    }
    p = &w->parts[w->n_parts++];
    *p = (tide_partition_t){strdup(topic), partition, -1, -1};
    return p;
}

static void part_remove(tide_worker_t *w, const char *topic, int32_t partition) {
    tide_partition_t *p = part_find(w, topic, partition);
    if (!p) return;
    free(p->topic);
    *p = w->parts[--w->n_parts];
    w->last_hit = 0;
}

/* "topic[0,1,2] other[3]" for logs. */
static void describe(const rd_kafka_topic_partition_list_t *l, char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < l->cnt && o + 64 < cap; i++) {
        const rd_kafka_topic_partition_t *t = &l->elems[i];
        int same = i > 0 && !strcmp(l->elems[i - 1].topic, t->topic);
        if (!same)
            o += (size_t)snprintf(buf + o, cap - o, "%s%s[%d", i ? "] " : "", t->topic,
                                  (int)t->partition);
        else
            o += (size_t)snprintf(buf + o, cap - o, ",%d", (int)t->partition);
    }
    if (l->cnt && o + 2 < cap) snprintf(buf + o, cap - o, "]");
}

/* ---------------------------------------------------------------- commit */

static int is_rebalance_race(rd_kafka_resp_err_t e) {
    return e == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
           e == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
           e == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID ||
           e == RD_KAFKA_RESP_ERR__STATE;
}

/* ---------------------------------------------------------------- rebalance logs */

/* Rebalances read as Kafka Streams' do: state transitions, the tasks of each
 * new assignment, how long restoring them took. Tasks are named
 * <detector>_<partition>; each list is also a JSON array field. */

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

static int cmp_partition(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Tasks ps[0..n) in partition order, as a JSON array (["d_0","d_1"]) or as
 * text ([d_0, d_1]); a list too long for buf ends early, still well-formed. */
static void task_list(const tide_worker_t *w, const int32_t *ps, int n, int json, char *buf,
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
        snprintf(id, sizeof(id), "%s_%d", w->info->name, (int)sorted[i]);
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

/* One line per change of assignment: fresh[0..n_fresh) the tasks it
 * brought, w->tasks[0..n_existing) those kept, revoked[0..n_revoked) those
 * given up; active_tasks is what the worker holds now. */
static void log_assignment(const tide_worker_t *w, const int32_t *fresh, int n_fresh,
                           int n_existing, const int32_t *revoked, int n_revoked) {
    enum { CAP = 2048 };
    char nt[CAP], et[CAP], rt[CAP], nj[CAP], ej[CAP], rj[CAP], aj[CAP], msg[3 * CAP + 128];
    task_list(w, fresh, n_fresh, 0, nt, CAP);
    task_list(w, w->tasks, n_existing, 0, et, CAP);
    task_list(w, revoked, n_revoked, 0, rt, CAP);
    task_list(w, fresh, n_fresh, 1, nj, CAP);
    task_list(w, w->tasks, n_existing, 1, ej, CAP);
    task_list(w, revoked, n_revoked, 1, rj, CAP);
    task_list(w, w->tasks, w->n_tasks, 1, aj, CAP);
    snprintf(msg, sizeof(msg), "Handle new assignment with: new active tasks %s, existing "
             "active tasks %s, revoked tasks %s", nt, et, rt);
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, msg, "new_tasks", nj, "existing_tasks", ej,
               "revoked_tasks", rj, "active_tasks", aj, (char *)NULL);
}

/* A task starts restoring: the round's clock starts with the first one. */
static void restore_round_begin(tide_worker_t *w) {
    if (w->restore_started_ms) return;
    w->restore_started_ms = tide_mono_ms();
    w->restore_records = tide_restorer_records(w->restorer);
}

/* The restore round is over: how long it took, for every task held. */
static void log_restore_round(tide_worker_t *w) {
    char text[3072], json[3072], msg[3200], el[32], n[32];
    int64_t ms = tide_mono_ms() - w->restore_started_ms;
    task_list(w, w->tasks, w->n_tasks, 0, text, sizeof(text));
    task_list(w, w->tasks, w->n_tasks, 1, json, sizeof(json));
    snprintf(msg, sizeof(msg), "Restoration took %" PRId64 " ms for all tasks %s", ms, text);
    snprintf(el, sizeof(el), "%" PRId64, ms);
    snprintf(n, sizeof(n), "%" PRIu64, tide_restorer_records(w->restorer) - w->restore_records);
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, msg, "elapsed_ms", el, "records", n, "tasks", json,
               (char *)NULL);
    w->restore_started_ms = 0;
}

/* After an assignment or a restore step: once every task is restored, close
 * the restore round (if one was under way) and run. */
static void settle(tide_worker_t *w) {
    for (int t = 0; t < w->n_tasks; t++)
        if (!w->task_ready[t]) return;
    if (w->restore_started_ms) log_restore_round(w);
    if (w->state == STATE_REBALANCING) set_state(w, STATE_RUNNING);
}

/* ---------------------------------------------------------------- state */

static int task_index(const tide_worker_t *w, int32_t p) {
    for (int i = 0; i < w->n_tasks; i++)
        if (w->tasks[i] == p) return i;
    return -1;
}

/* The stores' part of a commit: the changelog offsets acknowledged so far
 * tell how far the local database is covered; make its writes durable, then
 * record that in the checkpoint. Called after the producer was flushed. */
static int checkpoint(tide_worker_t *w) {
    if (!w->db) return 0;
    const tide_detector_info_t *d = w->info;
    for (int t = 0; t < w->n_tasks; t++) {
        if (!w->task_ready[t]) continue;
        for (int s = 0; s < d->n_stores; s++) {
            if (d->store_memory[s]) continue;
            int64_t off = tide_producer_changelog_offset(w->producer, s, w->tasks[t]);
            if (off >= 0 &&
                off + 1 > tide_checkpoint_get(&w->checkpoint, d->store_names[s], w->tasks[t]))
                tide_checkpoint_set(&w->checkpoint, d->store_names[s], w->tasks[t], off + 1);
        }
    }
    char *err = NULL;
    if (tide_store_flush(w->db, &err) ||
        tide_checkpoint_save(&w->checkpoint, w->checkpoint_path, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "state checkpoint failed: %s", err);
        free(err);
        return -1;
    }
    return 0;
}

/* Pause or resume every assigned input partition of task p. */
static void task_flow(tide_worker_t *w, int32_t p, int resume) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    for (int i = 0; i < w->n_parts; i++)
        if (w->parts[i].partition == p) rd_kafka_topic_partition_list_add(l, w->parts[i].topic, p);
    if (l->cnt) {
        if (resume) rd_kafka_resume_partitions(w->consumer, l);
        else rd_kafka_pause_partitions(w->consumer, l);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void task_ready(tide_worker_t *w, int32_t p) {
    int i = task_index(w, p);
    if (i < 0 || w->task_ready[i]) return;
    w->task_ready[i] = 1;
    tide_runtime_task(w->rt, p, 1, w->task_st[i]);
    task_flow(w, p, 1);
}

/* Stream time rides with the committed offsets, in their metadata, as in
 * Kafka Streams: a task that moves or restarts keeps its windows closed and
 * its punctuation schedule. */
#define STREAM_TIME_META "tide:stream-time="

static int64_t committed_stream_time(tide_worker_t *w, int32_t p) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    for (int i = 0; i < w->n_parts; i++)
        if (w->parts[i].partition == p) rd_kafka_topic_partition_list_add(l, w->parts[i].topic, p);
    int64_t st = -1;
    if (l->cnt && !rd_kafka_committed(w->consumer, l, 5000)) {
        for (int i = 0; i < l->cnt; i++) {
            const rd_kafka_topic_partition_t *e = &l->elems[i];
            size_t n = sizeof(STREAM_TIME_META) - 1;
            char meta[64];
            if (!e->metadata || e->metadata_size <= n || e->metadata_size >= sizeof(meta)) continue;
            memcpy(meta, e->metadata, e->metadata_size);
            meta[e->metadata_size] = '\0';
            if (strncmp(meta, STREAM_TIME_META, n)) continue;
            long long v = strtoll(meta + n, NULL, 10);
            if (v > st) st = v;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return st;
}

/* Forget what the database holds for store s of partition p, to restore
 * it from the start of its changelog; returns that start (0). */
static int64_t store_wipe(tide_worker_t *w, int s, int32_t p) {
    char *err = NULL;
    if (tide_store_delete_range(w->db, (uint8_t)s, p, NULL, 0, NULL, 0, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
    }
    return 0;
}

/* A task starts: restore its stores from their changelogs, from the local
 * checkpoint (or from the start, wiping what the database holds for it when
 * it has no checkpoint), with its input paused meanwhile. */
static void task_start(tide_worker_t *w, int32_t p) {
    if (task_index(w, p) >= 0) return;
    if (w->n_tasks == w->cap_tasks) {
        int cap = w->cap_tasks ? w->cap_tasks * 2 : 16;
        int32_t *nt = realloc(w->tasks, (size_t)cap * sizeof(*nt));
        if (nt) w->tasks = nt;
        int *nr = realloc(w->task_ready, (size_t)cap * sizeof(*nr));
        if (nr) w->task_ready = nr;
        int64_t *ns = realloc(w->task_st, (size_t)cap * sizeof(*ns));
        if (ns) w->task_st = ns;
        if (!nt || !nr || !ns) return;
        w->cap_tasks = cap;
    }
    w->tasks[w->n_tasks] = p;
    w->task_ready[w->n_tasks] = 0;
    /* (one broker round trip: only for detectors where time matters) */
    w->task_st[w->n_tasks] =
        w->info->n_stores || w->info->n_punctuators ? committed_stream_time(w, p) : -1;
    w->n_tasks++;
    const tide_detector_info_t *d = w->info;
    for (int s = 0; s < d->n_stores && w->restorer; s++) {
        int64_t from = 0;
        char *err = NULL;
        if (!d->store_memory[s]) {
            from = tide_checkpoint_get(&w->checkpoint, d->store_names[s], p);
            if (from < 0) from = store_wipe(w, s, p);
        }
        int rc = tide_restorer_add(w->restorer, s, p, from, &err);
        if (rc == TIDE_RESTORE_STALE) rc = tide_restorer_add(w->restorer, s, p, store_wipe(w, s, p), &err);
        if (rc) {
            tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "cannot restore store %s of partition %d: %s",
                     d->store_names[s], (int)p, err);
            free(err);
            w->fatal = 1;
        }
    }
    if (!w->restorer || !tide_restorer_busy(w->restorer, p)) {
        task_ready(w, p);
    } else {
        restore_round_begin(w);
        task_flow(w, p, 0);
    }
}

/* Returns 1 when the task stopped, 0 when it was not there or another input
 * topic still holds its partition. */
static int task_stop(tide_worker_t *w, int32_t p) {
    int i = task_index(w, p);
    if (i < 0) return 0;
    for (int k = 0; k < w->n_parts; k++)
        if (w->parts[k].partition == p) return 0; /* another input topic still has it */
    if (w->restorer) tide_restorer_remove(w->restorer, p);
    if (w->task_ready[i]) tide_runtime_task(w->rt, p, 0, -1);
    w->tasks[i] = w->tasks[w->n_tasks - 1];
    w->task_ready[i] = w->task_ready[w->n_tasks - 1];
    w->task_st[i] = w->task_st[w->n_tasks - 1];
    w->n_tasks--;
    return 1;
}

static void on_restore_apply(void *ud, int store, int32_t partition, const char *key,
                             size_t klen, const char *val, size_t vlen) {
    tide_worker_t *w = ud;
    if (w->info->store_memory[store]) {
        tide_runtime_restore(w->rt, store, partition, key, klen, val, vlen);
        return;
    }
    char *err = NULL;
    int rc = val ? tide_store_put(w->db, (uint8_t)store, partition, key, klen, val, vlen, &err)
                 : tide_store_delete(w->db, (uint8_t)store, partition, key, klen, &err);
    if (rc) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "restore: %s", err);
        free(err);
        w->fatal = 1;
    }
}

static void on_restore_done(void *ud, int32_t partition, uint64_t records, int64_t ms) {
    tide_worker_t *w = ud;
    char n[32], t[32], rate[32];
    snprintf(n, sizeof(n), "%" PRIu64, records);
    snprintf(t, sizeof(t), "%" PRId64, ms);
    snprintf(rate, sizeof(rate), "%.0f", ms > 0 ? (double)records * 1000.0 / (double)ms : 0.0);
    tide_logkv(TIDE_LOG_INFO, (tide_log_at_t){NULL, partition, -1}, "task restored", "records",
               n, "elapsed_ms", t, "records_per_s", rate, (char *)NULL);
    task_ready(w, partition);
}

/* The detector's store database: <state.dir>/<application.id>/<name>/rocksdb.
 * One that cannot be opened is wiped and rebuilt from the changelogs: a
 * corrupt or foreign state directory must never become a crash loop. */
static void *on_open_db(void *ud, const char *name, char **errp) {
    tide_worker_t *w = ud;
    if (w->db) return w->db;
    const tide_config_t *c = w->o->config;
    snprintf(w->state_dir, sizeof(w->state_dir), "%s/%s/%s", tide_config_str(c, "state.dir"),
             tide_config_str(c, "application.id"), name);
    char path[4200], mk[4200];
    snprintf(mk, sizeof(mk), "%s", w->state_dir);
    for (char *q = mk + 1; *q; q++)
        if (*q == '/') {
            *q = '\0';
            mkdir(mk, 0755);
            *q = '/';
        }
    if (mkdir(mk, 0755) && errno != EEXIST) {
        if (asprintf(errp, "%s: %s", mk, strerror(errno)) < 0) *errp = NULL;
        return NULL;
    }
    snprintf(path, sizeof(path), "%s/rocksdb", w->state_dir);
    snprintf(w->checkpoint_path, sizeof(w->checkpoint_path), "%s/checkpoint", w->state_dir);
    tide_store_opts_t so = {path, (size_t)tide_config_int(c, "state.block.cache.bytes"),
                            (size_t)tide_config_int(c, "state.write.buffer.bytes"),
                            (size_t)tide_config_int(c, "state.cache.bytes")};
    char *err = NULL;
    w->db = tide_store_open(&so, &err);
    if (!w->db) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE,
                 "state store %s unusable (%s): wiping it; the changelogs rebuild it", path, err);
        free(err);
        err = NULL;
        unlink(w->checkpoint_path);
        if (tide_store_wipe(path, &err) || !(w->db = tide_store_open(&so, &err))) {
            *errp = err;
            return NULL;
        }
    }
    if (tide_checkpoint_load(&w->checkpoint, w->checkpoint_path, &err)) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "%s: restoring every task from the start", err);
        free(err);
        memset(&w->checkpoint, 0, sizeof(w->checkpoint));
    }
    return w->db;
}

/* The names of the topics tide writes for the detector: its dead letters
 * and one changelog per store. */
static int name_topics(tide_worker_t *w) {
    const tide_detector_info_t *d = w->info;
    const char *app = tide_config_str(w->o->config, "application.id");
    snprintf(w->dlq, sizeof(w->dlq), "%s.%s-dlq", app, d->name);
    if (!d->n_stores) return 0;
    w->changelogs = calloc((size_t)d->n_stores, sizeof(char *));
    if (!w->changelogs) return -1;
    w->n_changelogs = d->n_stores;
    for (int s = 0; s < d->n_stores; s++)
        if (asprintf(&w->changelogs[s], "%s.%s-%s-changelog", app, d->name, d->store_names[s]) < 0)
            return -1;
    return 0;
}

/* Every topic the detector uses: inputs, outputs, dead letters, changelogs.
 * Returns how many were put in out[0..max). */
static int detector_topics(const tide_worker_t *w, const char **out, int max) {
    int n = 0;
    for (int i = 0; i < w->info->n_inputs && n < max; i++) out[n++] = w->info->inputs[i];
    for (int i = 0; i < w->info->n_outputs && n < max; i++) out[n++] = w->info->outputs[i];
    if (n < max) out[n++] = w->dlq;
    for (int i = 0; i < w->n_changelogs && n < max; i++) out[n++] = w->changelogs[i];
    return n;
}

/* What `topic` is to the detector: a changelog of its stores, one of its
 * DSL repartition topics (<application.id>.<detector>-...-repartition), or
 * a topic it does not own (TIDE_TOPIC_SOURCE). */
static tide_topic_kind_t topic_kind(const tide_worker_t *w, const char *topic) {
    for (int i = 0; i < w->n_changelogs; i++)
        if (!strcmp(w->changelogs[i], topic)) return TIDE_TOPIC_CHANGELOG;
    static const char suffix[] = "-repartition";
    char prefix[600];
    int n = snprintf(prefix, sizeof(prefix), "%s.%s-",
                     tide_config_str(w->o->config, "application.id"), w->info->name);
    size_t len = strlen(topic), ns = sizeof(suffix) - 1;
    /* (the prefix's last '-' may be the suffix's first) */
    if (n > 0 && !strncmp(topic, prefix, (size_t)n) && len + 1 >= (size_t)n + ns &&
        !strcmp(topic + len - ns, suffix))
        return TIDE_TOPIC_REPARTITION;
    return TIDE_TOPIC_SOURCE;
}

/* The topics to describe before consuming, each once: the inputs tide does
 * not own (they size the others) and the internal topics. Returns how many,
 * or 0 when the detector has no internal topic. */
static int internal_topics(const tide_worker_t *w, tide_topic_req_t *out, int max) {
    const char *topics[TIDE_STATUS_TOPICS];
    int n = detector_topics(w, topics, TIDE_STATUS_TOPICS), k = 0, internal = 0;
    for (int i = 0; i < n && k < max; i++) {
        tide_topic_kind_t kind = topic_kind(w, topics[i]);
        int dup = 0;
        for (int j = 0; j < k; j++) dup |= !strcmp(out[j].name, topics[i]);
        if (dup || (kind == TIDE_TOPIC_SOURCE && i >= w->info->n_inputs)) continue;
        out[k++] = (tide_topic_req_t){topics[i], kind};
        internal += kind != TIDE_TOPIC_SOURCE;
    }
    return internal ? k : 0;
}

/* On a broker that does not create our topics itself (a real Kafka, or a
 * `tide broker`), make the internal ones exist before the producer or the
 * consumer looks them up. */
static void ensure_internal_topics(tide_worker_t *w) {
    if (w->o->dev || w->o->await_topics) return;
    tide_topic_req_t topics[TIDE_STATUS_TOPICS];
    int n = internal_topics(w, topics, TIDE_STATUS_TOPICS);
    if (n) tide_topics_ensure(w->o->config, w->o->bootstraps, topics, n, w->shutdown_timeout_ms);
}

/* Changelog topics and the restorer, once the detector's stores are known. */
static int open_state(tide_worker_t *w) {
    const tide_detector_info_t *d = w->info;
    if (!d->n_stores) return 0;
    if (tide_producer_set_changelogs(w->producer, w->changelogs, d->n_stores)) return -1;
    const char *app = tide_config_str(w->o->config, "application.id");
    char group[600], *err = NULL;
    snprintf(group, sizeof(group), "%s.%s-restore", app, d->name);
    w->restorer = tide_restorer_new(w->o->config, w->o->bootstraps, group, w->changelogs,
                                    d->n_stores, &err);
    if (!w->restorer) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        return -1;
    }
    return 0;
}

/* Commit what was processed, for every partition or only those in `only`.
 * Flushes the producer first: nothing is committed ahead of its outputs.
 * Interval commits are asynchronous (on_commit records the result), so a
 * rebalance in progress never stalls the record loop; revoke and shutdown
 * commits wait. Returns 0, or -1 when the commit did not happen (a failed
 * delivery sets w->fatal; a rebalance race is retried later). */
static int commit(tide_worker_t *w, const rd_kafka_topic_partition_list_t *only,
                  const char *why, int async) {
    char *err = NULL;
    if (tide_producer_flush(w->producer, w->shutdown_timeout_ms, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "not committing (%s): %s", why, err);
        free(err);
        w->fatal = 1; /* a lost output: restart from the last commit */
        return -1;
    }
    if (checkpoint(w)) {
        w->fatal = 1; /* the stores are not durable: nothing may be committed */
        return -1;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(w->n_parts);
    for (int i = 0; i < w->n_parts; i++) {
        tide_partition_t *p = &w->parts[i];
        if (p->processed < 0 || p->processed + 1 <= p->committed) continue;
        if (only && !rd_kafka_topic_partition_list_find(only, p->topic, p->partition))
            continue;
        rd_kafka_topic_partition_t *e = rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
        e->offset = p->processed + 1;
        int64_t st = tide_runtime_stream_time(w->rt, p->partition);
        char meta[64];
        int n = st >= 0 ? snprintf(meta, sizeof(meta), STREAM_TIME_META "%lld", (long long)st) : 0;
        if (n > 0 && (e->metadata = malloc((size_t)n))) { /* freed with the list */
            memcpy(e->metadata, meta, (size_t)n);
            e->metadata_size = (size_t)n;
        }
    }
    int rc = 0;
    if (l->cnt) {
        rd_kafka_resp_err_t e = rd_kafka_commit(w->consumer, l, async);
        if (async) {
            /* on_commit has the result */
        } else if (!e) {
            for (int i = 0; i < l->cnt; i++) {
                tide_partition_t *p = part_find(w, l->elems[i].topic, l->elems[i].partition);
                if (p) p->committed = l->elems[i].offset;
            }
            tide_log(TIDE_LOG_DEBUG, TIDE_AT_NONE, "committed %d partition(s) (%s)", l->cnt, why);
        } else if (is_rebalance_race(e)) {
            /* The group is rebalancing: the offsets stay pending and are
             * committed after it, or on revoke. Not fatal. */
            tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "commit (%s) deferred until the rebalance ends: %s",
                     why, rd_kafka_err2str(e));
            rc = -1;
        } else {
            tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "commit failed (%s): %s", why,
                     rd_kafka_err2str(e));
            rc = -1;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

/* The result of an asynchronous commit. */
static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque) {
    tide_worker_t *w = opaque;
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET) return;
    if (err && !is_rebalance_race(err)) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "commit failed: %s", rd_kafka_err2str(err));
        return;
    }
    if (err) {
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "commit deferred until the rebalance ends: %s",
                 rd_kafka_err2str(err));
        return;
    }
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        if (offsets->elems[i].err) continue;
        tide_partition_t *p = part_find(w, offsets->elems[i].topic, offsets->elems[i].partition);
        if (p && offsets->elems[i].offset > p->committed) p->committed = offsets->elems[i].offset;
    }
}

/* ---------------------------------------------------------------- rebalance */

/* The range assignor rebalances eagerly: every partition is revoked, then
 * the whole new assignment given (see co_partitioned). */
static int eager(rd_kafka_t *rk) {
    return !strcmp(rd_kafka_rebalance_protocol(rk), "EAGER");
}

/* rd_kafka_assign's error code as the incremental calls' error object. */
static rd_kafka_error_t *error_of(rd_kafka_resp_err_t err) {
    return err ? rd_kafka_error_new(err, "%s", rd_kafka_err2str(err)) : NULL;
}

/* New partitions: a task per new partition, restoring its stores first.
 * librdkafka calls this once per rebalance round, even with nothing new. */
static void on_assign(tide_worker_t *w, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts,
                      const char *field) {
    int before = w->n_tasks; /* task_start appends: w->tasks[before..] are new */
    for (int i = 0; i < parts->cnt; i++)
        part_add(w, parts->elems[i].topic, parts->elems[i].partition);
    rd_kafka_error_t *e = eager(rk) ? error_of(rd_kafka_assign(rk, parts))
                                    : rd_kafka_incremental_assign(rk, parts);
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        int t = task_index(w, p);
        if (t >= 0 && !w->task_ready[t]) task_flow(w, p, 0); /* another input, same task */
        if (t >= 0) continue;
        begin_rebalance(w);
        task_start(w, p);
    }
    if (e) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "assign failed: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        w->fatal = 1;
    }
    w->assigned_once = 1;
    if (!w->last_record_ms) w->last_record_ms = tide_mono_ms();
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "partitions assigned", "partitions", field,
               (char *)NULL);
    log_assignment(w, &w->tasks[before], w->n_tasks - before, before, NULL, 0);
    settle(w);
}

/* Partitions taken away: commit them (unless lost), then stop their tasks. */
static void on_revoke(tide_worker_t *w, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts,
                      const char *field) {
    int lost = rd_kafka_assignment_lost(rk);
    /* A lost assignment belongs to someone else already: committing
     * would fail, and the new owner reprocesses from the last commit. */
    if (!lost) commit(w, parts, "revoke", 0);
    begin_rebalance(w);
    int32_t *revoked = calloc((size_t)parts->cnt + 1, sizeof(*revoked));
    int n_revoked = 0;
    for (int i = 0; i < parts->cnt; i++)
        part_remove(w, parts->elems[i].topic, parts->elems[i].partition);
    for (int i = 0; i < parts->cnt; i++)
        if (task_stop(w, parts->elems[i].partition) && revoked)
            revoked[n_revoked++] = parts->elems[i].partition;
    rd_kafka_error_t *e = eager(rk) ? error_of(rd_kafka_assign(rk, NULL))
                                    : rd_kafka_incremental_unassign(rk, parts);
    if (e) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "unassign: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, lost ? "partitions lost" : "partitions revoked",
               "partitions", field, (char *)NULL);
    log_assignment(w, NULL, 0, w->n_tasks, revoked, n_revoked);
    free(revoked);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    tide_worker_t *w = opaque;
    char desc[2048];
    describe(parts, desc, sizeof(desc));
    char field[2100];
    tide_json_str(field, sizeof(field), desc, strlen(desc));
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        on_assign(w, rk, parts, field);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        on_revoke(w, rk, parts, field);
    } else {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "rebalance error: %s", rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
    }
}

/* ---------------------------------------------------------------- errors */

static void on_failure(void *ud, const tide_rec_t *r, const tide_failure_t *f) {
    tide_worker_t *w = ud;
    w->errors++;
    if (w->st) {
        tide_status_block_t *st = w->st;
        snprintf(st->last_error_class, sizeof(st->last_error_class), "%s", f->cls);
        snprintf(st->last_error_topic, sizeof(st->last_error_topic), "%s", r->topic ? r->topic : "");
        st->last_error_partition = r->partition;
        st->last_error_offset = r->offset;
        snprintf(st->last_error, sizeof(st->last_error), "%s", f->message);
        snprintf(st->last_traceback, sizeof(st->last_traceback), "%s", f->traceback);
        st->last_error_ms = tide_wall_ms();
    }
    /* At most 20 error lines a second: a detector failing every record must
     * not drown the logs (the DLQ and the metrics have every one). */
    int64_t t = tide_mono_ms();
    if (t - w->err_window_ms >= 1000) {
        if (w->err_suppressed)
            tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "%" PRIu64 " more record error(s) not logged",
                     w->err_suppressed);
        w->err_window_ms = t;
        w->err_in_window = 0;
        w->err_suppressed = 0;
    }
    if (w->err_in_window++ >= 20) {
        w->err_suppressed++;
        return;
    }
    char cls[64], trace[4096];
    tide_json_str(cls, sizeof(cls), f->cls, strlen(f->cls));
    tide_json_str(trace, sizeof(trace), f->traceback, strlen(f->traceback));
    const char *action = tide_on_error_name(w->info->on_error);
    char act[32];
    tide_json_str(act, sizeof(act), action, strlen(action));
    tide_logkv(TIDE_LOG_WARN, (tide_log_at_t){r->topic, r->partition, r->offset}, f->message,
               "error_class", cls, "on_error", act, "traceback", trace, (char *)NULL);
}

static void on_lua_log(void *ud, tide_log_level_t level, const char *msg, const tide_rec_t *r) {
    (void)ud;
    tide_log(level, r ? (tide_log_at_t){r->topic, r->partition, r->offset} : TIDE_AT_NONE,
             "%s", msg);
}

/* ---------------------------------------------------------------- the api */

/* Headers come from the consumed rd_kafka_message_t (rec->msg). */
static int host_header_count(const tide_rec_t *r) {
    rd_kafka_headers_t *h = NULL;
    if (!r->msg || rd_kafka_message_headers(r->msg, &h) || !h) return 0;
    return (int)rd_kafka_header_cnt(h);
}

static int host_header_get(const tide_rec_t *r, int32_t i, const char **name,
                           const void **val, size_t *len) {
    rd_kafka_headers_t *h = NULL;
    if (!r->msg || rd_kafka_message_headers(r->msg, &h) || !h) return -1;
    return rd_kafka_header_get_all(h, (size_t)i, name, val, len) ? -1 : 0;
}

static const tide_api_t host_api = {
    tide_sink_emit,      tide_sink_emit_header, tide_utf8_valid,     host_header_count,
    host_header_get,     tide_sink_emit_partition, tide_state_get,   tide_state_put,
    tide_state_iter,     tide_state_iter_next,  tide_state_iter_free, tide_sink_set_timestamp,
};

/* ---------------------------------------------------------------- setup */

static int kset(rd_kafka_conf_t *conf, const char *k, const char *v) {
    char err[512];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof(err)) == RD_KAFKA_CONF_OK) return 0;
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "consumer: %s", err);
    return -1;
}

/* Under a supervisor that runs the development broker, the topics must exist
 * before we subscribe: declare them and wait (bounded) until it says so. */
static void declare_topics(tide_worker_t *w) {
    tide_status_block_t *st = w->st;
    if (!st || !w->o->await_topics) return;
    st->topics_ready = 0;
    const char *topics[TIDE_STATUS_TOPICS];
    int n = detector_topics(w, topics, TIDE_STATUS_TOPICS);
    for (int i = 0; i < n; i++)
        snprintf(st->declared[i], sizeof(st->declared[0]), "%s", topics[i]);
    __atomic_store_n(&st->n_declared, n, __ATOMIC_RELEASE);
    for (int i = 0; i < 300 && !__atomic_load_n(&st->topics_ready, __ATOMIC_ACQUIRE); i++) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Subscribe to the detector's inputs (again, after a swap changed them). */
static int subscribe(tide_worker_t *w) {
    declare_topics(w);
    begin_rebalance(w);
    rd_kafka_topic_partition_list_t *topics =
        rd_kafka_topic_partition_list_new(w->info->n_inputs);
    for (int i = 0; i < w->info->n_inputs; i++)
        rd_kafka_topic_partition_list_add(topics, w->info->inputs[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(w->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "subscribe: %s", rd_kafka_err2str(e));
        return -1;
    }
    return 0;
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

static int open_consumer(tide_worker_t *w) {
    const tide_config_t *c = w->o->config;
    char group[512], err[512];
    snprintf(group, sizeof(group), "%s.%s", tide_config_str(c, "application.id"), w->info->name);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char *cerr = NULL;
    /* Defaults first, so the user's properties override them. Without
     * fetch.queue.backoff.ms=10 the consumer pauses a whole second each time
     * its queue fills, and throughput falls to a tenth (DESIGN.md). */
    /* A worker restarted after a crash rejoins only once its dead self's
     * session expires: 10 s instead of Kafka's 45 s. */
    if (kset(conf, "auto.offset.reset", "earliest") ||
        kset(conf, "fetch.queue.backoff.ms", "10") ||
        kset(conf, "session.timeout.ms", "10000") || kset(conf, "heartbeat.interval.ms", "2000") ||
        tide_config_apply_kafka(c, conf, TIDE_CLIENT_CONSUMER, &cerr) ||
        kset(conf, "bootstrap.servers", w->o->bootstraps) || kset(conf, "group.id", group) ||
        kset(conf, "partition.assignment.strategy",
             co_partitioned(w) ? "range" : "cooperative-sticky") ||
        kset(conf, "enable.auto.commit", "false") ||
        kset(conf, "enable.auto.offset.store", "false")) {
        if (cerr) tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", cerr);
        free(cerr);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_opaque(conf, w);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, on_commit);
    rd_kafka_conf_set_log_cb(conf, tide_log_rdkafka);
    w->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!w->consumer) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "consumer: %s", err);
        return -1;
    }
    rd_kafka_poll_set_consumer(w->consumer);
    w->queue = rd_kafka_queue_get_consumer(w->consumer);
    if (subscribe(w)) return -1;
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "joining consumer group %s", group);
    if (co_partitioned(w))
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE,
                 "stateful with %d inputs: co-partitioned range assignment (eager rebalances); "
                 "the inputs must have as many partitions",
                 w->info->n_inputs);
    return 0;
}

/* ---------------------------------------------------------------- the loop */

/* Is this record on the supervisor's list of records that killed workers? */
static int is_poison(const tide_worker_t *w, const char *topic, int32_t partition, int64_t offset) {
    if (!w->o->n_skip) return 0;
    char key[320];
    snprintf(key, sizeof(key), "%s:%d:%lld", topic, (int)partition, (long long)offset);
    for (int i = 0; i < w->o->n_skip; i++)
        if (!strcmp(w->o->skip[i], key)) return 1;
    return 0;
}

/* The index of topic in the status block's topic table. */
static uint16_t status_topic(tide_status_block_t *st, const char *topic) {
    int i;
    for (i = 0; i < TIDE_STATUS_TOPICS && st->topics[i][0]; i++)
        if (!strcmp(st->topics[i], topic)) return (uint16_t)i;
    if (i == TIDE_STATUS_TOPICS) return 0;
    snprintf(st->topics[i], sizeof(st->topics[i]), "%s", topic);
    return (uint16_t)i;
}

/* Lay the batch out for the dispatcher; returns the number of records.
 * Records the supervisor quarantined are dead-lettered here, unrun. */
static int lay_out(tide_worker_t *w, int n) {
    int nr = 0;
    for (int i = 0; i < n; i++) {
        rd_kafka_message_t *m = w->msgs[i];
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                tide_log(TIDE_LOG_WARN,
                         (tide_log_at_t){m->rkt ? rd_kafka_topic_name(m->rkt) : NULL,
                                         m->partition, -1},
                         "consumer: %s", rd_kafka_message_errstr(m));
            continue;
        }
        const char *topic = rd_kafka_topic_name(m->rkt);
        tide_partition_t *p = part_find(w, topic, m->partition);
        /* Not past the last record processed here: a redelivery within
         * this assignment. Drop it and count it. */
        if (!p || m->offset <= p->processed) {
            w->dropped++;
            continue;
        }
        tide_rec_t *r = &w->recs[nr];
        r->key = m->key;
        r->key_len = m->key ? (int32_t)m->key_len : -1;
        r->val = m->payload;
        r->val_len = m->payload ? (int32_t)m->len : -1;
        r->topic = topic;
        r->partition = m->partition;
        r->index = nr;
        r->offset = m->offset;
        r->timestamp = rd_kafka_message_timestamp(m, NULL);
        r->msg = m;
        if (is_poison(w, topic, m->partition, m->offset)) {
            tide_log(TIDE_LOG_WARN, (tide_log_at_t){topic, m->partition, m->offset},
                     "dead-lettering a record that killed the worker repeatedly (poison pill)");
            tide_runtime_dead_letter(w->rt, r, "PoisonPill",
                                     "the record killed or hung the detector's worker repeatedly "
                                     "and was quarantined without running it again");
            p->processed = m->offset;
            w->errors++;
            continue;
        }
        w->rec_part[nr] = p;
        if (w->st) {
            w->st->rec_topic[nr] = status_topic(w->st, topic);
            w->st->rec_partition[nr] = m->partition;
            w->st->rec_offset[nr] = m->offset;
        }
        nr++;
    }
    return nr;
}

/* The records from `from` on were not processed (TIDE_RETRY: the schema
 * registry is unreachable): seek each of their partitions back to its first
 * such record, so the consumer hands them again; nothing past them is
 * committed meanwhile, and the lag shows the wait. */
static void rewind_from(tide_worker_t *w, int from, int n) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n - from);
    for (int i = from; i < n; i++) {
        const tide_rec_t *r = &w->recs[i];
        if (!rd_kafka_topic_partition_list_find(l, r->topic, r->partition))
            rd_kafka_topic_partition_list_add(l, r->topic, r->partition)->offset = r->offset;
    }
    rd_kafka_error_t *e = rd_kafka_seek_partitions(w->consumer, l, 5000);
    if (e) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "cannot seek back to records that wait: %s",
                 rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* One batch: dispatch, produce, advance the processed offsets. */
static int process_batch(tide_worker_t *w, int n) {
    tide_sink_t *s = tide_runtime_sink(w->rt);
    int nr = lay_out(w, n);
    int64_t t = tide_mono_ms();
    tide_status_t st_stop = TIDE_OK;
    int done = 0;
    /* The batch lives in the shared status block when there is one, so the
     * dispatcher's cursor is visible to the supervisor's watchdog. */
    tide_batch_t local = {w->recs, nr, 0}, *b = &local;
    if (nr > 0) {
        if (!w->first_record_ms) w->first_record_ms = t;
        w->last_record_ms = t;
        if (w->st) {
            b = &w->st->batch;
            *b = local;
            w->st->batch_started_ms = t;
        }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        st_stop = tide_runtime_dispatch(w->rt, b, tide_wall_ms(), on_failure, w);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        done = st_stop == TIDE_STOPPED || st_stop == TIDE_RETRY ? b->cursor : nr;
        if (w->st) {
            double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
            w->st->batch_started_ms = 0;
            w->st->hist[tide_status_bucket(secs)]++;
            w->st->hist_sum += secs;
        }
    }
    if (s->n) {
        char *err = NULL;
        int rc = tide_producer_send(w->producer, s, &err);
        tide_sink_clear(s);
        if (rc) {
            tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
            free(err);
            w->fatal = 1;
            return -1;
        }
    }
    if (nr == 0) return 0;
    for (int i = 0; i < done; i++) w->rec_part[i]->processed = w->recs[i].offset;
    w->records_in += (uint64_t)done;
    w->batches++;
    if (st_stop == TIDE_RETRY) rewind_from(w, done, nr);
    if (st_stop == TIDE_STOPPED) {
        const tide_rec_t *r = &w->recs[done];
        tide_log(TIDE_LOG_ERROR, (tide_log_at_t){r->topic, r->partition, r->offset},
                 "detector stopped on a failed record (on_error = \"stop\"); "
                 "offsets are committed up to the record before it");
        return 1;
    }
    return 0;
}

static void on_shutdown_timeout(int sig) {
    static const char msg[] =
        "{\"level\":\"error\",\"msg\":\"shutdown took too long: exiting without leaving the group\"}\n";
    (void)sig;
    ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    _exit(TIDE_WORKER_FAILED);
}

static long max_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void log_stopped(tide_worker_t *w, int64_t end_ms) {
    char in[32], out[32], dlq[32], errs[32], drop[32], el[32], rate[32], rss[32], heap[32];
    int64_t elapsed = w->first_record_ms ? end_ms - w->first_record_ms : 0;
    snprintf(in, sizeof(in), "%" PRIu64, w->records_in);
    snprintf(out, sizeof(out), "%" PRIu64, tide_producer_sent(w->producer));
    snprintf(dlq, sizeof(dlq), "%" PRIu64, tide_producer_dead_lettered(w->producer));
    snprintf(errs, sizeof(errs), "%" PRIu64, w->errors);
    snprintf(drop, sizeof(drop), "%" PRIu64, w->dropped);
    snprintf(el, sizeof(el), "%" PRId64, elapsed);
    snprintf(rate, sizeof(rate), "%.0f", elapsed > 0 ? w->records_in * 1000.0 / elapsed : 0.0);
    snprintf(rss, sizeof(rss), "%ld", max_rss_kb());
    snprintf(heap, sizeof(heap), "%zu", w->rt ? tide_runtime_heap_peak(w->rt) : (size_t)0);
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "stopped", "records_in", in, "records_out", out,
               "dlq", dlq, "errors", errs, "dropped", drop, "elapsed_ms", el, "rate", rate,
               "max_rss_kb", rss, "lua_heap_peak_bytes", heap, (char *)NULL);
}

static tide_runtime_t *open_runtime(tide_worker_t *w, char **errp) {
    tide_runtime_opts_t ro = {0};
    ro.memory_limit = (size_t)tide_config_int(w->o->config, "detector.memory.limit.bytes");
    ro.log = on_lua_log;
    ro.api = &host_api;
    ro.open_db = on_open_db;
    ro.open_db_ud = w;
    ro.application_id = tide_config_str(w->o->config, "application.id");
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
        if (strcmp(a->store_names[i], b->store_names[i]) ||
            a->store_memory[i] != b->store_memory[i])
            return 0;
    return 1;
}

/* Counters and gauges into the shared status block. */
static void publish(tide_worker_t *w) {
    tide_status_block_t *st = w->st;
    if (!st) return;
    st->records_in = w->records_in;
    st->records_out = tide_producer_sent(w->producer);
    st->dlq = tide_producer_dead_lettered(w->producer);
    st->errors = w->errors;
    st->dropped = w->dropped;
    st->batches = w->batches;
    st->lua_heap_bytes = tide_runtime_heap_bytes(w->rt);
    st->assigned_partitions = w->n_parts;
    int restoring = 0;
    for (int t = 0; t < w->n_tasks; t++) restoring += !w->task_ready[t];
    st->restoring_tasks = restoring;
    st->restored_records = w->restorer ? tide_restorer_records(w->restorer) : 0;
    st->store_memory_bytes = w->db ? tide_store_memory_bytes(w->db) : 0;
}

/* Punctuators and window expiry, then produce what they emitted. */
static void punctuate(tide_worker_t *w) {
    if (tide_runtime_punctuate(w->rt, tide_wall_ms()) > 0) w->errors++;
    tide_sink_t *s = tide_runtime_sink(w->rt);
    if (!s->n) return;
    char *err = NULL;
    if (tide_producer_send(w->producer, s, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        w->fatal = 1;
    }
    tide_sink_clear(s);
}

/* Records behind the log end over the assigned partitions, from the
 * consumer's cached watermarks (no request to the broker). */
static void update_lag(tide_worker_t *w) {
    if (!w->st || !w->n_parts) return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(w->n_parts);
    for (int i = 0; i < w->n_parts; i++)
        rd_kafka_topic_partition_list_add(l, w->parts[i].topic, w->parts[i].partition);
    int64_t lag = 0;
    int known = 0;
    if (!rd_kafka_position(w->consumer, l)) {
        for (int i = 0; i < l->cnt; i++) {
            int64_t lo, hi;
            if (rd_kafka_get_watermark_offsets(w->consumer, l->elems[i].topic,
                                               l->elems[i].partition, &lo, &hi))
                continue;
            int64_t pos = l->elems[i].offset >= 0 ? l->elems[i].offset : lo;
            if (hi >= 0 && pos >= 0) {
                lag += hi > pos ? hi - pos : 0;
                known = 1;
            }
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    w->st->lag = known ? lag : -1;
}

static int same_list(char **a, int na, char **b, int nb) {
    if (na != nb) return 0;
    for (int i = 0; i < na; i++)
        if (strcmp(a[i], b[i])) return 0;
    return 1;
}

/* A new version that does not validate changes nothing; say why, where the
 * supervisor and the status page see it. */
static void reload_refused(tide_worker_t *w, const char *why) {
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "reload refused, the running version stays: %s", why);
    tide_status_block_t *st = w->st;
    if (!st) return;
    st->reload_failures++;
    st->last_reload_ok = 0;
    st->last_reload_version[0] = '\0';
    snprintf(st->last_reload_error, sizeof(st->last_reload_error), "%s", why);
    st->last_reload_ms = tide_wall_ms();
    st->state = TIDE_WS_RUNNING;
}

/* Hot swap at a batch boundary: compile and validate the file in a fresh
 * runtime while the old one stays; swap only if it is sound. Offsets, group
 * membership and the producer stay. Returns 1 when the detector was renamed
 * (the supervisor starts it as a new detector), else 0. */
static int reload(tide_worker_t *w) {
    if (w->st) w->st->state = TIDE_WS_RELOADING;
    char *err = NULL;
    tide_runtime_t *nrt = open_runtime(w, &err);
    tide_status_block_t *st = w->st;
    if (!nrt) {
        reload_refused(w, err);
        free(err);
        return 0;
    }
    const tide_detector_info_t *ni = tide_runtime_info(nrt);
    if (!same_stores(ni, w->info)) {
        char msg[4400];
        snprintf(msg, sizeof(msg), "%s: the new version declares different stores; a hot swap "
                 "keeps the same stores (rename the detector to start it anew with new ones)",
                 w->o->path);
        reload_refused(w, msg);
        tide_runtime_close(nrt);
        return 0;
    }
    if (strcmp(ni->name, w->info->name)) {
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "the new version renames the detector to %s: "
                 "stopping this one", ni->name);
        tide_runtime_close(nrt);
        return 1;
    }
    int inputs_changed = !same_list(ni->inputs, ni->n_inputs, w->info->inputs, w->info->n_inputs);
    int topics_changed = inputs_changed ||
        !same_list(ni->outputs, ni->n_outputs, w->info->outputs, w->info->n_outputs);
    /* The old version's close(ctx) may emit: send that before it goes. */
    tide_runtime_stop(w->rt);
    if (tide_producer_send(w->producer, tide_runtime_sink(w->rt), &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        w->fatal = 1;
    }
    for (int t = 0; t < w->n_tasks; t++) {
        int64_t seen = tide_runtime_stream_time(w->rt, w->tasks[t]);
        if (seen > w->task_st[t]) w->task_st[t] = seen;
    }
    tide_runtime_close(w->rt);
    w->rt = nrt;
    w->info = ni;
    if (topics_changed) ensure_internal_topics(w);
    tide_producer_set_outputs(w->producer, ni->outputs, ni->n_outputs);
    /* The new state knows no tasks yet, and its in-memory stores are empty:
     * read those back from their changelogs (RocksDB stores stay as they are). */
    commit(w, NULL, "swap", 0);
    for (int t = 0; t < w->n_tasks; t++) {
        int32_t p = w->tasks[t];
        w->task_ready[t] = 0;
        for (int s = 0; s < ni->n_stores; s++) {
            if (!ni->store_memory[s]) continue;
            char *rerr = NULL;
            if (tide_restorer_add(w->restorer, s, p, 0, &rerr)) {
                tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", rerr);
                free(rerr);
                w->fatal = 1;
            }
        }
        if (!w->restorer || !tide_restorer_busy(w->restorer, p)) {
            w->task_ready[t] = 1;
            tide_runtime_task(w->rt, p, 1, w->task_st[t]);
        } else {
            restore_round_begin(w);
            task_flow(w, p, 0);
        }
    }
    char v[64];
    tide_json_str(v, sizeof(v), ni->version, strlen(ni->version));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "detector reloaded", "version", v, (char *)NULL);
    if (inputs_changed) {
        /* A new subscription rebalances: commit what we have first. */
        commit(w, NULL, "resubscribe", 0);
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "inputs changed: re-subscribing");
        if (subscribe(w)) w->fatal = 1;
    }
    if (st) {
        st->reloads++;
        st->last_reload_ok = 1;
        snprintf(st->last_reload_version, sizeof(st->last_reload_version), "%s", ni->version);
        st->last_reload_error[0] = '\0';
        st->last_reload_ms = tide_wall_ms();
        snprintf(st->version, sizeof(st->version), "%s", ni->version);
        snprintf(st->description, sizeof(st->description), "%s", ni->description);
        st->state = TIDE_WS_RUNNING;
    }
    return 0;
}

/* Did the worker end as asked (not on an error)? */
static int exit_ok(tide_worker_exit_t e) {
    return e == TIDE_WORKER_DONE || e == TIDE_WORKER_RENAMED;
}

tide_worker_exit_t tide_worker_run(const tide_worker_opts_t *o) {
    tide_worker_t wk = {0}, *w = &wk;
    w->o = o;
    w->st = o->status;
    if (w->st) {
        w->st->pid = (int32_t)getpid();
        w->st->state = TIDE_WS_STARTING;
    }
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "loading %s", o->path);
    char *err = NULL;
    w->rt = open_runtime(w, &err);
    if (!w->rt) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "detector %s refused: %s", o->path, err);
        fprintf(stderr, "tide: cannot load %s:\n%s\n", o->path, err);
        if (w->st) {
            w->st->last_reload_ok = 0;
            snprintf(w->st->last_reload_error, sizeof(w->st->last_reload_error), "%s", err);
            w->st->last_reload_ms = tide_wall_ms();
        }
        free(err);
        return TIDE_WORKER_LOAD_FAILED;
    }
    w->info = tide_runtime_info(w->rt);
    tide_log_set_detector(w->info->name);
    {
        char v[64];
        tide_json_str(v, sizeof(v), w->info->version, strlen(w->info->version));
        tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "detector loaded", "version", v, (char *)NULL);
    }
    if (w->st) {
        snprintf(w->st->detector, sizeof(w->st->detector), "%s", w->info->name);
        snprintf(w->st->version, sizeof(w->st->version), "%s", w->info->version);
        snprintf(w->st->description, sizeof(w->st->description), "%s", w->info->description);
    }
    const tide_config_t *c = o->config;
    w->max_batch = (int)tide_config_int(c, "max.poll.records");
    if (w->st && w->max_batch > TIDE_STATUS_MAX_BATCH) w->max_batch = TIDE_STATUS_MAX_BATCH;
    w->shutdown_timeout_ms = (int)tide_config_int(c, "shutdown.timeout.ms");
    w->msgs = calloc((size_t)w->max_batch, sizeof(*w->msgs));
    w->recs = calloc((size_t)w->max_batch, sizeof(*w->recs));
    w->rec_part = calloc((size_t)w->max_batch, sizeof(*w->rec_part));

    tide_worker_exit_t exit_code = TIDE_WORKER_DONE;
    if (name_topics(w)) {
        exit_code = TIDE_WORKER_FAILED;
        goto out;
    }
    ensure_internal_topics(w);
    if (o->dev) {
        /* Our own broker starts empty: give the detector its topics. */
        const char *topics[64];
        int n = detector_topics(w, topics, 64), rc = 0;
        for (int i = 0; !rc && i < n; i++)
            rc = tide_devbroker_create_topic(o->dev, topics[i], 0, &err);
        if (rc) {
            tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
            free(err);
            err = NULL;
        }
    }
    w->producer = tide_producer_new(c, o->bootstraps, w->info->outputs, w->info->n_outputs,
                                    w->dlq, &err);
    if (!w->producer) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        exit_code = TIDE_WORKER_FAILED;
        goto out;
    }
    if (open_state(w) || open_consumer(w)) {
        exit_code = TIDE_WORKER_FAILED;
        goto out;
    }
    if (w->st) w->st->state = TIDE_WS_RUNNING;

    int64_t commit_every = tide_config_int(c, "commit.interval.ms");
    int64_t next_commit = tide_mono_ms() + commit_every;
    while (!*o->stop && !w->fatal) {
        if (o->reload && *o->reload) {
            *o->reload = 0;
            if (reload(w)) {
                exit_code = TIDE_WORKER_RENAMED;
                break;
            }
        }
        int restoring = w->restorer && tide_restorer_pending(w->restorer);
        if (restoring) {
            tide_restorer_poll(w->restorer, 10, on_restore_apply, on_restore_done, w);
            w->last_record_ms = tide_mono_ms(); /* restoring is not idle */
            settle(w);
        }
        ssize_t n = rd_kafka_consume_batch_queue(w->queue, restoring ? 0 : 100, w->msgs,
                                                 (size_t)w->max_batch);
        int rc = 0;
        if (n > 0) {
            rc = process_batch(w, (int)n);
            for (ssize_t i = 0; i < n; i++) rd_kafka_message_destroy(w->msgs[i]);
            w->trimmed = 0;
        }
        if (w->info->n_punctuators || w->info->n_stores) punctuate(w);
        tide_producer_poll(w->producer);
        if (rc > 0) {
            exit_code = TIDE_WORKER_STOPPED_ON_ERROR;
            break;
        }
        int64_t t = tide_mono_ms();
        publish(w);
        /* Idle: hand the consumer's freed fetch buffers back to the OS, or an
         * idle worker keeps tens of MB it does not use. */
        if (!w->trimmed && w->last_record_ms && t - w->last_record_ms > 1000) {
            malloc_trim(0);
            w->trimmed = 1;
        }
        if (t >= w->next_lag_ms) {
            update_lag(w);
            w->next_lag_ms = t + 1000;
        }
        if (t >= next_commit) {
            commit(w, NULL, "interval", 1);
            next_commit = t + commit_every;
        }
        if (o->max_records && w->records_in >= o->max_records) break;
        if (o->idle_timeout_ms && w->assigned_once && t - w->last_record_ms >= o->idle_timeout_ms)
            break;
    }
    if (w->fatal) exit_code = TIDE_WORKER_FAILED;
    set_state(w, exit_ok(exit_code) ? STATE_PENDING_SHUTDOWN : STATE_PENDING_ERROR);
    if (w->st) w->st->state = TIDE_WS_STOPPING;
    /* Never hang on the way out: a group that does not let go is left to
     * its session timeout; what was processed is committed before that. */
    signal(SIGALRM, on_shutdown_timeout);
    alarm((unsigned)(w->shutdown_timeout_ms / 1000) * 2 + 5);

    /* Shutdown: close(ctx) may still emit; produce that, then flush, commit
     * and leave the group (the revoke that follows finds nothing to commit). */
    tide_runtime_stop(w->rt);
    if (!w->fatal && tide_producer_send(w->producer, tide_runtime_sink(w->rt), &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        exit_code = TIDE_WORKER_FAILED;
    }
    /* A final commit that races a rebalance is not a failure: the revoke
     * that closing the consumer causes commits the same offsets. */
    if (!w->fatal) commit(w, NULL, "shutdown", 0);
    if (w->fatal) exit_code = TIDE_WORKER_FAILED;
    publish(w);
    log_stopped(w, tide_mono_ms());
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "leaving consumer group");
    rd_kafka_consumer_close(w->consumer);
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "left consumer group");

out:
    set_state(w, exit_ok(exit_code) ? STATE_NOT_RUNNING : STATE_ERROR);
    if (w->queue) rd_kafka_queue_destroy(w->queue);
    if (w->consumer) rd_kafka_destroy(w->consumer);
    tide_restorer_free(w->restorer);
    tide_producer_free(w->producer);
    tide_runtime_close(w->rt);
    tide_store_close(w->db);
    tide_checkpoint_free(&w->checkpoint);
    for (int i = 0; i < w->n_changelogs; i++) free(w->changelogs[i]);
    free(w->changelogs);
    free(w->tasks);
    free(w->task_ready);
    free(w->task_st);
    for (int i = 0; i < w->n_parts; i++) free(w->parts[i].topic);
    free(w->parts);
    free(w->msgs);
    free(w->recs);
    free(w->rec_part);
    alarm(0);
    return exit_code;
}
