/*
 * produce.c: the producer (see produce.h). Idempotent with acks=all, so
 * librdkafka's own retries never duplicate or reorder outputs, and the Java
 * client's murmur2 partitioner, so a key lands where Kafka Streams would put
 * it. Transactional under exactly-once.
 *
 * Every produced record carries, as its opaque, the index of its source (the
 * input record it was emitted for) in a table that is reset at each commit
 * or rollback, and whose chunks go once no record in flight names them; a
 * delivery report that fails names that source. Never decides what to do
 * about a failure: it classifies it (the record's own fault, or not) and
 * the worker rolls back.
 *
 * Its thread only produces the arenas handed to it, in order, and serves
 * delivery reports; it never calls into Lua, never commits, and never
 * produces an arena that a rollback dropped. The delivery state (in
 * flight, failures, sources, acknowledged offsets) is shared under one
 * lock, held by whichever thread polls librdkafka.
 */
#include "produce.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "runtime.h"

/* Arenas: one being filled by the detector (the runtime's sink), the others
 * queued for the thread or being produced by it. */
#define N_JOBS 4
/* Sources are kept in chunks, freed once none of their records is in flight:
 * the table never moves (no copy as it grows), and holds what is in flight,
 * not every record since the last commit. */
#define SRC_CHUNK 4096

typedef struct src_chunk {
    int64_t pending; /* produced records naming a source of this chunk, not reported yet */
    tide_source_t e[SRC_CHUNK];
} src_chunk_t;

/* An arena handed to the thread, with what it needs to produce it. */
typedef struct tide_job {
    tide_sink_t arena;          /* owned; reused from job to job */
    void **opaque;              /* per entry: its source's index + 1, or NULL */
    size_t cap_opaque;
    size_t done;                /* entries handed to librdkafka, or dropped */
    rd_kafka_topic_t **outputs; /* the outputs as of the handoff (a swap retires, never frees) */
    rd_kafka_message_t **msgs;  /* the batch's consumer messages, destroyed once produced */
    int n_msgs, cap_msgs;
} tide_job_t;

/* Output arrays replaced by a hot swap, kept until the producer goes: a job
 * handed before the swap may still name them. */
typedef struct retired {
    rd_kafka_topic_t **topics;
    int n;
    struct retired *next;
} retired_t;

