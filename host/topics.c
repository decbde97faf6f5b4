/*
 * topics.c: a detector's internal topics (see topics.h).
 *
 * Describe first (DescribeTopics never auto-creates, unlike a producer's
 * metadata request), then CreateTopics for what is missing: changelogs
 * compacted, repartition topics deleted by time, both with the partition
 * count of the detector's inputs, as Kafka Streams' InternalTopicManager
 * does. Owns nothing past one call: a short-lived client of its own, made
 * before the worker's producer exists, since a producer that looks a topic
 * up may have it auto-created, with the broker's defaults (one partition, not
 * compacted). Never alters or deletes an existing topic.
 * librdkafka's mock cluster has no CreateTopics: there each missing topic
 * gets a warning, and the tests create their topics up front.
 */
#include "topics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "log.h"

/* What describe() found for a topic, besides a partition count. */
#define TOPIC_MISSING 0
#define TOPIC_UNKNOWN (-1)

static int is_internal(const tide_topic_req_t *t) {
    return t->kind == TIDE_TOPIC_CHANGELOG || t->kind == TIDE_TOPIC_REPARTITION ||
           t->kind == TIDE_TOPIC_DEAD_LETTER;
}

static const char *kind_name(tide_topic_kind_t kind) {
    switch (kind) {
    case TIDE_TOPIC_SOURCE: return "input";
    case TIDE_TOPIC_OUTPUT: return "output";
    case TIDE_TOPIC_DEAD_LETTER: return "dead-letter";
    case TIDE_TOPIC_CHANGELOG: return "changelog";
    case TIDE_TOPIC_REPARTITION: return "repartition";
    }
    return "";
}

static const char *cleanup_policy(tide_topic_kind_t kind) {
    return kind == TIDE_TOPIC_CHANGELOG ? "compact" : "delete";
}

static int topic_index(const tide_topic_req_t *topics, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(topics[i].name, name)) return i;
    return -1;
}

static rd_kafka_AdminOptions_t *admin_options(rd_kafka_t *rk, rd_kafka_admin_op_t op,
                                              int timeout_ms) {
    char err[256];
    rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(rk, op);
    rd_kafka_AdminOptions_set_request_timeout(ao, timeout_ms, err, sizeof(err));
    if (op == RD_KAFKA_ADMIN_OP_CREATETOPICS)
        rd_kafka_AdminOptions_set_operation_timeout(ao, timeout_ms, err, sizeof(err));
    return ao;
}

/* The result of the one request in flight on q, or NULL with why it failed
 * as a whole (no answer, or a broker that does not have the API). */
static rd_kafka_event_t *await_result(rd_kafka_queue_t *q, int timeout_ms, char *why,
                                      size_t cap, int *unsupported) {
    /* A little longer than the request's own timeout, which answers first. */
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
    if (ev && !rd_kafka_event_error(ev)) return ev;
    if (unsupported) *unsupported = ev && rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE;
    snprintf(why, cap, "%s", ev ? rd_kafka_event_error_string(ev) : "no answer from the broker");
    if (ev) rd_kafka_event_destroy(ev);
    return NULL;
}

/* One topic of a DescribeTopics result into its request. */
static void take_description(const rd_kafka_TopicDescription_t *d, tide_topic_req_t *topics, int n) {
    int i = topic_index(topics, n, rd_kafka_TopicDescription_name(d));
    const rd_kafka_error_t *e = rd_kafka_TopicDescription_error(d);
    size_t np = 0;
    if (i < 0) return;
    if (!rd_kafka_error_code(e)) {
        rd_kafka_TopicDescription_partitions(d, &np);
        topics[i].partitions = (int)np;
    } else if (rd_kafka_error_code(e) == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
        topics[i].partitions = TOPIC_MISSING;
    } else {
        tide_log(TIDE_LOG_WARN, (tide_log_at_t){topics[i].name, -1, -1},
                 "topics: cannot describe %s: %s", topics[i].name, rd_kafka_error_string(e));
    }
}

