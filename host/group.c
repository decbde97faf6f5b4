/*
 * group.c: the consumer, the assignment and the offsets (see group.h).
 *
 * Owns the rd_kafka_t consumer and the table of held partitions. Commits
 * only offsets of records the worker marked processed, never ahead of them,
 * and never on its own: the worker decides when (after the outputs are
 * durable). Must never call into Lua or touch a store.
 */
#include "group.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

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
    *p = (tide_offset_t){.topic = t, .partition = partition, .processed = -1, .committed = -1,
                         .durable = -1, .start = -1, .high = -1, .fetched = -1, .empty_since = tide_mono_ms()};
    return p;
}

void tide_offsets_drop_buffered(tide_offset_t *p) {
    for (int i = 0; i < p->n; i++) {
        rd_kafka_message_t *m = p->buf[(p->head + i) % p->cap].m;
        if (m) rd_kafka_message_destroy(m);
    }
    p->head = p->n = 0;
}

void tide_offsets_remove(tide_offsets_t *o, const char *topic, int32_t partition) {
    tide_offset_t *p = tide_offsets_find(o, topic, partition);
    if (!p) return;
    tide_offsets_drop_buffered(p);
    free(p->buf);
    free(p->topic);
    *p = o->p[--o->n];
    o->last_hit = 0;
}

int tide_offsets_push(tide_offset_t *p, rd_kafka_message_t *m, int64_t timestamp, int64_t offset) {
    if (offset <= p->processed || (p->fetched >= 0 && offset < p->fetched)) return -1;
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        tide_buffered_t *b = malloc((size_t)cap * sizeof(*b));
        if (!b) return -1;
        for (int i = 0; i < p->n; i++) b[i] = p->buf[(p->head + i) % p->cap];
        free(p->buf);
        p->buf = b;
        p->cap = cap;
        p->head = 0;
    }
    p->buf[(p->head + p->n) % p->cap] = (tide_buffered_t){m, timestamp, offset, NULL};
    p->n++;
    p->fetched = offset + 1;
    if (p->start < 0) p->start = offset;
    p->empty_since = -1;
    return p->n;
}

/* Put b back at the front of p's buffer (it was taken last). */
static void unshift(tide_offset_t *p, const tide_buffered_t *b) {
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        tide_buffered_t *nb = malloc((size_t)cap * sizeof(*nb));
        if (!nb) {
            rd_kafka_message_destroy(b->m); /* fetched again after a rewind, or not at all */
            return;
        }
        for (int i = 0; i < p->n; i++) nb[i] = p->buf[(p->head + i) % p->cap];
        free(p->buf);
        p->buf = nb;
        p->cap = cap;
        p->head = 0;
    }
    p->head = (p->head + p->cap - 1) % p->cap;
    p->buf[p->head] = *b;
    p->n++;
    p->empty_since = -1;
}

void tide_offsets_trim(tide_offsets_t *o) {
    for (int i = 0; i < o->n; i++) {
        tide_offset_t *p = &o->p[i];
        if (p->n) continue;
        free(p->buf);
        p->buf = NULL;
        p->head = p->cap = 0;
    }
}

int tide_offsets_buffered(const tide_offsets_t *o) {
    int n = 0;
    for (int i = 0; i < o->n; i++) n += o->p[i].n;
    return n;
}

/* Must the batch stop for p, which has nothing buffered? */
static int must_wait(const tide_offset_t *p, int64_t now, const tide_order_t *order) {
    if (order->idle_ms < 0 || p->paused & TIDE_PAUSE_RESTORE) return 0;
    int more = p->high < 0 || p->fetched < 0 || p->high > p->fetched;
    int64_t limit = more && order->lag_wait_ms > order->idle_ms ? order->lag_wait_ms : order->idle_ms;
    return p->empty_since >= 0 && now - p->empty_since < limit;
}

/* The partition whose head is the oldest, and the next oldest head's
 * timestamp; NULL when one must be waited for or none has anything. */