struct tide_producer {
    rd_kafka_t *rk;
    rd_kafka_topic_t **outputs; /* one per detector output */
    int n_outputs;
    retired_t *retired;
    rd_kafka_topic_t *dlq;
    rd_kafka_topic_t **changelogs; /* one per store */
    int n_changelogs;
    int transactional, in_txn;
    char **topics; /* interned input topic names */
    int n_topics;
    /* --- shared with the thread and the delivery callbacks, under mu --- */
    pthread_mutex_t mu;
    pthread_cond_t work, idle;
    pthread_t thread;
    int started;
    tide_job_t jobs[N_JOBS];
    int head, queued;  /* queued jobs: jobs[(head + i) % N_JOBS], i < queued; head is produced */
    int stop, discard; /* read by the thread between records too (atomically) */
    tide_flush_t refused; /* FAILED or FATAL: a record was refused; later ones are dropped */
    int64_t **acked;      /* [store][partition]: last acknowledged changelog offset */
    int *acked_cap;
    /* sources of the records produced since the last reset; opaque = index + 1 */
    src_chunk_t **chunks;
    size_t n_chunks, n_src;
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

/* Source i (1-based, an opaque), or NULL once its chunk is gone. */
static tide_source_t *source_at(const tide_producer_t *p, size_t i) {
    size_t c = (i - 1) / SRC_CHUNK;
    if (!i || i > p->n_src || !p->chunks[c]) return NULL;
    return &p->chunks[c]->e[(i - 1) % SRC_CHUNK];
}

/* A record naming source `opaque` is in flight, or not any more: a chunk
 * behind the one being filled goes once nothing names it. Under mu. */
static void hold(tide_producer_t *p, void *opaque) {
    size_t i = (size_t)(uintptr_t)opaque;
    if (i && p->chunks[(i - 1) / SRC_CHUNK]) p->chunks[(i - 1) / SRC_CHUNK]->pending++;
}

static void let_go(tide_producer_t *p, void *opaque) {
    size_t i = (size_t)(uintptr_t)opaque, c = (i - 1) / SRC_CHUNK;
    if (!i || i > p->n_src || !p->chunks[c]) return;
    if (--p->chunks[c]->pending == 0 && c + 1 < p->n_chunks) {
        free(p->chunks[c]);
        p->chunks[c] = NULL;
    }
}

/* Room for one more source: a new chunk when the last is full. */
static int src_room(tide_producer_t *p) {
    size_t c = p->n_src / SRC_CHUNK;
    if (c < p->n_chunks) return 0;
    src_chunk_t **nc = realloc(p->chunks, (c + 1) * sizeof(*nc));
    if (!nc) return -1;
    p->chunks = nc;
    if (!(nc[c] = malloc(sizeof(**nc)))) return -1;
    nc[c]->pending = 0;
    p->n_chunks = c + 1;
    /* the chunk before is no longer filled: it goes now if nothing names it */
    if (c && nc[c - 1] && nc[c - 1]->pending == 0) {
        free(nc[c - 1]);
        nc[c - 1] = NULL;
    }
    return 0;
}

/* The opaque of records emitted for `rec` (NULL: none). Consecutive entries
 * of one record share one source. Under mu. */
static void *source_of(tide_producer_t *p, const tide_rec_t *rec) {
    if (!rec) return NULL;
    if (p->n_src % SRC_CHUNK) {
        const tide_source_t *last = source_at(p, p->n_src);
        if (last->offset == rec->offset && last->partition == rec->partition &&
            !strcmp(last->topic, rec->topic))
            return (void *)(uintptr_t)p->n_src;
    }
    const char *topic = intern(p, rec->topic);
    if (!topic || src_room(p)) return NULL;
    p->n_src++;
    *source_at(p, p->n_src) = (tide_source_t){topic, rec->partition, rec->offset};
    return (void *)(uintptr_t)p->n_src;
}

/* Forget every source (nothing is in flight). */
static void sources_reset(tide_producer_t *p) {
    for (size_t c = 0; c < p->n_chunks; c++) free(p->chunks[c]);
    free(p->chunks);
    p->chunks = NULL;
    p->n_chunks = p->n_src = 0;
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
    const tide_source_t *src = source_at(p, (size_t)(uintptr_t)m->_private);
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

/* A delivery report: served by whichever thread polls, always under mu. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    tide_producer_t *p = opaque;
    (void)rk;
    p->in_flight--;
    if (m->err) failed(p, m);
    let_go(p, m->_private);
    if (m->err) return;
    if (m->rkt == p->dlq) p->epoch_dlq++;
    else if (p->n_changelogs) changelog_acked(p, m);
    for (int i = 0; i < p->n_outputs; i++)
        if (m->rkt == p->outputs[i]) {
            p->epoch_out++;
            break;
        }
}

/* ---------------------------------------------------------------- the thread */

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

static rd_kafka_topic_t *topic_of(const tide_producer_t *p, const tide_job_t *j,
                                  const tide_sink_entry_t *e) {
    return e->output >= 0               ? j->outputs[e->output]
           : e->output == TIDE_OUTPUT_DLQ ? p->dlq
                                          : p->changelogs[TIDE_OUTPUT_STORE_ID(e->output)];
}

static rd_kafka_resp_err_t produce_one(tide_producer_t *p, const tide_job_t *j,
                                       const tide_sink_entry_t *e, void *opaque) {
    const tide_sink_t *s = &j->arena;
    int64_t ts = e->timestamp < 0 ? 0 : e->timestamp; /* 0: librdkafka stamps it */
    rd_kafka_headers_t *h = headers_of(s, e);
    const char *key = tide_sink_key(s, e), *val = tide_sink_val(s, e);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->rk, RD_KAFKA_V_RKT(topic_of(p, j, e)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_PARTITION(e->partition >= 0 ? e->partition : RD_KAFKA_PARTITION_UA),
        RD_KAFKA_V_KEY(key, key ? (size_t)e->key_len : 0),
        RD_KAFKA_V_VALUE((void *)val, val ? (size_t)e->val_len : 0), RD_KAFKA_V_TIMESTAMP(ts),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
    if (err && h) rd_kafka_headers_destroy(h);
    return err;
}

/* A record librdkafka refused at once: every record after it is dropped
 * until the rollback this asks for. Under mu. */
static void refused(tide_producer_t *p, const tide_job_t *j, const tide_sink_entry_t *e,
                    void *opaque, rd_kafka_resp_err_t err) {
    const char *topic = rd_kafka_topic_name(topic_of(p, j, e));
    const tide_source_t *src = source_at(p, (size_t)(uintptr_t)opaque);
    tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "cannot produce to %s: %s", topic, rd_kafka_err2str(err));
    int fatal = err == RD_KAFKA_RESP_ERR__FATAL || err == RD_KAFKA_RESP_ERR__FENCED;
    if (!fatal && record_fault(err) && src) add_failure(p, src, 1, topic, rd_kafka_err2str(err));
    else if (!fatal) other_failure(p, topic, err);
    if (p->refused != TIDE_FLUSH_FATAL)
        __atomic_store_n(&p->refused, fatal ? TIDE_FLUSH_FATAL : TIDE_FLUSH_FAILED, __ATOMIC_RELEASE);
}

/* Job j's entries from j->done on are not produced (a rollback, or a
 * refusal before them): no longer in flight. Under mu. */
static void drop(tide_producer_t *p, tide_job_t *j) {
    for (size_t i = j->done; i < j->arena.n; i++) let_go(p, j->opaque[i]);
    p->in_flight -= (int64_t)(j->arena.n - j->done);
    j->done = j->arena.n;
}

static int dropping(const tide_producer_t *p) {
    return __atomic_load_n(&p->discard, __ATOMIC_ACQUIRE) ||
           __atomic_load_n(&p->refused, __ATOMIC_ACQUIRE) != TIDE_FLUSH_DONE;
}

/* librdkafka's queue is full: serve delivery reports (unless the worker's
 * thread is doing it, holding mu) so that it empties. */
static void wait_for_room(tide_producer_t *p) {
    if (pthread_mutex_trylock(&p->mu) == 0) {
        rd_kafka_poll(p->rk, 10);
        pthread_mutex_unlock(&p->mu);
    } else {
        struct timespec ts = {0, 2 * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Produce job j's entries in order, without mu. */
static void produce_job(tide_producer_t *p, tide_job_t *j) {
    while (j->done < j->arena.n) {
        const tide_sink_entry_t *e = &j->arena.entries[j->done];
        if (dropping(p)) break;
        rd_kafka_resp_err_t r = produce_one(p, j, e, j->opaque[j->done]);
        if (r == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            wait_for_room(p); /* back-pressure: the worker waits for a free arena meanwhile */
            continue;
        }
        if (r) {
            pthread_mutex_lock(&p->mu);
            refused(p, j, e, j->opaque[j->done], r);
            p->in_flight--;
            let_go(p, j->opaque[j->done]);
            j->done++;
            pthread_mutex_unlock(&p->mu);
            continue;
        }
        j->done++;
    }
    for (int i = 0; i < j->n_msgs; i++) rd_kafka_message_destroy(j->msgs[i]);
    j->n_msgs = 0;
}

/* An idempotent producer asks for its producer id at once, before any
 * broker connection is up, and then only every 500 ms: its first records
 * would wait that long. Every metadata answer makes it ask again if a
 * broker is up by then, so the thread asks for a few while it has nothing
 * else to do, as the connections come up (the first answers may come from
 * the bootstrap connection, before the broker it names is up). Returns the
 * answers still to ask for. A transactional producer gets its id from
 * init_transactions instead. */
static int warm_up(tide_producer_t *p, int left) {
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(p->rk, 0, NULL, &md, 100) != RD_KAFKA_RESP_ERR_NO_ERROR) return left;
    rd_kafka_metadata_destroy(md);
    return left - 1;
}

/* Wait up to ms for work, under mu. */
static void wait_work(tide_producer_t *p, int ms) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)ms * 1000000;
    if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
    pthread_cond_timedwait(&p->work, &p->mu, &until);
}

/* The thread: produce the queued jobs in order; after each, serve the
 * delivery reports that came meanwhile. It never calls into Lua and never
 * decides anything: refusals and failures are the worker's to act on. */
static void *run(void *arg) {
    tide_producer_t *p = arg;
    int warm = p->transactional ? 0 : 3, tries = 20;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && !p->queued && warm > 0 && tries-- > 0) {
            pthread_mutex_unlock(&p->mu);
            warm = warm_up(p, warm);
            pthread_mutex_lock(&p->mu);
            if (!p->stop && !p->queued) wait_work(p, 20);
        }
        while (!p->stop && !p->queued) pthread_cond_wait(&p->work, &p->mu);
        if (!p->queued) break; /* stopping, and nothing is left */
        tide_job_t *j = &p->jobs[p->head];
        pthread_mutex_unlock(&p->mu);
        produce_job(p, j);
        pthread_mutex_lock(&p->mu);
        drop(p, j); /* what a rollback or a refusal kept from being produced */
        rd_kafka_poll(p->rk, 0);
        p->head = (p->head + 1) % N_JOBS;
        p->queued--;
        pthread_cond_broadcast(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int start_thread(tide_producer_t *p) {
    pthread_attr_t a;
    sigset_t all, old;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->idle, NULL);
    for (int i = 0; i < N_JOBS; i++) tide_sink_init(&p->jobs[i].arena);
    /* Signals are the worker thread's (stop, reload, the shutdown alarm). */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 256 * 1024);
    int rc = pthread_create(&p->thread, &a, run, p);
    pthread_attr_destroy(&a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    p->started = rc == 0;
    return rc ? -1 : 0;
}

/* Drop every queued job (a rollback: their records must not be produced)
 * and wait until the thread is idle. */
static void discard(tide_producer_t *p) {
    pthread_mutex_lock(&p->mu);
    __atomic_store_n(&p->discard, 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&p->work);
    while (p->queued) pthread_cond_wait(&p->idle, &p->mu);
    __atomic_store_n(&p->discard, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&p->mu);
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
    if (start_thread(p)) {
        if (asprintf(errp, "producer: cannot start its thread") < 0) *errp = NULL;
        tide_producer_free(p);
        return NULL;
    }
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

int64_t tide_producer_changelog_offset(tide_producer_t *p, int store, int32_t partition) {
    int64_t o = -1;
    pthread_mutex_lock(&p->mu);
    if (store >= 0 && store < p->n_changelogs && partition >= 0 && partition < p->acked_cap[store])
        o = p->acked[store][partition];
    pthread_mutex_unlock(&p->mu);
    return o;
}

int tide_producer_set_outputs(tide_producer_t *p, char **topics, int n_topics) {
    rd_kafka_topic_t **o = calloc((size_t)n_topics + 1, sizeof(*o));
    retired_t *r = p->outputs ? malloc(sizeof(*r)) : NULL;
    if (!o || (p->outputs && !r)) {
        free(o);
        return -1;
    }
    for (int i = 0; i < n_topics; i++) o[i] = rd_kafka_topic_new(p->rk, topics[i], NULL);
    if (p->started) pthread_mutex_lock(&p->mu);
    if (r) *r = (retired_t){p->outputs, p->n_outputs, p->retired};
    if (r) p->retired = r;
    p->outputs = o;
    p->n_outputs = n_topics;
    if (p->started) pthread_mutex_unlock(&p->mu);
    return 0;
}

/* ---------------------------------------------------------------- handing over */

/* Tag job j's entries with their sources (batch->recs[entry->source]).
 * Under mu. */
static int tag(tide_producer_t *p, tide_job_t *j, const tide_batch_t *batch) {
    const tide_sink_t *s = &j->arena;
    if (s->n > j->cap_opaque) {
        size_t cap = s->n * 2;
        void **o = realloc(j->opaque, cap * sizeof(*o));
        if (!o) return -1;
        j->opaque = o;
        j->cap_opaque = cap;
    }
    for (size_t i = 0; i < s->n; i++) {
        const tide_sink_entry_t *e = &s->entries[i];
        const tide_rec_t *rec = batch && e->source >= 0 && e->source < batch->n
                                    ? &batch->recs[e->source] : NULL;
        hold(p, j->opaque[i] = source_of(p, rec));
    }
    return 0;
}

static int keep_msgs(tide_job_t *j, rd_kafka_message_t **msgs, int n) {
    if (n > j->cap_msgs) {
        rd_kafka_message_t **m = realloc(j->msgs, (size_t)n * sizeof(*m));
        if (!m) return -1;
        j->msgs = m;
        j->cap_msgs = n;
    }
    if (n) memcpy(j->msgs, msgs, (size_t)n * sizeof(*msgs));
    j->n_msgs = n;
    return 0;
}

/* A free job, waiting for one up to the deadline; NULL when none. Under mu. */
static tide_job_t *free_job(tide_producer_t *p, int block_ms) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += block_ms / 1000;
    until.tv_nsec += (long)(block_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
    while (p->queued == N_JOBS)
        if (pthread_cond_timedwait(&p->idle, &p->mu, &until)) break;
    return p->queued < N_JOBS ? &p->jobs[(p->head + p->queued) % N_JOBS] : NULL;
}

tide_flush_t tide_producer_send(tide_producer_t *p, tide_sink_t *s, const tide_batch_t *batch,
                                size_t *sent, int block_ms, rd_kafka_message_t **msgs, int n_msgs) {
    tide_flush_t was = __atomic_load_n(&p->refused, __ATOMIC_ACQUIRE);
    if (was != TIDE_FLUSH_DONE) return was;
    if (!s->n && !n_msgs) return TIDE_FLUSH_DONE;
    char *err = NULL;
    if (s->n && tide_producer_begin_txn(p, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        return TIDE_FLUSH_FATAL;
    }
    pthread_mutex_lock(&p->mu);
    tide_job_t *j = free_job(p, block_ms);
    if (!j) {
        pthread_mutex_unlock(&p->mu);
        return TIDE_FLUSH_PENDING;
    }
    tide_sink_clear(&j->arena);
    tide_sink_swap(s, &j->arena);
    if (tag(p, j, batch) || keep_msgs(j, msgs, n_msgs)) {
        tide_sink_swap(s, &j->arena); /* out of memory: nothing taken */
        pthread_mutex_unlock(&p->mu);
        return TIDE_FLUSH_FATAL;
    }
    j->outputs = p->outputs;
    j->done = 0;
    p->in_flight += (int64_t)j->arena.n;
    p->queued++;
    *sent = j->arena.n;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
    return TIDE_FLUSH_DONE;
}

/* ---------------------------------------------------------------- deliveries, commits */

/* The thread serves delivery reports after each arena; the worker's
 * thread serves them only while the producer's is idle (or busy elsewhere),
 * so that freeing delivered records stays off the detector's thread. */
void tide_producer_poll(tide_producer_t *p) {
    if (pthread_mutex_trylock(&p->mu)) return;
    if (!p->queued) rd_kafka_poll(p->rk, 0);
    pthread_mutex_unlock(&p->mu);
}

void tide_producer_trim(tide_producer_t *p) {
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < N_JOBS && !p->queued; i++) {
        tide_job_t *j = &p->jobs[i];
        tide_sink_clear(&j->arena);
        tide_sink_shrink(&j->arena);
        free(j->opaque);
        free(j->msgs);
        j->opaque = NULL, j->cap_opaque = 0;
        j->msgs = NULL, j->cap_msgs = 0;
    }
    pthread_mutex_unlock(&p->mu);
}

rd_kafka_t *tide_producer_handle(tide_producer_t *p) { return p->rk; }

int64_t tide_producer_in_flight(tide_producer_t *p) {
    pthread_mutex_lock(&p->mu);
    int64_t n = p->in_flight;
    pthread_mutex_unlock(&p->mu);
    return n;
}

static tide_flush_t fatal_or(tide_producer_t *p, tide_flush_t otherwise) {
    char why[512];
    rd_kafka_resp_err_t e = rd_kafka_fatal_error(p->rk, why, sizeof(why));
    if (!e) return otherwise;
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "producer: fatal error: %s", why);
    return TIDE_FLUSH_FATAL;
}

tide_flush_t tide_producer_flush(tide_producer_t *p, int timeout_ms) {
    int64_t deadline = tide_mono_ms() + timeout_ms;
    pthread_mutex_lock(&p->mu);
    /* The thread first hands librdkafka everything it holds. */
    while (p->queued && tide_mono_ms() < deadline) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 10 * 1000000;
        if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&p->idle, &p->mu, &until);
    }
    int64_t left = deadline - tide_mono_ms();
    if (p->queued) left = 0;
    if (p->in_flight > 0 && left > 0) rd_kafka_flush(p->rk, (int)left);
    else rd_kafka_poll(p->rk, 0);
    /* A failure is reported once every record has its answer: the table of
     * sources must outlive the delivery reports that name them. */
    tide_flush_t r = p->in_flight > 0 || p->queued ? TIDE_FLUSH_PENDING
                     : p->n_failures || p->other_failed || p->refused != TIDE_FLUSH_DONE
                         ? TIDE_FLUSH_FAILED
                         : TIDE_FLUSH_DONE;
    if (p->refused == TIDE_FLUSH_FATAL) r = TIDE_FLUSH_FATAL;
    pthread_mutex_unlock(&p->mu);
    return fatal_or(p, r);
}

