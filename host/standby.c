/*
 * standby.c: standby replicas and the task map (see standby.h).
 *
 * Owns the standby consumer (assign-only, read_committed, never in a group,
 * never committing), the list of store partitions it keeps, and what the
 * worker publishes in the status block about its tasks and stores. Writes
 * the store database only from changelog records, as committed writes (a
 * restore's kind: no transaction covers them), and notes in the checkpoint
 * what it applied. Never touches an active task's data: a partition
 * becomes active here only after its standby is promoted (stopped).
 */
#include "standby.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store.h"

#define SYNC_EVERY_MS 50
#define METADATA_RETRY_MS 5000
#define LAG_EVERY_MS 1000
#define BATCH 500

/* One store partition kept warm. */
typedef struct replica {
    int store;
    int32_t partition;
    int64_t next;  /* the next changelog offset to apply */
    int touched;   /* applied to since the last commit */
} replica_t;

struct tide_standby {
    tide_standby_opts_t o;
    char *input_topic;
    const tide_detector_info_t *info;
    rd_kafka_t *rk; /* NULL until the first standby task */
    rd_kafka_queue_t *q;
    replica_t *r;
    int n, cap;
    int32_t partitions;     /* the inputs' partition count, 0: unknown */
    int64_t next_metadata_ms, next_sync_ms, next_lag_ms;
    uint32_t wanted_seq;
    uint8_t wanted[TIDE_STATUS_MAX_TASKS]; /* the supervisor's wish */
    uint8_t kept[TIDE_STATUS_MAX_TASKS];   /* standby tasks running */
    uint64_t applied;
    rd_kafka_message_t *msgs[BATCH];
};

tide_standby_t *tide_standby_new(const tide_standby_opts_t *o) {
    tide_standby_t *sb = calloc(1, sizeof(*sb));
    if (!sb) return NULL;
    sb->o = *o;
    sb->input_topic = strdup(o->input_topic ? o->input_topic : "");
    sb->wanted_seq = (uint32_t)-1;
    o->st->standby_lag = -1;
    return sb;
}

/* ---------------------------------------------------------------- the map */

static void publish_stores(tide_standby_t *sb, const tide_detector_info_t *info) {
    tide_status_block_t *st = sb->o.st;
    int n = info->n_stores < TIDE_STATUS_STORES ? info->n_stores : TIDE_STATUS_STORES;
    for (int i = 0; i < n; i++) {
        snprintf(st->store_names[i], sizeof(st->store_names[i]), "%s", info->store_names[i]);
        st->store_memory[i] = info->store_memory[i];
    }
    st->n_stores = n;
}

/* The inputs' partition count, asked once (and again while unknown). */
static void learn_partitions(tide_standby_t *sb, int64_t now) {
    if (sb->partitions || now < sb->next_metadata_ms || !sb->input_topic[0]) return;
    sb->next_metadata_ms = now + METADATA_RETRY_MS;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(sb->o.consumer, sb->input_topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (rkt && !rd_kafka_metadata(sb->o.consumer, 0, rkt, &md, 1000) && md->topic_cnt == 1 &&
        !md->topics[0].err)
        sb->partitions = md->topics[0].partition_cnt;
    if (md) rd_kafka_metadata_destroy(md);
    if (rkt) rd_kafka_topic_destroy(rkt);
    if (sb->partitions > TIDE_STATUS_MAX_TASKS) {
        tide_log(TIDE_LOG_WARN, (tide_log_at_t){sb->input_topic, -1, -1},
                 "%d partitions: the task map, queries by key and standby replicas cover the "
                 "first %d", (int)sb->partitions, TIDE_STATUS_MAX_TASKS);
        sb->partitions = TIDE_STATUS_MAX_TASKS;
    }
}

static void publish_tasks(tide_standby_t *sb) {
    uint8_t state[TIDE_STATUS_MAX_TASKS];
    tide_tasks_t *t = sb->o.tasks;
    int32_t n = sb->partitions;
    for (int32_t p = 0; p < n; p++) {
        if (tide_tasks_has(t, p)) state[p] = tide_tasks_ready(t, p) ? TIDE_TASKMAP_ACTIVE : TIDE_TASKMAP_RESTORING;
        else state[p] = sb->kept[p] ? TIDE_TASKMAP_STANDBY : TIDE_TASKMAP_NONE;
    }
    tide_status_tasks(sb->o.st, n, state);
}

void tide_standby_sync(tide_standby_t *sb, const tide_detector_info_t *info) {
    if (!sb) return;
    int64_t now = tide_mono_ms();
    if (now < sb->next_sync_ms && info == sb->info) return;
    sb->next_sync_ms = now + SYNC_EVERY_MS;
    if (info != sb->info) publish_stores(sb, info);
    sb->info = info;
    learn_partitions(sb, now);
    uint32_t seq = __atomic_load_n(&sb->o.st->standby_seq, __ATOMIC_ACQUIRE);
    if (seq != sb->wanted_seq && !(seq & 1)) {
        memcpy(sb->wanted, sb->o.st->standby_wanted, sizeof(sb->wanted));
        if (__atomic_load_n(&sb->o.st->standby_seq, __ATOMIC_ACQUIRE) == seq) sb->wanted_seq = seq;
    }
    publish_tasks(sb);
}

/* ---------------------------------------------------------------- the consumer */

static int open_consumer(tide_standby_t *sb) {
    if (sb->rk) return 0;
    char err[512], group[600];
    snprintf(group, sizeof(group), "%s.%s-standby",
             tide_config_str(sb->o.config, TIDE_CFG_APPLICATION_ID), sb->info->name);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char *e = NULL;
    /* group.id is required by the consumer API; it is never joined. Only
     * committed changelog records reach a standby. */
    const char *kv[] = {"group.id", group, "enable.auto.commit", "false",
                        "enable.partition.eof", "false", "auto.offset.reset", "earliest",
                        "isolation.level", "read_committed", "fetch.queue.backoff.ms", "10",
                        "queued.max.messages.kbytes", "16384", NULL};
    if (tide_config_apply_kafka(sb->o.config, conf, TIDE_CLIENT_CONSUMER, &e) ||
        rd_kafka_conf_set(conf, "bootstrap.servers", sb->o.bootstraps, err, sizeof(err))) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "standby consumer: %s", e ? e : err);
        free(e);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    for (int i = 0; kv[i]; i += 2) rd_kafka_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err));
    rd_kafka_conf_set_log_cb(conf, tide_log_rdkafka);
    sb->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!sb->rk) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "standby consumer: %s", err);
        return -1;
    }
    rd_kafka_poll_set_consumer(sb->rk);
    sb->q = rd_kafka_queue_get_consumer(sb->rk);
    return 0;
}