static tide_offset_t *oldest(tide_offsets_t *o, int64_t now, const tide_order_t *order,
                             int64_t *second) {
    tide_offset_t *best = NULL;
    int64_t best_ts = INT64_MAX;
    *second = INT64_MAX;
    for (int i = 0; i < o->n; i++) {
        tide_offset_t *p = &o->p[i];
        if (p->paused & TIDE_PAUSE_RESTORE) continue;
        if (!p->n) {
            if (must_wait(p, now, order)) return NULL;
            continue;
        }
        int64_t ts = p->buf[p->head].timestamp;
        if (ts < best_ts) {
            *second = best_ts;
            best_ts = ts;
            best = p;
        } else if (ts < *second) {
            *second = ts;
        }
    }
    return best;
}

int tide_offsets_take(tide_offsets_t *o, tide_buffered_t *out, int max, int64_t now_ms,
                      const tide_order_t *order) {
    int n = 0;
    while (n < max) {
        int64_t second;
        tide_offset_t *p = oldest(o, now_ms, order, &second);
        if (!p) break;
        /* A run from the oldest partition, while it stays the oldest. */
        do {
            out[n] = p->buf[p->head];
            out[n++].part = p;
            p->head = (p->head + 1) % p->cap;
            p->n--;
        } while (n < max && p->n && p->buf[p->head].timestamp <= second);
        if (!p->n) p->empty_since = now_ms;
    }
    return n;
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

tide_offset_t *tide_offsets_accept_taken(tide_offsets_t *o, const tide_buffered_t *b,
                                         const char *topic, int32_t partition) {
    tide_offset_t *p = b->part;
    if (p >= o->p && p < o->p + o->n && p->partition == partition && !strcmp(p->topic, topic))
        return b->offset > p->processed ? p : NULL;
    return tide_offsets_accept(o, topic, partition, b->offset);
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
        if (p && e->offset > p->durable) p->durable = e->offset;
    }
}

void tide_offsets_durable(tide_offsets_t *o, const rd_kafka_topic_partition_list_t *l) {
    for (int i = 0; l && i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *e = &l->elems[i];
        tide_offset_t *p = tide_offsets_find(o, e->topic, e->partition);
        if (p && e->offset > p->durable) p->durable = e->offset;
    }
}

void tide_offsets_free(tide_offsets_t *o) {
    for (int i = 0; i < o->n; i++) {
        tide_offsets_drop_buffered(&o->p[i]);
        free(o->p[i].buf);
        free(o->p[i].topic);
    }
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
    int buffered_max;
    tide_order_t order;
    uint64_t dropped; /* redeliveries and records of partitions no longer held */
    int starved;      /* records are buffered, but the order waits for a partition */
    int is_static;    /* a static member (group.instance.id) */
    int fatal;        /* the consumer hit a fatal error (fenced by another instance) */
    int64_t unreachable_since; /* wall ms: librdkafka said all brokers are down; 0: not */
    int wake;         /* an eventfd librdkafka writes to when one of our queues gets
                       * something after being empty (-1: none, fill polls) */
    rd_kafka_message_t *fetch[1000];
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

/* What the group committed for the new partitions, and its metadata: where
 * their consumption begins, and what lag counts from (one round trip).
 * Returns the list with the committed offsets (INVALID where none), or
 * NULL when the broker did not answer. */
static rd_kafka_topic_partition_list_t *read_committed(tide_group_t *g, rd_kafka_t *rk,
                                                       const rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, 5000);
    for (int i = 0; !e && i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *c = &l->elems[i];
        tide_offset_t *p = tide_offsets_find(&g->offsets, c->topic, c->partition);
        if (!p || c->err || c->offset < 0) continue;
        p->committed = p->start = c->offset;
        size_t n = c->metadata_size < sizeof(p->meta) ? c->metadata_size : sizeof(p->meta) - 1;
        if (c->metadata) memcpy(p->meta, c->metadata, n);
        p->meta[c->metadata ? n : 0] = '\0';
    }
    if (!e) return l;
    tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "cannot read the committed offsets: %s", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
    return NULL;
}

