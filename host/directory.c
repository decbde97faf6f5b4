/*
 * directory.c: the instances topic and what it says (see directory.h).
 *
 * Owns one producer, one assign-only consumer (no group, no commits) and the
 * table of members (a detector on an instance), behind one lock, and the
 * thread that moves records between the two. This instance's own members are
 * the authority on themselves: records about this instance read back from the
 * topic never overwrite them (an old one is withdrawn instead). It never
 * touches a worker: the supervisor hands it task maps and reads answers.
 */
#include "directory.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "buf.h"
#include "devbroker.h"
#include "log.h"

#define HEARTBEAT_MS 5000
#define TTL_MS (3 * HEARTBEAT_MS) /* a member silent this long is gone */
#define SETUP_RETRY_MS 2000
#define BATCH 500

typedef struct member {
    char key[400]; /* <detector>/<instance> */
    char detector[128];
    tide_dir_member_t m;
    int dirty;     /* local: to publish */
    int withdrawn; /* local: a tombstone to publish, then forget it */
    int64_t published_ms;
} member_t;

struct tide_directory {
    char instance[64], server[256], topic[600];
    const tide_config_t *config;
    char *bootstraps;
    struct tide_devbroker *dev;
    pthread_t thread;
    pthread_mutex_t mu;
    volatile int stop;
    rd_kafka_t *producer, *consumer;
    rd_kafka_queue_t *queue;
    int assigned;
    int64_t next_setup_ms;
    int warned;
    member_t *m;
    int n, cap;
    rd_kafka_message_t *msgs[BATCH];
};

void tide_directory_topic(const char *app, char *buf, size_t cap) {
    snprintf(buf, cap, "%s.instances", app);
}

static const char task_chars[] = {'.', 'A', 'R', 'S'};

/* ---------------------------------------------------------------- parsing */

/* A JSON string at s (after its opening quote) into out; the end (past the
 * closing quote), or NULL. \u escapes outside ASCII become '?'. */
static const char *json_string(const char *s, const char *end, char *out, size_t cap) {
    size_t o = 0;
    while (s < end && *s != '"') {
        char c = *s++;
        if (c == '\\' && s < end) {
            char e = *s++;
            c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b'
              : e == 'f' ? '\f' : e;
            if (e == 'u') {
                if (end - s < 4) return NULL;
                char hex[5] = {s[0], s[1], s[2], s[3], 0};
                long v = strtol(hex, NULL, 16);
                c = v > 0 && v < 128 ? (char)v : '?';
                s += 4;
            }
        }
        if (o + 1 < cap) out[o++] = c;
    }
    if (s >= end) return NULL;
    out[o] = '\0';
    return s + 1;
}

