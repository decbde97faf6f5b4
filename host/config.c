/*
 * config.c: the settings table and its sources (see config.h). Everything is
 * validated when it is set, so a bad value is refused at start with where it
 * came from, never discovered later in the record path.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "runtime_types.h"

#define MiB (1024LL * 1024)
#define STR_(x) #x
#define STR(x) STR_(x)

const tide_setting_t tide_settings[TIDE_CFG_COUNT + 1] = {
    [TIDE_CFG_BOOTSTRAP_SERVERS] = {"bootstrap.servers", TIDE_SET_STRING, "", 0, 0, NULL,
     "Kafka brokers, host:port[,host:port]. Empty: start a development broker in-process."},
    [TIDE_CFG_APPLICATION_ID] = {"application.id", TIDE_SET_STRING, "tide", 0, 0, NULL,
     "Prefix of every consumer group (<application.id>.<detector>) and internal topic."},
    [TIDE_CFG_COMMIT_INTERVAL_MS] = {"commit.interval.ms", TIDE_SET_INT, "5000", 1, 3600000, NULL,
     "How often processed offsets are committed (after their outputs are acknowledged); "
     "under exactly_once_v2 the default is 100, as in Kafka Streams."},
    [TIDE_CFG_MAX_POLL_RECORDS] = {"max.poll.records", TIDE_SET_INT, "1000", 1, 10000, NULL,
     "Most records handed to a detector in one batch."},
    [TIDE_CFG_MAX_TASK_IDLE_MS] = {"max.task.idle.ms", TIDE_SET_INT, "0", -1, 3600000, NULL,
     "Records go to the detector in timestamp order across its input partitions. A partition "
     "with nothing fetched while the broker has more of it is waited for (up to 5 s); this "
     "long also for one the broker has nothing more of (0: only the first; -1: never wait), "
     "as in Kafka Streams."},
    [TIDE_CFG_BUFFERED_RECORDS_PER_PARTITION] = {"buffered.records.per.partition", TIDE_SET_INT, "1000", 1, 1000000, NULL,
     "Records fetched and held per input partition before fetching waits for them to be "
     "processed (the rest wait in the partition's own queue in librdkafka)."},
    [TIDE_CFG_STATE_DIR] = {"state.dir", TIDE_SET_STRING, "/tmp/tide", 0, 0, NULL,
     "Directory for local state."},
    [TIDE_CFG_PROCESSING_GUARANTEE] = {"processing.guarantee", TIDE_SET_ENUM, "at_least_once", 0, 0,
     "at_least_once|exactly_once_v2",
     "Delivery guarantee. at_least_once: outputs are acknowledged before input offsets are "
     "committed. exactly_once_v2 (KIP-447): outputs, changelog records, dead letters and input "
     "offsets are committed in one transaction per commit; readers with "
     "isolation.level=read_committed see each result once."},
    [TIDE_CFG_DETECTOR_MEMORY_LIMIT_BYTES] = {"detector.memory.limit.bytes", TIDE_SET_INT, STR(TIDE_DEFAULT_MEMORY_LIMIT), 1 * MiB, 64LL * 1024 * MiB, NULL,
     "Cap on a detector's Lua heap; exceeding it fails the record with a MemoryError "
     "(live, and in tide test and tide replay)."},
    [TIDE_CFG_SHUTDOWN_TIMEOUT_MS] = {"shutdown.timeout.ms", TIDE_SET_INT, "10000", 100, 600000, NULL,
     "Longest wait for outputs to be acknowledged at shutdown or revoke."},
    [TIDE_CFG_STATE_BLOCK_CACHE_BYTES] = {"state.block.cache.bytes", TIDE_SET_INT, "8388608", 0, 64LL * 1024 * MiB, NULL,
     "RocksDB block cache shared by a worker's stores."},
    [TIDE_CFG_STATE_CACHE_BYTES] = {"state.cache.bytes", TIDE_SET_INT, "16777216", 64 * 1024, 64LL * 1024 * MiB, NULL,
     "Record cache in front of a worker's RocksDB stores: reads of recent keys and "
     "all writes stay in memory until the next commit."},
    [TIDE_CFG_STATE_WRITE_BUFFER_BYTES] = {"state.write.buffer.bytes", TIDE_SET_INT, "16777216", MiB, 64LL * 1024 * MiB, NULL,
     "RocksDB memtable budget shared by a worker's stores."},
    [TIDE_CFG_INTERNAL_TOPICS_CREATE] = {"internal.topics.create", TIDE_SET_ENUM, "true", 0, 0, "true|false",
     "Create missing changelog, repartition and dead-letter topics (compacted / deleted by "
     "time, with the inputs' partition count) through the Admin API before consuming; a "
     "broker that refuses gets a warning per topic."},
    [TIDE_CFG_OUTPUT_TOPICS_CREATE] = {"output.topics.create", TIDE_SET_ENUM, "false", 0, 0, "true|false",
     "Create missing output topics as the internal ones are created (with the inputs' partition "
     "count). Off: a missing output is named in an error and the detector holds its inputs "
     "until the topic exists."},
    [TIDE_CFG_INTERNAL_TOPICS_REPLICATION_FACTOR] = {"internal.topics.replication.factor", TIDE_SET_INT, "-1", -1, 32767, NULL,
     "Replication factor of the internal topics tide creates; -1: the broker's default."},
    [TIDE_CFG_DEV_BROKER_PARTITIONS] = {"dev.broker.partitions", TIDE_SET_INT, "4", 1, 1024, NULL,
     "Partitions of topics created by the development broker."},
    [TIDE_CFG_ADMIN_ADDRESS] = {"admin.address", TIDE_SET_STRING, "127.0.0.1", 0, 0, NULL,
     "Address of the admin HTTP server (metrics, API, status page) of `tide run DIR`. "
     "Anything but loopback exposes it: set it explicitly."},
    [TIDE_CFG_ADMIN_PORT] = {"admin.port", TIDE_SET_INT, "8642", 0, 65535, NULL,
     "Port of the admin HTTP server; 0 picks a free one (logged)."},
    [TIDE_CFG_DETECTOR_BATCH_TIMEOUT_MS] = {"detector.batch.timeout.ms", TIDE_SET_INT, STR(TIDE_DEFAULT_BATCH_TIMEOUT_MS), 100, 3600000, NULL,
     "Watchdog: a worker whose batch runs longer is killed and restarted; in tide test and "
     "tide replay, a record that runs longer fails with a TimeoutError."},
    [TIDE_CFG_DETECTOR_POISON_KILLS] = {"detector.poison.kills", TIDE_SET_INT, "3", 1, 100, NULL,
     "A record in flight when a worker died this many times is dead-lettered unrun."},
    [TIDE_CFG_DETECTOR_RESTART_BACKOFF_MAX_MS] = {"detector.restart.backoff.max.ms", TIDE_SET_INT, "30000", 100, 3600000, NULL,
     "Longest wait before restarting a crashed worker (doubles from 500 ms)."},
    [TIDE_CFG_DETECTOR_QUARANTINE_CRASHES] = {"detector.quarantine.crashes", TIDE_SET_INT, "5", 1, 1000, NULL,
     "Crashes within 5 minutes after which a detector is quarantined until its file changes."},
    [TIDE_CFG_DETECTOR_PROCESS_MEMORY_LIMIT_BYTES] = {"detector.process.memory.limit.bytes", TIDE_SET_INT, "2147483648", 64 * MiB, 1024LL * 1024 * MiB, NULL,
     "Address-space limit (RLIMIT_AS) of each worker process, beside the Lua heap cap."},
    [TIDE_CFG_RELOAD_DEBOUNCE_MS] = {"reload.debounce.ms", TIDE_SET_INT, "100", 0, 60000, NULL,
     "Quiet time after the last change to a file before it is (re)loaded: one reload per burst."},
    [TIDE_CFG_LOG_LEVEL] = {"log.level", TIDE_SET_ENUM, "info", 0, 0, "debug|info|warn|error",
     "Least severe log level written."},
    [TIDE_CFG_SCHEMA_REGISTRY_URL] = {"schema.registry.url", TIDE_SET_STRING, "", 0, 0, NULL,
     "Confluent Schema Registry for the avro serde, http(s)://host:port (a comma-separated list "
     "is tried in turn). Empty: Avro schemas come from the folder schemas/ beside the detector."},
    [TIDE_CFG_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO] = {"schema.registry.basic.auth.user.info", TIDE_SET_STRING, "", 0, 0, NULL,
     "user:password for the registry's basic auth (a secret: never logged)."},
    [TIDE_CFG_SCHEMA_REGISTRY_REQUEST_TIMEOUT_MS] = {"schema.registry.request.timeout.ms", TIDE_SET_INT, "5000", 100, 60000, NULL,
     "Longest wait for one registry request; keep it below detector.batch.timeout.ms."},
    [TIDE_CFG_SCHEMA_REGISTRY_RETRY_BACKOFF_MAX_MS] = {"schema.registry.retry.backoff.max.ms", TIDE_SET_INT, "10000", 100, 600000, NULL,
     "While the registry cannot be reached, records that need it wait and it is asked again "
     "after a backoff doubling from 100 ms up to this."},
    [TIDE_CFG_AUTO_REGISTER_SCHEMAS] = {"auto.register.schemas", TIDE_SET_ENUM, "true", 0, 0, "true|false",
     "Register an output's Avro schema under its subject (<topic>-value, <topic>-key) on first "
     "use; false: look it up (it must be registered)."},
    [TIDE_CFG_USE_LATEST_VERSION] = {"use.latest.version", TIDE_SET_ENUM, "false", 0, 0, "true|false",
     "With auto.register.schemas=false: write outputs with their subject's latest schema."},
    [TIDE_CFG_APPLICATION_SERVER] = {"application.server", TIDE_SET_STRING, "", 0, 0, NULL,
     "host:port at which other instances reach this one's admin server, for interactive "
     "queries of a key held here (published in the <application.id>.instances topic). Empty: "
     "admin.address and the port the admin server listens on."},
    [TIDE_CFG_NUM_STANDBY_REPLICAS] = {"num.standby.replicas", TIDE_SET_INT, "0", 0, 16, NULL,
     "Warm copies of each stateful task kept by other instances from its changelog, so that "
     "a failover restores only the changelog's tail (RocksDB stores)."},
    [TIDE_CFG_GROUP_INSTANCE_ID] = {"group.instance.id", TIDE_SET_STRING, "auto", 0, 0, NULL,
     "Static membership (KIP-345): a worker that restarts within session.timeout.ms gets its "
     "partitions back with no rebalance. auto: <application.id>.<detector>-<the process id "
     "kept in state.dir>; none (or empty): dynamic membership; any other value is used as is."},
    [TIDE_CFG_LEAVE_GROUP_ON_CLOSE] = {"leave.group.on.close", TIDE_SET_ENUM, "true", 0, 0, "true|false",
     "A worker stopped as asked (SIGTERM, its file removed) leaves its consumer group, so its "
     "partitions move at once, even as a static member. false: a static member stops without "
     "leaving (as librdkafka and Kafka Streams do), so that a restart within "
     "session.timeout.ms gets its partitions back with no rebalance; meanwhile they wait."},
    [TIDE_CFG_COUNT] = {NULL, 0, NULL, 0, 0, NULL, NULL},
};

/* librdkafka properties tide owns: setting them would break its guarantees. */
static const char *const owned_keys[] = {
    "group.id", "enable.auto.commit", "enable.auto.offset.store",
    "partition.assignment.strategy", "group.protocol", "transactional.id", "group.instance.id",
    NULL,
};

