/*
 * reset.c: `tide reset DETECTOR_OR_FILE` (see reset.h).
 *
 * One pass, in Kafka's own order: find the detector's shape (from its file,
 * without running it, or from a name and --input-topics), make sure no
 * instance runs, work out the new input offsets, delete the internal topics,
 * commit the offsets, remove the local state directory; print each step.
 * It owns its short-lived clients and nothing else; it never touches the
 * detector's files, its outputs or (unless asked) its dead-letter topic, and
 * in a dry run it changes nothing.
 *
 * Two things librdkafka's mock cluster (the development broker) lacks, and
 * what reset does there instead, saying so:
 * - DescribeGroups: it cannot tell whether instances run elsewhere; only this
 *   host is checked (a running worker holds its state directory's lock).
 * - DeleteTopics: changelogs are emptied instead (a tombstone for every key
 *   they hold, so a restore finds nothing), and repartition topics are
 *   skipped to their end in the group's offsets.
 * Offsets are committed by joining the (empty) group as its only member:
 * the mock refuses commits from outside a group it has seen, and a real
 * broker takes them either way.
 */
#include "reset.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "files.h"
#include "log.h"
#include "runtime.h"
#include "tools.h"

typedef enum reset_result {
    RESET_DONE = 0,
    RESET_REFUSED = 1, /* or failed: nothing (more) was changed */
    RESET_USAGE = 2,
} reset_result_t;

/* Where the inputs go. */
typedef enum reset_to { TO_EARLIEST, TO_LATEST, TO_DATETIME, TO_DURATION, TO_OFFSETS } reset_to_t;

typedef struct strv {
    char **v;
    int n;
} strv_t;

typedef struct reset {
    tide_config_t config;
    const char *target;        /* the file, folder or name given */
    const char *bootstraps;
    reset_to_t to;
    const char *to_text;       /* the option's argument, for the report */
    int64_t when_ms;           /* TO_DATETIME, TO_DURATION */
    rd_kafka_topic_partition_list_t *given; /* TO_OFFSETS */
    strv_t given_inputs;       /* --input-topics */
    int dry_run, delete_dlq, timeout_ms;
    /* the plan */
    char name[128], group[512], dlq[512], state_dir[4096];
    strv_t inputs, changelogs, repartitions;
    /* the clients */
    rd_kafka_t *admin;         /* a producer: Admin API, metadata, tombstones */
    rd_kafka_t *consumer;      /* group.id = the detector's group */
    const rd_kafka_metadata_t *md;
    int delivery_failures;
} reset_t;

static const char *const usage_text =
    "usage: tide reset DETECTOR_OR_FILE [options]\n"
    "Reprocess a detector from a chosen point with empty state, as Kafka Streams'\n"
    "application reset tool does: reset its input offsets, delete its internal topics\n"
    "(store changelogs, repartition topics), remove its local state directory. Stop\n"
    "every instance of the detector first: it refuses while its group has members.\n"
    "Given a file or folder, the detector's inputs and stores are read from it (it is\n"
    "not run); given a name, pass its inputs with --input-topics.\n\n"
    "  -c FILE, -D key=value, -b HOST:PORT   configuration, as for `tide run`\n"
    "  --to-earliest             the first offset of each partition (the default)\n"
    "  --to-latest               the end: skip every record there is now\n"
    "  --to-datetime TIME        the first record at or after TIME, e.g.\n"
    "                            2024-05-01T12:00:00Z or 2024-05-01T14:00:00.000+02:00\n"
    "  --by-duration DURATION    the first record of the last DURATION: 90s, 15m, 1h,\n"
    "                            2d or PT1H30M\n"
    "  --to-offsets T:P:O,...    partition P of input T to offset O; the partitions not\n"
    "                            listed keep their offsets\n"
    "  --input-topics A,B        the inputs of a detector given by name\n"
    "  --delete-dead-letters     also delete <application.id>.<detector>-dlq, kept\n"
    "                            otherwise: it is not state, and may still be needed\n"
    "  --dry-run                 say what would be done; change nothing\n"
    "  --timeout-ms MS           for each broker operation (default 30000)\n";

static int strv_add(strv_t *s, const char *x) {
    char **v = realloc(s->v, sizeof(*v) * (size_t)(s->n + 1));
    if (!v || !(v[s->n] = strdup(x))) return -1;
    s->v = v;
    s->n++;
    return 0;
}

