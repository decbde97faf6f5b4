/*
 * group.c: the consumer, the assignment and the offsets (see group.h).
 *
 * Owns the rd_kafka_t consumer and the table of held partitions. Commits
 * only offsets of records the worker marked processed, never ahead of them,
 * and never on its own: the worker decides when (after the outputs are
 * durable). Must never call into Lua or touch a store.
 */
#include "group.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* ---------------------------------------------------------------- offsets */

tide_offset_t *tide_offsets_find(tide_offsets_t *o, const char *topic, int32_t partition) {
    if (o->last_hit < o->n) {
        tide_offset_t *p = &o->p[o->last_hit];
        if (p->partition == partition && !strcmp(p->topic, topic)) return p;
    }
    for (int i = 0; i < o->n; i++) {
        tide_offset_t *p = &o->p[i];
        if (p->partition == partition && !strcmp(p->topic, topic)) {
            o->last_hit = i;
            return p;
        }
    }
    return NULL;
}

tide_offset_t *tide_offsets_add(tide_offsets_t *o, const char *topic, int32_t partition) {
    tide_offset_t *p = tide_offsets_find(o, topic, partition);
    if (p) return p;
    if (o->n == o->cap) {
        int cap = o->cap ? o->cap * 2 : 16;
        tide_offset_t *np = realloc(o->p, (size_t)cap * sizeof(*np));
        if (!np) return NULL;
        o->p = np;
        o->cap = cap;
    }
    char *t = strdup(topic);
    if (!t) return NULL;
    p = &o->p[o->n++];
    *p = (tide_offset_t){t, partition, -1, -1};
    return p;
}

void tide_offsets_remove(tide_offsets_t *o, const char *topic, int32_t partition) {
    tide_offset_t *p = tide_offsets_find(o, topic, partition);
    if (!p) return;
    free(p->topic);
    *p = o->p[--o->n];
    o->last_hit = 0;
}

int tide_offsets_holds(const tide_offsets_t *o, int32_t partition) {
    for (int i = 0; i < o->n; i++)
        if (o->p[i].partition == partition) return 1;
    return 0;
}

tide_offset_t *tide_offsets_accept(tide_offsets_t *o, const char *topic, int32_t partition,
                                   int64_t offset) {
    tide_offset_t *p = tide_offsets_find(o, topic, partition);
    return p && offset > p->processed ? p : NULL;
}

rd_kafka_topic_partition_list_t *tide_offsets_pending(const tide_offsets_t *o,
                                                      const rd_kafka_topic_partition_list_t *only) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(o->n ? o->n : 1);
    for (int i = 0; i < o->n; i++) {
        const tide_offset_t *p = &o->p[i];
        if (p->processed < 0 || p->processed + 1 <= p->committed) continue;
        if (only && !rd_kafka_topic_partition_list_find(only, p->topic, p->partition)) continue;
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = p->processed + 1;
    }
    return l;
}

void tide_offsets_committed(tide_offsets_t *o, const rd_kafka_topic_partition_list_t *l) {
    for (int i = 0; l && i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *e = &l->elems[i];
        if (e->err || e->offset < 0) continue;
        tide_offset_t *p = tide_offsets_find(o, e->topic, e->partition);
        if (p && e->offset > p->committed) p->committed = e->offset;
    }
}

void tide_offsets_free(tide_offsets_t *o) {
    for (int i = 0; i < o->n; i++) free(o->p[i].topic);
    free(o->p);
    memset(o, 0, sizeof(*o));
}

/* ---------------------------------------------------------------- the group */

struct tide_group {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    tide_offsets_t offsets;
    tide_group_cb_t cb;
    tide_group_meta_fn meta;
    void *meta_ud;
    int assigned_once;
};