/* Properties tide sets itself under exactly_once_v2. */
static const char *const eos_keys[] = {"isolation.level", NULL};

static int n_settings(void) { return TIDE_CFG_COUNT; }

static int find(const char *name) {
    for (int i = 0; i < TIDE_CFG_COUNT; i++)
        if (!strcmp(tide_settings[i].name, name)) return i;
    return -1;
}

int tide_config_key(const char *name, tide_cfg_t *out) {
    int i = find(name);
    if (i < 0) return -1;
    *out = (tide_cfg_t)i;
    return 0;
}

static int fail(char **errp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char **errp, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(errp, fmt, ap) < 0) *errp = NULL;
    va_end(ap);
    return -1;
}

int tide_config_init(tide_config_t *c) {
    memset(c, 0, sizeof(*c));
    for (int i = 0; i < TIDE_CFG_COUNT; i++)
        if (!tide_settings[i].name) return -1; /* a constant without its row */
    int n = n_settings();
    c->values = calloc((size_t)n, sizeof(char *));
    c->origins = calloc((size_t)n, sizeof(char *));
    return c->values && c->origins ? 0 : -1;
}

int tide_config_eos(const tide_config_t *c) {
    return !strcmp(tide_config_str(c, TIDE_CFG_PROCESSING_GUARANTEE), "exactly_once_v2");
}