static int strv_has(const strv_t *s, const char *x) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->v[i], x)) return 1;
    return 0;
}

static void strv_free(strv_t *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

static reset_result_t fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static reset_result_t fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("tide reset: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return RESET_REFUSED;
}

/* ---------------------------------------------------------------- options */

/* 2024-05-01T12:00:00[.mmm][Z|+hh:mm|-hh:mm] into ms since the epoch. */
static int parse_datetime(const char *s, int64_t *ms) {
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p) return -1;
    int64_t frac = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3) frac = frac * 10 + (*p - '0');
        while (digits > 0 && digits < 3) frac *= 10, digits++;
    }
    int64_t offset_s = 0;
    if (*p == '+' || *p == '-') {
        int hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2 || strlen(p) != 6) return -1;
        offset_s = (hh * 3600 + mm * 60) * (*p == '+' ? 1 : -1);
    } else if (strcmp(p, "Z") && *p) {
        return -1;
    }
    *ms = ((int64_t)timegm(&tm) - offset_s) * 1000 + frac;
    return 0;
}

/* 90s, 15m, 1h, 2d (summed: 1h30m), or ISO 8601 PnDTnHnMnS, into ms. */
static int parse_duration(const char *s, int64_t *ms) {
    int64_t total = 0;
    int any = 0;
    if (*s == 'P' || *s == 'p') s++;
    while (*s) {
        if (*s == 'T' || *s == 't') {
            s++;
            continue;
        }
        char *end;
        long long n = strtoll(s, &end, 10);
        if (end == s || n < 0) return -1;
        int64_t unit = *end == 's' || *end == 'S'   ? 1000
                       : *end == 'm' || *end == 'M' ? 60000
                       : *end == 'h' || *end == 'H' ? 3600000
                       : *end == 'd' || *end == 'D' ? 86400000
                                                    : 0;
        if (!unit) return -1;
        total += n * unit;
        any = 1;
        s = end + 1;
    }
    *ms = total;
    return any ? 0 : -1;
}

/* T:P:O,... into r->given. */
static int parse_offsets(reset_t *r, const char *s) {
    r->given = rd_kafka_topic_partition_list_new(8);
    char *copy = strdup(s), *save = NULL;
    int rc = copy ? 0 : -1;
    for (char *item = copy ? strtok_r(copy, ",", &save) : NULL; item && !rc;
         item = strtok_r(NULL, ",", &save)) {
        char *o = strrchr(item, ':');
        char *p = o ? memrchr(item, ':', (size_t)(o - item)) : NULL;
        char *e1, *e2;
        if (!p) {
            rc = -1;
            break;
        }
        *p = *o = '\0';
        long part = strtol(p + 1, &e1, 10);
        long long off = strtoll(o + 1, &e2, 10);
        if (!*item || *e1 || *e2 || part < 0 || off < 0) rc = -1;
        else rd_kafka_topic_partition_list_add(r->given, item, (int32_t)part)->offset = off;
    }
    free(copy);
    return rc;
}

static int split_topics(strv_t *out, const char *s) {
    char *copy = strdup(s), *save = NULL;
    if (!copy) return -1;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (strv_add(out, t)) return -1;
    free(copy);
    return out->n ? 0 : -1;
}

/* One option that takes a value; 0, -1 (bad value) or 1 (not ours). */
static int option_with_value(reset_t *r, const char *opt, const char *v) {
    char *err = NULL;
    if (!strcmp(opt, "-c")) return 0; /* read first, in parse() */
    if (!strcmp(opt, "-D")) {
        char kv[4096];
        snprintf(kv, sizeof(kv), "%s", v);
        char *eq = strchr(kv, '=');
        if (eq) *eq = '\0';
        if (eq && !tide_config_set(&r->config, kv, eq + 1, "flag -D", &err)) return 0;
        fail("%s", err ? err : "-D wants key=value");
        free(err);
        return -1;
    }
    if (!strcmp(opt, "-b") || !strcmp(opt, "--bootstrap-server")) {
        if (!tide_config_set(&r->config, "bootstrap.servers", v, "flag -b", &err)) return 0;
        fail("%s", err);
        free(err);
        return -1;
    }
    if (!strcmp(opt, "--to-datetime"))
        return r->to = TO_DATETIME, r->to_text = v, parse_datetime(v, &r->when_ms);
    if (!strcmp(opt, "--by-duration")) {
        int64_t d;
        if (parse_duration(v, &d)) return -1;
        r->when_ms = tide_wall_ms() - d;
        return r->to = TO_DURATION, r->to_text = v, 0;
    }
    if (!strcmp(opt, "--to-offsets")) return r->to = TO_OFFSETS, r->to_text = v, parse_offsets(r, v);
    if (!strcmp(opt, "--input-topics")) return split_topics(&r->given_inputs, v);
    if (!strcmp(opt, "--timeout-ms")) return (r->timeout_ms = atoi(v)) > 0 ? 0 : -1;
    return 1;
}

