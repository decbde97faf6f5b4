/*
 * log.h: tide's logs, one JSON object per line on stderr.
 *
 * Every line has ts, level, detector and msg; topic, partition and offset when
 * a record is concerned; and any extra fields the caller adds. Operators grep
 * and jq these, so field names are stable. Nothing secret is ever passed here:
 * configuration is logged through tide_config_log, which redacts.
 */
#ifndef TIDE_LOG_H
#define TIDE_LOG_H
#include <stdint.h>

#include "runtime_types.h"

/* Where a log line points: all optional (NULL / -1). */
typedef struct tide_log_at {
    const char *topic;
    int32_t partition;
    int64_t offset;
} tide_log_at_t;

#define TIDE_AT_NONE ((tide_log_at_t){NULL, -1, -1})

/* Milliseconds: on the monotonic clock (for intervals and deadlines), and
 * since the epoch (for what people read). */
int64_t tide_mono_ms(void);
int64_t tide_wall_ms(void);

void tide_log_set_level(tide_log_level_t min);
int tide_log_parse_level(const char *s, tide_log_level_t *out);
/* The detector named on every line from now on (copied). */
void tide_log_set_detector(const char *name);

/* Log msg (printf format). */
void tide_log(tide_log_level_t level, tide_log_at_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Log msg with extra fields: pairs of (const char *key, const char *raw_json),
 * terminated by NULL. raw_json must already be valid JSON (a number, or a
 * string made with tide_json_str). */
void tide_logkv(tide_log_level_t level, tide_log_at_t at, const char *msg, ...);

/* librdkafka's log callback (rd_kafka_conf_set_log_cb): its lines become
 * JSON lines too. Called from librdkafka's threads; one write(2) per line. */
struct rd_kafka_s;
void tide_log_rdkafka(const struct rd_kafka_s *rk, int level, const char *fac,
                      const char *buf);

/* Append s as a JSON string (quoted, escaped) to buf of size cap; returns the
 * length written (truncated safely). Bytes that are not UTF-8 become \u00XX. */
size_t tide_json_str(char *buf, size_t cap, const char *s, size_t len);

#endif
