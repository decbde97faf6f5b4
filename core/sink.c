/*
 * sink.c: the emit arena (see sink.h). Plain C, no Lua, no Kafka: it is
 * called from JIT-compiled Lua through tide_api_t on every emit, so it only
 * copies bytes and grows buffers geometrically.
 */
#include "sink.h"

#include <stdlib.h>
#include <string.h>

void tide_sink_init(tide_sink_t *s) {
    memset(s, 0, sizeof(*s));
    s->timestamp = -1;
}

void tide_sink_free(tide_sink_t *s) {
    free(s->bytes);
    free(s->entries);
    free(s->hdrs);
    memset(s, 0, sizeof(*s));
    s->timestamp = -1;
}

void tide_sink_clear(tide_sink_t *s) {
    s->bytes_len = 0;
    s->n = 0;
    s->n_hdrs = 0;
}

void tide_sink_swap(tide_sink_t *s, tide_sink_t *other) {
    tide_sink_t t = *s;
    s->bytes = other->bytes, s->bytes_len = other->bytes_len, s->bytes_cap = other->bytes_cap;
    s->entries = other->entries, s->n = other->n, s->cap = other->cap;
    s->hdrs = other->hdrs, s->n_hdrs = other->n_hdrs, s->cap_hdrs = other->cap_hdrs;
    other->bytes = t.bytes, other->bytes_len = t.bytes_len, other->bytes_cap = t.bytes_cap;
    other->entries = t.entries, other->n = t.n, other->cap = t.cap;
    other->hdrs = t.hdrs, other->n_hdrs = t.n_hdrs, other->cap_hdrs = t.cap_hdrs;
}

void tide_sink_shrink(tide_sink_t *s) {
    if (s->n) return;
    free(s->bytes);
    free(s->entries);
    free(s->hdrs);
    s->bytes = NULL, s->bytes_len = s->bytes_cap = 0;
    s->entries = NULL, s->n = s->cap = 0;
    s->hdrs = NULL, s->n_hdrs = s->cap_hdrs = 0;
}

void tide_sink_truncate(tide_sink_t *s, size_t first, int32_t max_kept) {
    if (first >= s->n) return;
    /* an entry's bytes start with its key */
    size_t n = first, bytes = s->entries[first].key_off;
    s->n_hdrs = s->entries[first].hdr_first;
    for (size_t i = first; i < s->n; i++) {
        tide_sink_entry_t e = s->entries[i];
        if (e.output > max_kept) continue;
        /* A kept entry's key and value are contiguous; its headers go (the
         * entries kept here, changelog writes, have none). */
        size_t klen = e.key_len > 0 ? (size_t)e.key_len : 0;
        size_t vlen = e.val_len > 0 ? (size_t)e.val_len : 0;
        memmove(s->bytes + bytes, s->bytes + e.key_off, klen + vlen);
        e.key_off = bytes;
        e.val_off = bytes + klen;
        bytes += klen + vlen;
        e.hdr_first = (uint32_t)s->n_hdrs;
        e.hdr_count = 0;
        s->entries[n++] = e;
    }
    s->n = n;
    s->bytes_len = bytes;
}

void tide_sink_set_timestamp(tide_sink_t *s, int64_t ms) { s->timestamp = ms; }

const char *tide_sink_bytes(const tide_sink_t *s, size_t off) {
    return s->bytes + off;
}
const char *tide_sink_key(const tide_sink_t *s, const tide_sink_entry_t *e) {
    return e->key_len < 0 ? NULL : s->bytes + e->key_off;
}
const char *tide_sink_val(const tide_sink_t *s, const tide_sink_entry_t *e) {
    return e->val_len < 0 ? NULL : s->bytes + e->val_off;
}

/* Grow `*buf` (of `*cap` elements of `size`) to hold `need`. */
static int grow(void **buf, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 64;
    while (ncap < need) ncap *= 2;
    void *nb = realloc(*buf, ncap * size);
    if (!nb) return -1;
    *buf = nb;
    *cap = ncap;
    return 0;
}

/* Would `more` bytes take the sink past its limit? Entries and headers
 * count too: a flood of empty emits is no cheaper to hold. */
static int over_limit(const tide_sink_t *s, size_t more) {
    return s->limit &&
           s->bytes_len + more + (s->n + s->n_hdrs + 2) * sizeof(tide_sink_entry_t) > s->limit;
}