/* Each topic's partition count, TOPIC_MISSING or TOPIC_UNKNOWN. */
static void describe(rd_kafka_t *rk, rd_kafka_queue_t *q, tide_topic_req_t *topics, int n,
                     int timeout_ms) {
    for (int i = 0; i < n; i++) topics[i].partitions = TOPIC_UNKNOWN;
    const char **names = calloc((size_t)n, sizeof(*names));
    if (!names) return;
    for (int i = 0; i < n; i++) names[i] = topics[i].name;
    rd_kafka_TopicCollection_t *tc = rd_kafka_TopicCollection_of_topic_names(names, (size_t)n);
    rd_kafka_AdminOptions_t *ao = admin_options(rk, RD_KAFKA_ADMIN_OP_DESCRIBETOPICS, timeout_ms);
    rd_kafka_DescribeTopics(rk, tc, ao, q);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_TopicCollection_destroy(tc);
    free(names);
    char why[512];
    rd_kafka_event_t *ev = await_result(q, timeout_ms, why, sizeof(why), NULL);
    if (!ev) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "topics: cannot describe topics: %s", why);
        return;
    }
    size_t cnt = 0;
    const rd_kafka_TopicDescription_t **d =
        rd_kafka_DescribeTopics_result_topics(rd_kafka_event_DescribeTopics_result(ev), &cnt);
    for (size_t j = 0; j < cnt; j++) take_description(d[j], topics, n);
    rd_kafka_event_destroy(ev);
}

static void log_not_created(const tide_topic_req_t *t, int partitions, const char *why) {
    tide_log(TIDE_LOG_WARN, (tide_log_at_t){t->name, -1, -1},
             "cannot create %s topic %s (%s): create it with %d partitions and "
             "cleanup.policy=%s",
             kind_name(t->kind), t->name, why, partitions, cleanup_policy(t->kind));
}

static void log_created(const tide_topic_req_t *t, int partitions, int replication) {
    char np[16], rf[16], cp[32];
    snprintf(np, sizeof(np), "%d", partitions);
    snprintf(rf, sizeof(rf), "%d", replication);
    tide_json_str(cp, sizeof(cp), cleanup_policy(t->kind), strlen(cleanup_policy(t->kind)));
    char kind[32], msg[64];
    tide_json_str(kind, sizeof(kind), kind_name(t->kind), strlen(kind_name(t->kind)));
    snprintf(msg, sizeof(msg), "created %s topic", kind_name(t->kind));
    tide_logkv(TIDE_LOG_INFO, (tide_log_at_t){t->name, -1, -1}, msg, "kind", kind,
               "partitions", np, "replication_factor", rf, "cleanup_policy", cp, (char *)NULL);
}

static rd_kafka_NewTopic_t *new_topic(const tide_topic_req_t *t, int partitions,
                                      int replication, char *why, size_t cap) {
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(t->name, partitions, replication, why, cap);
    if (!nt) return NULL;
    if (!rd_kafka_NewTopic_set_config(nt, "cleanup.policy", cleanup_policy(t->kind))) return nt;
    snprintf(why, cap, "cleanup.policy refused");
    rd_kafka_NewTopic_destroy(nt);
    return NULL;
}

/* Report what the broker said of each topic sent (ev NULL: the request
 * failed as a whole, for `why`). Another instance creating one at the same
 * time is fine. */
static void report_created(rd_kafka_event_t *ev, const char *why, tide_topic_req_t *topics,
                           const int *sent, int n_sent, int partitions, int replication) {
    size_t cnt = 0;
    const rd_kafka_topic_result_t **res =
        ev ? rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt)
           : NULL;
    for (int i = 0; i < n_sent; i++) {
        tide_topic_req_t *t = &topics[sent[i]];
        const rd_kafka_topic_result_t *r = NULL;
        for (size_t j = 0; j < cnt && !r; j++)
            if (!strcmp(rd_kafka_topic_result_name(res[j]), t->name)) r = res[j];
        rd_kafka_resp_err_t e = r ? rd_kafka_topic_result_error(r) : RD_KAFKA_RESP_ERR__FAIL;
        const char *s = r ? rd_kafka_topic_result_error_string(r) : NULL;
        if (!e) log_created(t, partitions, replication);
        else if (e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            log_not_created(t, partitions, s ? s : ev ? rd_kafka_err2str(e) : why);
        if (!e || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) t->partitions = partitions;
    }
}