void tide_group_describe(const rd_kafka_topic_partition_list_t *l, char *buf, size_t cap) {
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

static int is_rebalance_race(rd_kafka_resp_err_t e) {
    return e == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
           e == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
           e == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID || e == RD_KAFKA_RESP_ERR__STATE;
}

/* The range assignor rebalances eagerly: every partition is revoked, then
 * the whole new assignment given. */
static int eager(rd_kafka_t *rk) { return !strcmp(rd_kafka_rebalance_protocol(rk), "EAGER"); }

/* rd_kafka_assign's error code as the incremental calls' error object. */
static rd_kafka_error_t *error_of(rd_kafka_resp_err_t err) {
    return err ? rd_kafka_error_new(err, "%s", rd_kafka_err2str(err)) : NULL;
}

static void assigned(tide_group_t *g, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts) {
    for (int i = 0; i < parts->cnt; i++)
        tide_offsets_add(&g->offsets, parts->elems[i].topic, parts->elems[i].partition);
    rd_kafka_error_t *e = eager(rk) ? error_of(rd_kafka_assign(rk, parts))
                                    : rd_kafka_incremental_assign(rk, parts);
    if (e) {
        /* librdkafka fails an assign only on a closed or fatal consumer;
         * the poll that follows reports why. */
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "assign failed: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    g->assigned_once = 1;
    g->cb.on_assigned(g->cb.ud, parts);
}

static void revoked(tide_group_t *g, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts) {
    int lost = rd_kafka_assignment_lost(rk);
    g->cb.on_revoking(g->cb.ud, parts, lost);
    for (int i = 0; i < parts->cnt; i++)
        tide_offsets_remove(&g->offsets, parts->elems[i].topic, parts->elems[i].partition);
    g->cb.on_revoked(g->cb.ud, parts, lost);
    rd_kafka_error_t *e = eager(rk) ? error_of(rd_kafka_assign(rk, NULL))
                                    : rd_kafka_incremental_unassign(rk, parts);
    if (e) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "unassign: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    tide_group_t *g = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        assigned(g, rk, parts);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        revoked(g, rk, parts);
    } else {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "rebalance error: %s", rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
    }
}

/* The result of an asynchronous commit. */
static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque) {
    tide_group_t *g = opaque;
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET) return;
    if (err) {
        tide_log(is_rebalance_race(err) ? TIDE_LOG_INFO : TIDE_LOG_WARN, TIDE_AT_NONE,
                 is_rebalance_race(err) ? "commit deferred until the rebalance ends: %s"
                                        : "commit failed: %s",
                 rd_kafka_err2str(err));
        return;
    }
    tide_offsets_committed(&g->offsets, offsets);
}

static int kset(rd_kafka_conf_t *conf, const char *k, const char *v, char **errp) {
    char err[512];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof(err)) == RD_KAFKA_CONF_OK) return 0;
    if (asprintf(errp, "consumer: %s", err) < 0) *errp = NULL;
    return -1;
}

/* The consumer's configuration: tide's defaults, the user's properties over
 * them, then what tide must own. */
static rd_kafka_conf_t *consumer_conf(const tide_group_opts_t *o, char **errp) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* Without fetch.queue.backoff.ms=10 the consumer pauses a whole second
     * each time its queue fills, and throughput falls to a tenth (DESIGN.md).
     * A worker restarted after a crash rejoins only once its dead self's
     * session expires: 10 s instead of Kafka's 45 s. */
    if (kset(conf, "auto.offset.reset", "earliest", errp) ||
        kset(conf, "fetch.queue.backoff.ms", "10", errp) ||
        kset(conf, "session.timeout.ms", "10000", errp) ||
        kset(conf, "heartbeat.interval.ms", "2000", errp) ||
        tide_config_apply_kafka(o->config, conf, TIDE_CLIENT_CONSUMER, errp) ||
        kset(conf, "bootstrap.servers", o->bootstraps, errp) ||
        kset(conf, "group.id", o->group_id, errp) ||
        kset(conf, "partition.assignment.strategy",
             o->co_partitioned ? "range" : "cooperative-sticky", errp) ||
        kset(conf, "enable.auto.commit", "false", errp) ||
        kset(conf, "enable.auto.offset.store", "false", errp)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

tide_group_t *tide_group_new(const tide_group_opts_t *o, char **errp) {
    rd_kafka_conf_t *conf = consumer_conf(o, errp);
    if (!conf) return NULL;
    tide_group_t *g = calloc(1, sizeof(*g));
    if (!g) {
        rd_kafka_conf_destroy(conf);
        if (asprintf(errp, "consumer: out of memory") < 0) *errp = NULL;
        return NULL;
    }
    g->cb = o->cb;
    g->meta = o->meta;
    g->meta_ud = o->meta_ud;
    rd_kafka_conf_set_opaque(conf, g);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, on_commit);
    rd_kafka_conf_set_log_cb(conf, tide_log_rdkafka);
    char err[512];
    g->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!g->rk) {
        if (asprintf(errp, "consumer: %s", err) < 0) *errp = NULL;
        free(g);
        return NULL;
    }
    rd_kafka_poll_set_consumer(g->rk);
    g->queue = rd_kafka_queue_get_consumer(g->rk);
    return g;
}

int tide_group_subscribe(tide_group_t *g, char *const *topics, int n, char **errp) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++) rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(g->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e && asprintf(errp, "subscribe: %s", rd_kafka_err2str(e)) < 0) *errp = NULL;
    return e ? -1 : 0;
}

ssize_t tide_group_poll(tide_group_t *g, rd_kafka_message_t **msgs, size_t max, int timeout_ms) {
    return rd_kafka_consume_batch_queue(g->queue, timeout_ms, msgs, max);
}

