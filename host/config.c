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

const tide_setting_t tide_settings[] = {
    {"bootstrap.servers", TIDE_SET_STRING, "", 0, 0, NULL,
     "Kafka brokers, host:port[,host:port]. Empty: start a development broker in-process."},
    {"application.id", TIDE_SET_STRING, "tide", 0, 0, NULL,
     "Prefix of every consumer group (<application.id>.<detector>) and internal topic."},
    {"commit.interval.ms", TIDE_SET_INT, "5000", 1, 3600000, NULL,
     "How often processed offsets are committed (after their outputs are acknowledged)."},
    {"max.poll.records", TIDE_SET_INT, "1000", 1, 100000, NULL,
     "Most records handed to a detector in one batch."},
    {"state.dir", TIDE_SET_STRING, "/tmp/tide", 0, 0, NULL,
     "Directory for local state."},
    {"processing.guarantee", TIDE_SET_ENUM, "at_least_once", 0, 0, "at_least_once",
     "Delivery guarantee. at_least_once: outputs are acknowledged before input offsets are committed."},
    {"detector.memory.limit.bytes", TIDE_SET_INT, STR(TIDE_DEFAULT_MEMORY_LIMIT), 1 * MiB, 64LL * 1024 * MiB, NULL,
     "Cap on a detector's Lua heap; exceeding it fails the record with a MemoryError "
     "(live, and in tide test and tide replay)."},
    {"shutdown.timeout.ms", TIDE_SET_INT, "10000", 100, 600000, NULL,
     "Longest wait for outputs to be acknowledged at shutdown or revoke."},
    {"state.block.cache.bytes", TIDE_SET_INT, "8388608", 0, 64LL * 1024 * MiB, NULL,
     "RocksDB block cache shared by a worker's stores."},
    {"state.cache.bytes", TIDE_SET_INT, "16777216", 64 * 1024, 64LL * 1024 * MiB, NULL,
     "Record cache in front of a worker's RocksDB stores: reads of recent keys and "
     "all writes stay in memory until the next commit."},
    {"state.write.buffer.bytes", TIDE_SET_INT, "16777216", MiB, 64LL * 1024 * MiB, NULL,
     "RocksDB memtable budget shared by a worker's stores."},
    {"internal.topics.create", TIDE_SET_ENUM, "true", 0, 0, "true|false",
     "Create missing changelog and repartition topics (compacted / deleted by time, with "
     "the inputs' partition count) through the Admin API before consuming; a broker that "
     "refuses gets a warning per topic."},
    {"internal.topics.replication.factor", TIDE_SET_INT, "-1", -1, 32767, NULL,
     "Replication factor of the internal topics tide creates; -1: the broker's default."},
    {"dev.broker.partitions", TIDE_SET_INT, "4", 1, 1024, NULL,
     "Partitions of topics created by the development broker."},
    {"admin.address", TIDE_SET_STRING, "127.0.0.1", 0, 0, NULL,
     "Address of the admin HTTP server (metrics, API, status page) of `tide run DIR`. "
     "Anything but loopback exposes it: set it explicitly."},
    {"admin.port", TIDE_SET_INT, "8642", 0, 65535, NULL,
     "Port of the admin HTTP server; 0 picks a free one (logged)."},
    {"detector.batch.timeout.ms", TIDE_SET_INT, STR(TIDE_DEFAULT_BATCH_TIMEOUT_MS), 100, 3600000, NULL,
     "Watchdog: a worker whose batch runs longer is killed and restarted; in tide test and "
     "tide replay, a record that runs longer fails with a TimeoutError."},
    {"detector.poison.kills", TIDE_SET_INT, "3", 1, 100, NULL,
     "A record in flight when a worker died this many times is dead-lettered unrun."},
    {"detector.restart.backoff.max.ms", TIDE_SET_INT, "30000", 100, 3600000, NULL,
     "Longest wait before restarting a crashed worker (doubles from 500 ms)."},
    {"detector.quarantine.crashes", TIDE_SET_INT, "5", 1, 1000, NULL,
     "Crashes within 5 minutes after which a detector is quarantined until its file changes."},
    {"detector.process.memory.limit.bytes", TIDE_SET_INT, "2147483648", 64 * MiB, 1024LL * 1024 * MiB, NULL,
     "Address-space limit (RLIMIT_AS) of each worker process, beside the Lua heap cap."},
    {"reload.debounce.ms", TIDE_SET_INT, "100", 0, 60000, NULL,
     "Quiet time after the last change to a file before it is (re)loaded: one reload per burst."},
    {"log.level", TIDE_SET_ENUM, "info", 0, 0, "debug|info|warn|error",
     "Least severe log level written."},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

/* librdkafka properties tide owns: setting them would break its guarantees. */
static const char *const owned_keys[] = {
    "group.id", "enable.auto.commit", "enable.auto.offset.store",
    "partition.assignment.strategy", "group.protocol", NULL,
};

static int n_settings(void) {
    int n = 0;
    while (tide_settings[n].name) n++;
    return n;
}

static int find(const char *name) {
    for (int i = 0; tide_settings[i].name; i++)
        if (!strcmp(tide_settings[i].name, name)) return i;
    return -1;
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
    int n = n_settings();
    c->values = calloc((size_t)n, sizeof(char *));
    c->origins = calloc((size_t)n, sizeof(char *));
    return c->values && c->origins ? 0 : -1;
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
                                        "ssl.key.pem", "ssl.keystore", "credentials", NULL};
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
        if (!strcmp(s->name, "processing.guarantee") && !strcmp(value, "exactly_once"))
            return fail(errp, "%s: processing.guarantee=exactly_once is not supported yet "
                        "(the development broker cannot honour transactions)", origin);
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

const char *tide_config_str(const tide_config_t *c, const char *name) {
    int i = find(name);
    if (i < 0) return NULL;
    return c->values[i] ? c->values[i] : tide_settings[i].def;
}

long long tide_config_int(const tide_config_t *c, const char *name) {
    const char *s = tide_config_str(c, name);
    return s ? strtoll(s, NULL, 10) : 0;
}

int tide_config_is_set(const tide_config_t *c, const char *name) {
    int i = find(name);
    return i >= 0 && c->values[i] != NULL;
}

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
    for (int i = 0; tide_settings[i].name; i++)
        if (c->values[i]) fprintf(out, "%s=%s\n", tide_settings[i].name, c->values[i]);
    for (size_t i = 0; i < c->n_kafka; i++)
        fprintf(out, "%s=%s\n", c->kafka[i].key, c->kafka[i].value);
    return ferror(out) ? -1 : 0;
}

void tide_config_log(const tide_config_t *c) {
    char fields[8192];
    size_t o = 0;
    fields[o++] = '{';
    for (int i = 0; tide_settings[i].name; i++) {
        const char *v = tide_config_str(c, tide_settings[i].name);
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

void tide_config_help(FILE *out) {
    fprintf(out, "tide settings (properties file, TIDE_* environment, -D key=value):\n\n");
    for (int i = 0; tide_settings[i].name; i++) {
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
