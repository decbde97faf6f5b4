/*
 * brokerctl.c: the control channel of `tide broker` (see brokerctl.h).
 *
 * It owns a FIFO and a small client of its own (made on first use by
 * `exists`, which must see the cluster as a client does). Each command maps
 * to one call of librdkafka's mock API (rdkafka_mock.h) on the cluster the
 * development broker owns; nothing here keeps fault state of its own, so the
 * mock is the only truth about what is injected. It must never block the
 * broker: the FIFO is read without blocking, and the one command that talks
 * to the cluster over the network (`exists`) has a bounded timeout.
 */
#include "brokerctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "log.h"

#define LINE_MAX_BYTES 1024
#define MAX_WORDS 8
#define MAX_ERRORS 64
#define EXISTS_TIMEOUT_MS 5000

struct tide_brokerctl {
    rd_kafka_mock_cluster_t *mc;
    const char *bootstraps;
    int brokers;
    rd_kafka_t *probe; /* `exists`: a client that never asks for auto-creation */
    int fd;
    char *fifo_path; /* set when we made the FIFO, so we remove it */
    char buf[LINE_MAX_BYTES + 1];
    size_t len;
    int overlong; /* the current line passed LINE_MAX_BYTES: skip to its end */
};

const char tide_brokerctl_help[] =
    "down ID|all                   refuse connections (rd_kafka_mock_broker_set_down)\n"
    "up ID|all                     accept them again (rd_kafka_mock_broker_set_up)\n"
    "rtt ID|all MS                 delay every response by MS (rd_kafka_mock_broker_set_rtt)\n"
    "errors API ERR[,ERR...]       the next requests of API, one per error, fail with it\n"
    "errors API clear              drop the errors still queued for API\n"
    "broker-errors ID API ERR[:MS][,...]  the same on one broker, each answer delayed by MS\n"
    "pending ID API                errors still queued on broker ID for API\n"
    "create TOPIC PARTITIONS [RF]  create a topic (rd_kafka_mock_topic_create)\n"
    "delete TOPIC                  delete a topic and its records (rd_kafka_mock_topic_delete)\n"
    "exists TOPIC                  its partition count, asked as a client that never\n"
    "                              auto-creates: \"partitions=N\" or \"missing\"\n"
    "leader TOPIC PARTITION ID     move a partition's leader (-1: none)\n"
    "topic-error TOPIC ERR         Metadata answers ERR for the topic (NO_ERROR clears)\n"
    "coordinator txn|group KEY ID  the coordinator of a transactional.id or group.id\n"
    "track on|off|clear            record requests (rd_kafka_mock_start_request_tracking)\n"
    "requests [ID]                 requests recorded, per API: \"Produce=3 Fetch=9\"\n"
    "help                          this list\n"
    "API is a Kafka request name (Produce, Fetch, OffsetCommit, InitProducerId, EndTxn, ...)\n"
    "or number; ERR an error name (NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT, _TRANSPORT, ...)\n"
    "or number.\n";

/* ---------------------------------------------------------------- names */

/* Kafka's request types by the protocol's own names. */
static const struct {
    int16_t key;
    const char *name;
} api_names[] = {
    {0, "Produce"},        {1, "Fetch"},
    {2, "ListOffsets"},    {3, "Metadata"},
    {8, "OffsetCommit"},   {9, "OffsetFetch"},
    {10, "FindCoordinator"}, {11, "JoinGroup"},
    {12, "Heartbeat"},     {13, "LeaveGroup"},
    {14, "SyncGroup"},     {15, "DescribeGroups"},
    {16, "ListGroups"},    {17, "SaslHandshake"},
    {18, "ApiVersions"},   {19, "CreateTopics"},
    {20, "DeleteTopics"},  {21, "DeleteRecords"},
    {22, "InitProducerId"}, {23, "OffsetForLeaderEpoch"},
    {24, "AddPartitionsToTxn"}, {25, "AddOffsetsToTxn"},
    {26, "EndTxn"},        {28, "TxnOffsetCommit"},
    {32, "DescribeConfigs"}, {33, "AlterConfigs"},
    {36, "SaslAuthenticate"}, {37, "CreatePartitions"},
    {42, "DeleteGroups"},  {47, "OffsetDelete"},
    {60, "DescribeCluster"}, {68, "ConsumerGroupHeartbeat"},
    {69, "ConsumerGroupDescribe"}, {71, "GetTelemetrySubscriptions"},
    {72, "PushTelemetry"}, {75, "DescribeTopicPartitions"},
};
#define N_API_NAMES (sizeof(api_names) / sizeof(api_names[0]))
#define API_KEY_LIMIT 128