tide_offsets_t *tide_group_offsets(tide_group_t *g) { return &g->offsets; }

int tide_group_assigned_once(const tide_group_t *g) { return g->assigned_once; }

/* Every held input topic's partition `partition`. */
static rd_kafka_topic_partition_list_t *held(const tide_group_t *g, int32_t partition) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    for (int i = 0; i < g->offsets.n; i++)
        if (g->offsets.p[i].partition == partition)
            rd_kafka_topic_partition_list_add(l, g->offsets.p[i].topic, partition);
    return l;
}

void tide_group_flow(tide_group_t *g, int32_t partition, int resume) {
    rd_kafka_topic_partition_list_t *l = held(g, partition);
    if (l->cnt) {
        if (resume) rd_kafka_resume_partitions(g->rk, l);
        else rd_kafka_pause_partitions(g->rk, l);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

int64_t tide_group_committed_number(tide_group_t *g, int32_t partition, const char *prefix) {
    rd_kafka_topic_partition_list_t *l = held(g, partition);
    int64_t v = -1;
    size_t n = strlen(prefix);
    if (l->cnt && !rd_kafka_committed(g->rk, l, 5000)) {
        for (int i = 0; i < l->cnt; i++) {
            const rd_kafka_topic_partition_t *e = &l->elems[i];
            char meta[64];
            if (!e->metadata || e->metadata_size <= n || e->metadata_size >= sizeof(meta)) continue;
            memcpy(meta, e->metadata, e->metadata_size);
            meta[e->metadata_size] = '\0';
            if (strncmp(meta, prefix, n)) continue;
            long long x = strtoll(meta + n, NULL, 10);
            if (x > v) v = x;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return v;
}

/* Each pending offset carries the worker's metadata for its partition. */
static void attach_meta(tide_group_t *g, rd_kafka_topic_partition_list_t *l) {
    if (!g->meta) return;
    for (int i = 0; i < l->cnt; i++) {
        char meta[64];
        size_t n = g->meta(g->meta_ud, l->elems[i].partition, meta, sizeof(meta));
        if (n && (l->elems[i].metadata = malloc(n))) { /* freed with the list */
            memcpy(l->elems[i].metadata, meta, n);
            l->elems[i].metadata_size = n;
        }
    }
}

tide_commit_t tide_group_commit(tide_group_t *g, const rd_kafka_topic_partition_list_t *only,
                                const char *why, int async) {
    rd_kafka_topic_partition_list_t *l = tide_offsets_pending(&g->offsets, only);
    tide_commit_t rc = TIDE_COMMIT_DONE;
    if (l->cnt) {
        attach_meta(g, l);
        rd_kafka_resp_err_t e = rd_kafka_commit(g->rk, l, async);
        if (async) {
            /* on_commit has the result */
        } else if (!e) {
            tide_offsets_committed(&g->offsets, l);
            tide_log(TIDE_LOG_DEBUG, TIDE_AT_NONE, "committed %d partition(s) (%s)", l->cnt, why);
        } else if (is_rebalance_race(e)) {
            /* The offsets stay pending and are committed after the
             * rebalance, or on revoke. */
            tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "commit (%s) deferred until the rebalance ends: %s",
                     why, rd_kafka_err2str(e));
            rc = TIDE_COMMIT_DEFERRED;
        } else {
            tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "commit failed (%s): %s", why, rd_kafka_err2str(e));
            rc = TIDE_COMMIT_FAILED;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

int64_t tide_group_lag(tide_group_t *g) {
    const tide_offsets_t *o = &g->offsets;
    if (!o->n) return -1;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(o->n);
    for (int i = 0; i < o->n; i++) rd_kafka_topic_partition_list_add(l, o->p[i].topic, o->p[i].partition);
    int64_t lag = 0;
    int known = 0;
    if (!rd_kafka_position(g->rk, l)) {
        for (int i = 0; i < l->cnt; i++) {
            int64_t lo, hi;
            if (rd_kafka_get_watermark_offsets(g->rk, l->elems[i].topic, l->elems[i].partition,
                                               &lo, &hi))
                continue;
            int64_t pos = l->elems[i].offset >= 0 ? l->elems[i].offset : lo;
            if (hi >= 0 && pos >= 0) {
                lag += hi > pos ? hi - pos : 0;
                known = 1;
            }
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return known ? lag : -1;
}

void tide_group_close(tide_group_t *g) {
    if (g) rd_kafka_consumer_close(g->rk);
}

void tide_group_free(tide_group_t *g) {
    if (!g) return;
    if (g->queue) rd_kafka_queue_destroy(g->queue);
    rd_kafka_destroy(g->rk);
    tide_offsets_free(&g->offsets);
    free(g);
}