static void quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk, (void)level, (void)fac, (void)buf;
}

/* Make (and destroy at once) a client of this kind as the worker will, with
 * the user's properties over tide's: librdkafka refuses combinations that no
 * single key shows (acks=1 with idempotence, message.timeout.ms past
 * transaction.timeout.ms), and they must be refused at start, not in the
 * worker. It connects to nothing. */
static int try_client(const tide_config_t *c, rd_kafka_type_t type, char **errp) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    const char *const producer[] = {"enable.idempotence", "true", "acks", "all", NULL};
    const char *const consumer[] = {"group.id", "tide.validate", "enable.auto.commit", "false",
                                    "enable.auto.offset.store", "false", NULL};
    const char *const *kv = type == RD_KAFKA_PRODUCER ? producer : consumer;
    for (int i = 0; kv[i]; i += 2) rd_kafka_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err));
    int eos = tide_config_eos(c);
    if (eos && type == RD_KAFKA_PRODUCER)
        rd_kafka_conf_set(conf, "transactional.id", "tide.validate", err, sizeof(err));
    if (tide_config_apply_kafka(c, conf, type == RD_KAFKA_PRODUCER ? TIDE_CLIENT_PRODUCER
                                                                   : TIDE_CLIENT_CONSUMER, errp)) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_log_cb(conf, quiet);
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (rk) {
        rd_kafka_destroy(rk);
        return 0;
    }
    return fail(errp, "the %s properties do not go together: %s",
                type == RD_KAFKA_PRODUCER ? "producer" : "consumer", err);
}