/* Where partitions with no committed offset begin, as auto.offset.reset
 * says, for all of them in one ListOffsets round trip. Left to librdkafka,
 * each partition looks its own up, and the last ones start fetching only
 * once the first ones have filled the queue: a worker that hands out
 * records in time order across partitions would wait for them (and buffer
 * the others) for seconds. Partitions it cannot tell are left INVALID, for
 * librdkafka to resolve. */
static void reset_offsets(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *l) {
    char reset[32];
    size_t size = sizeof(reset);
    if (rd_kafka_conf_get(rd_kafka_conf(rk), "auto.offset.reset", reset, &size) != RD_KAFKA_CONF_OK)
        return;
    /* ListOffsets' own timestamps: -2 the earliest offset, -1 the latest */
    int64_t ts = !strcmp(reset, "smallest") || !strcmp(reset, "earliest") || !strcmp(reset, "beginning")
                     ? -2
                 : !strcmp(reset, "largest") || !strcmp(reset, "latest") || !strcmp(reset, "end")
                     ? -1
                     : 0;
    if (!ts) return; /* "error": librdkafka reports it */
    rd_kafka_topic_partition_list_t *q = rd_kafka_topic_partition_list_new(l->cnt);
    for (int i = 0; i < l->cnt; i++)
        if (l->elems[i].offset < 0 && !l->elems[i].err)
            rd_kafka_topic_partition_list_add(q, l->elems[i].topic, l->elems[i].partition)->offset = ts;
    if (q->cnt && !rd_kafka_offsets_for_times(rk, q, 5000)) {
        for (int i = 0; i < q->cnt; i++) {
            const rd_kafka_topic_partition_t *r = &q->elems[i];
            if (r->err || r->offset < 0) continue;
            rd_kafka_topic_partition_list_find(l, r->topic, r->partition)->offset = r->offset;
        }
    }
    rd_kafka_topic_partition_list_destroy(q);
}

/* Every held partition is read from its own queue, not through the
 * consumer's one queue: the order needs each partition's head, and behind
 * one queue that arrives only after whatever other partitions librdkafka
 * fetched first (about a whole produce batch of each), which the group
 * would have to buffer: the whole topic, on a backlog of many partitions.
 * Per partition, librdkafka's queued.min.messages bounds what it fetches
 * ahead. Set before the assignment starts fetching (librdkafka keeps an
 * application's forwarding). */
static void own_queue(tide_group_t *g, tide_offset_t *p) {
    static const uint64_t one = 1;
    if (p->queue) return;
    p->queue = rd_kafka_queue_get_partition(g->rk, p->topic, p->partition);
    if (!p->queue) return;
    rd_kafka_queue_forward(p->queue, NULL);
    if (g->wake >= 0) rd_kafka_queue_io_event_enable(p->queue, g->wake, &one, sizeof(one));
}

static void drop_queue(tide_offset_t *p) {
    if (!p || !p->queue) return;
    rd_kafka_queue_io_event_enable(p->queue, -1, NULL, 0);
    rd_kafka_queue_destroy(p->queue);
    p->queue = NULL;
}

