/*
 * buf.c: the growable byte buffer (see buf.h) and the few encoders the admin
 * server needs: JSON strings and numbers, Prometheus numbers and label values.
 *
 * It owns only its own memory. It never logs, never aborts on a failed
 * allocation (it sets oom and goes quiet), and never reads past the length it
 * is given: its inputs include char arrays in a worker's shared status block
 * that may be mid-update while we read them.
 */
#include "buf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sink.h"

void tide_buf_init(tide_buf_t *b) { *b = TIDE_BUF_INIT; }

void tide_buf_free(tide_buf_t *b) {
    free(b->data);
    *b = TIDE_BUF_INIT;
}

void tide_buf_reset(tide_buf_t *b) {
    b->len = 0;
    b->oom = 0;
    if (b->data) b->data[0] = '\0';
}

int tide_buf_reserve(tide_buf_t *b, size_t extra) {
    if (b->oom) return -1;
    if (extra > SIZE_MAX / 2 - b->len) goto oom;
    size_t need = b->len + extra + 1; /* + the NUL */
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) goto oom;
    b->data = p;
    b->cap = cap;
    return 0;
oom:
    b->oom = 1;
    return -1;
}

void tide_buf_append(tide_buf_t *b, const void *p, size_t n) {
    if (tide_buf_reserve(b, n) != 0) return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void tide_buf_puts(tide_buf_t *b, const char *s) { tide_buf_append(b, s, strlen(s)); }

void tide_buf_printf(tide_buf_t *b, const char *fmt, ...) {
    if (tide_buf_reserve(b, 64) != 0) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= b->cap - b->len) { /* did not fit: grow, format again */
        if (tide_buf_reserve(b, (size_t)n) != 0) {
            b->data[b->len] = '\0';
            return;
        }
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void tide_buf_json_strn(tide_buf_t *b, const char *s, size_t n) {
    if (!s) {
        tide_buf_append(b, "null", 4);
        return;
    }
    size_t len = strnlen(s, n);
    /* Worst case every byte becomes \u00XX (6 bytes), plus quotes and the
     * slack tide_json_str keeps before it stops: it never truncates here. */
    size_t room = len * 6 + 16;
    if (tide_buf_reserve(b, room) != 0) return;
    b->len += tide_json_str(b->data + b->len, room + 1, s, len);
    b->data[b->len] = '\0';
}

void tide_buf_json_str(tide_buf_t *b, const char *s) {
    tide_buf_json_strn(b, s, s ? strlen(s) : 0);
}

/* The shortest %g form that reads back as exactly v. */
static void shortest(tide_buf_t *b, double v) {
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) break;
    }
    tide_buf_puts(b, tmp);
}

void tide_buf_json_num(tide_buf_t *b, double v) {
    if (!isfinite(v)) tide_buf_puts(b, "null");
    else shortest(b, v);
}

void tide_buf_prom_num(tide_buf_t *b, double v) {
    if (isnan(v)) tide_buf_puts(b, "NaN");
    else if (isinf(v)) tide_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    else shortest(b, v);
}

void tide_buf_prom_label(tide_buf_t *b, const char *s, size_t n) {
    size_t len = s ? strnlen(s, n) : 0;
    tide_buf_append(b, "\"", 1);
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\') tide_buf_append(b, "\\\\", 2);
        else if (c == '"') tide_buf_append(b, "\\\"", 2);
        else if (c == '\n') tide_buf_append(b, "\\n", 2);
        else if (c < 0x80) tide_buf_append(b, &s[i], 1);
        else {
            /* the text format is UTF-8: keep well-formed sequences only */
            size_t k = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
            if (k && i + k <= len && tide_utf8_valid(s + i, (int32_t)k)) {
                tide_buf_append(b, s + i, k);
                i += k;
                continue;
            }
            tide_buf_append(b, "\xEF\xBF\xBD", 3);
        }
        i++;
    }
    tide_buf_append(b, "\"", 1);
}