const tide_record_failure_t *tide_producer_failures(tide_producer_t *p, int *n,
                                                    const char **other) {
    pthread_mutex_lock(&p->mu);
    *n = p->n_failures;
    *other = p->other_failed ? p->other : NULL;
    pthread_mutex_unlock(&p->mu);
    return p->failures;
}

const char *tide_producer_missing_topic(tide_producer_t *p) {
    pthread_mutex_lock(&p->mu);
    const char *t = p->missing_topic[0] ? p->missing_topic : NULL;
    pthread_mutex_unlock(&p->mu);
    return t;
}

/* Forget the epoch; `keep` the acknowledged counts (a commit) or not.
 * Under mu, with nothing in flight. */
static void reset(tide_producer_t *p, int keep) {
    if (keep) {
        p->sent += p->epoch_out;
        p->dead_lettered += p->epoch_dlq;
    }
    p->epoch_out = p->epoch_dlq = 0;
    sources_reset(p);
    p->n_failures = 0;
    p->other_failed = 0;
    p->other[0] = '\0';
    p->missing_topic[0] = '\0';
    __atomic_store_n(&p->refused, TIDE_FLUSH_DONE, __ATOMIC_RELEASE);
}

void tide_producer_reset(tide_producer_t *p) {
    pthread_mutex_lock(&p->mu);
    reset(p, 1);
    pthread_mutex_unlock(&p->mu);
}