static void assigned(tide_group_t *g, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts) {
    for (int i = 0; i < parts->cnt; i++) {
        tide_offset_t *p = tide_offsets_add(&g->offsets, parts->elems[i].topic, parts->elems[i].partition);
        if (p) own_queue(g, p);
    }
    /* Assigned at concrete offsets (the committed ones, else where
     * auto.offset.reset points), so that every partition fetches at once. */
    rd_kafka_topic_partition_list_t *at = read_committed(g, rk, parts);
    if (at) reset_offsets(rk, at);
    const rd_kafka_topic_partition_list_t *to = at ? at : parts;
    rd_kafka_error_t *e = eager(rk) ? error_of(rd_kafka_assign(rk, to))
                                    : rd_kafka_incremental_assign(rk, to);
    if (at) rd_kafka_topic_partition_list_destroy(at);
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
    for (int i = 0; i < parts->cnt; i++) {
        drop_queue(tide_offsets_find(&g->offsets, parts->elems[i].topic, parts->elems[i].partition));
        tide_offsets_remove(&g->offsets, parts->elems[i].topic, parts->elems[i].partition);
    }
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

/* librdkafka's errors: all brokers down marks the broker unreachable (until
 * tide_group_reachable finds it again); every one is logged. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    tide_group_t *g = opaque;
    (void)rk;
    /* The broker going away is said once, by the worker (it asks
     * tide_group_unreachable_since); librdkafka repeats these many times a
     * second while it reconnects. */
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        if (!g->unreachable_since) g->unreachable_since = tide_wall_ms();
        return;
    }
    tide_log(err == RD_KAFKA_RESP_ERR__TRANSPORT ? TIDE_LOG_DEBUG : TIDE_LOG_ERROR, TIDE_AT_NONE,
             "consumer: %s: %s", rd_kafka_err2name(err), reason);
}

int64_t tide_group_unreachable_since(tide_group_t *g) {
    if (!g->unreachable_since || !g->offsets.n) return g->unreachable_since;
    /* Marked down: one short metadata request tells whether it is back. */
    rd_kafka_topic_t *t = rd_kafka_topic_new(g->rk, g->offsets.p[0].topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (t && !rd_kafka_metadata(g->rk, 0, t, &md, 500)) g->unreachable_since = 0;
    if (md) rd_kafka_metadata_destroy(md);
    if (t) rd_kafka_topic_destroy(t);
    return g->unreachable_since;
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
        /* Per partition here (each is read from its own queue): fetch a
         * partition again once fewer than this are waiting in librdkafka,
         * about what the group buffers of it. librdkafka's default
         * (100000) would read ahead a whole backlog on each partition. */
        kset(conf, "queued.min.messages", "1000", errp) ||
        tide_config_apply_kafka(o->config, conf, TIDE_CLIENT_CONSUMER, errp) ||
        kset(conf, "bootstrap.servers", o->bootstraps, errp) ||
        kset(conf, "group.id", o->group_id, errp) ||
        kset(conf, "partition.assignment.strategy",
             o->co_partitioned ? "range" : "cooperative-sticky", errp) ||
        kset(conf, "enable.auto.commit", "false", errp) ||
        kset(conf, "enable.auto.offset.store", "false", errp) ||
        (o->transactional && kset(conf, "isolation.level", "read_committed", errp)) ||
        (o->instance_id && kset(conf, "group.instance.id", o->instance_id, errp))) {
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
    g->buffered_max = o->buffered_max > 0 ? o->buffered_max : 1000;
    g->is_static = o->instance_id != NULL;
    g->order = o->order;
    rd_kafka_conf_set_opaque(conf, g);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, on_commit);
    rd_kafka_conf_set_error_cb(conf, on_error);
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
    g->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g->wake >= 0) {
        static const uint64_t one = 1;
        rd_kafka_queue_io_event_enable(g->queue, g->wake, &one, sizeof(one));
    }
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

static void consumer_error(tide_group_t *g, const rd_kafka_message_t *m) {
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) return;
    if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_resp_err_t e = rd_kafka_fatal_error(g->rk, why, sizeof(why));
        if (!g->fatal)
            tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "consumer: %s%s", why,
                     e == RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID
                         ? " (another member of the group has this worker's group.instance.id: "
                           "two instances sharing one state.dir, or the same id set twice)"
                         : "");
        g->fatal = 1;
        return;
    }
    tide_log(TIDE_LOG_WARN,
             (tide_log_at_t){m->rkt ? rd_kafka_topic_name(m->rkt) : NULL, m->partition, -1},
             "consumer: %s", rd_kafka_message_errstr(m));
}

