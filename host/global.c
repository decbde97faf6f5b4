/*
 * global.c: a worker's global tables (see global.h).
 *
 * Owns: one consumer that reads every partition of every global topic by
 * assignment (no consumer group: every worker reads all of it), the offset
 * each partition's records have been applied up to, and the global
 * checkpoint file, which keeps those offsets across restarts in the form of
 * the tasks' checkpoint (store name, partition, next offset).
 *
 * A table's rows are its topic's records as they are, key and value bytes,
 * put into its store under TIDE_GLOBAL_PARTITION (a null value deletes, a
 * record without a key is skipped); the detector decodes them when it reads.
 * There is no changelog: the topic is the table's log. A table whose
 * checkpoint the topic cannot honour (none, or offsets outside what the
 * topic holds: a topic recreated, records deleted) is emptied and read from
 * the start. Never calls into Lua, never writes a task's state.
 */
#include "global.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "log.h"
#include "restore.h"

#define BATCH 1000

/* One partition of a global topic. */
typedef struct global_part {
    int table;         /* index into the tables */
    int32_t partition;
    int64_t next;      /* next offset to apply: the store holds those before it */
    int64_t committed; /* what a store commit covered, where a rollback goes back to */
    int64_t saved;     /* what the checkpoint file says */
    int64_t end;       /* the topic's end when the bootstrap began */
} global_part_t;

struct tide_globals {
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    tide_store_db_t *db;
    char *checkpoint_path;
    tide_global_spec_t *tables;
    int n_tables;
    global_part_t *parts;
    int n_parts;
    rd_kafka_message_t *msgs[BATCH];
    uint64_t records;
};

static tide_global_result_t fail(char **errp, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(errp, fmt, ap) < 0) *errp = NULL;
    va_end(ap);
    return TIDE_GLOBAL_FAILED;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static rd_kafka_t *new_consumer(const tide_config_t *c, const char *bootstraps, char **errp) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* librdkafka wants a group.id even for assign(); it is never joined. */
    const char *kv[] = {"fetch.wait.max.ms", "10", "fetch.queue.backoff.ms", "10",
                        "enable.auto.commit", "false", "enable.partition.eof", "false",
                        "auto.offset.reset", "earliest", NULL};
    for (int i = 0; kv[i]; i += 2) rd_kafka_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err));
    if (tide_config_apply_kafka(c, conf, TIDE_CLIENT_CONSUMER, errp) ||
        rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "group.id", "tide-global-tables", err, sizeof(err))) {
        rd_kafka_conf_destroy(conf);
        if (!*errp && asprintf(errp, "global tables' consumer: %s", err) < 0) *errp = NULL;
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, tide_log_rdkafka);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk && asprintf(errp, "global tables' consumer: %s", err) < 0) *errp = NULL;
    return rk;
}

tide_globals_t *tide_globals_open(const tide_config_t *c, const char *bootstraps,
                                  tide_store_db_t *db, const char *checkpoint_path,
                                  const tide_global_spec_t *tables, int n, char **errp) {
    tide_globals_t *g = calloc(1, sizeof(*g));
    if (!g || !(g->tables = calloc((size_t)n, sizeof(*tables))) ||
        !(g->checkpoint_path = strdup(checkpoint_path))) {
        tide_globals_free(g);
        *errp = strdup("not enough memory");
        return NULL;
    }
    memcpy(g->tables, tables, (size_t)n * sizeof(*tables));
    g->n_tables = n;
    g->db = db;
    if (!(g->rk = new_consumer(c, bootstraps, errp))) {
        tide_globals_free(g);
        return NULL;
    }
    rd_kafka_poll_set_consumer(g->rk);
    g->q = rd_kafka_queue_get_consumer(g->rk);
    return g;
}

/* The partitions of table t's topic, appended to g->parts with the range
 * the topic holds (next: its start, end: its end). */