uint64_t tide_producer_sent(tide_producer_t *p) {
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->sent + (p->transactional ? 0 : p->epoch_out);
    pthread_mutex_unlock(&p->mu);
    return n;
}

uint64_t tide_producer_dead_lettered(tide_producer_t *p) {
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->dead_lettered + (p->transactional ? 0 : p->epoch_dlq);
    pthread_mutex_unlock(&p->mu);
    return n;
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

/* Committing flushes, which serves delivery reports: under mu. (The thread
 * is idle: a commit comes after tide_producer_flush.) */
tide_txn_t tide_producer_commit_txn(tide_producer_t *p, const rd_kafka_topic_partition_list_t *offsets,
                                    rd_kafka_t *consumer, int timeout_ms, char **errp) {
    if (!p->in_txn) return TIDE_TXN_DONE;
    pthread_mutex_lock(&p->mu);
    tide_txn_t r = TIDE_TXN_DONE;
    if (offsets && offsets->cnt) {
        rd_kafka_consumer_group_metadata_t *md = rd_kafka_consumer_group_metadata(consumer);
        r = txn_result(rd_kafka_send_offsets_to_transaction(p->rk, offsets, md, timeout_ms),
                       "send offsets to transaction", errp);
        rd_kafka_consumer_group_metadata_destroy(md);
    }
    if (r == TIDE_TXN_DONE)
        r = txn_result(rd_kafka_commit_transaction(p->rk, timeout_ms), "commit transaction", errp);
    if (r == TIDE_TXN_DONE) {
        p->in_txn = 0;
        reset(p, 1);
    }
    pthread_mutex_unlock(&p->mu);
    return r;
}

tide_txn_t tide_producer_abort_txn(tide_producer_t *p, int timeout_ms, char **errp) {
    discard(p); /* records handed and not produced yet are not produced at all */
    pthread_mutex_lock(&p->mu);
    tide_txn_t r = TIDE_TXN_DONE;
    if (p->in_txn) {
        r = txn_result(rd_kafka_abort_transaction(p->rk, timeout_ms), "abort transaction", errp);
        /* The purged records' reports name sources of this table: serve
         * them before it is forgotten. */
        if (r == TIDE_TXN_DONE) rd_kafka_flush(p->rk, timeout_ms);
    }
    if (r == TIDE_TXN_DONE) {
        p->in_txn = 0;
        p->in_flight = 0;
        reset(p, 0);
    }
    pthread_mutex_unlock(&p->mu);
    return r;
}

void tide_producer_free(tide_producer_t *p) {
    if (!p) return;
    if (p->started) {
        pthread_mutex_lock(&p->mu);
        __atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
        __atomic_store_n(&p->discard, 1, __ATOMIC_RELEASE); /* nothing left is produced */
        pthread_cond_signal(&p->work);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->thread, NULL);
    }
    for (int i = 0; i < N_JOBS; i++) {
        for (int k = 0; k < p->jobs[i].n_msgs; k++) rd_kafka_message_destroy(p->jobs[i].msgs[k]);
        tide_sink_free(&p->jobs[i].arena);
        free(p->jobs[i].opaque);
        free(p->jobs[i].msgs);
    }
    for (int i = 0; i < p->n_outputs; i++) rd_kafka_topic_destroy(p->outputs[i]);
    free(p->outputs);
    for (retired_t *r = p->retired, *next; r; r = next) {
        next = r->next;
        for (int i = 0; i < r->n; i++) rd_kafka_topic_destroy(r->topics[i]);
        free(r->topics);
        free(r);
    }
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
    sources_reset(p);
    free(p->failures);
    rd_kafka_destroy(p->rk);
    if (p->started) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->work);
        pthread_cond_destroy(&p->idle);
    }
    free(p);
}