/* A fetched message: into its partition's buffer, or dropped. */
static void buffer(tide_group_t *g, rd_kafka_message_t *m) {
    tide_offset_t *p = m->err ? NULL
                              : tide_offsets_find(&g->offsets, rd_kafka_topic_name(m->rkt), m->partition);
    if (p && tide_offsets_push(p, m, rd_kafka_message_timestamp(m, NULL), m->offset) >= 0) return;
    if (m->err) consumer_error(g, m);
    else g->dropped++; /* a redelivery, or a partition no longer held */
    rd_kafka_message_destroy(m);
}

/* Top up each partition's buffer from its own queue once it is half empty;
 * returns the records taken. */
static int refill(tide_group_t *g) {
    int got = 0, max = (int)(sizeof(g->fetch) / sizeof(g->fetch[0]));
    for (int i = 0; i < g->offsets.n; i++) {
        tide_offset_t *p = &g->offsets.p[i];
        if (!p->queue || p->n > g->buffered_max / 2) continue;
        int room = g->buffered_max - p->n;
        ssize_t n = rd_kafka_consume_batch_queue(p->queue, 0, g->fetch, (size_t)(room < max ? room : max));
        for (ssize_t k = 0; k < n; k++) {
            rd_kafka_message_t *m = g->fetch[k];
            /* its own queue holds only its records (or its errors) */
            if (m->err || m->partition != p->partition ||
                tide_offsets_push(p, m, rd_kafka_message_timestamp(m, NULL), m->offset) < 0)
                buffer(g, m);
        }
        got += n > 0 ? (int)n : 0;
    }
    return got;
}

/* The consumer's own queue: rebalances and errors (their callbacks run
 * here), and the records of partitions not read from a queue of their own.
 * Back-pressure for those without pausing (a paused partition resumes only
 * with librdkafka's next fetch, up to fetch.wait.max.ms later): past the
 * cap, one record a pass, unless the order waits for a partition. */
static int poll_consumer(tide_group_t *g, int timeout_ms) {
    int cap = g->buffered_max * (g->offsets.n ? g->offsets.n : 1);
    size_t max = sizeof(g->fetch) / sizeof(g->fetch[0]);
    if (tide_offsets_buffered(&g->offsets) >= cap && !g->starved) max = 1;
    ssize_t n = rd_kafka_consume_batch_queue(g->queue, timeout_ms, g->fetch, max);
    for (ssize_t i = 0; i < n; i++) buffer(g, g->fetch[i]);
    return n > 0 ? (int)n : 0;
}

void tide_group_fill(tide_group_t *g, int timeout_ms) {
    if (g->wake < 0) { /* no wake-ups: the consumer's queue is the one to wait on */
        refill(g);
        poll_consumer(g, timeout_ms);
        return;
    }
    if (refill(g) + poll_consumer(g, 0) > 0 || timeout_ms <= 0) return;
    /* Nothing anywhere: sleep until a queue of ours gets something. */
    struct pollfd pfd = {.fd = g->wake, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) > 0) {
        uint64_t v;
        ssize_t r = read(g->wake, &v, sizeof(v));
        (void)r;
    }
    refill(g);
    poll_consumer(g, 0);
}

/* The cached end of every empty partition: whether more is on the broker. */
static void refresh_ends(tide_group_t *g) {
    for (int i = 0; i < g->offsets.n; i++) {
        tide_offset_t *p = &g->offsets.p[i];
        int64_t lo, hi;
        if (p->n || rd_kafka_get_watermark_offsets(g->rk, p->topic, p->partition, &lo, &hi))
            continue;
        if (hi >= 0) p->high = hi;
        if (p->fetched < 0 && p->committed < 0 && lo >= 0) p->fetched = lo;
        if (p->fetched < 0 && p->committed >= 0) p->fetched = p->committed;
    }
}

int tide_group_starved(const tide_group_t *g) { return g->starved; }

