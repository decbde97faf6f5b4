/*
 * produce.c: the producer (see produce.h). Idempotent with acks=all, so
 * librdkafka's own retries never duplicate or reorder outputs, and the Java
 * client's murmur2 partitioner, so a key lands where Kafka Streams would put
 * it. Transactional under exactly-once.
 *
 * Every produced record carries, as its opaque, the index of its source (the
 * input record it was emitted for) in a table that lives until the next
 * commit or rollback; a delivery report that fails names that source. Never
 * decides what to do about a failure: it classifies it (the record's own
 * fault, or not) and the worker rolls back.
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
    int transactional, in_txn;
    /* sources of the records produced since the last reset; opaque = index + 1 */
    tide_source_t *src;
    size_t n_src, cap_src;
    char **topics; /* interned input topic names */
    int n_topics;
    int64_t in_flight;
    /* acknowledged since the last reset, and in all */
    uint64_t epoch_out, epoch_dlq, sent, dead_lettered;
    tide_record_failure_t *failures;
    int n_failures, cap_failures;
    int other_failed;
    char other[512];
    char missing_topic[256];
};

/* ---------------------------------------------------------------- sources */

static const char *intern(tide_producer_t *p, const char *topic) {
    for (int i = 0; i < p->n_topics; i++)
        if (!strcmp(p->topics[i], topic)) return p->topics[i];
    char **t = realloc(p->topics, (size_t)(p->n_topics + 1) * sizeof(*t));
    if (!t) return NULL;
    p->topics = t;
    return (p->topics[p->n_topics] = strdup(topic)) ? p->topics[p->n_topics++] : NULL;
}

/* The opaque of records emitted for `rec` (NULL: none). Consecutive entries
 * of one record share one source. */
static void *source_of(tide_producer_t *p, const tide_rec_t *rec) {
    if (!rec) return NULL;
    if (p->n_src) {
        const tide_source_t *last = &p->src[p->n_src - 1];
        if (last->offset == rec->offset && last->partition == rec->partition &&
            !strcmp(last->topic, rec->topic))
            return (void *)(uintptr_t)p->n_src;
    }
    if (p->n_src == p->cap_src) {
        size_t cap = p->cap_src ? p->cap_src * 2 : 1024;
        tide_source_t *s = realloc(p->src, cap * sizeof(*s));
        if (!s) return NULL;
        p->src = s;
        p->cap_src = cap;
    }
    const char *topic = intern(p, rec->topic);
    if (!topic) return NULL;
    p->src[p->n_src++] = (tide_source_t){topic, rec->partition, rec->offset};
    return (void *)(uintptr_t)p->n_src;
}

/* ---------------------------------------------------------------- failures */

/* A delivery error that is the record's own fault, as Kafka Streams' default
 * production exception handler sees it: retrying cannot help. */
static int record_fault(rd_kafka_resp_err_t e) {
    return e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE || e == RD_KAFKA_RESP_ERR_INVALID_RECORD ||
           e == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE ||
           e == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
           e == RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP ||
           e == RD_KAFKA_RESP_ERR__INVALID_ARG;
}

static int unknown_topic(rd_kafka_resp_err_t e) {
    return e == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC || e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
}

static void add_failure(tide_producer_t *p, const tide_source_t *src, int guilty,
                        const char *topic, const char *reason) {
    for (int i = 0; i < p->n_failures; i++) {
        tide_record_failure_t *f = &p->failures[i];
        if (f->source.offset == src->offset && f->source.partition == src->partition &&
            !strcmp(f->source.topic, src->topic)) {
            f->guilty |= guilty;
            return;
        }
    }
    if (p->n_failures == p->cap_failures) {
        int cap = p->cap_failures ? p->cap_failures * 2 : 16;
        tide_record_failure_t *f = realloc(p->failures, (size_t)cap * sizeof(*f));
        if (!f) return;
        p->failures = f;
        p->cap_failures = cap;
    }
    tide_record_failure_t *f = &p->failures[p->n_failures++];
    f->source = *src;
    f->guilty = guilty;
    snprintf(f->topic, sizeof(f->topic), "%s", topic);
    snprintf(f->reason, sizeof(f->reason), "%s", reason);
}

