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

extern const tide_setting_t tide_settings[];

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
/* Apply TIDE_* environment variables. */
int tide_config_load_env(tide_config_t *c, char **errp);

const char *tide_config_str(const tide_config_t *c, const char *name);
long long tide_config_int(const tide_config_t *c, const char *name);
/* Has the user set it (any source)? */
int tide_config_is_set(const tide_config_t *c, const char *name);

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