int tide_group_take(tide_group_t *g, tide_buffered_t *out, int max) {
    refresh_ends(g);
    int n = tide_offsets_take(&g->offsets, out, max, tide_mono_ms(), &g->order);
    g->starved = n == 0 && tide_offsets_buffered(&g->offsets) > 0;
    return n;
}

void tide_group_unshift(tide_group_t *g, const tide_buffered_t *b, int n) {
    for (int i = n - 1; i >= 0; i--) {
        tide_offset_t *p = tide_offsets_find(&g->offsets, rd_kafka_topic_name(b[i].m->rkt),
                                             b[i].m->partition);
        if (p) unshift(p, &b[i]);
        else rd_kafka_message_destroy(b[i].m);
    }
}

uint64_t tide_group_dropped(const tide_group_t *g) { return g->dropped; }

tide_offsets_t *tide_group_offsets(tide_group_t *g) { return &g->offsets; }

rd_kafka_t *tide_group_consumer(tide_group_t *g) { return g->rk; }

int tide_group_assigned_once(const tide_group_t *g) { return g->assigned_once; }

/* Pause or resume p for `reason`; librdkafka hears only of the changes. */
static void pause_one(tide_group_t *g, tide_offset_t *p, unsigned reason, int on,
                      rd_kafka_topic_partition_list_t *pause, rd_kafka_topic_partition_list_t *resume) {
    unsigned was = p->paused;
    p->paused = on ? was | reason : was & ~reason;
    if (!was && p->paused) rd_kafka_topic_partition_list_add(pause, p->topic, p->partition);
    if (was && !p->paused) rd_kafka_topic_partition_list_add(resume, p->topic, p->partition);
}

static void pause_where(tide_group_t *g, int32_t partition, unsigned reason, int on) {
    rd_kafka_topic_partition_list_t *pause = rd_kafka_topic_partition_list_new(4);
    rd_kafka_topic_partition_list_t *resume = rd_kafka_topic_partition_list_new(4);
    for (int i = 0; i < g->offsets.n; i++)
        if (partition < 0 || g->offsets.p[i].partition == partition)
            pause_one(g, &g->offsets.p[i], reason, on, pause, resume);
    if (pause->cnt) rd_kafka_pause_partitions(g->rk, pause);
    if (resume->cnt) rd_kafka_resume_partitions(g->rk, resume);
    rd_kafka_topic_partition_list_destroy(pause);
    rd_kafka_topic_partition_list_destroy(resume);
}

void tide_group_pause(tide_group_t *g, int32_t partition, unsigned reason, int on) {
    pause_where(g, partition, reason, on);
}

void tide_group_pause_all(tide_group_t *g, unsigned reason, int on) { pause_where(g, -1, reason, on); }

int64_t tide_group_committed_number(tide_group_t *g, int32_t partition, const char *prefix) {
    int64_t v = -1;
    size_t n = strlen(prefix);
    for (int i = 0; i < g->offsets.n; i++) {
        const tide_offset_t *p = &g->offsets.p[i];
        if (p->partition != partition || strncmp(p->meta, prefix, n)) continue;
        long long x = strtoll(p->meta + n, NULL, 10);
        if (x > v) v = x;
    }
    return v;
}

