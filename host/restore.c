/*
 * restore.c: the checkpoint file and the changelog restorer (see restore.h).
 *
 * The restorer is a plain assign()-only consumer: it never joins a group and
 * never commits, so reading a changelog cannot disturb the detector's group.
 * It reads each (store, partition) from its start offset to the end offset
 * seen when the restore began; records appended after that belong to the
 * running task, which writes them itself.
 */
#include "restore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "log.h"

/* ---------------------------------------------------------------- checkpoint */

static int fail(char **errp, const char *fmt, const char *a, const char *b) {
    if (asprintf(errp, fmt, a, b) < 0) *errp = NULL;
    return -1;
}

int tide_checkpoint_load(tide_checkpoint_t *cp, const char *path, char **errp) {
    memset(cp, 0, sizeof(*cp));
    FILE *f = fopen(path, "r");
    if (!f) return errno == ENOENT ? 0 : fail(errp, "%s: %s", path, strerror(errno));
    char line[512], store[128];
    int lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n') continue;
        int partition;
        long long offset;
        if (sscanf(line, "%127s %d %lld", store, &partition, &offset) != 3 || partition < 0 ||
            offset < 0) {
            fclose(f);
            char where[32];
            snprintf(where, sizeof(where), "%d", lineno);
            tide_checkpoint_free(cp);
            return fail(errp, "%s:%s: malformed checkpoint line", path, where);
        }
        tide_checkpoint_set(cp, store, partition, offset);
    }
    fclose(f);
    return 0;
}

int tide_checkpoint_save(const tide_checkpoint_t *cp, const char *path, char **errp) {
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return fail(errp, "%s: %s", tmp, strerror(errno));
    fprintf(f, "# store partition next-changelog-offset\n");
    for (int i = 0; i < cp->n; i++)
        fprintf(f, "%s %d %lld\n", cp->e[i].store, (int)cp->e[i].partition,
                (long long)cp->e[i].offset);
    /* Durable before it replaces the old one: a torn checkpoint would make
     * the database look newer than it is. */
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) return fail(errp, "%s: %s", path, strerror(errno));
    return 0;
}

static tide_checkpoint_entry_t *find(const tide_checkpoint_t *cp, const char *store,
                                     int32_t partition) {
    for (int i = 0; i < cp->n; i++)
        if (cp->e[i].partition == partition && !strcmp(cp->e[i].store, store)) return &cp->e[i];
    return NULL;
}

int64_t tide_checkpoint_get(const tide_checkpoint_t *cp, const char *store, int32_t partition) {
    const tide_checkpoint_entry_t *e = find(cp, store, partition);
    return e ? e->offset : -1;
}

void tide_checkpoint_set(tide_checkpoint_t *cp, const char *store, int32_t partition,
                         int64_t offset) {
    tide_checkpoint_entry_t *e = find(cp, store, partition);
    if (!e) {
        if (cp->n == cp->cap) {
            int cap = cp->cap ? cp->cap * 2 : 16;
            tide_checkpoint_entry_t *ne = realloc(cp->e, (size_t)cap * sizeof(*ne));
            if (!ne) return;
            cp->e = ne;
            cp->cap = cap;
        }
        e = &cp->e[cp->n++];
        snprintf(e->store, sizeof(e->store), "%s", store);
        e->partition = partition;
    }
    e->offset = offset;
}

void tide_checkpoint_free(tide_checkpoint_t *cp) {
    free(cp->e);
    memset(cp, 0, sizeof(*cp));
}

/* ---------------------------------------------------------------- restorer */

typedef struct restoring {
    int store;
    int32_t partition;
    int64_t next, end; /* read [next, end) */
    int64_t started_ms;
    uint64_t records;
} restoring_t;

struct tide_restorer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    char **changelogs;
    int n_stores;
    restoring_t *r;
    int n, cap;
    uint64_t total;
    rd_kafka_message_t *msgs[1000];
};