static const char *api_name(int16_t key, char *tmp, size_t cap) {
    for (size_t i = 0; i < N_API_NAMES; i++)
        if (api_names[i].key == key) return api_names[i].name;
    snprintf(tmp, cap, "Api%d", key);
    return tmp;
}

/* A whole decimal number in [lo, hi]. */
static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static int parse_api(const char *s, int16_t *key) {
    long v;
    if (parse_int(s, 0, API_KEY_LIMIT - 1, &v)) {
        *key = (int16_t)v;
        return 1;
    }
    for (size_t i = 0; i < N_API_NAMES; i++)
        if (!strcasecmp(api_names[i].name, s)) {
            *key = api_names[i].key;
            return 1;
        }
    return 0;
}

/* librdkafka's error names ("NOT_ENOUGH_REPLICAS", "_TRANSPORT"), with or
 * without the RD_KAFKA_RESP_ERR_ prefix, or a number. */
static int parse_err(const char *s, rd_kafka_resp_err_t *err) {
    long v;
    if (parse_int(s, -200, 1000, &v)) {
        *err = (rd_kafka_resp_err_t)v;
        return 1;
    }
    if (!strncasecmp(s, "RD_KAFKA_RESP_ERR_", 18)) s += 18;
    const struct rd_kafka_err_desc *descs;
    size_t n;
    rd_kafka_get_err_descs(&descs, &n);
    for (size_t i = 0; i < n; i++)
        if (descs[i].name && !strcasecmp(descs[i].name, s)) {
            *err = descs[i].code;
            return 1;
        }
    return 0;
}

/* ---------------------------------------------------------------- commands */

typedef struct call {
    tide_brokerctl_t *ctl;
    int argc;
    char **argv;
    char *out; /* the result after "ok <command>: " or the reason after "error ...: " */
    size_t cap;
} call_t;

static tide_brokerctl_result_t fail(call_t *c, const char *fmt, const char *arg) {
    snprintf(c->out, c->cap, fmt, arg);
    return TIDE_BROKERCTL_FAILED;
}

static tide_brokerctl_result_t mock_result(call_t *c, rd_kafka_resp_err_t err) {
    if (!err) return TIDE_BROKERCTL_OK;
    return fail(c, "%s", rd_kafka_err2str(err));
}

/* "all" is -1, which the mock reads as every broker. */
static int parse_broker(call_t *c, const char *s, int32_t *id) {
    long v;
    if (!strcmp(s, "all")) {
        *id = -1;
        return 1;
    }
    if (!parse_int(s, 1, c->ctl->brokers, &v)) {
        snprintf(c->out, c->cap, "no broker %s (brokers are 1..%d, or all)", s, c->ctl->brokers);
        return 0;
    }
    *id = (int32_t)v;
    return 1;
}

static tide_brokerctl_result_t cmd_updown(call_t *c) {
    int32_t id;
    if (!parse_broker(c, c->argv[1], &id)) return TIDE_BROKERCTL_FAILED;
    if (!strcmp(c->argv[0], "down")) return mock_result(c, rd_kafka_mock_broker_set_down(c->ctl->mc, id));
    return mock_result(c, rd_kafka_mock_broker_set_up(c->ctl->mc, id));
}

static tide_brokerctl_result_t cmd_rtt(call_t *c) {
    int32_t id;
    long ms;
    if (!parse_broker(c, c->argv[1], &id)) return TIDE_BROKERCTL_FAILED;
    if (!parse_int(c->argv[2], 0, 3600000, &ms))
        return fail(c, "bad round-trip time %s (milliseconds, 0 to 3600000)", c->argv[2]);
    return mock_result(c, rd_kafka_mock_broker_set_rtt(c->ctl->mc, id, (int)ms));
}

/* "ERR[:MS],ERR[:MS]" into errs[] (and rtts[] when given); returns the count,
 * or 0 with the reason in c->out. */