int tide_config_validate(tide_config_t *c, char **errp) {
    if (try_client(c, RD_KAFKA_PRODUCER, errp) || try_client(c, RD_KAFKA_CONSUMER, errp)) return -1;
    return tide_config_settle(c, errp);
}

int tide_config_settle(tide_config_t *c, char **errp) {
    if (!tide_config_eos(c)) return 0;
    for (size_t i = 0; i < c->n_kafka; i++) {
        const char *k = c->kafka[i].key, *base = k;
        if (!strncmp(k, "consumer.", 9) || !strncmp(k, "producer.", 9)) base = k + 9;
        for (int j = 0; eos_keys[j]; j++)
            if (!strcmp(base, eos_keys[j]))
                return fail(errp, "%s: %s is managed by tide under processing.guarantee="
                            "exactly_once_v2 (inputs, repartition topics and restores are read "
                            "read_committed)", c->kafka[i].origin, k);
    }
    /* Kafka Streams' default under exactly-once: a transaction per 100 ms. */
    if (!tide_config_is_set(c, TIDE_CFG_COMMIT_INTERVAL_MS)) {
        c->values[TIDE_CFG_COMMIT_INTERVAL_MS] = strdup("100");
        c->origins[TIDE_CFG_COMMIT_INTERVAL_MS] = strdup("default under exactly_once_v2");
    }
    return 0;
}

