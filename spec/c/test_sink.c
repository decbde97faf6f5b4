/* C tests of the emit arena and the UTF-8 check (core/sink.c). */
#include "check.h"
#include "sink.h"

int main(int argc, char **argv) {
    tide_sink_t s;
    tide_sink_init(&s);
    /* Three input records; an output takes the timestamp of the record it
     * came from (-1: unknown, which the producer stamps). */
    tide_rec_t recs[3] = {{.timestamp = 1000}, {.timestamp = -1}, {.timestamp = 3000}};
    tide_batch_t b = {recs, 3, 0};
    s.batch = &b;

    CASE("emit keeps keys, values, nulls and headers");
    CHECK(tide_sink_emit(&s, 0, "k", 1, "value", 5) == 0);
    CHECK(tide_sink_emit_header(&s, "h", 1, "x", 1) == 0);
    b.cursor = 1;
    CHECK(tide_sink_emit(&s, 1, NULL, -1, NULL, -1) == 0);
    CHECK(s.n == 2);
    CHECK(memcmp(tide_sink_key(&s, &s.entries[0]), "k", 1) == 0);
    CHECK(memcmp(tide_sink_val(&s, &s.entries[0]), "value", 5) == 0);
    CHECK(s.entries[0].hdr_count == 1);
    CHECK(s.entries[1].source == 1);
    CHECK(tide_sink_key(&s, &s.entries[1]) == NULL);
    CHECK(tide_sink_val(&s, &s.entries[1]) == NULL);

    CASE("an output carries its input's timestamp; outside a batch, the sink's");
    CHECK(s.entries[0].timestamp == 1000);
    CHECK(s.entries[1].timestamp == -1); /* unknown: stamped when produced */
    s.batch = NULL;
    s.timestamp = 5000;
    CHECK(tide_sink_emit(&s, 0, NULL, -1, "p", 1) == 0);
    CHECK(s.entries[2].source == -1 && s.entries[2].timestamp == 5000);
    s.batch = &b; /* in a batch, a set sink timestamp wins over the record's */
    CHECK(tide_sink_emit(&s, 0, NULL, -1, "q", 1) == 0);
    CHECK(s.entries[3].source == 1 && s.entries[3].timestamp == 5000);
    s.timestamp = -1;
    tide_sink_truncate(&s, 2, INT32_MIN);

    CASE("truncate drops the tail and its bytes and headers");
    b.cursor = 2;
    tide_sink_emit(&s, 0, "dropme", 6, "xxxxxxxx", 8);
    tide_sink_emit_header(&s, "gone", 4, "y", 1);
    size_t bytes_before = s.entries[2].key_off;
    tide_sink_truncate(&s, 2, INT32_MIN);
    CHECK(s.n == 2);
    CHECK(s.n_hdrs == 1);
    CHECK(s.bytes_len == bytes_before);

    CASE("a failed record's emits go and its changelog entries stay, bytes and all");
    tide_sink_clear(&s);
    b.cursor = 0;
    CHECK(tide_sink_emit(&s, 0, "k0", 2, "kept", 4) == 0);
    CHECK(tide_sink_emit_header(&s, "h0", 2, "v0", 2) == 0);
    b.cursor = 1; /* the record that fails: */
    CHECK(tide_sink_emit(&s, 1, "out", 3, "dropped", 7) == 0);
    CHECK(tide_sink_emit_header(&s, "h1", 2, "v1", 2) == 0);
    CHECK(tide_sink_emit_partition(&s, -2, 1, "a", 1, "j1", 2) == 0);   /* store 0 */
    CHECK(tide_sink_emit(&s, 0, "out2", 4, "dropped too", 11) == 0);
    CHECK(tide_sink_emit_partition(&s, -3, 1, "bb", 2, NULL, -1) == 0); /* store 1, a delete */
    tide_sink_truncate(&s, 1, -2);
    CHECK(s.n == 3 && s.n_hdrs == 1);
    CHECK(s.entries[0].hdr_count == 1 && !memcmp(tide_sink_val(&s, &s.entries[0]), "kept", 4));
    CHECK(s.entries[1].output == -2 && s.entries[1].partition == 1 && s.entries[1].source == 1);
    CHECK(s.entries[1].key_len == 1 && !memcmp(tide_sink_key(&s, &s.entries[1]), "a", 1));
    CHECK(s.entries[1].val_len == 2 && !memcmp(tide_sink_val(&s, &s.entries[1]), "j1", 2));
    CHECK(s.entries[1].hdr_count == 0);
    CHECK(s.entries[2].output == -3 && !memcmp(tide_sink_key(&s, &s.entries[2]), "bb", 2));
    CHECK(tide_sink_val(&s, &s.entries[2]) == NULL);
    CHECK(s.bytes_len == 2 + 4 + 2 + 2 /* h0 v0 */ + 1 + 2 + 2);

    CASE("a header needs a record to attach to");
    tide_sink_clear(&s);
    CHECK(tide_sink_emit_header(&s, "h", 1, "v", 1) == -1);

    CASE("the arena grows past its first allocation");
    char big[10000];
    memset(big, 'z', sizeof(big));
    for (int i = 0; i < 100; i++) CHECK(tide_sink_emit(&s, 0, NULL, -1, big, (int32_t)sizeof(big)) == 0);
    CHECK(s.n == 100 && memcmp(tide_sink_val(&s, &s.entries[99]), big, sizeof(big)) == 0);

    CASE("swap hands the filled arena over and leaves the other's, each keeping its batch");
    tide_sink_t other;
    tide_sink_init(&other);
    other.timestamp = 7;
    CHECK(tide_sink_emit(&other, 2, "ok", 2, "ov", 2) == 0);
    char *filled = s.bytes;
    tide_sink_swap(&s, &other);
    CHECK(other.n == 100 && other.bytes == filled && other.batch == NULL && other.timestamp == 7);
    CHECK(memcmp(tide_sink_val(&other, &other.entries[99]), big, sizeof(big)) == 0);
    CHECK(s.n == 1 && s.entries[0].output == 2 && !memcmp(tide_sink_key(&s, &s.entries[0]), "ok", 2));
    CHECK(s.batch == &b && s.timestamp == -1);
    tide_sink_free(&other);

    CASE("shrink gives an empty sink's memory back, and it grows again on the next emit");
    tide_sink_shrink(&s); /* not empty: kept */
    CHECK(s.n == 1 && s.bytes != NULL && !memcmp(tide_sink_val(&s, &s.entries[0]), "ov", 2));
    tide_sink_clear(&s);
    tide_sink_shrink(&s);
    CHECK(s.bytes == NULL && s.entries == NULL && s.hdrs == NULL && s.bytes_cap == 0 && s.cap == 0);
    CHECK(s.batch == &b);
    CHECK(tide_sink_emit(&s, 0, "k", 1, "again", 5) == 0);
    CHECK(tide_sink_emit_header(&s, "h", 1, "v", 1) == 0);
    CHECK(s.n == 1 && !memcmp(tide_sink_val(&s, &s.entries[0]), "again", 5));
    tide_sink_free(&s);

    CASE("utf8");
    CHECK(tide_utf8_valid("plain ascii text, long enough for the fast path", 47));
    CHECK(tide_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
    CHECK(!tide_utf8_valid("\xff", 1));
    CHECK(!tide_utf8_valid("\xc0\xaf", 2));         /* overlong */
    CHECK(!tide_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!tide_utf8_valid("abc\xe2\x82", 5));      /* truncated */
    CHECK(!tide_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    CHECK(tide_utf8_valid("", 0));
    /* past the 32-byte ASCII steps: the first non-ASCII byte at any place */
    char text[80];
    for (int at = 0; at < 70; at++) {
        memset(text, 'a', sizeof(text));
        text[at] = (char)0xff;
        CHECK(!tide_utf8_valid(text, (int32_t)sizeof(text)));
        memcpy(text + at, "\xc3\xa9", 2); /* a two-byte character there is fine */
        CHECK(tide_utf8_valid(text, (int32_t)sizeof(text)));
    }

    CASE("json numbers that may be too large for a double");
#define OVER(s) tide_json_may_overflow(s, (int32_t)strlen(s))
    CHECK(OVER("{\"a\":1e999}") && OVER("[2E+308]") && OVER("1e100"));
    CHECK(!OVER("{\"merchant\":\"e12\",\"x\":1e99,\"y\":2E-400,\"z\":1.5e+10}"));
    CHECK(!OVER("{\"a\":1e9") && !OVER("e") && !OVER("1e") && !OVER("1e+") && !OVER(""));
    CHECK(tide_json_may_overflow("1e999", 4) == 0); /* never past len */
    char digits[320];
    memset(digits, '7', sizeof(digits));
    CHECK(tide_json_may_overflow(digits, 301) && !tide_json_may_overflow(digits, 300));
    digits[150] = ',';
    CHECK(!tide_json_may_overflow(digits, (int32_t)sizeof(digits)));
#undef OVER
    return check_report(argc > 1 ? argv[1] : NULL);
}