int tide_group_rewind(tide_group_t *g, const rd_kafka_topic_partition_list_t *except) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(g->offsets.n + 1);
    for (int i = 0; i < g->offsets.n; i++) {
        tide_offset_t *p = &g->offsets.p[i];
        tide_offsets_drop_buffered(p);
        if (except && rd_kafka_topic_partition_list_find(except, p->topic, p->partition)) continue;
        int64_t to = p->durable >= 0 ? p->durable : p->committed >= 0 ? p->committed : p->start;
        p->empty_since = tide_mono_ms();
        if (to < 0) continue; /* nothing consumed yet */
        p->processed = to - 1;
        p->fetched = to;
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = to;
    }
    int rc = 0;
    if (l->cnt) {
        rd_kafka_error_t *e = rd_kafka_seek_partitions(g->rk, l, 5000);
        for (int i = 0; !e && i < l->cnt; i++)
            if (l->elems[i].err) {
                tide_log(TIDE_LOG_ERROR, (tide_log_at_t){l->elems[i].topic, l->elems[i].partition, -1},
                         "cannot seek back to the last commit: %s", rd_kafka_err2str(l->elems[i].err));
                rc = -1;
            }
        if (e) {
            tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "cannot seek back to the last commit: %s",
                     rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            rc = -1;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
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

rd_kafka_topic_partition_list_t *tide_group_pending(tide_group_t *g,
                                                    const rd_kafka_topic_partition_list_t *only) {
    rd_kafka_topic_partition_list_t *l = tide_offsets_pending(&g->offsets, only);
    attach_meta(g, l);
    return l;
}

tide_group_commit_t tide_group_commit(tide_group_t *g, const rd_kafka_topic_partition_list_t *only,
                                      const char *why, int async) {
    rd_kafka_topic_partition_list_t *l = tide_group_pending(g, only);
    tide_group_commit_t rc = TIDE_GROUP_COMMIT_DONE;
    tide_offsets_durable(&g->offsets, l);
    if (l->cnt) {
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
            rc = TIDE_GROUP_COMMIT_DEFERRED;
        } else {
            tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "commit failed (%s): %s", why, rd_kafka_err2str(e));
            rc = TIDE_GROUP_COMMIT_FAILED;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

int64_t tide_group_lag(tide_group_t *g) {
    const tide_offsets_t *o = &g->offsets;
    if (!o->n) return -1;
    int64_t lag = 0;
    int known = 0;
    for (int i = 0; i < o->n; i++) {
        const tide_offset_t *p = &o->p[i];
        int64_t lo, hi;
        if (rd_kafka_get_watermark_offsets(g->rk, p->topic, p->partition, &lo, &hi) || hi < 0)
            continue;
        /* Where processing stands: after the last record processed, else
         * at the committed offset; with neither (a group that never
         * committed), where the consumer starts: the log's start. */
        int64_t at = p->processed >= 0 ? p->processed + 1 : p->committed >= 0 ? p->committed : lo;
        if (at < 0) continue;
        lag += hi > at ? hi - at : 0;
        known = 1;
    }
    return known ? lag : -1;
}

int tide_group_fatal(const tide_group_t *g) { return g->fatal; }

/* Has librdkafka left the group? It forgets its member id as it sends the
 * LeaveGroup. */
static int left(tide_group_t *g) {
    char *id = rd_kafka_memberid(g->rk);
    int gone = !id || !*id;
    if (id) rd_kafka_mem_free(g->rk, id);
    return gone;
}

/* librdkafka's close keeps a static member in the group (KIP-345: no
 * LeaveGroup on termination); an unsubscribe first makes it leave: its
 * partitions are revoked (the callbacks run here) and a LeaveGroup follows
 * once they are given up, before the close (which waits for its answer). */
static void leave_static(tide_group_t *g) {
    rd_kafka_unsubscribe(g->rk);
    int64_t deadline = tide_mono_ms() + 3000;
    while (tide_mono_ms() < deadline && !left(g)) tide_group_fill(g, 20);
}

int tide_group_close(tide_group_t *g, int leave) {
    if (!g) return 0;
    if (leave && g->is_static && !g->fatal) leave_static(g);
    rd_kafka_consumer_close(g->rk);
    return leave || !g->is_static;
}

void tide_group_free(tide_group_t *g) {
    if (!g) return;
    for (int i = 0; i < g->offsets.n; i++) drop_queue(&g->offsets.p[i]);
    tide_offsets_free(&g->offsets); /* buffered messages hold the client's partitions */
    if (g->queue) {
        rd_kafka_queue_io_event_enable(g->queue, -1, NULL, 0);
        rd_kafka_queue_destroy(g->queue);
    }
    if (g->wake >= 0) close(g->wake);
    rd_kafka_destroy(g->rk);
    free(g);
}