static size_t parse_err_list(call_t *c, const char *list, int with_rtt, rd_kafka_resp_err_t *errs,
                             int *rtts) {
    char copy[LINE_MAX_BYTES + 1];
    snprintf(copy, sizeof(copy), "%s", list);
    size_t n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == MAX_ERRORS) {
            fail(c, "more than %s errors in one command", "64");
            return 0;
        }
        char *colon = with_rtt ? strchr(tok, ':') : NULL;
        long ms = 0;
        if (colon) {
            *colon = '\0';
            if (!parse_int(colon + 1, 0, 3600000, &ms)) {
                fail(c, "bad delay %s (milliseconds)", colon + 1);
                return 0;
            }
        }
        if (!parse_err(tok, &errs[n])) {
            fail(c, "unknown error %s", tok);
            return 0;
        }
        if (rtts) rtts[n] = (int)ms;
        n++;
    }
    if (!n) fail(c, "no error given%s", "");
    return n;
}

static tide_brokerctl_result_t cmd_errors(call_t *c) {
    int16_t api;
    if (!parse_api(c->argv[1], &api)) return fail(c, "unknown request type %s", c->argv[1]);
    if (!strcmp(c->argv[2], "clear")) {
        rd_kafka_mock_clear_request_errors(c->ctl->mc, api);
        return TIDE_BROKERCTL_OK;
    }
    rd_kafka_resp_err_t errs[MAX_ERRORS];
    size_t n = parse_err_list(c, c->argv[2], 0, errs, NULL);
    if (!n) return TIDE_BROKERCTL_FAILED;
    rd_kafka_mock_push_request_errors_array(c->ctl->mc, api, n, errs);
    snprintf(c->out, c->cap, "%zu queued", n);
    return TIDE_BROKERCTL_OK;
}

static tide_brokerctl_result_t cmd_broker_errors(call_t *c) {
    int32_t id;
    int16_t api;
    if (!parse_broker(c, c->argv[1], &id)) return TIDE_BROKERCTL_FAILED;
    if (id < 0) return fail(c, "broker-errors needs one broker, not %s", c->argv[1]);
    if (!parse_api(c->argv[2], &api)) return fail(c, "unknown request type %s", c->argv[2]);
    rd_kafka_resp_err_t errs[MAX_ERRORS];
    int rtts[MAX_ERRORS];
    size_t n = parse_err_list(c, c->argv[3], 1, errs, rtts);
    if (!n) return TIDE_BROKERCTL_FAILED;
    /* One call per entry: the call is variadic, and each appends in order. */
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t e =
            rd_kafka_mock_broker_push_request_error_rtts(c->ctl->mc, id, api, 1, errs[i], rtts[i]);
        if (e) return mock_result(c, e);
    }
    snprintf(c->out, c->cap, "%zu queued", n);
    return TIDE_BROKERCTL_OK;
}

static tide_brokerctl_result_t cmd_pending(call_t *c) {
    int32_t id;
    int16_t api;
    size_t n = 0;
    if (!parse_broker(c, c->argv[1], &id)) return TIDE_BROKERCTL_FAILED;
    if (id < 0) return fail(c, "pending needs one broker, not %s", c->argv[1]);
    if (!parse_api(c->argv[2], &api)) return fail(c, "unknown request type %s", c->argv[2]);
    rd_kafka_resp_err_t e = rd_kafka_mock_broker_error_stack_cnt(c->ctl->mc, id, api, &n);
    if (e) return mock_result(c, e);
    snprintf(c->out, c->cap, "%zu", n);
    return TIDE_BROKERCTL_OK;
}

static tide_brokerctl_result_t cmd_create(call_t *c) {
    long parts, rf = c->ctl->brokers < 3 ? c->ctl->brokers : 3;
    if (!parse_int(c->argv[2], 1, 100000, &parts)) return fail(c, "bad partition count %s", c->argv[2]);
    if (c->argc > 3 && !parse_int(c->argv[3], 1, c->ctl->brokers, &rf))
        return fail(c, "bad replication factor %s (1 to the number of brokers)", c->argv[3]);
    return mock_result(c, rd_kafka_mock_topic_create(c->ctl->mc, c->argv[1], (int)parts, (int)rf));
}