static const char *skip_ws(const char *s, const char *end) {
    while (s < end && (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')) s++;
    return s;
}

/* One "name": value of a flat object into the member (unknown names skipped). */
static const char *json_field(const char *s, const char *end, char *det, size_t dcap,
                              tide_dir_member_t *m, int *seen) {
    char name[32], str[TIDE_STATUS_MAX_TASKS + 1];
    if (s >= end || *s != '"' || !(s = json_string(s + 1, end, name, sizeof(name)))) return NULL;
    s = skip_ws(s, end);
    if (s >= end || *s++ != ':') return NULL;
    s = skip_ws(s, end);
    if (s < end && *s == '"') {
        if (!(s = json_string(s + 1, end, str, sizeof(str)))) return NULL;
        if (!strcmp(name, "detector")) snprintf(det, dcap, "%s", str), *seen |= 1;
        else if (!strcmp(name, "instance")) snprintf(m->instance, sizeof(m->instance), "%s", str), *seen |= 2;
        else if (!strcmp(name, "server")) snprintf(m->server, sizeof(m->server), "%s", str), *seen |= 4;
        else if (!strcmp(name, "tasks")) {
            size_t n = strlen(str);
            for (size_t i = 0; i < n && i < TIDE_STATUS_MAX_TASKS; i++) {
                const char *c = memchr(task_chars, str[i], sizeof(task_chars));
                m->state[i] = c ? (uint8_t)(c - task_chars) : TIDE_TASKMAP_NONE;
            }
            *seen |= 8;
        }
        return s;
    }
    char *e;
    long long v = strtoll(s, &e, 10);
    if (e == s) return NULL;
    if (!strcmp(name, "ts")) m->ts = v, *seen |= 16;
    else if (!strcmp(name, "partitions")) m->partitions = (int32_t)v, *seen |= 32;
    return e;
}

int tide_directory_parse(const char *json, size_t len, char *detector, size_t dcap,
                         tide_dir_member_t *m) {
    const char *s = json, *end = json + len;
    memset(m, 0, sizeof(*m));
    int seen = 0;
    s = skip_ws(s, end);
    if (s >= end || *s++ != '{') return -1;
    for (;;) {
        s = skip_ws(s, end);
        if (!(s = json_field(s, end, detector, dcap, m, &seen))) return -1;
        s = skip_ws(s, end);
        if (s < end && *s == ',') {
            s++;
            continue;
        }
        if (s < end && *s == '}') break;
        return -1;
    }
    if (m->partitions < 0 || m->partitions > TIDE_STATUS_MAX_TASKS) m->partitions = TIDE_STATUS_MAX_TASKS;
    return seen == 63 ? 0 : -1;
}

/* ---------------------------------------------------------------- the table */

static member_t *find_key(tide_directory_t *d, const char *key) {
    for (int i = 0; i < d->n; i++)
        if (!strcmp(d->m[i].key, key)) return &d->m[i];
    return NULL;
}

static member_t *add(tide_directory_t *d, const char *key) {
    member_t *x = find_key(d, key);
    if (x) return x;
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 16;
        member_t *nm = realloc(d->m, (size_t)cap * sizeof(*nm));
        if (!nm) return NULL;
        d->m = nm;
        d->cap = cap;
    }
    x = &d->m[d->n++];
    memset(x, 0, sizeof(*x));
    snprintf(x->key, sizeof(x->key), "%s", key);
    return x;
}

static void forget(tide_directory_t *d, member_t *x) { *x = d->m[--d->n]; }

static int live(const member_t *x, int64_t now_wall) {
    return !x->withdrawn && (x->m.local || now_wall - x->m.ts < TTL_MS);
}

/* ---------------------------------------------------------------- publishing */

static void publish(tide_directory_t *d, member_t *x) {
    if (!d->producer) return;
    tide_buf_t b = TIDE_BUF_INIT;
    if (!x->withdrawn) {
        char tasks[TIDE_STATUS_MAX_TASKS + 1];
        int32_t n = x->m.partitions;
        for (int32_t i = 0; i < n; i++) tasks[i] = task_chars[x->m.state[i] & 3];
        tasks[n] = '\0';
        tide_buf_puts(&b, "{\"detector\":");
        tide_buf_json_str(&b, x->detector);
        tide_buf_puts(&b, ",\"instance\":");
        tide_buf_json_str(&b, d->instance);
        tide_buf_puts(&b, ",\"server\":");
        tide_buf_json_str(&b, d->server);
        tide_buf_printf(&b, ",\"ts\":%lld,\"partitions\":%d,\"tasks\":\"%s\"}",
                        (long long)tide_wall_ms(), (int)n, tasks);
    }
    rd_kafka_resp_err_t e = rd_kafka_producev(
        d->producer, RD_KAFKA_V_TOPIC(d->topic), RD_KAFKA_V_KEY(x->key, strlen(x->key)),
        RD_KAFKA_V_VALUE(b.data, b.len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    tide_buf_free(&b);
    if (!e) {
        x->dirty = 0;
        x->published_ms = tide_mono_ms();
    }
}

/* Publish what changed, and every member of ours each heartbeat. */
static void publish_due(tide_directory_t *d) {
    int64_t now = tide_mono_ms();
    for (int i = 0; i < d->n; i++) {
        member_t *x = &d->m[i];
        if (!x->m.local) continue;
        if (x->withdrawn) {
            publish(d, x);
            if (!x->dirty) forget(d, x), i--;
            continue;
        }
        if (x->dirty || now - x->published_ms >= HEARTBEAT_MS) publish(d, x);
    }
}

/* ---------------------------------------------------------------- reading */

static void on_record(tide_directory_t *d, const rd_kafka_message_t *msg) {
    char key[400];
    size_t kl = msg->key_len < sizeof(key) - 1 ? msg->key_len : sizeof(key) - 1;
    if (!msg->key) return;
    memcpy(key, msg->key, kl);
    key[kl] = '\0';
    member_t *x = find_key(d, key);
    if (x && x->m.local) return; /* ours: we know better */
    if (!msg->payload) {
        if (x) forget(d, x);
        return;
    }
    char det[128];
    tide_dir_member_t m;
    if (tide_directory_parse(msg->payload, msg->len, det, sizeof(det), &m)) return;
    if (!strcmp(m.instance, d->instance)) {
        /* an earlier run of this instance, for a detector it does not run
         * now: withdraw that record */
        member_t *old = add(d, key);
        if (old) {
            snprintf(old->detector, sizeof(old->detector), "%s", det);
            old->m.local = 1;
            old->withdrawn = old->dirty = 1;
        }
        return;
    }
    if (x && x->m.ts > m.ts) return; /* an older record */
    if (!(x = add(d, key))) return;
    snprintf(x->detector, sizeof(x->detector), "%s", det);
    x->m = m;
}

/* The topic, made if it can be (compacted, one partition), then read from
 * its start. */
static void create_topic(tide_directory_t *d) {
    if (d->dev) {
        char *err = NULL;
        if (tide_devbroker_create_topic(d->dev, d->topic, 1, &err)) free(err);
        return;
    }
    if (strcmp(tide_config_str(d->config, TIDE_CFG_INTERNAL_TOPICS_CREATE), "true")) return;
    char err[256];
    int rf = (int)tide_config_int(d->config, TIDE_CFG_INTERNAL_TOPICS_REPLICATION_FACTOR);
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(d->topic, 1, rf, err, sizeof(err));
    if (!nt) return;
    rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact");
    rd_kafka_queue_t *q = rd_kafka_queue_new(d->producer);
    rd_kafka_CreateTopics(d->producer, &nt, 1, NULL, q);
    /* Created, there already, or refused (the development broker cannot
     * create topics this way: a producer's metadata request makes it). */
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 5000);
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
}

static int partition_count(tide_directory_t *d) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(d->producer, d->topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = 0;
    if (rkt && !rd_kafka_metadata(d->producer, 0, rkt, &md, 2000) && md->topic_cnt == 1 &&
        !md->topics[0].err)
        n = md->topics[0].partition_cnt;
    if (md) rd_kafka_metadata_destroy(md);
    if (rkt) rd_kafka_topic_destroy(rkt);
    return n;
}

static void setup(tide_directory_t *d) {
    int64_t now = tide_mono_ms();
    if (d->assigned || now < d->next_setup_ms) return;
    d->next_setup_ms = now + SETUP_RETRY_MS;
    if (!d->warned) create_topic(d);
    int n = partition_count(d);
    if (n <= 0) {
        if (!d->warned)
            tide_log(TIDE_LOG_WARN, (tide_log_at_t){d->topic, -1, -1},
                     "topic %s is not there yet: queries by key answer only for this instance's "
                     "tasks, and no standby replica is kept, until it is (create it compacted, one "
                     "partition, or allow internal.topics.create)", d->topic);
        d->warned = 1;
        return;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, d->topic, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(d->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    d->assigned = 1;
    tide_log(TIDE_LOG_INFO, (tide_log_at_t){d->topic, -1, -1},
             "directory: this instance is %s at %s", d->instance, d->server);
}

static void *run(void *arg) {
    tide_directory_t *d = arg;
    while (!d->stop) {
        setup(d);
        ssize_t n = d->assigned ? rd_kafka_consume_batch_queue(d->queue, 100, d->msgs, BATCH) : 0;
        pthread_mutex_lock(&d->mu);
        for (ssize_t i = 0; i < n; i++) {
            if (!d->msgs[i]->err) on_record(d, d->msgs[i]);
            rd_kafka_message_destroy(d->msgs[i]);
        }
        publish_due(d);
        pthread_mutex_unlock(&d->mu);
        rd_kafka_poll(d->producer, d->assigned ? 0 : 100);
    }
    return NULL;
}

/* ---------------------------------------------------------------- clients */

static rd_kafka_t *client(tide_directory_t *d, rd_kafka_type_t type, char **errp) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    tide_client_t kind = type == RD_KAFKA_PRODUCER ? TIDE_CLIENT_PRODUCER : TIDE_CLIENT_CONSUMER;
    if (tide_config_apply_kafka(d->config, conf, kind, errp)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    const char *kv[] = {"bootstrap.servers", d->bootstraps, "enable.partition.eof", "false",
                        "fetch.wait.max.ms", "100", "group.id", d->topic,
                        "enable.auto.commit", "false", "linger.ms", "5",
                        "partitioner", "murmur2_random", NULL};
    for (int i = 0; kv[i]; i += 2) {
        /* each client takes the properties that are its own */
        if (type == RD_KAFKA_PRODUCER && (!strcmp(kv[i], "group.id") ||
                                          !strcmp(kv[i], "enable.auto.commit") ||
                                          !strcmp(kv[i], "enable.partition.eof") ||
                                          !strcmp(kv[i], "fetch.wait.max.ms")))
            continue;
        if (type == RD_KAFKA_CONSUMER && (!strcmp(kv[i], "linger.ms") || !strcmp(kv[i], "partitioner")))
            continue;
        rd_kafka_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err));
    }
    rd_kafka_conf_set_log_cb(conf, tide_log_rdkafka);
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (!rk && asprintf(errp, "directory: %s", err) < 0) *errp = NULL;
    return rk;
}

tide_directory_t *tide_directory_start(const tide_directory_opts_t *o, char **errp) {
    tide_directory_t *d = calloc(1, sizeof(*d));
    if (!d) return NULL;
    snprintf(d->instance, sizeof(d->instance), "%s", o->instance);
    snprintf(d->server, sizeof(d->server), "%s", o->server);
    tide_directory_topic(tide_config_str(o->config, TIDE_CFG_APPLICATION_ID), d->topic,
                         sizeof(d->topic));
    d->config = o->config;
    d->bootstraps = strdup(o->bootstraps);
    d->dev = o->dev;
    pthread_mutex_init(&d->mu, NULL);
    d->producer = client(d, RD_KAFKA_PRODUCER, errp);
    d->consumer = d->producer ? client(d, RD_KAFKA_CONSUMER, errp) : NULL;
    if (!d->consumer) {
        if (d->producer) rd_kafka_destroy(d->producer);
        free(d->bootstraps);
        free(d);
        return NULL;
    }
    rd_kafka_poll_set_consumer(d->consumer);
    d->queue = rd_kafka_queue_get_consumer(d->consumer);
    if (pthread_create(&d->thread, NULL, run, d)) {
        rd_kafka_queue_destroy(d->queue);
        rd_kafka_destroy(d->consumer);
        rd_kafka_destroy(d->producer);
        free(d->bootstraps);
        free(d);
        if (asprintf(errp, "directory: cannot start its thread") < 0) *errp = NULL;
        return NULL;
    }
    return d;
}

/* ---------------------------------------------------------------- answers */

void tide_directory_local(tide_directory_t *d, const char *detector, int32_t partitions,
                          const uint8_t *state) {
    if (!d) return;
    char key[400];
    snprintf(key, sizeof(key), "%s/%s", detector, d->instance);
    if (partitions > TIDE_STATUS_MAX_TASKS) partitions = TIDE_STATUS_MAX_TASKS;
    pthread_mutex_lock(&d->mu);
    member_t *x = add(d, key);
    if (x && (!x->m.local || x->withdrawn || x->m.partitions != partitions ||
              memcmp(x->m.state, state, (size_t)partitions))) {
        snprintf(x->detector, sizeof(x->detector), "%s", detector);
        snprintf(x->m.instance, sizeof(x->m.instance), "%s", d->instance);
        snprintf(x->m.server, sizeof(x->m.server), "%s", d->server);
        x->m.local = 1;
        x->withdrawn = 0;
        x->m.partitions = partitions;
        memcpy(x->m.state, state, (size_t)partitions);
        x->dirty = 1;
    }
    if (x) x->m.ts = tide_wall_ms();
    pthread_mutex_unlock(&d->mu);
}

void tide_directory_withdraw(tide_directory_t *d, const char *detector) {
    if (!d) return;
    char key[400];
    snprintf(key, sizeof(key), "%s/%s", detector, d->instance);
    pthread_mutex_lock(&d->mu);
    member_t *x = find_key(d, key);
    if (x && x->m.local) x->withdrawn = x->dirty = 1;
    pthread_mutex_unlock(&d->mu);
}

int32_t tide_directory_partitions(tide_directory_t *d, const char *detector) {
    if (!d) return 0;
    int32_t n = 0;
    int64_t now = tide_wall_ms();
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < d->n; i++)
        if (live(&d->m[i], now) && !strcmp(d->m[i].detector, detector) && d->m[i].m.partitions > n)
            n = d->m[i].m.partitions;
    pthread_mutex_unlock(&d->mu);
    return n;
}

static void holder_of(const member_t *x, int state, tide_holder_t *h) {
    snprintf(h->instance, sizeof(h->instance), "%s", x->m.instance);
    snprintf(h->server, sizeof(h->server), "%s", x->m.server);
    h->state = state;
    h->local = x->m.local;
    h->ts = x->m.ts;
}

/* The live member running p of `detector` (the latest claim), or NULL. */
static const member_t *owner(tide_directory_t *d, const char *detector, int32_t p, int64_t now) {
    const member_t *best = NULL;
    for (int i = 0; i < d->n; i++) {
        const member_t *x = &d->m[i];
        if (!live(x, now) || strcmp(x->detector, detector) || p >= x->m.partitions) continue;
        int s = x->m.state[p];
        if (s != TIDE_TASKMAP_ACTIVE && s != TIDE_TASKMAP_RESTORING) continue;
        if (!best || x->m.ts > best->m.ts || (x->m.ts == best->m.ts && x->m.local)) best = x;
    }
    return best;
}

int tide_directory_lookup(tide_directory_t *d, const char *detector, int32_t p,
                          tide_holder_t *active, tide_holder_t *standbys, int cap,
                          int *n_standbys) {
    if (n_standbys) *n_standbys = 0;
    if (!d || p < 0 || p >= TIDE_STATUS_MAX_TASKS) return 0;
    int64_t now = tide_wall_ms();
    pthread_mutex_lock(&d->mu);
    const member_t *o = owner(d, detector, p, now);
    if (o) holder_of(o, o->m.state[p], active);
    for (int i = 0; standbys && i < d->n && *n_standbys < cap; i++) {
        const member_t *x = &d->m[i];
        if (live(x, now) && !strcmp(x->detector, detector) && p < x->m.partitions &&
            x->m.state[p] == TIDE_TASKMAP_STANDBY)
            holder_of(x, TIDE_TASKMAP_STANDBY, &standbys[(*n_standbys)++]);
    }
    pthread_mutex_unlock(&d->mu);
    return o != NULL;
}

int tide_directory_members(tide_directory_t *d, const char *detector, tide_dir_member_t *out,
                           int cap) {
    if (!d) return 0;
    int k = 0;
    int64_t now = tide_wall_ms();
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < d->n && k < cap; i++)
        if (live(&d->m[i], now) && !strcmp(d->m[i].detector, detector)) out[k++] = d->m[i].m;
    pthread_mutex_unlock(&d->mu);
    return k;
}

