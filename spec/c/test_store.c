/* C tests of the local state store: key layout, isolation, ranges, RocksDB. */
#include <dirent.h>
#include <rocksdb/c.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "store.h"

static char root[] = "/tmp/tide-test-store-XXXXXX";

static const char *dir(const char *name) {
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, name);
    return path;
}

/* A small write buffer (when given) comes with a small record cache, so that
 * writes pass through both into table files. */
static tide_store_db_t *open_db(const char *name, size_t write_buffer, char **err) {
    tide_store_opts_t o = {.path = dir(name), .write_buffer_bytes = write_buffer,
                           .cache_bytes = write_buffer ? 64 * 1024 : 0};
    return tide_store_open(&o, err);
}

#define PUT(db, s, p, k, v) \
    tide_store_put(db, s, p, k, sizeof(k) - 1, v, sizeof(v) - 1, NULL)

/* 1 when key k (a literal) maps to value v (a literal) */
static int has(tide_store_db_t *db, uint8_t s, int32_t p, const char *k, size_t kl,
               const char *v, size_t vl) {
    const char *got;
    size_t n;
    if (tide_store_get(db, s, p, k, kl, &got, &n, NULL) != 1) return 0;
    return n == vl && !memcmp(got, v, vl);
}
#define HAS(db, s, p, k, v) has(db, s, p, k, sizeof(k) - 1, v, sizeof(v) - 1)
#define ABSENT(db, s, p, k) absent(db, s, p, k, sizeof(k) - 1)

static int absent(tide_store_db_t *db, uint8_t s, int32_t p, const char *k, size_t kl) {
    const char *got = "x";
    size_t n = 1;
    return tide_store_get(db, s, p, k, kl, &got, &n, NULL) == 0 && !got && !n;
}

/* The iterator's entries as "key=value,..." with bytes outside printable
 * ASCII escaped as \xNN; the iterator is freed. */
static const char *drain(tide_store_iter_t *it) {
    static char out[4096];
    size_t o = 0;
    const char *k, *v;
    size_t kl, vl;
    out[0] = '\0';
    if (!it) return "(no iterator)";
    while (tide_store_iter_next(it, &k, &kl, &v, &vl) == 1) {
        for (int part = 0; part < 2; part++) {
            const char *b = part ? v : k;
            size_t n = part ? vl : kl;
            for (size_t i = 0; i < n && o < sizeof(out) - 8; i++) {
                unsigned char c = (unsigned char)b[i];
                if (c > 0x20 && c < 0x7f && c != '\\' && c != ',' && c != '=') out[o++] = (char)c;
                else o += (size_t)sprintf(out + o, "\\x%02x", c);
            }
            out[o++] = part ? ',' : '=';
        }
        out[o] = '\0';
    }
    CHECK(tide_store_iter_next(it, &k, &kl, &v, &vl) == 0); /* stays at the end */
    tide_store_iter_free(it);
    return out;
}

/* Table files in a database directory: proof that memtables were flushed. */
static int sst_files(const char *path) {
    DIR *d = opendir(path);
    int n = 0;
    for (struct dirent *de; d && (de = readdir(d));) n += strstr(de->d_name, ".sst") != NULL;
    if (d) closedir(d);
    return n;
}

static int count(tide_store_iter_t *it) {
    const char *k, *v;
    size_t kl, vl;
    int n = 0;
    while (tide_store_iter_next(it, &k, &kl, &v, &vl) == 1) n++;
    tide_store_iter_free(it);
    return n;
}