void tide_config_free(tide_config_t *c) {
    int n = n_settings();
    for (int i = 0; i < n && c->values; i++) {
        free(c->values[i]);
        free(c->origins[i]);
    }
    free(c->values);
    free(c->origins);
    for (size_t i = 0; i < c->n_kafka; i++) {
        free(c->kafka[i].key);
        free(c->kafka[i].value);
        free(c->kafka[i].origin);
    }
    free(c->kafka);
    memset(c, 0, sizeof(*c));
}

int tide_config_is_secret(const char *key) {
    static const char *const words[] = {"password", "secret", "jaas", "token",
                                        "ssl.key.pem", "ssl.keystore", "credentials",
                                        "user.info", NULL};
    for (int i = 0; words[i]; i++)
        if (strstr(key, words[i])) return 1;
    return 0;
}

static int check_value(const tide_setting_t *s, const char *value, const char *origin,
                       char **errp) {
    if (s->type == TIDE_SET_INT) {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end || v < s->min || v > s->max)
            return fail(errp, "%s: %s must be an integer from %lld to %lld, got '%s'",
                        origin, s->name, s->min, s->max, value);
    } else if (s->type == TIDE_SET_ENUM) {
        size_t len = strlen(value);
        for (const char *p = s->choices; *p;) {
            const char *bar = strchr(p, '|');
            size_t n = bar ? (size_t)(bar - p) : strlen(p);
            if (n == len && !strncmp(p, value, n)) return 0;
            p += n + (bar ? 1 : 0);
        }
        if (!strcmp(s->name, "processing.guarantee") &&
            (!strcmp(value, "exactly_once") || !strcmp(value, "exactly_once_beta")))
            return fail(errp, "%s: processing.guarantee=%s is refused: it is Kafka Streams' first "
                        "exactly-once protocol (removed in Kafka Streams 4.0); use exactly_once_v2",
                        origin, value);
        return fail(errp, "%s: %s must be one of %s, got '%s'", origin, s->name,
                    s->choices, value);
    }
    return 0;
}

/* Check a librdkafka property against a scratch configuration. */
static int check_kafka(const char *key, const char *value, const char *origin, char **errp) {
    for (int i = 0; owned_keys[i]; i++)
        if (!strcmp(key, owned_keys[i]))
            return fail(errp, "%s: %s is managed by tide and cannot be set", origin, key);
    /* Outputs must be idempotent: retries would duplicate them, under
     * either guarantee. */
    if (!strcmp(key, "enable.idempotence") && strcmp(value, "true"))
        return fail(errp, "%s: enable.idempotence=%s is refused: tide's producer is idempotent "
                    "(acks=all), so that retries never duplicate or reorder outputs", origin, value);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    rd_kafka_conf_res_t r = rd_kafka_conf_set(conf, key, value, err, sizeof(err));
    rd_kafka_conf_destroy(conf);
    if (r == RD_KAFKA_CONF_UNKNOWN)
        return fail(errp, "%s: unknown configuration key '%s' (see 'tide help config')",
                    origin, key);
    if (r != RD_KAFKA_CONF_OK)
        return fail(errp, "%s: invalid value for %s: %s", origin, key,
                    tide_config_is_secret(key) ? "(value hidden)" : err);
    return 0;
}