static tide_brokerctl_result_t cmd_delete(call_t *c) {
    return mock_result(c, rd_kafka_mock_topic_delete(c->ctl->mc, c->argv[1]));
}

static rd_kafka_t *probe(call_t *c) {
    if (c->ctl->probe) return c->ctl->probe;
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", c->ctl->bootstraps, err, sizeof(err));
    /* The mock creates a topic whenever a Metadata request allows it. */
    rd_kafka_conf_set(conf, "allow.auto.create.topics", "false", err, sizeof(err));
    /* Refused connections while brokers are down are the point, not news. */
    rd_kafka_conf_set(conf, "log_level", "2", err, sizeof(err));
    rd_kafka_conf_set_log_cb(conf, tide_log_rdkafka);
    c->ctl->probe = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!c->ctl->probe) fail(c, "cannot make a client: %s", err);
    return c->ctl->probe;
}

static tide_brokerctl_result_t cmd_exists(call_t *c) {
    rd_kafka_t *rk = probe(c);
    if (!rk) return TIDE_BROKERCTL_FAILED;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, c->argv[1], NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, EXISTS_TIMEOUT_MS);
    rd_kafka_topic_destroy(rkt);
    if (e) return fail(c, "no answer from the cluster: %s", rd_kafka_err2str(e));
    tide_brokerctl_result_t r = TIDE_BROKERCTL_OK;
    if (md->topic_cnt != 1) r = fail(c, "unexpected metadata answer%s", "");
    else if (md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) snprintf(c->out, c->cap, "missing");
    else if (md->topics[0].err) r = fail(c, "%s", rd_kafka_err2str(md->topics[0].err));
    else snprintf(c->out, c->cap, "partitions=%d", md->topics[0].partition_cnt);
    rd_kafka_metadata_destroy(md);
    return r;
}

static tide_brokerctl_result_t cmd_leader(call_t *c) {
    long part, id;
    if (!parse_int(c->argv[2], 0, 100000, &part)) return fail(c, "bad partition %s", c->argv[2]);
    if (!parse_int(c->argv[3], -1, c->ctl->brokers, &id) || id == 0)
        return fail(c, "no broker %s (a broker id, or -1 for none)", c->argv[3]);
    return mock_result(c, rd_kafka_mock_partition_set_leader(c->ctl->mc, c->argv[1], (int32_t)part,
                                                             (int32_t)id));
}

static tide_brokerctl_result_t cmd_topic_error(call_t *c) {
    rd_kafka_resp_err_t err;
    if (!parse_err(c->argv[2], &err)) return fail(c, "unknown error %s", c->argv[2]);
    rd_kafka_mock_topic_set_error(c->ctl->mc, c->argv[1], err);
    return TIDE_BROKERCTL_OK;
}

static tide_brokerctl_result_t cmd_coordinator(call_t *c) {
    const char *type = !strcmp(c->argv[1], "txn") ? "transaction"
                       : !strcmp(c->argv[1], "group") ? "group" : NULL;
    long id;
    if (!type) return fail(c, "coordinator of txn or group, not %s", c->argv[1]);
    if (!parse_int(c->argv[3], 1, c->ctl->brokers, &id)) return fail(c, "no broker %s", c->argv[3]);
    return mock_result(c, rd_kafka_mock_coordinator_set(c->ctl->mc, type, c->argv[2], (int32_t)id));
}

static tide_brokerctl_result_t cmd_track(call_t *c) {
    const char *what = c->argv[1];
    if (!strcmp(what, "on")) rd_kafka_mock_start_request_tracking(c->ctl->mc);
    else if (!strcmp(what, "off")) rd_kafka_mock_stop_request_tracking(c->ctl->mc);
    else if (!strcmp(what, "clear")) rd_kafka_mock_clear_requests(c->ctl->mc);
    else return fail(c, "track on, off or clear, not %s", what);
    return TIDE_BROKERCTL_OK;
}

