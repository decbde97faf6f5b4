/*
 * config.h: tide's configuration, Kafka style.
 *
 * One table of settings (name, type, default, description) drives parsing,
 * validation, defaults, `tide help config` and the README. Sources, later
 * ones winning: the properties file (-c), environment variables
 * (TIDE_COMMIT_INTERVAL_MS for commit.interval.ms), then flags (-D key=value,
 * -b). Keys that are not tide's own are librdkafka properties, passed through
 * to both clients, or to one with a `consumer.` / `producer.` prefix; they are
 * checked by librdkafka itself at load, so a typo is refused at start.
 */
#ifndef TIDE_CONFIG_H
#define TIDE_CONFIG_H
#include <stddef.h>
#include <stdio.h>

#include <librdkafka/rdkafka.h>

#include "runtime_types.h"

typedef enum tide_setting_type {
    TIDE_SET_STRING,
    TIDE_SET_INT,   /* an integer within [min, max] */
    TIDE_SET_ENUM,  /* one of `choices`, '|'-separated */
} tide_setting_type_t;

typedef struct tide_setting {
    const char *name;
    tide_setting_type_t type;
    const char *def;
    long long min, max;
    const char *choices;
    const char *description;
} tide_setting_t;

/* tide's own settings, each the index of its row in tide_settings: code
 * names a setting by its constant, so a misspelt one does not compile. */
typedef enum tide_cfg {
    TIDE_CFG_BOOTSTRAP_SERVERS,
    TIDE_CFG_APPLICATION_ID,
    TIDE_CFG_COMMIT_INTERVAL_MS,
    TIDE_CFG_MAX_POLL_RECORDS,
    TIDE_CFG_MAX_TASK_IDLE_MS,
    TIDE_CFG_BUFFERED_RECORDS_PER_PARTITION,
    TIDE_CFG_STATE_DIR,
    TIDE_CFG_PROCESSING_GUARANTEE,
    TIDE_CFG_DETECTOR_MEMORY_LIMIT_BYTES,
    TIDE_CFG_SHUTDOWN_TIMEOUT_MS,
    TIDE_CFG_STATE_BLOCK_CACHE_BYTES,
    TIDE_CFG_STATE_CACHE_BYTES,
    TIDE_CFG_STATE_WRITE_BUFFER_BYTES,
    TIDE_CFG_INTERNAL_TOPICS_CREATE,
    TIDE_CFG_OUTPUT_TOPICS_CREATE,
    TIDE_CFG_INTERNAL_TOPICS_REPLICATION_FACTOR,
    TIDE_CFG_DEV_BROKER_PARTITIONS,
    TIDE_CFG_ADMIN_ADDRESS,
    TIDE_CFG_ADMIN_PORT,
    TIDE_CFG_DETECTOR_BATCH_TIMEOUT_MS,
    TIDE_CFG_DETECTOR_POISON_KILLS,
    TIDE_CFG_DETECTOR_RESTART_BACKOFF_MAX_MS,
    TIDE_CFG_DETECTOR_QUARANTINE_CRASHES,
    TIDE_CFG_DETECTOR_PROCESS_MEMORY_LIMIT_BYTES,
    TIDE_CFG_RELOAD_DEBOUNCE_MS,
    TIDE_CFG_LOG_LEVEL,
    TIDE_CFG_SCHEMA_REGISTRY_URL,
    TIDE_CFG_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO,
    TIDE_CFG_SCHEMA_REGISTRY_REQUEST_TIMEOUT_MS,
    TIDE_CFG_SCHEMA_REGISTRY_RETRY_BACKOFF_MAX_MS,
    TIDE_CFG_AUTO_REGISTER_SCHEMAS,
    TIDE_CFG_USE_LATEST_VERSION,
    TIDE_CFG_APPLICATION_SERVER,
    TIDE_CFG_NUM_STANDBY_REPLICAS,
    TIDE_CFG_GROUP_INSTANCE_ID,
    TIDE_CFG_LEAVE_GROUP_ON_CLOSE,
    TIDE_CFG_COUNT,
} tide_cfg_t;

extern const tide_setting_t tide_settings[TIDE_CFG_COUNT + 1]; /* NULL-terminated */

/* The setting called `name`; 0, or -1 when tide has none by that name. */
int tide_config_key(const char *name, tide_cfg_t *out);

/* A passed-through librdkafka property. */
typedef struct tide_kv {
    char *key, *value, *origin;
} tide_kv_t;

typedef enum tide_client { TIDE_CLIENT_CONSUMER, TIDE_CLIENT_PRODUCER } tide_client_t;

typedef struct tide_config {
    char **values;        /* parallel to tide_settings */
    char **origins;       /* where each value came from, for errors */
    tide_kv_t *kafka;     /* passthrough, in order */
    size_t n_kafka;
} tide_config_t;

int tide_config_init(tide_config_t *c);
void tide_config_free(tide_config_t *c);
/* Set one key. origin names the source for messages ("tide.properties:3").
 * Returns 0, or -1 with *errp (malloc'd) = "origin: reason". */
int tide_config_set(tide_config_t *c, const char *key, const char *value,
                    const char *origin, char **errp);
int tide_config_load_file(tide_config_t *c, const char *path, char **errp);
/* After every source: refuse what only the whole configuration shows wrong
 * (a property tide manages under the guarantee chosen), and settle the
 * defaults that depend on others (commit.interval.ms under exactly-once). */
int tide_config_validate(tide_config_t *c, char **errp);
/* The same without making a producer and a consumer to try the librdkafka
 * properties together (a worker whose supervisor validated the same
 * configuration: it starts about 10 ms sooner). */
int tide_config_settle(tide_config_t *c, char **errp);
/* processing.guarantee is exactly_once_v2. */
int tide_config_eos(const tide_config_t *c);
/* Apply TIDE_* environment variables. */
int tide_config_load_env(tide_config_t *c, char **errp);

const char *tide_config_str(const tide_config_t *c, tide_cfg_t key);
long long tide_config_int(const tide_config_t *c, tide_cfg_t key);
/* Has the user set it (any source)? */
int tide_config_is_set(const tide_config_t *c, tide_cfg_t key);

/* Apply the passthrough properties for one client to conf. */
int tide_config_apply_kafka(const tide_config_t *c, rd_kafka_conf_t *conf,
                            tide_client_t client, char **errp);
/* Write every value set by any source as a properties file (for workers). */
int tide_config_write(const tide_config_t *c, FILE *out);
/* Log the effective configuration with secrets redacted. */
void tide_config_log(const tide_config_t *c);
/* 1 when a key's value must never be shown. */
int tide_config_is_secret(const char *key);
void tide_config_help(FILE *out);
/* The schema registry settings, for the runtime's avro serde; the strings
 * are the configuration's. */
void tide_config_registry(const tide_config_t *c, tide_registry_opts_t *o);

#endif