static const char *changelog(tide_standby_t *sb, int store) {
    int n;
    char *const *names = tide_tasks_changelogs(sb->o.tasks, &n);
    return store < n ? names[store] : "";
}

static void assign(tide_standby_t *sb, const replica_t *x, int add) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, changelog(sb, x->store), x->partition)->offset = x->next;
    rd_kafka_error_t *e = add ? rd_kafka_incremental_assign(sb->rk, l)
                              : rd_kafka_incremental_unassign(sb->rk, l);
    if (e) {
        tide_log(TIDE_LOG_WARN, (tide_log_at_t){changelog(sb, x->store), x->partition, -1},
                 "standby: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Where store s of partition p goes on from: the checkpoint, checked
 * against the changelog (a checkpoint past its end is another changelog's:
 * the local copy is wiped); -1 when the broker does not answer. */
static int64_t start_offset(tide_standby_t *sb, int s, int32_t p) {
    int64_t from = tide_tasks_local_offset(sb->o.tasks, s, p, 0), lo = 0, hi = 0;
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(sb->rk, changelog(sb, s), p, &lo, &hi, 2000);
    if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) return from;
    if (e) return -1;
    if (from > hi) from = tide_tasks_local_offset(sb->o.tasks, s, p, 1);
    return from < lo ? lo : from;
}

static void start(tide_standby_t *sb, int32_t p) {
    const tide_detector_info_t *d = sb->info;
    if (open_consumer(sb)) return;
    if (sb->cap - sb->n < d->n_stores) {
        int cap = sb->cap * 2 + d->n_stores;
        replica_t *nr = realloc(sb->r, (size_t)cap * sizeof(*nr));
        if (!nr) return;
        sb->r = nr;
        sb->cap = cap;
    }
    int64_t from[TIDE_STATUS_STORES + 1];
    for (int s = 0; s < d->n_stores && s < TIDE_STATUS_STORES; s++) {
        from[s] = d->store_memory[s] ? 0 : start_offset(sb, s, p);
        if (from[s] < 0) return; /* the broker did not answer: the next step tries again */
    }
    for (int s = 0; s < d->n_stores && s < TIDE_STATUS_STORES; s++) {
        if (d->store_memory[s]) continue;
        sb->r[sb->n] = (replica_t){s, p, from[s], 0};
        assign(sb, &sb->r[sb->n], 1);
        sb->n++;
    }
    sb->kept[p] = 1;
    tide_log(TIDE_LOG_INFO, (tide_log_at_t){NULL, p, -1}, "standby task %s_%d started",
             d->name, (int)p);
}

static void stop(tide_standby_t *sb, int32_t p) {
    int k = 0;
    for (int i = 0; i < sb->n; i++) {
        if (sb->r[i].partition == p) assign(sb, &sb->r[i], 0);
        else sb->r[k++] = sb->r[i];
    }
    sb->n = k;
    if (sb->kept[p])
        tide_log(TIDE_LOG_INFO, (tide_log_at_t){NULL, p, -1}, "standby task %s_%d stopped",
                 sb->info ? sb->info->name : "", (int)p);
    sb->kept[p] = 0;
}

void tide_standby_promote(tide_standby_t *sb, int32_t p) {
    if (!sb || p < 0 || p >= TIDE_STATUS_MAX_TASKS || !sb->kept[p]) return;
    int64_t next = -1;
    for (int i = 0; i < sb->n; i++)
        if (sb->r[i].partition == p) next = sb->r[i].next;
    tide_log(TIDE_LOG_INFO, (tide_log_at_t){NULL, p, next},
             "standby task becomes active: its restore reads the changelog from where the "
             "standby stands");
    stop(sb, p);
}

/* ---------------------------------------------------------------- applying */

static replica_t *find(tide_standby_t *sb, const char *topic, int32_t p) {
    for (int i = 0; i < sb->n; i++)
        if (sb->r[i].partition == p && !strcmp(changelog(sb, sb->r[i].store), topic)) return &sb->r[i];
    return NULL;
}

static void apply(tide_standby_t *sb, void *db, const rd_kafka_message_t *m) {
    replica_t *x = m->err ? NULL : find(sb, rd_kafka_topic_name(m->rkt), m->partition);
    if (!x || m->offset < x->next) return;
    char *err = NULL;
    /* committed writes, as a restore's: a standby's partition has no
     * transaction of its own here */
    int rc = tide_store_put_committed(db, (uint8_t)x->store, x->partition, m->key,
                                      m->key ? m->key_len : 0, m->payload,
                                      m->payload ? m->len : 0, &err);
    if (rc) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "standby: %s", err);
        free(err);
        return;
    }
    x->next = m->offset + 1;
    x->touched = 1;
    sb->applied++;
}