static void other_failure(tide_producer_t *p, const char *topic, rd_kafka_resp_err_t e) {
    if (!p->other_failed++)
        snprintf(p->other, sizeof(p->other), "delivery to %s failed: %s", topic, rd_kafka_err2str(e));
    if (unknown_topic(e)) snprintf(p->missing_topic, sizeof(p->missing_topic), "%s", topic);
}

/* A failed delivery: the record's own fault (guilty when the broker said so
 * of that record alone), or a failure of the batch or of the broker. */
static void failed(tide_producer_t *p, const rd_kafka_message_t *m) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    size_t i = (size_t)(uintptr_t)m->_private;
    const tide_source_t *src = i && i <= p->n_src ? &p->src[i - 1] : NULL;
    if (record_fault(m->err) && src) {
        /* INVALID_RECORD is per record (the others in its batch fail with
         * _INVALID_DIFFERENT_RECORD); the rest fail whole batches. */
        add_failure(p, src, m->err == RD_KAFKA_RESP_ERR_INVALID_RECORD ||
                                m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                    topic, rd_kafka_err2str(m->err));
    } else {
        other_failure(p, topic, m->err);
    }
    /* An abort purges what was queued: expected, and not worth a line each. */
    if (m->err != RD_KAFKA_RESP_ERR__PURGE_QUEUE && m->err != RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
        tide_log(TIDE_LOG_WARN, (tide_log_at_t){topic, m->partition, -1}, "delivery failed: %s",
                 rd_kafka_err2str(m->err));
}

/* ---------------------------------------------------------------- deliveries */

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
    (void)rk;
    p->in_flight--;
    if (m->err) {
        failed(p, m);
        return;
    }
    if (m->rkt == p->dlq) p->epoch_dlq++;
    else if (p->n_changelogs) changelog_acked(p, m);
    for (int i = 0; i < p->n_outputs; i++)
        if (m->rkt == p->outputs[i]) {
            p->epoch_out++;
            break;
        }
}

/* ---------------------------------------------------------------- setup */

static int set(rd_kafka_conf_t *conf, const char *k, const char *v, char **errp) {
    char err[512];
    if (rd_kafka_conf_set(conf, k, v, err, sizeof(err)) == RD_KAFKA_CONF_OK) return 0;
    if (asprintf(errp, "producer: %s", err) < 0) *errp = NULL;
    return -1;
}