static reset_result_t parse(reset_t *r, int argc, char **argv) {
    char *err = NULL;
    r->timeout_ms = 30000;
    tide_config_init(&r->config);
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "-c") && tide_config_load_file(&r->config, argv[i + 1], &err))
            return fail("%s", err);
    if (tide_config_load_env(&r->config, &err)) return fail("%s", err);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int rc = i + 1 < argc ? option_with_value(r, a, argv[i + 1]) : 1;
        if (rc == 0) i++;
        else if (rc < 0) return fail("bad value for %s: %s\n%s", a, argv[i + 1], usage_text), RESET_USAGE;
        else if (!strcmp(a, "--to-earliest")) r->to = TO_EARLIEST;
        else if (!strcmp(a, "--to-latest")) r->to = TO_LATEST;
        else if (!strcmp(a, "--dry-run")) r->dry_run = 1;
        else if (!strcmp(a, "--delete-dead-letters")) r->delete_dlq = 1;
        else if (a[0] != '-' && !r->target) r->target = a;
        else return fputs(usage_text, stderr), RESET_USAGE;
    }
    if (!r->target) return fputs(usage_text, stderr), RESET_USAGE;
    if (tide_config_validate(&r->config, &err)) {
        fail("%s", err);
        free(err);
        return RESET_USAGE;
    }
    tide_log_level_t lvl;
    if (!tide_log_parse_level(tide_config_str(&r->config, TIDE_CFG_LOG_LEVEL), &lvl)) tide_log_set_level(lvl);
    r->bootstraps = tide_config_str(&r->config, TIDE_CFG_BOOTSTRAP_SERVERS);
    if (!*r->bootstraps)
        return fail("no broker: pass -b HOST:PORT or set bootstrap.servers"), RESET_USAGE;
    return RESET_DONE;
}

/* ---------------------------------------------------------------- the plan */

static int is_repartition(const char *topic, const char *prefix) {
    size_t n = strlen(topic), pl = strlen(prefix);
    return n > pl + 12 && !strncmp(topic, prefix, pl) && !strcmp(topic + n - 12, "-repartition");
}

static int is_changelog(const char *topic, const char *prefix) {
    size_t n = strlen(topic), pl = strlen(prefix);
    return n > pl + 10 && !strncmp(topic, prefix, pl) && !strcmp(topic + n - 10, "-changelog");
}

/* The names every detector's topics and state are known by. */
static void plan_names(reset_t *r, const char *name) {
    const tide_config_t *c = &r->config;
    const char *app = tide_config_str(c, TIDE_CFG_APPLICATION_ID);
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->group, sizeof(r->group), "%s.%s", app, name);
    snprintf(r->dlq, sizeof(r->dlq), "%s.%s-dlq", app, name);
    snprintf(r->state_dir, sizeof(r->state_dir), "%s/%s/%s", tide_config_str(c, TIDE_CFG_STATE_DIR), app,
             name);
}

/* From the detector's file: its script is loaded and validated, not run. */
static reset_result_t plan_from_file(reset_t *r) {
    tide_runtime_opts_t ro = {0};
    ro.application_id = tide_config_str(&r->config, TIDE_CFG_APPLICATION_ID);
    tide_runtime_t *rt = NULL;
    char *err = NULL;
    if (tide_runtime_describe(&ro, r->target, &rt, &err) != TIDE_OK) {
        reset_result_t rc = fail("cannot read the detector: %s", err);
        free(err);
        return rc;
    }
    const tide_detector_info_t *d = tide_runtime_info(rt);
    plan_names(r, d->name);
    char prefix[700], topic[1024];
    snprintf(prefix, sizeof(prefix), "%s-", r->group);
    int rc = 0;
    for (int i = 0; i < d->n_stores && !rc; i++) {
        snprintf(topic, sizeof(topic), "%s%s-changelog", prefix, d->store_names[i]);
        rc = strv_add(&r->changelogs, topic);
    }
    for (int i = 0; i < d->n_inputs && !rc; i++)
        rc = strv_add(is_repartition(d->inputs[i], prefix) ? &r->repartitions : &r->inputs,
                      d->inputs[i]);
    for (int i = 0; i < d->n_outputs && !rc; i++)
        if (is_repartition(d->outputs[i], prefix) && !strv_has(&r->repartitions, d->outputs[i]))
            rc = strv_add(&r->repartitions, d->outputs[i]);
    tide_runtime_close(rt);
    return rc ? fail("not enough memory") : RESET_DONE;
}