/* What the changelogs hold, for up to budget_ms; then the checkpoint
 * (written with the next one the worker saves, after a flush) says so. */
static void apply_some(tide_standby_t *sb, int budget_ms) {
    void *db = tide_tasks_db(sb->o.tasks);
    int64_t end = tide_mono_ms() + budget_ms;
    int any = 0;
    while (tide_mono_ms() < end) {
        ssize_t n = rd_kafka_consume_batch_queue(sb->q, 0, sb->msgs, BATCH);
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; i++) {
            apply(sb, db, sb->msgs[i]);
            rd_kafka_message_destroy(sb->msgs[i]);
        }
        any = 1;
    }
    if (!any) return;
    for (int i = 0; i < sb->n; i++) {
        replica_t *x = &sb->r[i];
        if (x->touched) tide_tasks_local_advance(sb->o.tasks, x->store, x->partition, x->next);
        x->touched = 0;
    }
}

static void measure_lag(tide_standby_t *sb) {
    int64_t now = tide_mono_ms();
    if (now < sb->next_lag_ms) return;
    sb->next_lag_ms = now + LAG_EVERY_MS;
    int64_t lag = sb->n ? 0 : -1;
    for (int i = 0; i < sb->n; i++) {
        int64_t lo, hi;
        if (rd_kafka_get_watermark_offsets(sb->rk, changelog(sb, sb->r[i].store), sb->r[i].partition,
                                           &lo, &hi) || hi < 0)
            continue;
        if (hi > sb->r[i].next) lag += hi - sb->r[i].next;
    }
    sb->o.st->standby_lag = lag;
    sb->o.st->standby_records = sb->applied;
}

void tide_standby_step(tide_standby_t *sb, int budget_ms) {
    if (!sb || !sb->info || !tide_tasks_db(sb->o.tasks)) return;
    for (int32_t p = 0; p < sb->partitions; p++) {
        int want = sb->wanted[p] && !tide_tasks_has(sb->o.tasks, p);
        if (want && !sb->kept[p]) start(sb, p);
        else if (!want && sb->kept[p]) stop(sb, p);
    }
    if (sb->rk && sb->n) apply_some(sb, budget_ms);
    if (sb->rk) measure_lag(sb);
}

int tide_standby_count(const tide_standby_t *sb) { return sb ? sb->n : 0; }

void tide_standby_free(tide_standby_t *sb) {
    if (!sb) return;
    if (sb->rk) {
        rd_kafka_queue_destroy(sb->q);
        rd_kafka_consumer_close(sb->rk);
        rd_kafka_destroy(sb->rk);
    }
    free(sb->r);
    free(sb->input_topic);
    free(sb);
}