int tide_config_set(tide_config_t *c, const char *key, const char *value,
                    const char *origin, char **errp) {
    int i = find(key);
    if (i >= 0) {
        if (check_value(&tide_settings[i], value, origin, errp)) return -1;
        free(c->values[i]);
        free(c->origins[i]);
        c->values[i] = strdup(value);
        c->origins[i] = strdup(origin);
        return 0;
    }
    const char *base = key;
    if (!strncmp(key, "consumer.", 9)) base = key + 9;
    else if (!strncmp(key, "producer.", 9)) base = key + 9;
    if (check_kafka(base, value, origin, errp)) return -1;
    tide_kv_t *kv = realloc(c->kafka, (c->n_kafka + 1) * sizeof(*kv));
    if (!kv) return fail(errp, "not enough memory");
    c->kafka = kv;
    kv[c->n_kafka++] = (tide_kv_t){strdup(key), strdup(value), strdup(origin)};
    return 0;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

/* Java properties, the parts people use: '#' and '!' comments, key=value,
 * key: value or key value, and lines continued with a trailing backslash. */
int tide_config_load_file(tide_config_t *c, const char *path, char **errp) {
    FILE *f = fopen(path, "r");
    if (!f) return fail(errp, "%s: %s", path, strerror(errno));
    char buf[8192], logical[16384];
    int lineno = 0, start = 0, rc = 0;
    logical[0] = '\0';
    while (fgets(buf, sizeof(buf), f)) {
        lineno++;
        buf[strcspn(buf, "\r\n")] = '\0';
        if (!logical[0]) start = lineno;
        char *line = logical[0] ? buf : trim(buf);
        if (logical[0]) while (isspace((unsigned char)*line)) line++;
        size_t len = strlen(line);
        int cont = len > 0 && line[len - 1] == '\\';
        if (cont) line[len - 1] = '\0';
        strncat(logical, line, sizeof(logical) - strlen(logical) - 1);
        if (cont) continue;
        char *l = trim(logical);
        if (*l && *l != '#' && *l != '!') {
            char *sep = l + strcspn(l, "=: \t");
            char *key = l, *value = sep;
            if (*sep) {
                *sep = '\0';
                value = trim(sep + 1);
                if (*value == '=' || *value == ':') value = trim(value + 1);
            }
            char origin[600];
            snprintf(origin, sizeof(origin), "%s:%d", path, start);
            if (!*trim(key)) {
                rc = fail(errp, "%s: a line without a key", origin);
                break;
            }
            if (tide_config_set(c, trim(key), value, origin, errp)) {
                rc = -1;
                break;
            }
        }
        logical[0] = '\0';
    }
    fclose(f);
    return rc;
}

int tide_config_load_env(tide_config_t *c, char **errp) {
    extern char **environ;
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "TIDE_", 5)) continue;
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        char key[256], origin[300];
        size_t n = (size_t)(eq - *e) - 5;
        if (n == 0 || n >= sizeof(key)) continue;
        for (size_t i = 0; i < n; i++) {
            char ch = (*e)[5 + i];
            key[i] = ch == '_' ? '.' : (char)tolower((unsigned char)ch);
        }
        key[n] = '\0';
        snprintf(origin, sizeof(origin), "environment %.*s", (int)(eq - *e), *e);
        if (tide_config_set(c, key, eq + 1, origin, errp)) return -1;
    }
    return 0;
}

const char *tide_config_str(const tide_config_t *c, tide_cfg_t key) {
    return c->values[key] ? c->values[key] : tide_settings[key].def;
}

long long tide_config_int(const tide_config_t *c, tide_cfg_t key) {
    return strtoll(tide_config_str(c, key), NULL, 10);
}

int tide_config_is_set(const tide_config_t *c, tide_cfg_t key) { return c->values[key] != NULL; }