/* From a name: the inputs given, the internal topics the cluster has under
 * the detector's prefix. */
static reset_result_t plan_from_name(reset_t *r) {
    const char *n = r->target;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              (p > n && (*p == '.' || *p == '_' || *p == '-'))))
            return fail("%s: no such file, and not a detector name", n);
    if (!r->given_inputs.n)
        return fail("%s is not a file: give the detector's inputs with --input-topics", n);
    plan_names(r, n);
    char prefix[700];
    snprintf(prefix, sizeof(prefix), "%s-", r->group);
    int rc = 0;
    for (int i = 0; i < r->given_inputs.n && !rc; i++) rc = strv_add(&r->inputs, r->given_inputs.v[i]);
    for (int i = 0; i < r->md->topic_cnt && !rc; i++) {
        const char *t = r->md->topics[i].topic;
        if (is_changelog(t, prefix)) rc = strv_add(&r->changelogs, t);
        else if (is_repartition(t, prefix)) rc = strv_add(&r->repartitions, t);
    }
    return rc ? fail("not enough memory") : RESET_DONE;
}

static const rd_kafka_metadata_topic_t *topic_md(const reset_t *r, const char *topic) {
    for (int i = 0; i < r->md->topic_cnt; i++)
        if (!strcmp(r->md->topics[i].topic, topic) && !r->md->topics[i].err)
            return &r->md->topics[i];
    return NULL;
}

/* ---------------------------------------------------------------- clients */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    if (m->err) ((reset_t *)opaque)->delivery_failures++;
}

static rd_kafka_t *client(reset_t *r, rd_kafka_type_t type) {
    char err[512], *cerr = NULL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    tide_client_t which = type == RD_KAFKA_CONSUMER ? TIDE_CLIENT_CONSUMER : TIDE_CLIENT_PRODUCER;
    /* The shortest session brokers allow by default, unless the detector's
     * configuration (consumer.session.timeout.ms) says otherwise. After we
     * leave, the mock cluster holds the next join for our session less a
     * second, and drops a joiner whose own session is shorter than that:
     * give reset the detector's configuration. */
    if (type == RD_KAFKA_CONSUMER)
        rd_kafka_conf_set(conf, "session.timeout.ms", "6000", err, sizeof(err));
    int bad = tide_config_apply_kafka(&r->config, conf, which, &cerr) ||
              rd_kafka_conf_set(conf, "bootstrap.servers", r->bootstraps, err, sizeof(err));
    if (!bad && type == RD_KAFKA_CONSUMER)
        bad = rd_kafka_conf_set(conf, "group.id", r->group, err, sizeof(err)) ||
              rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err)) ||
              rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", err, sizeof(err)) ||
              rd_kafka_conf_set(conf, "partition.assignment.strategy", "range", err, sizeof(err));
    if (bad) {
        fail("%s", cerr ? cerr : err);
        free(cerr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, r);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_log_cb(conf, tide_log_rdkafka);
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (!rk) fail("%s", err);
    return rk;
}

static reset_result_t open_clients(reset_t *r) {
    if (!(r->admin = client(r, RD_KAFKA_PRODUCER))) return RESET_REFUSED;
    rd_kafka_resp_err_t e = rd_kafka_metadata(r->admin, 1, NULL, &r->md, r->timeout_ms);
    if (e) return fail("cannot reach %s: %s", r->bootstraps, rd_kafka_err2str(e));
    return RESET_DONE;
}

/* ---------------------------------------------------------------- members */

/* The pid of a process holding the lock file `path` (RocksDB's LOCK, taken
 * with fcntl by a running worker), or 0. */
static pid_t lock_holder(const char *path) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return 0;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    int rc = fcntl(fd, F_GETLK, &fl);
    close(fd);
    return rc == 0 && fl.l_type != F_UNLCK ? fl.l_pid : 0;
}

