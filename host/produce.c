/*
 * produce.c: the producer (see produce.h). Idempotent with acks=all, so
 * librdkafka's own retries never duplicate or reorder outputs, and the Java
 * client's murmur2 partitioner, so a key lands where Kafka Streams would put it.
 */
#include "produce.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "runtime.h"

struct tide_producer {
    rd_kafka_t *rk;
    rd_kafka_topic_t **outputs; /* one per detector output */
    int n_outputs;
    rd_kafka_topic_t *dlq;
    rd_kafka_topic_t **changelogs; /* one per store */
    int n_changelogs;
    int64_t **acked;   /* [store][partition]: last acknowledged changelog offset */
    int *acked_cap;
    uint64_t sent, dead_lettered;
    uint64_t failed;      /* deliveries that failed, ever */
    char first_failure[512];
};

/* Remember the changelog offsets that are acknowledged: the checkpoint says
 * how far the local store is covered by them. */
static void changelog_acked(tide_producer_t *p, const rd_kafka_message_t *m) {
    for (int s = 0; s < p->n_changelogs; s++) {
        if (p->changelogs[s] != m->rkt) continue;
        int32_t part = m->partition;
        if (part < 0) return;
        if (part >= p->acked_cap[s]) {
            int cap = p->acked_cap[s] ? p->acked_cap[s] : 16;
            while (cap <= part) cap *= 2;
            int64_t *a = realloc(p->acked[s], (size_t)cap * sizeof(*a));
            if (!a) return;
            for (int i = p->acked_cap[s]; i < cap; i++) a[i] = -1;
            p->acked[s] = a;
            p->acked_cap[s] = cap;
        }
        if (m->offset > p->acked[s][part]) p->acked[s][part] = m->offset;
        return;
    }
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    tide_producer_t *p = opaque;
    if (!m->err) {
        if (p->n_changelogs) changelog_acked(p, m);
        return;
    }
    if (!p->failed++)
        snprintf(p->first_failure, sizeof(p->first_failure), "delivery to %s failed: %s",
                 rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
    tide_log(TIDE_LOG_ERROR, (tide_log_at_t){rd_kafka_topic_name(m->rkt), m->partition, -1},
             "delivery failed: %s", rd_kafka_err2str(m->err));
}

static int set(rd_kafka_conf_t *conf, const char *k, const char *v, char **errp) {
    char err[512];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof(err)) == RD_KAFKA_CONF_OK) return 0;
    if (asprintf(errp, "producer: %s", err) < 0) *errp = NULL;
    return -1;
}

tide_producer_t *tide_producer_new(const tide_config_t *c, const char *bootstraps,
                                   char **topics, int n_topics, const char *dlq,
                                   char **errp) {
    tide_producer_t *p = calloc(1, sizeof(*p));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    if (set(conf, "enable.idempotence", "true", errp) || set(conf, "acks", "all", errp) ||
        set(conf, "linger.ms", "5", errp) ||
        set(conf, "partitioner", "murmur2_random", errp) ||
        tide_config_apply_kafka(c, conf, TIDE_CLIENT_PRODUCER, errp) ||
        set(conf, "bootstrap.servers", bootstraps, errp)) {
        rd_kafka_conf_destroy(conf);
        free(p);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_log_cb(conf, tide_log_rdkafka);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!p->rk) {
        if (asprintf(errp, "producer: %s", err) < 0) *errp = NULL;
        free(p);
        return NULL;
    }
    tide_producer_set_outputs(p, topics, n_topics);
    p->dlq = rd_kafka_topic_new(p->rk, dlq, NULL);
    return p;
}

int tide_producer_set_changelogs(tide_producer_t *p, char **topics, int n_topics) {
    p->changelogs = calloc((size_t)n_topics + 1, sizeof(*p->changelogs));
    p->acked = calloc((size_t)n_topics + 1, sizeof(*p->acked));
    p->acked_cap = calloc((size_t)n_topics + 1, sizeof(*p->acked_cap));
    if (!p->changelogs || !p->acked || !p->acked_cap) return -1;
    /* (a global table's store has no changelog: NULL, never written) */
    for (int i = 0; i < n_topics; i++)
        p->changelogs[i] = topics[i] ? rd_kafka_topic_new(p->rk, topics[i], NULL) : NULL;
    p->n_changelogs = n_topics;
    return 0;
}

int64_t tide_producer_changelog_offset(const tide_producer_t *p, int store, int32_t partition) {
    if (store < 0 || store >= p->n_changelogs || partition < 0 || partition >= p->acked_cap[store])
        return -1;
    return p->acked[store][partition];
}