static tide_global_result_t find_parts(tide_globals_t *g, int t, char **errp) {
    const char *topic = g->tables[t].topic;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(g->rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rkt ? rd_kafka_metadata(g->rk, 0, rkt, &md, 10000)
                                : RD_KAFKA_RESP_ERR__INVALID_ARG;
    if (rkt) rd_kafka_topic_destroy(rkt);
    if (!e && md->topic_cnt == 1) e = md->topics[0].err;
    if (e || md->topic_cnt != 1 || md->topics[0].partition_cnt == 0) {
        if (md) rd_kafka_metadata_destroy(md);
        return fail(errp, "global table %s: cannot read topic %s: %s", g->tables[t].store_name,
                    topic, e ? rd_kafka_err2str(e) : "it has no partitions");
    }
    int n = md->topics[0].partition_cnt;
    global_part_t *np = realloc(g->parts, (size_t)(g->n_parts + n) * sizeof(*np));
    if (!np) {
        rd_kafka_metadata_destroy(md);
        return fail(errp, "not enough memory");
    }
    g->parts = np;
    for (int i = 0; i < n; i++) {
        global_part_t *p = &g->parts[g->n_parts++];
        *p = (global_part_t){.table = t, .partition = md->topics[0].partitions[i].id};
        e = rd_kafka_query_watermark_offsets(g->rk, topic, p->partition, &p->next, &p->end, 10000);
        if (e) {
            rd_kafka_metadata_destroy(md);
            return fail(errp, "global table %s: %s[%d]: %s", g->tables[t].store_name, topic,
                        (int)p->partition, rd_kafka_err2str(e));
        }
    }
    rd_kafka_metadata_destroy(md);
    return TIDE_GLOBAL_OK;
}

/* Start each partition of table t where the checkpoint says the store is,
 * if the topic still holds those offsets; otherwise empty the table and
 * start every partition at the topic's start. */
static tide_global_result_t resume_table(tide_globals_t *g, int t, const tide_checkpoint_t *cp,
                                         char **errp) {
    const tide_global_spec_t *tb = &g->tables[t];
    int trusted = 1;
    for (int i = 0; i < g->n_parts; i++) {
        global_part_t *p = &g->parts[i];
        if (p->table != t) continue;
        int64_t at = tide_checkpoint_get(cp, tb->store_name, p->partition);
        trusted &= at >= p->next && at <= p->end;
    }
    for (int i = 0; i < g->n_parts; i++) {
        global_part_t *p = &g->parts[i];
        if (p->table == t && trusted) p->next = tide_checkpoint_get(cp, tb->store_name, p->partition);
    }
    if (trusted) return TIDE_GLOBAL_OK;
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "global table %s: reading %s from its start",
             tb->store_name, tb->topic);
    if (tide_store_delete_range(g->db, (uint8_t)tb->store, TIDE_GLOBAL_PARTITION, NULL, 0, NULL, 0,
                                errp))
        return TIDE_GLOBAL_FAILED;
    return TIDE_GLOBAL_OK;
}

static global_part_t *part_of(tide_globals_t *g, const char *topic, int32_t partition) {
    for (int i = 0; i < g->n_parts; i++) {
        global_part_t *p = &g->parts[i];
        if (p->partition == partition && !strcmp(g->tables[p->table].topic, topic)) return p;
    }
    return NULL;
}

/* Put one record into its table (a null value deletes; no key, no row). */
static tide_global_result_t apply(tide_globals_t *g, const rd_kafka_message_t *m, char **errp) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    global_part_t *p = part_of(g, topic, m->partition);
    if (!p || m->offset < p->next) return TIDE_GLOBAL_OK; /* not ours, or applied already */
    const tide_global_spec_t *t = &g->tables[p->table];
    int r = 0;
    if (!m->key) {
        r = 0;
    } else if (m->payload) {
        r = tide_store_put(g->db, (uint8_t)t->store, TIDE_GLOBAL_PARTITION, m->key, m->key_len,
                           m->payload, m->len, errp);
    } else {
        r = tide_store_delete(g->db, (uint8_t)t->store, TIDE_GLOBAL_PARTITION, m->key, m->key_len,
                              errp);
    }
    if (r) return TIDE_GLOBAL_FAILED;
    p->next = m->offset + 1;
    g->records++;
    return TIDE_GLOBAL_OK;
}

/* Read what is there, waiting up to timeout_ms for the first records. */
static tide_global_result_t consume(tide_globals_t *g, int timeout_ms, char **errp) {
    ssize_t n = rd_kafka_consume_batch_queue(g->q, timeout_ms, g->msgs, BATCH);
    tide_global_result_t rc = TIDE_GLOBAL_OK;
    for (ssize_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = g->msgs[i];
        if (m->err) {
            tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "global tables: %s", rd_kafka_message_errstr(m));
        } else if (rc == TIDE_GLOBAL_OK) {
            rc = apply(g, m, errp);
        }
        rd_kafka_message_destroy(m);
    }
    return rc;
}

static int caught_up(const tide_globals_t *g) {
    for (int i = 0; i < g->n_parts; i++)
        if (g->parts[i].next < g->parts[i].end) return 0;
    return 1;
}

static tide_global_result_t assign_all(tide_globals_t *g, char **errp) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(g->n_parts);
    for (int i = 0; i < g->n_parts; i++) {
        global_part_t *p = &g->parts[i];
        rd_kafka_topic_partition_list_add(l, g->tables[p->table].topic, p->partition)->offset =
            p->next;
    }
    rd_kafka_resp_err_t e = rd_kafka_assign(g->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    return e ? fail(errp, "global tables: cannot assign: %s", rd_kafka_err2str(e)) : TIDE_GLOBAL_OK;
}