tide_restorer_t *tide_restorer_new(const tide_config_t *c, const char *bootstraps,
                                   const char *group, char **changelogs, int n_stores,
                                   char **errp) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* librdkafka wants a group.id even for assign(); it is never joined. */
    /* A short fetch wait: the watermark queries of tasks starting later
     * share the connection and would queue behind a long-polling fetch. */
    const char *kv[] = {"fetch.wait.max.ms", "10", "fetch.queue.backoff.ms", "10",
                        "enable.auto.commit", "false", "auto.offset.reset", "earliest", NULL};
    for (int i = 0; kv[i]; i += 2) rd_kafka_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err));
    /* After the user's properties: a restore ends at the partition's end
     * (see tide_restorer_poll), and reads only committed records. */
    if (tide_config_apply_kafka(c, conf, TIDE_CLIENT_CONSUMER, errp) ||
        rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "isolation.level", "read_committed", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err))) {
        rd_kafka_conf_destroy(conf);
        if (!*errp && asprintf(errp, "restore consumer: %s", err) < 0) *errp = NULL;
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, tide_log_rdkafka);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        if (asprintf(errp, "restore consumer: %s", err) < 0) *errp = NULL;
        return NULL;
    }
    tide_restorer_t *r = calloc(1, sizeof(*r));
    r->rk = rk;
    rd_kafka_poll_set_consumer(rk);
    r->q = rd_kafka_queue_get_consumer(rk);
    r->changelogs = changelogs;
    r->n_stores = n_stores;
    return r;
}

/* Start or stop reading one changelog partition. Incremental: a full
 * assign() per task, dozens of times as tasks arrive, trips an assertion in
 * librdkafka 2.15 (a fetch stopped twice). */
static void assign_one(tide_restorer_t *r, const restoring_t *x, int add) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, r->changelogs[x->store], x->partition)->offset = x->next;
    rd_kafka_error_t *e = add ? rd_kafka_incremental_assign(r->rk, l)
                              : rd_kafka_incremental_unassign(r->rk, l);
    if (e) {
        tide_log(TIDE_LOG_WARN, (tide_log_at_t){r->changelogs[x->store], x->partition, -1},
                 "restore: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* An error asking for a changelog's offsets that waiting will not mend;
 * anything else (the broker down or slow, a leader moving, a timeout) will. */
static int permanent(rd_kafka_resp_err_t e) {
    return e == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
           e == RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED ||
           e == RD_KAFKA_RESP_ERR__INVALID_ARG || e == RD_KAFKA_RESP_ERR__FATAL;
}

int tide_restorer_add(tide_restorer_t *r, int store, int32_t partition, int64_t from,
                      char **errp) {
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
        r->rk, r->changelogs[store], partition, &lo, &hi, 10000);
    if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
        lo = hi = 0; /* no changelog yet: nothing was ever written */
    } else if (e) {
        int rc = permanent(e) ? -1 : TIDE_RESTORE_RETRY;
        fail(errp, "changelog %s: %s", r->changelogs[store], rd_kafka_err2str(e));
        return rc;
    }
    if (from < lo) {
        if (from > 0)
            tide_log(TIDE_LOG_WARN, (tide_log_at_t){r->changelogs[store], partition, -1},
                     "changelog starts at %lld, after the checkpoint (%lld): older entries are "
                     "gone (retention or compaction)",
                     (long long)lo, (long long)from);
        from = lo;
    }
    if (from > hi) {
        tide_log(TIDE_LOG_WARN, (tide_log_at_t){r->changelogs[store], partition, -1},
                 "the checkpoint (%lld) is past the changelog's end (%lld): the local state is "
                 "not this changelog's; rebuilding it from the changelog",
                 (long long)from, (long long)hi);
        return TIDE_RESTORE_STALE;
    }
    if (from == hi) return 0;
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 16;
        restoring_t *nr = realloc(r->r, (size_t)cap * sizeof(*nr));
        if (!nr) return fail(errp, "%s%s", "not enough memory", "");
        r->r = nr;
        r->cap = cap;
    }
    r->r[r->n] = (restoring_t){store, partition, from, hi, tide_mono_ms(), 0};
    tide_log(TIDE_LOG_INFO, (tide_log_at_t){r->changelogs[store], partition, from},
             "restoring store from its changelog: %lld record(s) to read",
             (long long)(hi - from));
    assign_one(r, &r->r[r->n], 1);
    r->n++;
    return 0;
}