static int by_instance(const void *a, const void *b) {
    return strcmp((*(const member_t *const *)a)->m.instance, (*(const member_t *const *)b)->m.instance);
}

void tide_directory_standbys(tide_directory_t *d, const char *detector, int replicas,
                             uint8_t *wanted) {
    if (!d || replicas <= 0) {
        memset(wanted, 0, TIDE_STATUS_MAX_TASKS);
        return;
    }
    int64_t now = tide_wall_ms();
    pthread_mutex_lock(&d->mu);
    const member_t **ring = calloc((size_t)d->n + 1, sizeof(*ring));
    int n = 0, self = -1;
    int32_t parts = 0;
    for (int i = 0; ring && i < d->n; i++) {
        const member_t *x = &d->m[i];
        if (!live(x, now) || strcmp(x->detector, detector)) continue;
        ring[n++] = x;
        if (x->m.partitions > parts) parts = x->m.partitions;
    }
    if (ring) qsort(ring, (size_t)n, sizeof(*ring), by_instance);
    for (int i = 0; i < n; i++)
        if (ring[i]->m.local) self = i;
    for (int32_t p = 0; p < TIDE_STATUS_MAX_TASKS; p++) {
        const member_t *o = self >= 0 && p < parts ? owner(d, detector, p, now) : NULL;
        if (!o && self >= 0 && p < parts) continue; /* ownerless: as it was */
        int at = -1;
        for (int i = 0; o && i < n; i++)
            if (ring[i] == o) at = i;
        /* the next `replicas` instances after the owner, in id order */
        wanted[p] = 0;
        for (int k = 1; at >= 0 && k <= replicas && k < n; k++)
            if ((at + k) % n == self) wanted[p] = 1;
    }
    free(ring);
    pthread_mutex_unlock(&d->mu);
}

void tide_directory_stop(tide_directory_t *d) {
    if (!d) return;
    d->stop = 1;
    pthread_join(d->thread, NULL);
    for (int i = 0; i < d->n; i++)
        if (d->m[i].m.local) {
            d->m[i].withdrawn = 1;
            publish(d, &d->m[i]);
        }
    rd_kafka_flush(d->producer, 2000);
    rd_kafka_queue_destroy(d->queue);
    rd_kafka_consumer_close(d->consumer);
    rd_kafka_destroy(d->consumer);
    rd_kafka_destroy(d->producer);
    pthread_mutex_destroy(&d->mu);
    free(d->m);
    free(d->bootstraps);
    free(d);
}