typedef enum group_state { GROUP_EMPTY, GROUP_ACTIVE, GROUP_UNANSWERED, GROUP_ERROR } group_state_t;

/* DescribeConsumerGroups: is anyone in the group? why gets the details. */
static group_state_t describe_group(reset_t *r, char *why, size_t cap) {
    rd_kafka_queue_t *q = rd_kafka_queue_new(r->admin);
    rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(r->admin, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS);
    char err[256];
    rd_kafka_AdminOptions_set_request_timeout(ao, r->timeout_ms, err, sizeof(err));
    const char *groups[] = {r->group};
    rd_kafka_DescribeConsumerGroups(r->admin, groups, 1, ao, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, r->timeout_ms + 1000);
    group_state_t gs = GROUP_ERROR;
    const rd_kafka_DescribeConsumerGroups_result_t *res =
        ev ? rd_kafka_event_DescribeConsumerGroups_result(ev) : NULL;
    size_t n = 0;
    const rd_kafka_ConsumerGroupDescription_t **g =
        res && !rd_kafka_event_error(ev) ? rd_kafka_DescribeConsumerGroups_result_groups(res, &n) : NULL;
    const rd_kafka_error_t *ge = n ? rd_kafka_ConsumerGroupDescription_error(g[0]) : NULL;
    if (!ev) {
        snprintf(why, cap, "no answer from %s", r->bootstraps);
    } else if (rd_kafka_event_error(ev) || n != 1 || ge) {
        rd_kafka_resp_err_t code = rd_kafka_event_error(ev) ? rd_kafka_event_error(ev)
                                   : ge ? rd_kafka_error_code(ge) : RD_KAFKA_RESP_ERR__FAIL;
        snprintf(why, cap, "%s", rd_kafka_event_error(ev) ? rd_kafka_event_error_string(ev)
                                 : ge ? rd_kafka_error_string(ge) : "no description");
        gs = code == RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND ? GROUP_EMPTY
             : code == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE ? GROUP_UNANSWERED : GROUP_ERROR;
    } else {
        size_t members = rd_kafka_ConsumerGroupDescription_member_count(g[0]);
        snprintf(why, cap, "%zu active member(s), state %s", members,
                 rd_kafka_consumer_group_state_name(rd_kafka_ConsumerGroupDescription_state(g[0])));
        gs = members ? GROUP_ACTIVE : GROUP_EMPTY;
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_queue_destroy(q);
    return gs;
}

/* Refuse while an instance of the detector runs: the group's members, and
 * a worker on this host holding the state directory. */
static reset_result_t check_no_members(reset_t *r) {
    char why[512], lock[4200];
    group_state_t gs = describe_group(r, why, sizeof(why));
    if (gs == GROUP_ACTIVE)
        return fail("group %s has %s: stop every instance of the detector first", r->group, why);
    if (gs == GROUP_ERROR) return fail("cannot describe group %s: %s", r->group, why);
    snprintf(lock, sizeof(lock), "%s/rocksdb/LOCK", r->state_dir);
    pid_t pid = lock_holder(lock);
    if (pid)
        return fail("a worker of %s runs on this host (process %d holds %s): stop it first",
                    r->name, (int)pid, lock);
    if (gs == GROUP_UNANSWERED)
        printf("group %s: this broker cannot describe groups (%s); only this host was checked "
               "for running instances\n", r->group, why);
    else
        printf("group %s: no active members\n", r->group);
    return RESET_DONE;
}

/* ---------------------------------------------------------------- offsets */

/* Every partition of the inputs, at the offset the mode asks for. */
static reset_result_t target_offsets(reset_t *r, rd_kafka_topic_partition_list_t *l) {
    for (int i = 0; i < r->inputs.n; i++) {
        const rd_kafka_metadata_topic_t *t = topic_md(r, r->inputs.v[i]);
        if (!t) {
            printf("input %s: no such topic, skipped\n", r->inputs.v[i]);
            continue;
        }
        for (int p = 0; p < t->partition_cnt; p++) {
            int64_t lo, hi;
            rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
                r->admin, t->topic, t->partitions[p].id, &lo, &hi, r->timeout_ms);
            if (e) return fail("%s[%d]: %s", t->topic, t->partitions[p].id, rd_kafka_err2str(e));
            rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(l, t->topic, t->partitions[p].id);
            tp->offset = r->to == TO_LATEST ? hi : r->to == TO_EARLIEST ? lo : r->when_ms;
            if (r->to == TO_OFFSETS) {
                rd_kafka_topic_partition_t *g = rd_kafka_topic_partition_list_find(
                    r->given, t->topic, t->partitions[p].id);
                if (!g) rd_kafka_topic_partition_list_del(l, t->topic, t->partitions[p].id);
                else tp->offset = g->offset < lo ? lo : g->offset > hi ? hi : g->offset;
            }
        }
    }
    if (r->to != TO_DATETIME && r->to != TO_DURATION) return RESET_DONE;
    /* the first record at or after the time; none: the end, as Kafka's tool */
    rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(r->consumer, l, r->timeout_ms);
    if (e) return fail("offsets for %s: %s", r->to_text, rd_kafka_err2str(e));
    for (int i = 0; i < l->cnt; i++) {
        int64_t lo, hi;
        if (l->elems[i].err) return fail("%s[%d]: %s", l->elems[i].topic, l->elems[i].partition,
                                         rd_kafka_err2str(l->elems[i].err));
        if (l->elems[i].offset < 0 &&
            !rd_kafka_query_watermark_offsets(r->admin, l->elems[i].topic, l->elems[i].partition,
                                              &lo, &hi, r->timeout_ms))
            l->elems[i].offset = hi;
    }
    return RESET_DONE;
}