tide_producer_t *tide_producer_new(const tide_producer_opts_t *o, char **errp) {
    tide_producer_t *p = calloc(1, sizeof(*p));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    if (!p || set(conf, "enable.idempotence", "true", errp) || set(conf, "acks", "all", errp) ||
        set(conf, "linger.ms", "5", errp) || set(conf, "partitioner", "murmur2_random", errp) ||
        tide_config_apply_kafka(o->config, conf, TIDE_CLIENT_PRODUCER, errp) ||
        set(conf, "bootstrap.servers", o->bootstraps, errp) ||
        (o->transactional_id && set(conf, "transactional.id", o->transactional_id, errp))) {
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
    p->transactional = o->transactional_id != NULL;
    tide_producer_set_outputs(p, o->outputs, o->n_outputs);
    p->dlq = rd_kafka_topic_new(p->rk, o->dlq, NULL);
    return p;
}

int tide_producer_set_changelogs(tide_producer_t *p, char *const *topics, int n_topics) {
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

/* ---------------------------------------------------------------- producing */

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

static rd_kafka_topic_t *topic_of(const tide_producer_t *p, const tide_sink_entry_t *e) {
    return e->output >= 0               ? p->outputs[e->output]
           : e->output == TIDE_OUTPUT_DLQ ? p->dlq
                                          : p->changelogs[TIDE_OUTPUT_STORE_ID(e->output)];
}

static rd_kafka_resp_err_t produce_one(tide_producer_t *p, const tide_sink_t *s,
                                       const tide_sink_entry_t *e, void *opaque) {
    int64_t ts = e->timestamp < 0 ? 0 : e->timestamp; /* 0: librdkafka stamps it */
    rd_kafka_headers_t *h = headers_of(s, e);
    const char *key = tide_sink_key(s, e), *val = tide_sink_val(s, e);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->rk, RD_KAFKA_V_RKT(topic_of(p, e)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_PARTITION(e->partition >= 0 ? e->partition : RD_KAFKA_PARTITION_UA),
        RD_KAFKA_V_KEY(key, key ? (size_t)e->key_len : 0),
        RD_KAFKA_V_VALUE((void *)val, val ? (size_t)e->val_len : 0), RD_KAFKA_V_TIMESTAMP(ts),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
    if (err && h) rd_kafka_headers_destroy(h);
    return err;
}

/* A record librdkafka refused at once. */
static tide_flush_t refused(tide_producer_t *p, const tide_sink_entry_t *e, void *opaque,
                            rd_kafka_resp_err_t err) {
    const char *topic = rd_kafka_topic_name(topic_of(p, e));
    size_t i = (size_t)(uintptr_t)opaque;
    tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "cannot produce to %s: %s", topic, rd_kafka_err2str(err));
    if (err == RD_KAFKA_RESP_ERR__FATAL || err == RD_KAFKA_RESP_ERR__FENCED) return TIDE_FLUSH_FATAL;
    if (record_fault(err) && i) add_failure(p, &p->src[i - 1], 1, topic, rd_kafka_err2str(err));
    else other_failure(p, topic, err);
    return TIDE_FLUSH_FAILED;
}

tide_flush_t tide_producer_send(tide_producer_t *p, const tide_sink_t *s, const tide_batch_t *batch,
                                size_t *sent, int block_ms) {
    int64_t deadline = tide_mono_ms() + block_ms;
    char *err = NULL;
    if (s->n > *sent && tide_producer_begin_txn(p, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        return TIDE_FLUSH_FATAL;
    }
    while (*sent < s->n) {
        const tide_sink_entry_t *e = &s->entries[*sent];
        const tide_rec_t *rec = batch && e->source >= 0 && e->source < batch->n
                                    ? &batch->recs[e->source] : NULL;
        void *opaque = source_of(p, rec);
        rd_kafka_resp_err_t r = produce_one(p, s, e, opaque);
        if (r == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            /* Back-pressure: let deliveries drain, up to the caller's bound. */
            if (tide_mono_ms() >= deadline) return TIDE_FLUSH_PENDING;
            rd_kafka_poll(p->rk, 10);
            continue;
        }
        if (r) return refused(p, e, opaque, r);
        p->in_flight++;
        (*sent)++;
    }
    return TIDE_FLUSH_DONE;
}

void tide_producer_poll(tide_producer_t *p) { rd_kafka_poll(p->rk, 0); }

rd_kafka_t *tide_producer_handle(tide_producer_t *p) { return p->rk; }

int64_t tide_producer_in_flight(const tide_producer_t *p) { return p->in_flight; }

static tide_flush_t fatal_or(tide_producer_t *p, tide_flush_t otherwise) {
    char why[512];
    rd_kafka_resp_err_t e = rd_kafka_fatal_error(p->rk, why, sizeof(why));
    if (!e) return otherwise;
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "producer: fatal error: %s", why);
    return TIDE_FLUSH_FATAL;
}

tide_flush_t tide_producer_flush(tide_producer_t *p, int timeout_ms) {
    if (p->in_flight > 0) rd_kafka_flush(p->rk, timeout_ms);
    else rd_kafka_poll(p->rk, 0);
    /* A failure is reported once every record has its answer: the table of
     * sources must outlive the delivery reports that name them. */
    if (p->in_flight > 0) return fatal_or(p, TIDE_FLUSH_PENDING);
    return fatal_or(p, p->n_failures || p->other_failed ? TIDE_FLUSH_FAILED : TIDE_FLUSH_DONE);
}

const tide_record_failure_t *tide_producer_failures(const tide_producer_t *p, int *n,
                                                    const char **other) {
    *n = p->n_failures;
    *other = p->other_failed ? p->other : NULL;
    return p->failures;
}

const char *tide_producer_missing_topic(const tide_producer_t *p) {
    return p->missing_topic[0] ? p->missing_topic : NULL;
}

/* Forget the epoch; `keep` the acknowledged counts (a commit) or not. */
static void reset(tide_producer_t *p, int keep) {
    if (keep) {
        p->sent += p->epoch_out;
        p->dead_lettered += p->epoch_dlq;
    }
    p->epoch_out = p->epoch_dlq = 0;
    p->n_src = 0;
    p->n_failures = 0;
    p->other_failed = 0;
    p->other[0] = '\0';
    p->missing_topic[0] = '\0';
}

void tide_producer_reset(tide_producer_t *p) { reset(p, 1); }

uint64_t tide_producer_sent(const tide_producer_t *p) {
    return p->sent + (p->transactional ? 0 : p->epoch_out);
}

uint64_t tide_producer_dead_lettered(const tide_producer_t *p) {
    return p->dead_lettered + (p->transactional ? 0 : p->epoch_dlq);
}

/* ---------------------------------------------------------------- transactions */

/* The end of a transactional call, as the worker must act on it. */
static tide_txn_t txn_result(rd_kafka_error_t *e, const char *what, char **errp) {
    if (!e) return TIDE_TXN_DONE;
    tide_txn_t r = rd_kafka_error_is_fatal(e)               ? TIDE_TXN_FATAL
                   : rd_kafka_error_txn_requires_abort(e) ? TIDE_TXN_ABORT
                   : rd_kafka_error_is_retriable(e)       ? TIDE_TXN_RETRY
                   : rd_kafka_error_code(e) == RD_KAFKA_RESP_ERR__TIMED_OUT ? TIDE_TXN_RETRY
                                                                             : TIDE_TXN_ABORT;
    if (asprintf(errp, "%s: %s", what, rd_kafka_error_string(e)) < 0) *errp = NULL;
    rd_kafka_error_destroy(e);
    return r;
}

tide_txn_t tide_producer_init_txn(tide_producer_t *p, int timeout_ms, char **errp) {
    return txn_result(rd_kafka_init_transactions(p->rk, timeout_ms), "init transactions", errp);
}

int tide_producer_in_txn(const tide_producer_t *p) { return p->in_txn; }

int tide_producer_begin_txn(tide_producer_t *p, char **errp) {
    if (!p->transactional || p->in_txn) return 0;
    rd_kafka_error_t *e = rd_kafka_begin_transaction(p->rk);
    if (e) {
        if (asprintf(errp, "begin transaction: %s", rd_kafka_error_string(e)) < 0) *errp = NULL;
        rd_kafka_error_destroy(e);
        return -1;
    }
    p->in_txn = 1;
    return 0;
}

tide_txn_t tide_producer_commit_txn(tide_producer_t *p, const rd_kafka_topic_partition_list_t *offsets,
                                    rd_kafka_t *consumer, int timeout_ms, char **errp) {
    if (!p->in_txn) return TIDE_TXN_DONE;
    if (offsets && offsets->cnt) {
        rd_kafka_consumer_group_metadata_t *md = rd_kafka_consumer_group_metadata(consumer);
        tide_txn_t r = txn_result(
            rd_kafka_send_offsets_to_transaction(p->rk, offsets, md, timeout_ms),
            "send offsets to transaction", errp);
        rd_kafka_consumer_group_metadata_destroy(md);
        if (r != TIDE_TXN_DONE) return r;
    }
    tide_txn_t r = txn_result(rd_kafka_commit_transaction(p->rk, timeout_ms), "commit transaction",
                              errp);
    if (r == TIDE_TXN_DONE) {
        p->in_txn = 0;
        reset(p, 1);
    }
    return r;
}

tide_txn_t tide_producer_abort_txn(tide_producer_t *p, int timeout_ms, char **errp) {
    if (!p->in_txn) {
        reset(p, 0);
        return TIDE_TXN_DONE;
    }
    tide_txn_t r = txn_result(rd_kafka_abort_transaction(p->rk, timeout_ms), "abort transaction",
                              errp);
    if (r == TIDE_TXN_DONE) {
        /* The purged records' reports name sources of this table: serve
         * them before it is forgotten. */
        rd_kafka_flush(p->rk, timeout_ms);
        p->in_txn = 0;
        p->in_flight = 0;
        reset(p, 0);
    }
    return r;
}

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
    for (int i = 0; i < p->n_topics; i++) free(p->topics[i]);
    free(p->topics);
    free(p->src);
    free(p->failures);
    rd_kafka_destroy(p->rk);
    free(p);
}