/* A broker without the Admin API (librdkafka's mock cluster, `tide broker`)
 * still creates a topic a producer asks metadata for, with its default
 * partition count: the only way to get the internal topics there before the
 * consumer subscribes (a subscription notices a topic created later only at
 * its next metadata refresh, minutes away). Returns the partitions, or -1. */
static int auto_create(rd_kafka_t *rk, const tide_topic_req_t *t, int want, int timeout_ms) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, t->name, NULL);
    if (!rkt) return -1;
    const struct rd_kafka_metadata *md = NULL;
    int parts = -1;
    if (!rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms) && md->topic_cnt == 1 &&
        !md->topics[0].err)
        parts = md->topics[0].partition_cnt;
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    if (parts > 0)
        tide_log(parts == want ? TIDE_LOG_INFO : TIDE_LOG_WARN, (tide_log_at_t){t->name, -1, -1},
                 "%s topic %s created by the broker itself, with %d partitions (the "
                 "inputs have %d) and its default cleanup.policy (wanted: %s): it has no Admin API",
                 kind_name(t->kind), t->name, parts, want, cleanup_policy(t->kind));
    return parts;
}

/* Create the topics in `want` (indices into topics). */
static void create(rd_kafka_t *rk, rd_kafka_queue_t *q, tide_topic_req_t *topics,
                   int *want, int n_want, int partitions, int replication, int timeout_ms) {
    rd_kafka_NewTopic_t **nt = calloc((size_t)n_want, sizeof(*nt));
    char why[512];
    int unsupported = 0;
    int k = 0;
    for (int i = 0; nt && i < n_want; i++) {
        const tide_topic_req_t *t = &topics[want[i]];
        nt[k] = new_topic(t, partitions, replication, why, sizeof(why));
        if (nt[k]) want[k++] = want[i]; /* want[0..k): the topics sent */
        else log_not_created(t, partitions, why);
    }
    if (k) {
        rd_kafka_AdminOptions_t *ao = admin_options(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS, timeout_ms);
        rd_kafka_CreateTopics(rk, nt, (size_t)k, ao, q);
        rd_kafka_AdminOptions_destroy(ao);
        rd_kafka_NewTopic_destroy_array(nt, (size_t)k);
        rd_kafka_event_t *ev = await_result(q, timeout_ms, why, sizeof(why), &unsupported);
        if (unsupported) {
            for (int i = 0; i < k; i++) {
                int got = auto_create(rk, &topics[want[i]], partitions, timeout_ms);
                if (got < 0) log_not_created(&topics[want[i]], partitions, why);
                else topics[want[i]].partitions = got;
            }
        } else {
            report_created(ev, why, topics, want, k, partitions, replication);
        }
        if (ev) rd_kafka_event_destroy(ev);
    }
    free(nt);
}

/* Is t one tide may create? */
static int creatable(const tide_config_t *c, const tide_topic_req_t *t) {
    if (is_internal(t)) return !strcmp(tide_config_str(c, TIDE_CFG_INTERNAL_TOPICS_CREATE), "true");
    return t->kind == TIDE_TOPIC_OUTPUT &&
           !strcmp(tide_config_str(c, TIDE_CFG_OUTPUT_TOPICS_CREATE), "true");
}

/* Which topics to create (indices into want[]); warns about those that
 * cannot be sized and about internal ones sized unlike the sources. Returns
 * how many go into want. */
static int plan(const tide_config_t *c, const tide_topic_req_t *topics, int n, int sources,
                int *want) {
    int n_want = 0;
    for (int i = 0; i < n; i++) {
        const tide_topic_req_t *t = &topics[i];
        if (!creatable(c, t)) continue;
        if (t->partitions == TOPIC_MISSING && sources > 0)
            want[n_want++] = i;
        else if (t->partitions == TOPIC_MISSING)
            log_not_created(t, sources, "the partition count of its inputs is unknown");
        else if (is_internal(t) && t->kind != TIDE_TOPIC_DEAD_LETTER && t->partitions > 0 &&
                 sources > 0 && t->partitions != sources)
            tide_log(TIDE_LOG_WARN, (tide_log_at_t){t->name, -1, -1},
                     "internal topic %s has %d partitions, the detector's inputs %d: a task's "
                     "state follows its input partition, so they must be equal",
                     t->name, t->partitions, sources);
    }
    return n_want;
}