static void print_offset(const char *what, int64_t o) {
    if (o >= 0) printf("%s%lld", what, (long long)o);
    else printf("%snone", what);
}

/* "  topic[p]: committed -> new" for every partition. */
static void print_moves(reset_t *r, const rd_kafka_topic_partition_list_t *l) {
    rd_kafka_topic_partition_list_t *was = rd_kafka_topic_partition_list_copy(l);
    int known = !rd_kafka_committed(r->consumer, was, r->timeout_ms);
    for (int i = 0; i < l->cnt; i++) {
        printf("  %s[%d]: ", l->elems[i].topic, l->elems[i].partition);
        if (known) print_offset("", was->elems[i].offset);
        else printf("?");
        print_offset(" -> ", l->elems[i].offset);
        printf("\n");
    }
    rd_kafka_topic_partition_list_destroy(was);
}

/* Commit l as the group's only member: join (on the inputs, which exist),
 * commit, leave. */
static reset_result_t commit_offsets(reset_t *r, rd_kafka_topic_partition_list_t *l) {
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(r->inputs.n);
    for (int i = 0; i < r->inputs.n; i++)
        if (topic_md(r, r->inputs.v[i]))
            rd_kafka_topic_partition_list_add(sub, r->inputs.v[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(r->consumer, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    int64_t deadline = tide_mono_ms() + 2 * (int64_t)r->timeout_ms;
    rd_kafka_topic_partition_list_t *as = NULL;
    while (!e && tide_mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->consumer, 100);
        if (m) rd_kafka_message_destroy(m); /* read nothing: only membership counts */
        if (as) rd_kafka_topic_partition_list_destroy(as);
        as = NULL;
        if (!rd_kafka_assignment(r->consumer, &as) && as->cnt > 0) break;
    }
    int joined = as && as->cnt > 0;
    if (as) rd_kafka_topic_partition_list_destroy(as);
    if (!e && !joined) e = RD_KAFKA_RESP_ERR__TIMED_OUT;
    if (!e) e = rd_kafka_commit(r->consumer, l, 0);
    rd_kafka_consumer_close(r->consumer);
    if (e) return fail("cannot commit the offsets of group %s: %s", r->group, rd_kafka_err2str(e));
    return RESET_DONE;
}

/* ---------------------------------------------------------------- topics */

typedef enum deleted { DELETED_ALL, DELETE_UNSUPPORTED, DELETE_FAILED } deleted_t;

static deleted_t delete_topics(reset_t *r, const strv_t *names) {
    if (!names->n) return DELETED_ALL;
    rd_kafka_DeleteTopic_t **del = calloc((size_t)names->n, sizeof(*del));
    for (int i = 0; i < names->n; i++) del[i] = rd_kafka_DeleteTopic_new(names->v[i]);
    rd_kafka_queue_t *q = rd_kafka_queue_new(r->admin);
    rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(r->admin, RD_KAFKA_ADMIN_OP_DELETETOPICS);
    char err[256];
    rd_kafka_AdminOptions_set_operation_timeout(ao, r->timeout_ms, err, sizeof(err));
    rd_kafka_DeleteTopics(r->admin, del, (size_t)names->n, ao, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, r->timeout_ms + 1000);
    deleted_t d = DELETE_FAILED;
    if (!ev) {
        fprintf(stderr, "tide reset: DeleteTopics: no answer from %s\n", r->bootstraps);
    } else if (rd_kafka_event_error(ev)) {
        d = rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE ? DELETE_UNSUPPORTED
                                                                              : DELETE_FAILED;
        if (d == DELETE_FAILED)
            fprintf(stderr, "tide reset: DeleteTopics: %s\n", rd_kafka_event_error_string(ev));
    } else {
        size_t n = 0;
        const rd_kafka_topic_result_t **res =
            rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &n);
        d = DELETED_ALL;
        for (size_t i = 0; i < n; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
            const char *t = rd_kafka_topic_result_name(res[i]);
            if (e && e != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) d = DELETE_FAILED;
            if (e) fprintf(stderr, "tide reset: cannot delete %s: %s\n", t, rd_kafka_err2str(e));
            else printf("  %s: deleted\n", t);
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_queue_destroy(q);
    rd_kafka_DeleteTopic_destroy_array(del, (size_t)names->n);
    free(del);
    return d;
}

typedef struct tombstoner {
    reset_t *r;
    long n;
    int failed;
} tombstoner_t;

static void on_changelog_record(void *ud, const tide_cli_record_t *rec) {
    tombstoner_t *t = ud;
    if (rec->key_len < 0 || t->failed) return; /* a store key is never null */
    rd_kafka_resp_err_t e;
    while ((e = rd_kafka_producev(t->r->admin, RD_KAFKA_V_TOPIC(rec->topic),
                                  RD_KAFKA_V_PARTITION(rec->partition),
                                  RD_KAFKA_V_KEY(rec->key, (size_t)rec->key_len),
                                  RD_KAFKA_V_VALUE(NULL, 0), RD_KAFKA_V_END)) ==
           RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(t->r->admin, 100);
    if (e) t->failed = 1;
    else t->n++;
}

/* On a broker without DeleteTopics: a tombstone for every key of the
 * changelog, so that a restore finds an empty store. */
static reset_result_t empty_changelog(reset_t *r, const char *topic) {
    tombstoner_t t = {r, 0, 0};
    char *err = NULL;
    if (tide_tool_read_topic(r->bootstraps, topic, NULL, 0, on_changelog_record, &t, &err)) {
        reset_result_t rc = fail("cannot read %s: %s", topic, err);
        free(err);
        return rc;
    }
    if (rd_kafka_flush(r->admin, r->timeout_ms) || t.failed || r->delivery_failures)
        return fail("cannot write the tombstones of %s", topic);
    printf("  %s: emptied, %ld tombstone(s) (this broker cannot delete topics)\n", topic, t.n);
    return RESET_DONE;
}

/* The internal topics (and the dead letters if asked) go; on a broker that
 * cannot delete topics, the changelogs are emptied instead. *deleted says
 * whether the repartition topics are gone. */
static reset_result_t remove_internal_topics(reset_t *r, int *deleted) {
    strv_t doomed = {0};
    const strv_t *lists[] = {&r->changelogs, &r->repartitions};
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < lists[l]->n; i++)
            if (topic_md(r, lists[l]->v[i])) strv_add(&doomed, lists[l]->v[i]);
    if (r->delete_dlq && topic_md(r, r->dlq)) strv_add(&doomed, r->dlq);
    printf("internal topics:%s\n", doomed.n ? "" : " none");
    deleted_t d = r->dry_run ? DELETED_ALL : delete_topics(r, &doomed);
    reset_result_t rc = d == DELETE_FAILED ? RESET_REFUSED : RESET_DONE;
    for (int i = 0; r->dry_run && i < doomed.n; i++) printf("  %s: would be deleted\n", doomed.v[i]);
    for (int i = 0; d == DELETE_UNSUPPORTED && i < doomed.n && !rc; i++) {
        if (strv_has(&r->changelogs, doomed.v[i])) rc = empty_changelog(r, doomed.v[i]);
        else if (!strcmp(doomed.v[i], r->dlq))
            printf("  %s: kept: this broker cannot delete topics\n", r->dlq);
        else printf("  %s: skipped to its end (this broker cannot delete topics)\n", doomed.v[i]);
    }
    *deleted = d == DELETED_ALL;
    strv_free(&doomed);
    return rc;
}

/* A repartition topic's partitions: 0 when it was deleted (it comes back
 * empty), else its end, so that nothing written before the reset is read. */
static void add_repartition_offsets(reset_t *r, rd_kafka_topic_partition_list_t *l, int deleted) {
    for (int i = 0; i < r->repartitions.n; i++) {
        const rd_kafka_metadata_topic_t *t = topic_md(r, r->repartitions.v[i]);
        for (int p = 0; t && p < t->partition_cnt; p++) {
            int64_t lo = 0, hi = 0;
            if (!deleted)
                rd_kafka_query_watermark_offsets(r->admin, t->topic, t->partitions[p].id, &lo, &hi,
                                                 r->timeout_ms);
            rd_kafka_topic_partition_list_add(l, t->topic, t->partitions[p].id)->offset = hi;
        }
    }
}

/* ---------------------------------------------------------------- the run */

static const char *mode_text(const reset_t *r) {
    switch (r->to) {
    case TO_LATEST: return "to latest";
    case TO_DATETIME: return "to the first record at or after";
    case TO_DURATION: return "to the first record of the last";
    case TO_OFFSETS: return "to the offsets given:";
    default: return "to earliest";
    }
}

static reset_result_t run(reset_t *r) {
    reset_result_t rc = open_clients(r);
    if (!rc) rc = access(r->target, F_OK) == 0 ? plan_from_file(r) : plan_from_name(r);
    if (rc) return rc;
    printf("tide reset %s (group %s, broker %s)%s\n", r->name, r->group, r->bootstraps,
           r->dry_run ? ": dry run, nothing is changed" : "");
    if (!(r->consumer = client(r, RD_KAFKA_CONSUMER))) return RESET_REFUSED;
    if ((rc = check_no_members(r))) return rc;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    rc = target_offsets(r, l);
    int deleted = 0;
    if (!rc) {
        printf("input offsets, %s%s%s:\n", mode_text(r), r->to_text ? " " : "",
               r->to_text ? r->to_text : "");
        print_moves(r, l);
        rc = remove_internal_topics(r, &deleted);
    }
    if (!rc && r->repartitions.n) {
        rd_kafka_topic_partition_list_t *rl = rd_kafka_topic_partition_list_new(8);
        add_repartition_offsets(r, rl, deleted || r->dry_run);
        printf("repartition offsets:\n");
        print_moves(r, rl);
        for (int i = 0; i < rl->cnt; i++)
            rd_kafka_topic_partition_list_add(l, rl->elems[i].topic, rl->elems[i].partition)
                ->offset = rl->elems[i].offset;
        rd_kafka_topic_partition_list_destroy(rl);
    }
    if (!rc && !r->dry_run && l->cnt) rc = commit_offsets(r, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (rc) return rc;
    if (!r->delete_dlq)
        printf("dead-letter topic %s: kept (--delete-dead-letters deletes it)\n", r->dlq);
    if (access(r->state_dir, F_OK) != 0)
        printf("local state %s: none\n", r->state_dir);
    else if (r->dry_run)
        printf("local state %s: would be removed\n", r->state_dir);
    else if (tide_files_remove_tree(r->state_dir) == 0)
        printf("local state %s: removed\n", r->state_dir);
    else
        return fail("cannot remove %s: %s", r->state_dir, strerror(errno));
    printf("%s\n", r->dry_run ? "dry run: nothing was changed" : "done");
    return RESET_DONE;
}

int tide_reset_main(int argc, char **argv, volatile sig_atomic_t *stop) {
    (void)stop;
    reset_t r;
    memset(&r, 0, sizeof(r));
    reset_result_t rc = parse(&r, argc, argv);
    if (!rc) rc = run(&r);
    fflush(stdout);
    if (r.md) rd_kafka_metadata_destroy(r.md);
    if (r.consumer) rd_kafka_destroy(r.consumer);
    if (r.admin) rd_kafka_destroy(r.admin);
    if (r.given) rd_kafka_topic_partition_list_destroy(r.given);
    strv_free(&r.given_inputs);
    strv_free(&r.inputs);
    strv_free(&r.changelogs);
    strv_free(&r.repartitions);
    tide_config_free(&r.config);
    return (int)rc;
}