int main(int argc, char **argv) {
    char *err = NULL;
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }

    CASE("open creates the directory");
    tide_store_db_t *db = open_db("a", 0, &err);
    CHECK(db && !err);
    struct stat st;
    CHECK(stat(dir("a"), &st) == 0 && S_ISDIR(st.st_mode));

    CASE("put, get, delete round trip with binary keys and values");
    CHECK(tide_store_put(db, 1, 0, "k\0ey", 4, "v\0a\0l", 5, &err) == 0);
    CHECK(has(db, 1, 0, "k\0ey", 4, "v\0a\0l", 5));
    CHECK(absent(db, 1, 0, "k", 1));       /* a prefix of the key is another key */
    CHECK(absent(db, 1, 0, "k\0eyz", 5));  /* and so is an extension */
    CHECK(tide_store_put(db, 1, 0, "", 0, "", 0, &err) == 0); /* empty key, empty value */
    CHECK(has(db, 1, 0, "", 0, "", 0));
    CHECK(tide_store_put(db, 1, 0, "k\0ey", 4, "new", 3, &err) == 0); /* overwrite */
    CHECK(HAS(db, 1, 0, "k\0ey", "new"));
    CHECK(tide_store_delete(db, 1, 0, "k\0ey", 4, &err) == 0);
    CHECK(absent(db, 1, 0, "k\0ey", 4));
    CHECK(tide_store_delete(db, 1, 0, "never", 5, &err) == 0); /* deleting nothing is fine */
    char big[1000];
    for (size_t i = 0; i < sizeof(big); i++) big[i] = (char)(i * 7);
    CHECK(tide_store_put(db, 1, 0, big, sizeof(big), big, 10, &err) == 0); /* heap key path */
    CHECK(has(db, 1, 0, big, sizeof(big), big, 10));
    CHECK(absent(db, 1, 0, big, sizeof(big) - 1));
    CHECK(!err);

    CASE("overwrites of a cached key, shorter, longer, after a delete, reach RocksDB");
    CHECK(PUT(db, 3, 0, "n", "123456789") == 0 && HAS(db, 3, 0, "n", "123456789"));
    CHECK(PUT(db, 3, 0, "n", "7") == 0 && HAS(db, 3, 0, "n", "7"));       /* in place */
    CHECK(tide_store_put(db, 3, 0, "n", 1, big, sizeof(big), &err) == 0); /* outgrows it */
    CHECK(has(db, 3, 0, "n", 1, big, sizeof(big)));
    CHECK(tide_store_delete(db, 3, 0, "n", 1, &err) == 0 && absent(db, 3, 0, "n", 1));
    CHECK(PUT(db, 3, 0, "n", "8") == 0 && HAS(db, 3, 0, "n", "8"));
    CHECK(tide_store_flush(db, &err) == 0 && !err);
    CHECK(!strcmp(drain(tide_store_iter(db, 3, 0, NULL, 0, NULL, 0)), "n=8,"));

    CASE("a get's value stays valid until the next get");
    CHECK(PUT(db, 1, 0, "g1", "first") == 0 && PUT(db, 1, 0, "g2", "second") == 0);
    const char *v1, *v2;
    size_t n1, n2;
    CHECK(tide_store_get(db, 1, 0, "g1", 2, &v1, &n1, &err) == 1);
    CHECK(n1 == 5 && !memcmp(v1, "first", 5));
    CHECK(tide_store_get(db, 1, 0, "g2", 2, &v2, &n2, &err) == 1);
    CHECK(n2 == 6 && !memcmp(v2, "second", 6));

    CASE("the same key in different stores and partitions is different data");
    CHECK(PUT(db, 2, 0, "card", "s2p0") == 0);
    CHECK(PUT(db, 3, 0, "card", "s3p0") == 0);
    CHECK(PUT(db, 2, 1, "card", "s2p1") == 0);
    CHECK(PUT(db, 2, 256, "card", "s2p256") == 0); /* differs from 1 only in byte order */
    CHECK(HAS(db, 2, 0, "card", "s2p0") && HAS(db, 3, 0, "card", "s3p0"));
    CHECK(HAS(db, 2, 1, "card", "s2p1") && HAS(db, 2, 256, "card", "s2p256"));
    CHECK(ABSENT(db, 4, 0, "card") && ABSENT(db, 2, 2, "card"));
    CHECK(tide_store_delete(db, 2, 1, "card", 4, &err) == 0);
    CHECK(ABSENT(db, 2, 1, "card") && HAS(db, 2, 0, "card", "s2p0"));
    CHECK(HAS(db, 3, 0, "card", "s3p0") && HAS(db, 2, 256, "card", "s2p256"));

    CASE("a negative partition is refused");
    CHECK(tide_store_put(db, 1, -1, "k", 1, "v", 1, &err) == -1);
    CHECK(err && strstr(err, "partition -1"));
    free(err);
    err = NULL;
    CHECK(tide_store_iter(db, 1, -1, NULL, 0, NULL, 0) == NULL);
    CHECK(tide_store_delete_partition(db, -1, &err) == -1);
    free(err);
    err = NULL;

    /* Store 10, partition 5, with neighbours on every side that sort right
     * next to it: partition 4's and 6's keys, store 9's and 11's. */
    const char *ks[] = {"b", "a", "\xff", "\xff\xff", "ab", "", "\x00", "a\x00", "c", "bb"};
    const size_t kls[] = {1, 1, 1, 2, 2, 0, 1, 2, 1, 2};
    for (int i = 0; i < 10; i++)
        CHECK(tide_store_put(db, 10, 5, ks[i], kls[i], "v", 1, &err) == 0);
    CHECK(PUT(db, 10, 4, "\xff\xff\xff", "p4") == 0);
    CHECK(PUT(db, 10, 6, "", "p6") == 0 && PUT(db, 10, 6, "\x00", "p6") == 0);
    CHECK(PUT(db, 9, 5, "\xff", "s9") == 0 && PUT(db, 11, 5, "", "s11") == 0);

    CASE("range iteration is in byte order and stays in its partition");
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 5, NULL, 0, NULL, 0)),
                  "=v,\\x00=v,a=v,a\\x00=v,ab=v,b=v,bb=v,c=v,\\xff=v,\\xff\\xff=v,"));
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 5, "a\x00", 2, "bb", 2)),
                  "a\\x00=v,ab=v,b=v,"));
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 5, "b", 1, NULL, 0)),
                  "b=v,bb=v,c=v,\\xff=v,\\xff\\xff=v,"));
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 5, NULL, 0, "a\x00", 2)), "=v,\\x00=v,a=v,"));
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 5, "\xff", 1, NULL, 0)), "\\xff=v,\\xff\\xff=v,"));
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 5, "c", 1, "b", 1)), "")); /* inverted */
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 5, "b", 1, "b", 1)), ""));
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 7, NULL, 0, NULL, 0)), "")); /* empty partition */
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 6, NULL, 0, NULL, 0)), "=p6,\\x00=p6,"));

    CASE("prefix iteration returns exactly the keys starting with the prefix");
    CHECK(PUT(db, 10, 5, "abc", "v") == 0 && PUT(db, 10, 5, "ac", "v") == 0);
    CHECK(!strcmp(drain(tide_store_iter_prefix(db, 10, 5, "ab", 2)), "ab=v,abc=v,"));
    CHECK(!strcmp(drain(tide_store_iter_prefix(db, 10, 5, "a", 1)),
                  "a=v,a\\x00=v,ab=v,abc=v,ac=v,"));
    CHECK(!strcmp(drain(tide_store_iter_prefix(db, 10, 5, "\xff", 1)), "\\xff=v,\\xff\\xff=v,"));
    CHECK(!strcmp(drain(tide_store_iter_prefix(db, 10, 5, "\xff\xff", 2)), "\\xff\\xff=v,"));
    CHECK(!strcmp(drain(tide_store_iter_prefix(db, 10, 5, "\xff\xff\xff", 3)), ""));
    CHECK(!strcmp(drain(tide_store_iter_prefix(db, 10, 5, "zz", 2)), ""));
    CHECK(count(tide_store_iter_prefix(db, 10, 5, NULL, 0)) == 12); /* the whole partition */
    CHECK(!strcmp(drain(tide_store_iter_prefix(db, 9, 5, "\xff", 1)), "\\xff=s9,"));
    CHECK(!strcmp(drain(tide_store_iter_prefix(db, 10, 4, "\xff", 1)), "\\xff\\xff\\xff=p4,"));

    CASE("the last store and partition are bounded too");
    CHECK(PUT(db, 255, INT32_MAX, "\xff\xff", "last") == 0);
    CHECK(PUT(db, 255, INT32_MAX - 1, "\xff\xff", "before") == 0);
    CHECK(!strcmp(drain(tide_store_iter_prefix(db, 255, INT32_MAX, "\xff", 1)),
                  "\\xff\\xff=last,"));
    CHECK(!strcmp(drain(tide_store_iter_prefix(db, 255, INT32_MAX - 1, "\xff", 1)),
                  "\\xff\\xff=before,"));
    CHECK(!strcmp(drain(tide_store_iter(db, 0, 0, NULL, 0, NULL, 0)), "")); /* the first */

    CASE("an iterator sees the data as of its creation");
    tide_store_iter_t *it = tide_store_iter_prefix(db, 10, 5, "ab", 2);
    CHECK(PUT(db, 10, 5, "abd", "later") == 0);
    CHECK(tide_store_delete(db, 10, 5, "ab", 2, &err) == 0);
    CHECK(!strcmp(drain(it), "ab=v,abc=v,"));
    CHECK(!strcmp(drain(tide_store_iter_prefix(db, 10, 5, "ab", 2)), "abc=v,abd=later,"));

    CASE("delete_range removes [from, to) of one partition only");
    CHECK(tide_store_delete_range(db, 10, 5, "ab", 2, "b", 1, &err) == 0);
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 5, NULL, 0, "c", 1)),
                  "=v,\\x00=v,a=v,a\\x00=v,b=v,bb=v,"));
    CHECK(tide_store_delete_range(db, 10, 5, "c", 1, "a", 1, &err) == 0); /* inverted: no-op */
    CHECK(count(tide_store_iter(db, 10, 5, NULL, 0, NULL, 0)) == 9);
    CHECK(tide_store_delete_range(db, 10, 5, "\xff", 1, NULL, 0, &err) == 0); /* to the end */
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 5, "bb", 2, NULL, 0)), "bb=v,c=v,"));
    CHECK(tide_store_delete_range(db, 10, 5, NULL, 0, "a", 1, &err) == 0); /* from the start */
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 5, NULL, 0, NULL, 0)),
                  "a=v,a\\x00=v,b=v,bb=v,c=v,"));
    CHECK(tide_store_delete_range(db, 10, 5, NULL, 0, NULL, 0, &err) == 0); /* everything */
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 5, NULL, 0, NULL, 0)), ""));
    CHECK(HAS(db, 10, 4, "\xff\xff\xff", "p4") && HAS(db, 10, 6, "", "p6"));
    CHECK(HAS(db, 9, 5, "\xff", "s9") && HAS(db, 11, 5, "", "s11"));
    CHECK(tide_store_put(db, 10, 5, "a", 1, "back", 4, &err) == 0); /* writable again */
    CHECK(HAS(db, 10, 5, "a", "back"));
    CHECK(!err);

    CASE("delete_partition removes every store of that partition, nothing else");
    for (int s = 0; s < 256; s += 51) CHECK(tide_store_put(db, (uint8_t)s, 7, "x", 1, "7", 1, &err) == 0);
    CHECK(PUT(db, 0, 6, "\xff", "6") == 0 && PUT(db, 255, 8, "", "8") == 0);
    CHECK(PUT(db, 255, 7, "\xff\xff\xff\xff", "7") == 0);
    CHECK(tide_store_delete_partition(db, 7, &err) == 0);
    for (int s = 0; s < 256; s += 51) CHECK(ABSENT(db, (uint8_t)s, 7, "x"));
    CHECK(ABSENT(db, 255, 7, "\xff\xff\xff\xff"));
    CHECK(HAS(db, 0, 6, "\xff", "6") && HAS(db, 255, 8, "", "8"));
    CHECK(HAS(db, 2, 0, "card", "s2p0") && HAS(db, 10, 5, "a", "back"));

    CASE("an iterator freed after its db is closed is harmless");
    tide_store_iter_t *late = tide_store_iter(db, 2, 0, NULL, 0, NULL, 0);
    CHECK(late != NULL);
    CHECK(tide_store_flush(db, &err) == 0 && !err);
    tide_store_close(db);
    const char *k, *v;
    size_t kl, vl;
    CHECK(tide_store_iter_next(late, &k, &kl, &v, &vl) == 0);
    tide_store_iter_free(late);

    CASE("data survives close and reopen");
    db = open_db("a", 0, &err);
    CHECK(db && !err);
    CHECK(HAS(db, 2, 0, "card", "s2p0") && HAS(db, 2, 256, "card", "s2p256"));
    CHECK(has(db, 1, 0, big, sizeof(big), big, 10) && HAS(db, 10, 5, "a", "back"));
    CHECK(ABSENT(db, 2, 1, "card") && ABSENT(db, 0, 7, "x"));
    CHECK(!strcmp(drain(tide_store_iter(db, 10, 5, NULL, 0, NULL, 0)), "a=back,"));
    tide_store_close(db);

    CASE("on disk a key is [store][partition big-endian][key]");
    rocksdb_options_t *ro_opts = rocksdb_options_create();
    rocksdb_t *raw = rocksdb_open_for_read_only(ro_opts, dir("a"), 0, &err);
    CHECK(raw && !err);
    if (raw) {
        rocksdb_readoptions_t *rro = rocksdb_readoptions_create();
        size_t rn = 0;
        char *rv = rocksdb_get(raw, rro, "\x02\x00\x00\x01\x00" "card", 9, &rn, &err);
        CHECK(rv && rn == 6 && !memcmp(rv, "s2p256", 6));
        free(rv);
        rv = rocksdb_get(raw, rro, "\x0a\x00\x00\x00\x05" "a", 6, &rn, &err);
        CHECK(rv && rn == 4 && !memcmp(rv, "back", 4));
        free(rv);
        rocksdb_readoptions_destroy(rro);
        rocksdb_close(raw);
    }
    rocksdb_options_destroy(ro_opts);
    free(err);
    err = NULL;

    CASE("200k keys, far past the write buffer, all read back");
    db = open_db("big", 1 << 20, &err); /* 1 MiB of memtables: many flushes */
    CHECK(db && !err);
    enum { N = 200000 };
    char key[16], val[32];
    int bad = 0;
    for (int i = 0; i < N && !bad; i++) {
        int kn = snprintf(key, sizeof(key), "u%07d", (i * 7919) % N); /* not in order */
        int vn = snprintf(val, sizeof(val), "value-%d", (i * 7919) % N);
        bad = tide_store_put(db, 3, 1, key, (size_t)kn, val, (size_t)vn, &err) != 0;
    }
    CHECK(!bad && !err);
    for (int i = 0; i < N && !bad; i += 7) {
        int kn = snprintf(key, sizeof(key), "u%07d", i);
        int vn = snprintf(val, sizeof(val), "value-%d", i);
        bad = !has(db, 3, 1, key, (size_t)kn, val, (size_t)vn);
    }
    CHECK(!bad);
    CHECK(sst_files(dir("big")) > 0);
    CHECK(count(tide_store_iter(db, 3, 1, NULL, 0, NULL, 0)) == N);
    CHECK(count(tide_store_iter_prefix(db, 3, 1, "u000010", 7)) == 10);
    CHECK(count(tide_store_iter(db, 3, 0, NULL, 0, NULL, 0)) == 0);
    uint64_t mem = tide_store_memory_bytes(db);
    CHECK(mem > 0 && mem < 64u << 20);
    CHECK(tide_store_delete_partition(db, 1, &err) == 0);
    CHECK(count(tide_store_iter(db, 3, 1, NULL, 0, NULL, 0)) == 0);
    CHECK(ABSENT(db, 3, 1, "u0000007"));
    tide_store_close(db);

    CASE("a corrupt database is refused with a message, not repaired");
    db = open_db("bad", 0, &err);
    CHECK(db && PUT(db, 1, 0, "k", "v") == 0);
    tide_store_close(db);
    FILE *f = fopen(dir("bad/CURRENT"), "w");
    CHECK(f != NULL);
    if (f) {
        fputs("garbage that names no manifest\n", f);
        fclose(f);
    }
    db = open_db("bad", 0, &err);
    CHECK(db == NULL);
    CHECK(err && strstr(err, dir("bad")));
    if (err) printf("  (refused: %s)\n", err);
    free(err);
    err = NULL;
    CHECK(stat(dir("bad/CURRENT"), &st) == 0); /* left as it was for the caller */
    tide_store_close(db);

    CASE("wipe removes a database; a missing one is fine; other data is refused");
    CHECK(tide_store_wipe(dir("bad"), &err) == 0 && !err);
    CHECK(stat(dir("bad"), &st) == -1);
    CHECK(tide_store_wipe(dir("bad"), &err) == 0 && !err);
    db = open_db("bad", 0, &err); /* fresh after a wipe */
    CHECK(db && !err && ABSENT(db, 1, 0, "k"));
    tide_store_close(db);
    CHECK(mkdir(dir("notdb"), 0700) == 0);
    f = fopen(dir("notdb/precious"), "w");
    if (f) fclose(f);
    CHECK(tide_store_wipe(dir("notdb"), &err) == -1);
    CHECK(err && strstr(err, "not a RocksDB database"));
    free(err);
    err = NULL;
    CHECK(stat(dir("notdb/precious"), &st) == 0);
    unlink(dir("notdb/precious"));
    CHECK(tide_store_wipe(dir("notdb"), &err) == 0); /* empty: fine */
    CHECK(tide_store_wipe(dir("a"), &err) == 0 && tide_store_wipe(dir("big"), &err) == 0);
    CHECK(tide_store_wipe(dir("bad"), &err) == 0 && !err);
    CHECK(rmdir(root) == 0); /* nothing left behind */

    return check_report(argc > 1 ? argv[1] : NULL);
}