/* A client for the admin requests, configured as the producer is (security
 * settings included), or NULL after a warning. */
static rd_kafka_t *admin_client(const tide_config_t *c, const char *bootstraps) {
    char err[512], *cerr = NULL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (tide_config_apply_kafka(c, conf, TIDE_CLIENT_PRODUCER, &cerr) ||
        rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, err, sizeof(err))) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "internal topics: %s", cerr ? cerr : err);
        free(cerr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, tide_log_rdkafka);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "internal topics: %s", err);
    return rk;
}

void tide_topics_ensure(const tide_config_t *c, const char *bootstraps, tide_topic_req_t *topics,
                        int n, int timeout_ms) {
    for (int i = 0; i < n; i++) topics[i].partitions = TOPIC_UNKNOWN;
    int replication = (int)tide_config_int(c, TIDE_CFG_INTERNAL_TOPICS_REPLICATION_FACTOR);
    rd_kafka_t *rk = admin_client(c, bootstraps);
    if (!rk) return;
    int *want = calloc((size_t)n + 1, sizeof(int));
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    if (want) {
        int sources = 0;
        describe(rk, q, topics, n, timeout_ms);
        for (int i = 0; i < n; i++)
            if (topics[i].kind == TIDE_TOPIC_SOURCE && topics[i].partitions > sources)
                sources = topics[i].partitions;
        int n_want = plan(c, topics, n, sources, want);
        if (n_want) create(rk, q, topics, want, n_want, sources, replication, timeout_ms);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    free(want);
}

int tide_topics_exists(const tide_config_t *c, const char *bootstraps, const char *topic,
                       int timeout_ms) {
    tide_topic_req_t t = {topic, TIDE_TOPIC_OUTPUT, TOPIC_UNKNOWN};
    rd_kafka_t *rk = admin_client(c, bootstraps);
    if (!rk) return -1;
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    describe(rk, q, &t, 1, timeout_ms);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return t.partitions > 0 ? 1 : t.partitions == TOPIC_MISSING ? 0 : -1;
}

/* What `topic` is to the detector: one of its DSL repartition topics
 * (<application.id>.<detector>-...-repartition), or `otherwise`. */
static tide_topic_kind_t kind_of(const tide_config_t *c, const tide_detector_info_t *info,
                                 const char *topic, tide_topic_kind_t otherwise) {
    static const char suffix[] = "-repartition";
    char prefix[600];
    int n = snprintf(prefix, sizeof(prefix), "%s.%s-", tide_config_str(c, TIDE_CFG_APPLICATION_ID),
                     info->name);
    size_t len = strlen(topic), ns = sizeof(suffix) - 1;
    /* (the prefix's last '-' may be the suffix's first) */
    if (n > 0 && !strncmp(topic, prefix, (size_t)n) && len + 1 >= (size_t)n + ns &&
        !strcmp(topic + len - ns, suffix))
        return TIDE_TOPIC_REPARTITION;
    return otherwise;
}

static int add(tide_topic_req_t *out, int n, int max, const char *name, tide_topic_kind_t kind) {
    if (n >= max || topic_index(out, n, name) >= 0) return n;
    out[n] = (tide_topic_req_t){name, kind, TOPIC_UNKNOWN};
    return n + 1;
}

int tide_topics_of(const tide_config_t *c, const tide_detector_info_t *info, const char *dlq,
                   char *const *changelogs, int n_changelogs, tide_topic_req_t *out, int max) {
    int n = 0;
    for (int i = 0; i < info->n_inputs; i++)
        n = add(out, n, max, info->inputs[i], kind_of(c, info, info->inputs[i], TIDE_TOPIC_SOURCE));
    for (int i = 0; i < info->n_outputs; i++)
        n = add(out, n, max, info->outputs[i], kind_of(c, info, info->outputs[i], TIDE_TOPIC_OUTPUT));
    n = add(out, n, max, dlq, TIDE_TOPIC_DEAD_LETTER);
    for (int i = 0; i < n_changelogs; i++) n = add(out, n, max, changelogs[i], TIDE_TOPIC_CHANGELOG);
    return n;
}