static tide_brokerctl_result_t cmd_requests(call_t *c) {
    int32_t only = -1;
    if (c->argc > 1 && !parse_broker(c, c->argv[1], &only)) return TIDE_BROKERCTL_FAILED;
    size_t n = 0;
    rd_kafka_mock_request_t **reqs = rd_kafka_mock_get_requests(c->ctl->mc, &n);
    long counts[API_KEY_LIMIT] = {0};
    for (size_t i = 0; i < n; i++) {
        int16_t key = rd_kafka_mock_request_api_key(reqs[i]);
        if (key >= 0 && key < API_KEY_LIMIT &&
            (only < 0 || rd_kafka_mock_request_id(reqs[i]) == only))
            counts[key]++;
    }
    rd_kafka_mock_request_destroy_array(reqs, n);
    size_t o = 0;
    c->out[0] = '\0';
    for (int16_t k = 0; k < API_KEY_LIMIT && o < c->cap; k++) {
        if (!counts[k]) continue;
        char tmp[16];
        int w = snprintf(c->out + o, c->cap - o, "%s%s=%ld", o ? " " : "", api_name(k, tmp, sizeof(tmp)),
                         counts[k]);
        if (w > 0) o += (size_t)w;
    }
    return TIDE_BROKERCTL_OK;
}

static tide_brokerctl_result_t cmd_help(call_t *c);

