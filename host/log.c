/*
 * log.c: JSON-lines logging to stderr (see log.h). One write(2) per line, so
 * lines from the supervisor and its workers never interleave mid-line.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "sink.h"

static tide_log_level_t min_level = TIDE_LOG_INFO;
static char detector[128];
static const char *const level_names[] = {"debug", "info", "warn", "error"};

int64_t tide_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tide_wall_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

void tide_log_set_level(tide_log_level_t min) { min_level = min; }

int tide_log_parse_level(const char *s, tide_log_level_t *out) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, level_names[i])) {
            *out = (tide_log_level_t)i;
            return 0;
        }
    return -1;
}

void tide_log_set_detector(const char *name) {
    snprintf(detector, sizeof(detector), "%s", name ? name : "");
}

size_t tide_json_str(char *buf, size_t cap, const char *s, size_t len) {
    size_t o = 0;
#define PUT(c) do { if (o + 1 < cap) buf[o++] = (c); } while (0)
    PUT('"');
    for (size_t i = 0; i < len && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { PUT('\\'); PUT((char)c); }
        else if (c == '\n') { PUT('\\'); PUT('n'); }
        else if (c == '\r') { PUT('\\'); PUT('r'); }
        else if (c == '\t') { PUT('\\'); PUT('t'); }
        else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(buf + o, cap - o, "\\u%04x", c);
        } else if (c >= 0x80) {
            /* keep well-formed UTF-8 sequences, escape stray bytes */
            size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
            if (n && i + n <= len && tide_utf8_valid(s + i, (int32_t)n)) {
                if (o + n + 2 >= cap) break;
                memcpy(buf + o, s + i, n);
                o += n;
                i += n - 1;
            } else {
                o += (size_t)snprintf(buf + o, cap - o, "\\u%04x", c);
            }
        } else PUT((char)c);
    }
    PUT('"');
#undef PUT
    buf[o < cap ? o : cap - 1] = '\0';
    return o;
}

static void emit_line(tide_log_level_t level, tide_log_at_t at, const char *msg,
                      va_list kv) {
    char line[8192];
    size_t o = 0;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    o += strftime(line, sizeof(line), "{\"ts\":\"%Y-%m-%dT%H:%M:%S", &tm);
    o += (size_t)snprintf(line + o, sizeof(line) - o, ".%03ldZ\",\"level\":\"%s\"",
                          (long)(tv.tv_usec / 1000), level_names[level]);
    if (detector[0]) {
        o += (size_t)snprintf(line + o, sizeof(line) - o, ",\"detector\":");
        o += tide_json_str(line + o, sizeof(line) - o, detector, strlen(detector));
    }
    o += (size_t)snprintf(line + o, sizeof(line) - o, ",\"msg\":");
    o += tide_json_str(line + o, sizeof(line) - o - 512, msg, strlen(msg));
    if (at.topic) {
        o += (size_t)snprintf(line + o, sizeof(line) - o, ",\"topic\":");
        o += tide_json_str(line + o, sizeof(line) - o, at.topic, strlen(at.topic));
    }
    if (at.partition >= 0)
        o += (size_t)snprintf(line + o, sizeof(line) - o, ",\"partition\":%d", (int)at.partition);
    if (at.offset >= 0)
        o += (size_t)snprintf(line + o, sizeof(line) - o, ",\"offset\":%lld", (long long)at.offset);
    const char *k;
    while ((k = va_arg(kv, const char *)) != NULL) {
        const char *v = va_arg(kv, const char *);
        if (o + strlen(k) + strlen(v) + 8 >= sizeof(line)) break;
        o += (size_t)snprintf(line + o, sizeof(line) - o, ",\"%s\":%s", k, v);
    }
    if (o + 3 > sizeof(line)) o = sizeof(line) - 3;
    line[o++] = '}';
    line[o++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, o);
    (void)w;
}

static void vlogkv(tide_log_level_t level, tide_log_at_t at, const char *msg, ...) {
    va_list ap;
    va_start(ap, msg);
    emit_line(level, at, msg, ap);
    va_end(ap);
}

void tide_log_rdkafka(const struct rd_kafka_s *rk, int level, const char *fac,
                      const char *buf) {
    (void)rk;
    /* syslog levels: 0-3 errors, 4 warnings, 5-6 notices, 7 debug */
    tide_log_level_t l = level <= 3   ? TIDE_LOG_ERROR
                         : level == 4 ? TIDE_LOG_WARN
                         : level <= 6 ? TIDE_LOG_INFO
                                      : TIDE_LOG_DEBUG;
    /* A property given to both clients (no consumer./producer. prefix)
     * warns in the one that ignores it: expected, so only debug. */
    if (l == TIDE_LOG_WARN && !strcmp(fac, "CONFWARN") && strstr(buf, "will be ignored by this"))
        l = TIDE_LOG_DEBUG;
    tide_log(l, TIDE_AT_NONE, "librdkafka %s: %s", fac, buf);
}

void tide_log(tide_log_level_t level, tide_log_at_t at, const char *fmt, ...) {
    if (level < min_level) return;
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    vlogkv(level, at, msg, (const char *)NULL);
}

void tide_logkv(tide_log_level_t level, tide_log_at_t at, const char *msg, ...) {
    if (level < min_level) return;
    va_list ap;
    va_start(ap, msg);
    emit_line(level, at, msg, ap);
    va_end(ap);
}
