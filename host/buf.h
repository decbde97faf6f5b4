/*
 * buf.h: a growable byte buffer, for text rendered in memory before it is
 * written anywhere (the admin server's pages).
 *
 * A tide_buf_t owns its bytes; they are NUL-terminated after every append,
 * so b->data can be used as a C string when the content has no NUL. Appends
 * never fail loudly: when memory runs out the buffer sets `oom`, keeps what it
 * had, and ignores later appends, so a renderer checks once at the end
 * instead of after every line. Never log or print from here.
 */
#ifndef TIDE_BUF_H
#define TIDE_BUF_H
#include <stddef.h>
#include <stdint.h>

typedef struct tide_buf {
    char *data; /* owned; NULL until the first append */
    size_t len; /* bytes, not counting the terminating NUL */
    size_t cap;
    int oom;    /* an allocation failed: the content is incomplete */
} tide_buf_t;

#define TIDE_BUF_INIT ((tide_buf_t){NULL, 0, 0, 0})

void tide_buf_init(tide_buf_t *b);
void tide_buf_free(tide_buf_t *b);
/* Empty it, keeping the memory (and clearing oom). */
void tide_buf_reset(tide_buf_t *b);
/* Make room for `extra` more bytes; 0, or -1 (and oom) when memory ran out. */
int tide_buf_reserve(tide_buf_t *b, size_t extra);

void tide_buf_append(tide_buf_t *b, const void *p, size_t n);
void tide_buf_puts(tide_buf_t *b, const char *s);
void tide_buf_printf(tide_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A JSON string, quoted and escaped (tide_json_str: bytes that are not UTF-8
 * become \u00XX); s == NULL appends null. The _n form reads at most n bytes
 * and stops at a NUL, so it is safe on fixed char arrays that another process
 * may be rewriting (status.h): pass sizeof the array. */
void tide_buf_json_str(tide_buf_t *b, const char *s);
void tide_buf_json_strn(tide_buf_t *b, const char *s, size_t n);
/* A double as JSON: the shortest form that reads back exactly; NaN and
 * infinities (which JSON lacks) become null. */
void tide_buf_json_num(tide_buf_t *b, double v);
/* A double as Prometheus writes it: shortest exact form, NaN, +Inf, -Inf. */
void tide_buf_prom_num(tide_buf_t *b, double v);
/* A Prometheus label value, quoted: backslash, double quote and newline
 * escaped, bytes that are not UTF-8 replaced by U+FFFD. Reads at most n bytes,
 * stopping at a NUL. */
void tide_buf_prom_label(tide_buf_t *b, const char *s, size_t n);

#endif