static const struct {
    const char *name;
    int min_args, max_args; /* words after the name */
    tide_brokerctl_result_t (*run)(call_t *c);
    const char *usage;
} commands[] = {
    {"down", 1, 1, cmd_updown, "down ID|all"},
    {"up", 1, 1, cmd_updown, "up ID|all"},
    {"rtt", 2, 2, cmd_rtt, "rtt ID|all MS"},
    {"errors", 2, 2, cmd_errors, "errors API ERR[,ERR...]|clear"},
    {"broker-errors", 3, 3, cmd_broker_errors, "broker-errors ID API ERR[:MS][,...]"},
    {"pending", 2, 2, cmd_pending, "pending ID API"},
    {"create", 2, 3, cmd_create, "create TOPIC PARTITIONS [RF]"},
    {"delete", 1, 1, cmd_delete, "delete TOPIC"},
    {"exists", 1, 1, cmd_exists, "exists TOPIC"},
    {"leader", 3, 3, cmd_leader, "leader TOPIC PARTITION ID"},
    {"topic-error", 2, 2, cmd_topic_error, "topic-error TOPIC ERR"},
    {"coordinator", 3, 3, cmd_coordinator, "coordinator txn|group KEY ID"},
    {"track", 1, 1, cmd_track, "track on|off|clear"},
    {"requests", 0, 1, cmd_requests, "requests [ID]"},
    {"help", 0, 0, cmd_help, "help"},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

/* One reply line: every command's usage; the details are in `tide broker --help`. */
static tide_brokerctl_result_t cmd_help(call_t *c) {
    size_t o = 0;
    c->out[0] = '\0';
    for (size_t i = 0; i < N_COMMANDS && o < c->cap; i++) {
        int w = snprintf(c->out + o, c->cap - o, "%s%s", i ? ", " : "", commands[i].usage);
        if (w > 0) o += (size_t)w;
    }
    return TIDE_BROKERCTL_OK;
}

/* ---------------------------------------------------------------- the channel */

/* Split line into words in place; returns how many (MAX_WORDS + 1: too many). */
static int split_words(char *line, char **words) {
    int n = 0;
    char *save = NULL;
    for (char *w = strtok_r(line, " \t\r", &save); w; w = strtok_r(NULL, " \t\r", &save)) {
        if (n == MAX_WORDS) return MAX_WORDS + 1;
        words[n++] = w;
    }
    return n;
}

tide_brokerctl_result_t tide_brokerctl_exec(tide_brokerctl_t *ctl, const char *line, char *reply,
                                            size_t cap) {
    char copy[LINE_MAX_BYTES + 1], *words[MAX_WORDS];
    snprintf(copy, sizeof(copy), "%s", line);
    int n = split_words(copy, words);
    char echo[LINE_MAX_BYTES + 1];
    size_t o = 0;
    echo[0] = '\0';
    for (int i = 0; i < n && i < MAX_WORDS; i++)
        o += (size_t)snprintf(echo + o, sizeof(echo) - o, "%s%s", i ? " " : "", words[i]);
    char result[LINE_MAX_BYTES * 2] = "";
    call_t c = {ctl, n, words, result, sizeof(result)};
    tide_brokerctl_result_t r = TIDE_BROKERCTL_FAILED;
    size_t i = 0;
    if (n > MAX_WORDS) snprintf(result, sizeof(result), "too many words");
    else {
        while (i < N_COMMANDS && strcmp(commands[i].name, words[0])) i++;
        if (i == N_COMMANDS) snprintf(result, sizeof(result), "unknown command (try help)");
        else if (n - 1 < commands[i].min_args || n - 1 > commands[i].max_args)
            snprintf(result, sizeof(result), "usage: %s", commands[i].usage);
        else r = commands[i].run(&c);
    }
    snprintf(reply, cap, "%s %s%s%s", r == TIDE_BROKERCTL_OK ? "ok" : "error", echo,
             result[0] ? ": " : "", result);
    return r;
}

tide_brokerctl_t *tide_brokerctl_new(rd_kafka_mock_cluster_t *mc, int brokers, const char *bootstraps,
                                     const char *fifo_path, char **errp) {
    tide_brokerctl_t *ctl = calloc(1, sizeof(*ctl));
    ctl->mc = mc;
    ctl->bootstraps = bootstraps;
    ctl->brokers = brokers;
    ctl->fd = -1;
    if (!fifo_path) return ctl;
    struct stat st;
    if (mkfifo(fifo_path, 0600) == 0) {
        ctl->fifo_path = strdup(fifo_path);
    } else if (errno != EEXIST || stat(fifo_path, &st) || !S_ISFIFO(st.st_mode)) {
        if (asprintf(errp, "--control %s: %s", fifo_path,
                     errno == EEXIST ? "exists and is not a FIFO" : strerror(errno)) < 0)
            *errp = NULL;
        free(ctl);
        return NULL;
    }
    /* Read and write: the broker holds a writer itself, so the FIFO never
     * reports end of file between two writers, and a writer never blocks. */
    ctl->fd = open(fifo_path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (ctl->fd < 0) {
        if (asprintf(errp, "--control %s: %s", fifo_path, strerror(errno)) < 0) *errp = NULL;
        tide_brokerctl_free(ctl);
        return NULL;
    }
    return ctl;
}

int tide_brokerctl_fd(const tide_brokerctl_t *ctl) { return ctl ? ctl->fd : -1; }

static int is_blank(const char *line) {
    for (const char *p = line; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r') return 0;
    return 1;
}

static void run_line(tide_brokerctl_t *ctl, const char *line, FILE *out) {
    char reply[LINE_MAX_BYTES * 3];
    if (is_blank(line)) return;
    tide_brokerctl_result_t r = tide_brokerctl_exec(ctl, line, reply, sizeof(reply));
    fprintf(out, "%s\n", reply);
    fflush(out);
    char field[LINE_MAX_BYTES * 4];
    tide_json_str(field, sizeof(field), reply, strlen(reply));
    tide_logkv(r == TIDE_BROKERCTL_OK ? TIDE_LOG_INFO : TIDE_LOG_WARN, TIDE_AT_NONE,
               "control command", "reply", field, (char *)NULL);
}

void tide_brokerctl_read(tide_brokerctl_t *ctl, FILE *out) {
    char chunk[4096];
    ssize_t got;
    while ((got = read(ctl->fd, chunk, sizeof(chunk))) > 0) {
        for (ssize_t i = 0; i < got; i++) {
            char ch = chunk[i];
            if (ch == '\n') {
                ctl->buf[ctl->len] = '\0';
                if (ctl->overlong) {
                    fprintf(out, "error (a line of more than %d bytes)\n", LINE_MAX_BYTES);
                    fflush(out);
                } else run_line(ctl, ctl->buf, out);
                ctl->len = 0;
                ctl->overlong = 0;
            } else if (ctl->len < LINE_MAX_BYTES) {
                ctl->buf[ctl->len++] = ch;
            } else {
                ctl->overlong = 1;
            }
        }
    }
}

void tide_brokerctl_free(tide_brokerctl_t *ctl) {
    if (!ctl) return;
    if (ctl->fd >= 0) close(ctl->fd);
    if (ctl->fifo_path) {
        unlink(ctl->fifo_path);
        free(ctl->fifo_path);
    }
    if (ctl->probe) rd_kafka_destroy(ctl->probe);
    free(ctl);
}