int tide_config_apply_kafka(const tide_config_t *c, rd_kafka_conf_t *conf,
                            tide_client_t client, char **errp) {
    const char *skip = client == TIDE_CLIENT_CONSUMER ? "producer." : "consumer.";
    const char *mine = client == TIDE_CLIENT_CONSUMER ? "consumer." : "producer.";
    /* Unprefixed first, so a prefixed key overrides it whatever the order. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < c->n_kafka; i++) {
            const char *k = c->kafka[i].key;
            if (!strncmp(k, skip, 9)) continue;
            int prefixed = !strncmp(k, mine, 9);
            if (prefixed != pass) continue;
            char err[512];
            if (rd_kafka_conf_set(conf, prefixed ? k + 9 : k, c->kafka[i].value, err,
                                  sizeof(err)) != RD_KAFKA_CONF_OK)
                return fail(errp, "%s: %s", c->kafka[i].origin, err);
        }
    }
    return 0;
}

int tide_config_write(const tide_config_t *c, FILE *out) {
    for (int i = 0; i < TIDE_CFG_COUNT; i++)
        if (c->values[i]) fprintf(out, "%s=%s\n", tide_settings[i].name, c->values[i]);
    for (size_t i = 0; i < c->n_kafka; i++)
        fprintf(out, "%s=%s\n", c->kafka[i].key, c->kafka[i].value);
    return ferror(out) ? -1 : 0;
}

void tide_config_log(const tide_config_t *c) {
    char fields[8192];
    size_t o = 0;
    fields[o++] = '{';
    for (int i = 0; i < TIDE_CFG_COUNT; i++) {
        const char *v = tide_config_str(c, (tide_cfg_t)i);
        if (*v && tide_config_is_secret(tide_settings[i].name)) v = "[redacted]";
        if (o > 1) fields[o++] = ',';
        o += tide_json_str(fields + o, sizeof(fields) - o, tide_settings[i].name,
                           strlen(tide_settings[i].name));
        fields[o++] = ':';
        o += tide_json_str(fields + o, sizeof(fields) - o, v, strlen(v));
        if (o > sizeof(fields) - 600) break;
    }
    for (size_t i = 0; i < c->n_kafka && o < sizeof(fields) - 600; i++) {
        const char *v = tide_config_is_secret(c->kafka[i].key) ? "[redacted]" : c->kafka[i].value;
        fields[o++] = ',';
        o += tide_json_str(fields + o, sizeof(fields) - o, c->kafka[i].key,
                           strlen(c->kafka[i].key));
        fields[o++] = ':';
        o += tide_json_str(fields + o, sizeof(fields) - o, v, strlen(v));
    }
    fields[o++] = '}';
    fields[o] = '\0';
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "configuration", "config", fields, (char *)NULL);
}

void tide_config_registry(const tide_config_t *c, tide_registry_opts_t *o) {
    o->url = tide_config_str(c, TIDE_CFG_SCHEMA_REGISTRY_URL);
    o->user_info = tide_config_str(c, TIDE_CFG_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO);
    o->timeout_ms = (long)tide_config_int(c, TIDE_CFG_SCHEMA_REGISTRY_REQUEST_TIMEOUT_MS);
    o->backoff_max_ms = (long)tide_config_int(c, TIDE_CFG_SCHEMA_REGISTRY_RETRY_BACKOFF_MAX_MS);
    o->auto_register = !strcmp(tide_config_str(c, TIDE_CFG_AUTO_REGISTER_SCHEMAS), "true");
    o->use_latest = !strcmp(tide_config_str(c, TIDE_CFG_USE_LATEST_VERSION), "true");
}

void tide_config_help(FILE *out) {
    fprintf(out, "tide settings (properties file, TIDE_* environment, -D key=value):\n\n");
    for (int i = 0; i < TIDE_CFG_COUNT; i++) {
        const tide_setting_t *s = &tide_settings[i];
        fprintf(out, "  %-28s default: %s\n      %s\n", s->name,
                *s->def ? s->def : "(empty)", s->description);
        if (s->type == TIDE_SET_ENUM) fprintf(out, "      one of: %s\n", s->choices);
    }
    fprintf(out, "\nAny other key is a librdkafka property (CONFIGURATION.md), passed to both\n"
                 "clients, or to one with a 'consumer.' or 'producer.' prefix. tide manages\n"
                 "group.id, enable.auto.commit, enable.auto.offset.store and\n"
                 "partition.assignment.strategy itself.\n");
}