/* Copy len bytes (len < 0: nothing) into the arena; returns the offset. */
static int put_bytes(tide_sink_t *s, const char *p, int32_t len, size_t *off) {
    size_t n = len > 0 ? (size_t)len : 0;
    if (over_limit(s, n)) return -1;
    if (grow((void **)&s->bytes, &s->bytes_cap, s->bytes_len + n, 1)) return -1;
    *off = s->bytes_len;
    if (n) memcpy(s->bytes + s->bytes_len, p, n);
    s->bytes_len += n;
    return 0;
}

int tide_sink_emit(tide_sink_t *s, int32_t output, const char *key,
                   int32_t key_len, const char *val, int32_t val_len) {
    return tide_sink_emit_partition(s, output, -1, key, key_len, val, val_len);
}

int tide_sink_emit_partition(tide_sink_t *s, int32_t output, int32_t partition,
                             const char *key, int32_t key_len, const char *val,
                             int32_t val_len) {
    if (grow((void **)&s->entries, &s->cap, s->n + 1, sizeof(*s->entries)))
        return -1;
    tide_sink_entry_t *e = &s->entries[s->n];
    if (put_bytes(s, key, key_len, &e->key_off) ||
        put_bytes(s, val, val_len, &e->val_off))
        return -1;
    e->output = output;
    e->partition = partition;
    e->source = s->batch ? s->batch->cursor : -1;
    /* An output carries its input's timestamp, as in Kafka Streams, unless
     * the sink's is set: a punctuator's (the time it fired for), or one an
     * operator gives its result (a session's end, a suppressed update's). */
    e->timestamp = s->timestamp;
    if (e->timestamp < 0 && s->batch && e->source >= 0 && e->source < s->batch->n)
        e->timestamp = s->batch->recs[e->source].timestamp;
    if (e->timestamp < 0) e->timestamp = -1;
    e->key_len = key ? key_len : -1;
    e->val_len = val ? val_len : -1;
    e->hdr_first = (uint32_t)s->n_hdrs;
    e->hdr_count = 0;
    s->n++;
    return 0;
}

int tide_sink_emit_header(tide_sink_t *s, const char *name, int32_t name_len,
                          const char *val, int32_t val_len) {
    if (s->n == 0 || name_len < 0) return -1;
    if (grow((void **)&s->hdrs, &s->cap_hdrs, s->n_hdrs + 1, sizeof(*s->hdrs)))
        return -1;
    tide_sink_hdr_t *h = &s->hdrs[s->n_hdrs];
    if (put_bytes(s, name, name_len, &h->name_off) ||
        put_bytes(s, val, val_len, &h->val_off))
        return -1;
    h->name_len = name_len;
    h->val_len = val ? val_len : -1;
    s->n_hdrs++;
    s->entries[s->n - 1].hdr_count++;
    return 0;
}

int tide_utf8_valid(const char *buf, int32_t len) {
    const unsigned char *p = (const unsigned char *)buf;
    const unsigned char *end = p + (len > 0 ? len : 0);
    while (p < end) {
        /* ASCII fast path, 32 then eight bytes at a time */
        while (end - p >= 32) {
            uint64_t a, b, c, d;
            memcpy(&a, p, 8);
            memcpy(&b, p + 8, 8);
            memcpy(&c, p + 16, 8);
            memcpy(&d, p + 24, 8);
            if ((a | b | c | d) & 0x8080808080808080ULL) break;
            p += 32;
        }
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            if (w & 0x8080808080808080ULL) break;
            p += 8;
        }
        if (p >= end) break;
        unsigned c = *p;
        if (c < 0x80) { p++; continue; }
        int n;
        unsigned min;
        if (c >= 0xC2 && c <= 0xDF) { n = 1; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { n = 2; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { n = 3; min = 0x10000; }
        else return 0;
        if (end - p <= n) return 0;
        unsigned cp = c & (0x3F >> n);
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        p += n + 1;
    }
    return 1;
}

/* Does an exponent of three digits or more follow the 'e' at p? */
static int big_exponent(const char *p, const char *end) {
    p++;
    if (p < end && *p == '+') p++;
    return end - p >= 3 && p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' &&
           p[2] <= '9';
}

int tide_json_may_overflow(const char *buf, int32_t len) {
    const char *end = buf + (len > 0 ? len : 0);
    /* memchr for the exponents: most texts hold a few e's, in words */
    for (const char *e = "eE"; *e; e++)
        for (const char *p = buf; (p = memchr(p, *e, (size_t)(end - p))); p++)
            if (big_exponent(p, end)) return 1;
    if (len <= 300) return 0; /* too short for 301 digits in a row */
    int32_t run = 0;
    for (const char *p = buf; p < end; p++) {
        run = *p >= '0' && *p <= '9' ? run + 1 : 0;
        if (run > 300) return 1;
    }
    return 0;
}