/* How far the bootstrap is, every 10 s while it lasts. */
static void log_progress(const tide_globals_t *g) {
    int64_t left = 0;
    for (int i = 0; i < g->n_parts; i++)
        if (g->parts[i].end > g->parts[i].next) left += g->parts[i].end - g->parts[i].next;
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "global tables: %" PRIu64 " records read, %" PRId64
             " to go", g->records, left);
}

/* The tables are read to their end: that is made durable and checkpointed
 * at once (nothing else has written the store yet, so its commit is theirs
 * alone), and logged. */
static tide_global_result_t bootstrapped(tide_globals_t *g, int64_t t0, char **errp) {
    if (tide_store_commit(g->db, errp)) return TIDE_GLOBAL_FAILED;
    tide_globals_committed(g);
    if (tide_store_flush(g->db, errp) || tide_globals_checkpoint(g, errp) != TIDE_GLOBAL_OK)
        return TIDE_GLOBAL_FAILED;
    for (int t = 0; t < g->n_tables; t++)
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "global table %s restored from %s",
                 g->tables[t].store_name, g->tables[t].topic);
    char n[32], el[32], msg[128];
    snprintf(n, sizeof(n), "%" PRIu64, g->records);
    snprintf(el, sizeof(el), "%" PRId64, now_ms() - t0);
    snprintf(msg, sizeof(msg), "global tables read to their end: %s records in %s ms", n, el);
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, msg, "records", n, "elapsed_ms", el, (char *)NULL);
    return TIDE_GLOBAL_OK;
}

tide_global_result_t tide_globals_bootstrap(tide_globals_t *g, const volatile sig_atomic_t *stop,
                                            char **errp) {
    int64_t t0 = now_ms(), next_log = t0 + 10000;
    tide_checkpoint_t cp = {0};
    char *cerr = NULL;
    if (tide_checkpoint_load(&cp, g->checkpoint_path, &cerr)) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "global tables: %s: reading them from the start", cerr);
        free(cerr);
        tide_checkpoint_free(&cp);
        cp = (tide_checkpoint_t){0};
    }
    tide_global_result_t rc = TIDE_GLOBAL_OK;
    for (int t = 0; t < g->n_tables && rc == TIDE_GLOBAL_OK; t++) rc = find_parts(g, t, errp);
    for (int t = 0; t < g->n_tables && rc == TIDE_GLOBAL_OK; t++) rc = resume_table(g, t, &cp, errp);
    tide_checkpoint_free(&cp);
    if (rc == TIDE_GLOBAL_OK) rc = assign_all(g, errp);
    while (rc == TIDE_GLOBAL_OK && !caught_up(g)) {
        if (stop && *stop) return TIDE_GLOBAL_STOPPED;
        if (now_ms() >= next_log) {
            log_progress(g);
            next_log += 10000;
        }
        rc = consume(g, 100, errp);
    }
    return rc == TIDE_GLOBAL_OK ? bootstrapped(g, t0, errp) : rc;
}

tide_global_result_t tide_globals_poll(tide_globals_t *g, char **errp) {
    return consume(g, 0, errp);
}

void tide_globals_committed(tide_globals_t *g) {
    for (int i = 0; i < g->n_parts; i++) g->parts[i].committed = g->parts[i].next;
}

int tide_globals_unsaved(const tide_globals_t *g) {
    for (int i = 0; i < g->n_parts; i++)
        if (g->parts[i].committed != g->parts[i].saved) return 1;
    return 0;
}

void tide_globals_rollback(tide_globals_t *g) {
    for (int i = 0; i < g->n_parts; i++) g->parts[i].next = g->parts[i].committed;
    char *err = NULL;
    if (assign_all(g, &err) != TIDE_GLOBAL_OK) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
    }
}

tide_global_result_t tide_globals_checkpoint(tide_globals_t *g, char **errp) {
    tide_checkpoint_t cp = {0};
    for (int i = 0; i < g->n_parts; i++) {
        const global_part_t *p = &g->parts[i];
        tide_checkpoint_set(&cp, g->tables[p->table].store_name, p->partition, p->committed);
    }
    int r = tide_checkpoint_save(&cp, g->checkpoint_path, errp);
    tide_checkpoint_free(&cp);
    if (r) return TIDE_GLOBAL_FAILED;
    for (int i = 0; i < g->n_parts; i++) g->parts[i].saved = g->parts[i].committed;
    return TIDE_GLOBAL_OK;
}

uint64_t tide_globals_records(const tide_globals_t *g) { return g->records; }

void tide_globals_free(tide_globals_t *g) {
    if (!g) return;
    if (g->q) rd_kafka_queue_destroy(g->q);
    if (g->rk) {
        rd_kafka_consumer_close(g->rk);
        rd_kafka_destroy(g->rk);
    }
    free(g->parts);
    free(g->tables);
    free(g->checkpoint_path);
    free(g);
}