/* Drop every (store, partition) of `partition`, unassigning each. */
static void drop_partition(tide_restorer_t *r, int32_t partition) {
    int k = 0;
    for (int i = 0; i < r->n; i++) {
        if (r->r[i].partition == partition) assign_one(r, &r->r[i], 0);
        else r->r[k++] = r->r[i];
    }
    r->n = k;
}

void tide_restorer_remove(tide_restorer_t *r, int32_t partition) { drop_partition(r, partition); }

int tide_restorer_pending(const tide_restorer_t *r) { return r->n; }

int tide_restorer_busy(const tide_restorer_t *r, int32_t partition) {
    for (int i = 0; i < r->n; i++)
        if (r->r[i].partition == partition) return 1;
    return 0;
}
uint64_t tide_restorer_records(const tide_restorer_t *r) { return r->total; }

static restoring_t *find_restoring(tide_restorer_t *r, const char *topic, int32_t partition) {
    for (int i = 0; i < r->n; i++)
        if (r->r[i].partition == partition && !strcmp(r->changelogs[r->r[i].store], topic))
            return &r->r[i];
    return NULL;
}

void tide_restorer_poll(tide_restorer_t *r, int timeout_ms, tide_restore_apply_fn apply,
                        tide_restore_done_fn done, void *ud) {
    if (!r->n) return;
    ssize_t n = rd_kafka_consume_batch_queue(r->q, timeout_ms, r->msgs, 1000);
    int changed = 0;
    for (ssize_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = r->msgs[i];
        restoring_t *x = m->err ? NULL : find_restoring(r, rd_kafka_topic_name(m->rkt), m->partition);
        if (x && m->offset >= x->next && m->offset < x->end) {
            apply(ud, x->store, m->partition, m->key, m->key ? m->key_len : 0, m->payload,
                  m->payload ? m->len : 0);
            x->next = m->offset + 1;
            x->records++;
            r->total++;
            if (x->next >= x->end) changed = 1;
        } else if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* Caught up with what it can read. Under exactly-once the last
             * offsets are transaction markers, never handed out, and an open
             * transaction's records are not readable (read_committed): the
             * end of the partition, not a record at end - 1, ends a restore. */
            restoring_t *e = find_restoring(r, rd_kafka_topic_name(m->rkt), m->partition);
            if (e && e->next < e->end) {
                e->next = e->end;
                changed = 1;
            }
        } else if (m->err) {
            tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "restore: %s", rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
    if (!changed) return;
    /* A partition whose stores are all caught up is done: report it once and
     * stop reading its changelogs. Entries before i belong to partitions
     * still busy, so compacting never moves an unvisited entry before i. */
    int i = 0;
    while (i < r->n) {
        int32_t p = r->r[i].partition;
        int busy = 0;
        uint64_t records = 0;
        int64_t started = r->r[i].started_ms;
        for (int j = 0; j < r->n; j++) {
            if (r->r[j].partition != p) continue;
            if (r->r[j].next < r->r[j].end) busy = 1;
            records += r->r[j].records;
            if (r->r[j].started_ms < started) started = r->r[j].started_ms;
        }
        if (busy) {
            i++;
            continue;
        }
        done(ud, p, records, tide_mono_ms() - started);
        drop_partition(r, p);
    }
}

void tide_restorer_free(tide_restorer_t *r) {
    if (!r) return;
    while (r->n) drop_partition(r, r->r[0].partition);
    rd_kafka_queue_destroy(r->q);
    rd_kafka_consumer_close(r->rk);
    rd_kafka_destroy(r->rk);
    free(r->r);
    free(r);
}