int tide_producer_set_outputs(tide_producer_t *p, char **topics, int n_topics) {
    rd_kafka_topic_t **o = calloc((size_t)n_topics + 1, sizeof(*o));
    if (!o) return -1;
    for (int i = 0; i < n_topics; i++) o[i] = rd_kafka_topic_new(p->rk, topics[i], NULL);
    for (int i = 0; i < p->n_outputs; i++) rd_kafka_topic_destroy(p->outputs[i]);
    free(p->outputs);
    p->outputs = o;
    p->n_outputs = n_topics;
    return 0;
}

static rd_kafka_headers_t *headers_of(const tide_sink_t *s, const tide_sink_entry_t *e) {
    if (!e->hdr_count) return NULL;
    rd_kafka_headers_t *h = rd_kafka_headers_new(e->hdr_count);
    for (uint32_t i = 0; i < e->hdr_count; i++) {
        const tide_sink_hdr_t *sh = &s->hdrs[e->hdr_first + i];
        rd_kafka_header_add(h, tide_sink_bytes(s, sh->name_off), sh->name_len,
                            sh->val_len < 0 ? NULL : tide_sink_bytes(s, sh->val_off),
                            sh->val_len < 0 ? 0 : sh->val_len);
    }
    return h;
}

int tide_producer_send(tide_producer_t *p, const tide_sink_t *s,
                       char **errp) {
    for (size_t i = 0; i < s->n; i++) {
        const tide_sink_entry_t *e = &s->entries[i];
        rd_kafka_topic_t *rkt = e->output >= 0                   ? p->outputs[e->output]
                                : e->output == TIDE_OUTPUT_DLQ ? p->dlq
                                                               : p->changelogs[TIDE_OUTPUT_STORE_ID(e->output)];
        int64_t ts = e->timestamp < 0 ? 0 : e->timestamp; /* 0: librdkafka stamps it */
        rd_kafka_headers_t *h = headers_of(s, e);
        const char *key = tide_sink_key(s, e), *val = tide_sink_val(s, e);
        rd_kafka_resp_err_t err;
        for (;;) {
            err = rd_kafka_producev(
                p->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_PARTITION(e->partition >= 0 ? e->partition : RD_KAFKA_PARTITION_UA),
                RD_KAFKA_V_KEY(key, key ? (size_t)e->key_len : 0),
                RD_KAFKA_V_VALUE((void *)val, val ? (size_t)e->val_len : 0),
                RD_KAFKA_V_TIMESTAMP(ts), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) break;
            /* Back-pressure: let deliveries drain. */
            rd_kafka_poll(p->rk, 10);
        }
        if (err) {
            if (h) rd_kafka_headers_destroy(h);
            if (asprintf(errp, "cannot produce to %s: %s", rd_kafka_topic_name(rkt),
                         rd_kafka_err2str(err)) < 0)
                *errp = NULL;
            return -1;
        }
        if (e->output == TIDE_OUTPUT_DLQ) p->dead_lettered++;
        else if (e->output >= 0) p->sent++;
    }
    return 0;
}

void tide_producer_poll(tide_producer_t *p) { rd_kafka_poll(p->rk, 0); }

int tide_producer_flush(tide_producer_t *p, int timeout_ms, char **errp) {
    rd_kafka_resp_err_t err = rd_kafka_flush(p->rk, timeout_ms);
    if (p->failed) {
        if (asprintf(errp, "%llu output record(s) were not delivered; first: %s",
                     (unsigned long long)p->failed, p->first_failure) < 0)
            *errp = NULL;
        return -1;
    }
    if (err) {
        if (asprintf(errp, "outputs not acknowledged within %d ms (%d in flight)",
                     timeout_ms, rd_kafka_outq_len(p->rk)) < 0)
            *errp = NULL;
        return -1;
    }
    return 0;
}

uint64_t tide_producer_sent(const tide_producer_t *p) { return p->sent; }
uint64_t tide_producer_dead_lettered(const tide_producer_t *p) { return p->dead_lettered; }

void tide_producer_free(tide_producer_t *p) {
    if (!p) return;
    for (int i = 0; i < p->n_outputs; i++) rd_kafka_topic_destroy(p->outputs[i]);
    free(p->outputs);
    if (p->dlq) rd_kafka_topic_destroy(p->dlq);
    for (int i = 0; i < p->n_changelogs; i++) {
        if (p->changelogs[i]) rd_kafka_topic_destroy(p->changelogs[i]);
        free(p->acked[i]);
    }
    free(p->changelogs);
    free(p->acked);
    free(p->acked_cap);
    rd_kafka_destroy(p->rk);
    free(p);
}
