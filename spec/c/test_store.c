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

/* ---------------------------------------------------------------- transactions */

static tide_store_db_t *open_cache(const char *name, size_t cache_bytes) {
    tide_store_opts_t o = {.path = dir(name), .cache_bytes = cache_bytes};
    char *err = NULL;
    tide_store_db_t *db = tide_store_open(&o, &err);
    if (!db) printf("  (open %s: %s)\n", name, err);
    free(err);
    return db;
}

static tide_store_db_t *reopen(tide_store_db_t *db, const char *name, size_t cache_bytes) {
    tide_store_close(db);
    return open_cache(name, cache_bytes);
}

static int commit(tide_store_db_t *db) {
    char *err = NULL;
    int rc = tide_store_commit(db, &err);
    if (err) printf("  (commit: %s)\n", err);
    free(err);
    return rc;
}

/* Key i of a numbered set, and a value of n bytes that says which write it was. */
static size_t nkey(char *b, int i) { return (size_t)sprintf(b, "k%05d", i); }
static size_t nval(char *b, int i, int gen, size_t n) {
    size_t l = (size_t)sprintf(b, "%d.%d:", i, gen);
    while (l < n) b[l++] = 'x';
    b[l] = '\0';
    return l;
}

/* keys [from, to) of (s, p) written with values of generation gen */
static int put_n(tide_store_db_t *db, uint8_t s, int32_t p, int from, int to, int gen, size_t vl,
                 int committed) {
    char k[16], v[512];
    for (int i = from; i < to; i++) {
        size_t kl = nkey(k, i), l = nval(v, i, gen, vl);
        int rc = committed ? tide_store_put_committed(db, s, p, k, kl, v, l, NULL)
                           : tide_store_put(db, s, p, k, kl, v, l, NULL);
        if (rc) return -1;
    }
    return 0;
}

/* how many of keys [from, to) of (s, p) hold generation gen's value */
static int has_n(tide_store_db_t *db, uint8_t s, int32_t p, int from, int to, int gen, size_t vl) {
    char k[16], v[512];
    int n = 0;
    for (int i = from; i < to; i++) {
        size_t kl = nkey(k, i), l = nval(v, i, gen, vl);
        n += has(db, s, p, k, kl, v, l);
    }
    return n;
}

static int absent_n(tide_store_db_t *db, uint8_t s, int32_t p, int from, int to) {
    char k[16];
    int n = 0;
    for (int i = from; i < to; i++) n += absent(db, s, p, k, nkey(k, i));
    return n;
}

static void test_commit_and_crash(void) {
    CASE("uncommitted writes are lost by a close without commit, as in a crash");
    tide_store_db_t *db = open_cache("tx", 0);
    CHECK(db != NULL);
    if (!db) return;
    CHECK(PUT(db, 1, 0, "a", "1") == 0 && PUT(db, 1, 0, "b", "2") == 0);
    CHECK(commit(db) == 0);
    CHECK(PUT(db, 1, 0, "a", "10") == 0 && tide_store_delete(db, 1, 0, "b", 1, NULL) == 0);
    CHECK(PUT(db, 1, 0, "c", "3") == 0);
    CHECK(HAS(db, 1, 0, "a", "10") && ABSENT(db, 1, 0, "b") && HAS(db, 1, 0, "c", "3"));
    db = reopen(db, "tx", 0);
    CHECK(db && HAS(db, 1, 0, "a", "1") && HAS(db, 1, 0, "b", "2") && ABSENT(db, 1, 0, "c"));
    if (!db) return;

    CASE("a flush (a checkpoint between two commits) writes nothing uncommitted");
    CHECK(PUT(db, 1, 0, "a", "10") == 0 && PUT(db, 1, 0, "c", "3") == 0);
    CHECK(tide_store_put_committed(db, 1, 0, "r", 1, "restored", 8, NULL) == 0);
    char *ferr = NULL;
    CHECK(tide_store_flush(db, &ferr) == 0 && !ferr);
    free(ferr);
    CHECK(HAS(db, 1, 0, "a", "10") && HAS(db, 1, 0, "c", "3")); /* still there, uncommitted */
    CHECK(tide_store_rollback(db, -1) == 2 && HAS(db, 1, 0, "a", "1") && ABSENT(db, 1, 0, "c"));
    CHECK(PUT(db, 1, 0, "c", "3") == 0 && tide_store_flush(db, NULL) == 0);
    db = reopen(db, "tx", 0);
    CHECK(db && HAS(db, 1, 0, "a", "1") && ABSENT(db, 1, 0, "c") && HAS(db, 1, 0, "r", "restored"));
    if (!db) return;

    CASE("a commit makes them survive it");
    CHECK(PUT(db, 1, 0, "a", "10") == 0 && tide_store_delete(db, 1, 0, "b", 1, NULL) == 0);
    CHECK(PUT(db, 1, 0, "c", "3") == 0 && commit(db) == 0);
    db = reopen(db, "tx", 0);
    CHECK(db && HAS(db, 1, 0, "a", "10") && ABSENT(db, 1, 0, "b") && HAS(db, 1, 0, "c", "3"));
    tide_store_close(db);
    CHECK(tide_store_wipe(dir("tx"), NULL) == 0);
}

static void test_rollback(void) {
    CASE("a rollback brings back the last commit: values, deletes, new keys");
    tide_store_db_t *db = open_cache("rb", 0);
    CHECK(db != NULL);
    if (!db) return;
    CHECK(PUT(db, 2, 0, "a", "1") == 0 && PUT(db, 2, 0, "b", "2") == 0);
    CHECK(PUT(db, 2, 1, "a", "1") == 0 && commit(db) == 0);
    CHECK(PUT(db, 2, 0, "a", "10") == 0 && tide_store_delete(db, 2, 0, "b", 1, NULL) == 0);
    char big[300];
    memset(big, 'y', sizeof(big));
    CHECK(tide_store_put(db, 2, 0, "b", 1, big, sizeof(big), NULL) == 0); /* outgrows it */
    CHECK(PUT(db, 2, 0, "c", "3") == 0 && PUT(db, 2, 1, "a", "11") == 0);
    tide_store_iter_free(tide_store_iter(db, 2, 0, NULL, 0, NULL, 0)); /* indexes store 2 */
    CHECK(tide_store_rollback(db, 0) == 3);
    CHECK(HAS(db, 2, 0, "a", "1") && HAS(db, 2, 0, "b", "2") && ABSENT(db, 2, 0, "c"));
    CHECK(!strcmp(drain(tide_store_iter(db, 2, 0, NULL, 0, NULL, 0)), "a=1,b=2,"));

    CASE("a rollback of one partition keeps the others' writes; -1 rolls back all");
    CHECK(HAS(db, 2, 1, "a", "11"));
    CHECK(!strcmp(drain(tide_store_iter(db, 2, 1, NULL, 0, NULL, 0)), "a=11,"));
    CHECK(tide_store_rollback(db, -1) == 1 && HAS(db, 2, 1, "a", "1"));
    CHECK(tide_store_rollback(db, -1) == 0);

    CASE("a commit after a rollback writes nothing of what was rolled back");
    CHECK(PUT(db, 2, 0, "a", "99") == 0 && PUT(db, 2, 0, "d", "4") == 0);
    CHECK(tide_store_rollback(db, -1) == 2 && commit(db) == 0);
    db = reopen(db, "rb", 0);
    CHECK(db && HAS(db, 2, 0, "a", "1") && ABSENT(db, 2, 0, "d") && HAS(db, 2, 0, "b", "2"));
    if (!db) return;

    CASE("a rollback over values read from RocksDB reads them again");
    CHECK(HAS(db, 2, 0, "a", "1")); /* now cached, clean */
    CHECK(PUT(db, 2, 0, "a", "7") == 0 && HAS(db, 2, 0, "a", "7")); /* overwritten in place */
    CHECK(tide_store_rollback(db, 0) == 1 && HAS(db, 2, 0, "a", "1"));
    tide_store_close(db);
    CHECK(tide_store_wipe(dir("rb"), NULL) == 0);
}

static void test_merge(void) {
    CASE("an iterator merges uncommitted puts and deletes over RocksDB, in order");
    tide_store_db_t *db = open_cache("merge", 0);
    CHECK(db != NULL);
    if (!db) return;
    CHECK(PUT(db, 5, 1, "b", "c") == 0 && PUT(db, 5, 1, "d", "c") == 0);
    CHECK(PUT(db, 5, 1, "f", "c") == 0 && PUT(db, 5, 1, "h", "c") == 0);
    CHECK(PUT(db, 5, 1, "j", "c") == 0 && commit(db) == 0);
    /* written before the store's first iterator: indexed when it comes */
    CHECK(PUT(db, 5, 1, "a", "u") == 0 && PUT(db, 5, 1, "d", "u") == 0);
    CHECK(tide_store_delete(db, 5, 1, "f", 1, NULL) == 0);
    /* neighbours on every side, uncommitted too */
    CHECK(PUT(db, 5, 2, "c", "p2") == 0 && PUT(db, 5, 0, "\xff", "p0") == 0);
    CHECK(PUT(db, 4, 1, "z", "s4") == 0 && PUT(db, 6, 1, "", "s6") == 0);
    CHECK(!strcmp(drain(tide_store_iter(db, 5, 1, NULL, 0, NULL, 0)), "a=u,b=c,d=u,h=c,j=c,"));
    /* written after it: indexed as they are made */
    CHECK(PUT(db, 5, 1, "g", "u") == 0 && PUT(db, 5, 1, "k", "u") == 0);
    CHECK(tide_store_delete(db, 5, 1, "h", 1, NULL) == 0);
    CHECK(tide_store_delete(db, 5, 1, "nothing", 7, NULL) == 0); /* a tombstone alone */
    CHECK(!strcmp(drain(tide_store_iter(db, 5, 1, NULL, 0, NULL, 0)),
                  "a=u,b=c,d=u,g=u,j=c,k=u,"));
    CHECK(!strcmp(drain(tide_store_iter(db, 5, 1, "b", 1, "h", 1)), "b=c,d=u,g=u,"));
    CHECK(!strcmp(drain(tide_store_iter(db, 5, 1, "c", 1, "j", 1)), "d=u,g=u,"));
    CHECK(!strcmp(drain(tide_store_iter_prefix(db, 5, 1, "d", 1)), "d=u,"));
    CHECK(!strcmp(drain(tide_store_iter_prefix(db, 5, 1, "f", 1)), ""));
    CHECK(!strcmp(drain(tide_store_iter(db, 5, 2, NULL, 0, NULL, 0)), "c=p2,"));
    CHECK(!strcmp(drain(tide_store_iter(db, 5, 0, NULL, 0, NULL, 0)), "\\xff=p0,"));
    CHECK(!strcmp(drain(tide_store_iter(db, 6, 1, NULL, 0, NULL, 0)), "=s6,"));

    CASE("what a merged iterator showed is what a commit writes");
    CHECK(commit(db) == 0);
    db = reopen(db, "merge", 0);
    CHECK(db && !strcmp(drain(tide_store_iter(db, 5, 1, NULL, 0, NULL, 0)),
                        "a=u,b=c,d=u,g=u,j=c,k=u,"));
    tide_store_close(db);
    CHECK(tide_store_wipe(dir("merge"), NULL) == 0);
}

static void test_writes_while_iterating(void) {
    CASE("a sweep that deletes every key it meets meets each once, in order");
    tide_store_db_t *db = open_cache("sweep", 64 * 1024);
    CHECK(db != NULL);
    if (!db) return;
    enum { N = 2000 };
    CHECK(put_n(db, 3, 0, 0, N, 1, 8, 0) == 0 && commit(db) == 0);
    CHECK(put_n(db, 3, 0, N / 2, N / 2 + 100, 2, 8, 0) == 0); /* uncommitted overrides */
    CHECK(put_n(db, 3, 0, N, N + 500, 2, 8, 0) == 0);         /* uncommitted new keys */
    tide_store_iter_t *it = tide_store_iter(db, 3, 0, NULL, 0, NULL, 0);
    const char *k, *v;
    size_t kl, vl;
    int met = 0, increasing = 1, right_values = 1;
    char last[32] = "";
    while (tide_store_iter_next(it, &k, &kl, &v, &vl) == 1) {
        char ks[32];
        snprintf(ks, sizeof(ks), "%.*s", (int)kl, k);
        if (met && strcmp(ks, last) <= 0) increasing = 0;
        int i = atoi(ks + 1), gen = (i >= N / 2 && i < N / 2 + 100) || i >= N ? 2 : 1;
        char want[64];
        size_t wl = nval(want, i, gen, 8);
        if (vl != wl || memcmp(v, want, wl)) right_values = 0;
        strcpy(last, ks);
        met++;
        CHECK(tide_store_delete(db, 3, 0, k, kl, NULL) == 0);
    }
    tide_store_iter_free(it);
    CHECK(met == N + 500 && increasing && right_values);
    CHECK(!strcmp(drain(tide_store_iter(db, 3, 0, NULL, 0, NULL, 0)), ""));
    CHECK(tide_store_rollback(db, -1) == N + 500);

    CASE("a live iterator sees keys written ahead of it, not behind it");
    /* committed: even keys 0..98; at each key met, write key+1 (ahead,
     * new), delete key+2 (ahead, committed), rewrite key-1 (behind) */
    for (int i = 0; i < 100; i += 2) CHECK(put_n(db, 3, 1, i, i + 1, 1, 4, 0) == 0);
    CHECK(commit(db) == 0);
    it = tide_store_iter(db, 3, 1, NULL, 0, NULL, 0);
    char seq[2048] = "";
    while (tide_store_iter_next(it, &k, &kl, &v, &vl) == 1) {
        int i = atoi(k + 1);
        snprintf(seq + strlen(seq), sizeof(seq) - strlen(seq), "%d,", i);
        if (i % 4 == 0) {
            CHECK(put_n(db, 3, 1, i + 1, i + 2, 2, 4, 0) == 0);
            char dk[16];
            CHECK(tide_store_delete(db, 3, 1, dk, nkey(dk, i + 2), NULL) == 0);
            if (i > 0) CHECK(put_n(db, 3, 1, i - 1, i, 2, 4, 0) == 0);
        }
    }
    tide_store_iter_free(it);
    /* 0 writes 1, deletes 2; 1; 4 writes 5, deletes 6; 5; 8 ... */
    char want[2048] = "";
    for (int i = 0; i < 100; i += 4) snprintf(want + strlen(want), sizeof(want) - strlen(want), "%d,%d,", i, i + 1);
    CHECK(!strcmp(seq, want));
    if (strcmp(seq, want)) printf("  (met %s)\n", seq);

    CASE("an iterator open across a commit or a rollback goes on from where it was");
    CHECK(tide_store_rollback(db, -1) > 0);
    CHECK(put_n(db, 3, 2, 0, 100, 1, 4, 0) == 0 && commit(db) == 0);
    CHECK(put_n(db, 3, 2, 100, 200, 1, 4, 0) == 0); /* uncommitted */
    it = tide_store_iter(db, 3, 2, NULL, 0, NULL, 0);
    int n = 0, order_ok = 1, prev = -1;
    while (tide_store_iter_next(it, &k, &kl, &v, &vl) == 1) {
        int i = atoi(k + 1);
        if (i <= prev) order_ok = 0;
        prev = i;
        n++;
        if (i == 50) CHECK(commit(db) == 0); /* 100..199 now in RocksDB */
        if (i == 150) {
            CHECK(put_n(db, 3, 2, 160, 300, 2, 4, 0) == 0);
            CHECK(tide_store_rollback(db, 2) == 140); /* 160..299 gone again */
        }
    }
    tide_store_iter_free(it);
    CHECK(order_ok && n == 200);
    tide_store_close(db);
    CHECK(tide_store_wipe(dir("sweep"), NULL) == 0);
}

static void test_budget(void) {
    enum { BUDGET = 64 * 1024 };
    tide_store_stats_t st;
    CASE("uncommitted writes past the cache budget stay out of RocksDB; pressure says so");
    tide_store_db_t *db = open_cache("budget", BUDGET);
    CHECK(db != NULL);
    if (!db) return;
    CHECK(tide_store_pressure(db) == 0);
    CHECK(put_n(db, 1, 0, 0, 300, 1, 100, 0) == 0); /* ~50 KiB */
    CHECK(tide_store_pressure(db) == 0);
    CHECK(put_n(db, 1, 0, 300, 1200, 1, 100, 0) == 0); /* ~190 KiB: 3 budgets */
    tide_store_stats(db, &st);
    CHECK(tide_store_pressure(db) == 1 && st.uncommitted_bytes > 2 * BUDGET);
    CHECK(st.uncommitted_keys == 1200 && !tide_store_spilled(db, -1));
    CHECK(has_n(db, 1, 0, 0, 1200, 1, 100) == 1200);
    db = reopen(db, "budget", BUDGET);
    CHECK(db && absent_n(db, 1, 0, 0, 1200) == 1200);
    if (!db) return;

    CASE("a commit clears the pressure and keeps them");
    CHECK(put_n(db, 1, 0, 0, 1200, 1, 100, 0) == 0 && tide_store_pressure(db) == 1);
    CHECK(commit(db) == 0 && tide_store_pressure(db) == 0);
    tide_store_stats(db, &st);
    CHECK(st.uncommitted_keys == 0 && st.uncommitted_bytes == 0);
    db = reopen(db, "budget", BUDGET);
    CHECK(db && has_n(db, 1, 0, 0, 1200, 1, 100) == 1200);
    if (!db) return;

    CASE("reads keep the cache within its budget");
    tide_store_stats(db, &st);
    CHECK(st.cache_bytes <= BUDGET && st.cache_bytes > BUDGET / 2);

    CASE("reads evict only what is committed, never an uncommitted write");
    CHECK(put_n(db, 1, 2, 0, 500, 1, 100, 0) == 0); /* ~80 KiB: over budget on its own */
    for (int round = 0; round < 3; round++) /* clean entries come and go around them */
        CHECK(has_n(db, 1, 0, 0, 1200, 1, 100) == 1200);
    CHECK(has_n(db, 1, 2, 0, 500, 1, 100) == 500);
    tide_store_stats(db, &st);
    CHECK(st.uncommitted_keys == 500 && st.cache_bytes - st.uncommitted_bytes <= BUDGET);
    CHECK(tide_store_rollback(db, 2) == 500 && absent_n(db, 1, 2, 0, 500) == 500);

    CASE("past four budgets uncommitted writes spill, and their partitions say so");
    CHECK(put_n(db, 1, 3, 0, 1, 2, 100, 0) == 0);       /* partition 3: one write */
    CHECK(put_n(db, 1, 4, 0, 2000, 2, 100, 0) == 0);    /* partition 4: ~340 KiB */
    tide_store_stats(db, &st);
    CHECK(tide_store_spilled(db, 4) && tide_store_spilled(db, 3) && tide_store_spilled(db, -1));
    CHECK(!tide_store_spilled(db, 0) && !tide_store_spilled(db, 5));
    CHECK(st.uncommitted_bytes <= 4 * BUDGET);
    CHECK(has_n(db, 1, 4, 0, 2000, 2, 100) == 2000 && has_n(db, 1, 0, 0, 1200, 1, 100) == 1200);
    tide_store_rollback(db, -1); /* what spilled stays: hence the mark */
    CHECK(tide_store_spilled(db, 4) && has_n(db, 1, 4, 0, 100, 2, 100) == 100);
    CHECK(commit(db) == 0 && !tide_store_spilled(db, -1));

    CASE("a write larger than four budgets spills alone");
    char *huge = malloc(5 * BUDGET);
    CHECK(huge != NULL);
    if (huge) {
        memset(huge, 'h', 5 * BUDGET);
        CHECK(tide_store_put(db, 1, 6, "huge", 4, huge, 5 * BUDGET, NULL) == 0);
        CHECK(tide_store_spilled(db, 6) && has(db, 1, 6, "huge", 4, huge, 5 * BUDGET));
        free(huge);
    }
    CHECK(commit(db) == 0);
    tide_store_close(db);
    CHECK(tide_store_wipe(dir("budget"), NULL) == 0);
}

static void test_restore_writes(void) {
    enum { BUDGET = 64 * 1024 };
    tide_store_stats_t st;
    CASE("committed writes (a restore's) need no commit, stay bounded, survive a rollback");
    tide_store_db_t *db = open_cache("restore", BUDGET);
    CHECK(db != NULL);
    if (!db) return;
    CHECK(put_n(db, 2, 0, 0, 5000, 1, 100, 1) == 0); /* ~800 KiB */
    tide_store_stats(db, &st);
    CHECK(st.cache_bytes <= BUDGET + 1024 && st.uncommitted_keys == 0);
    CHECK(!tide_store_pressure(db) && !tide_store_spilled(db, -1));
    CHECK(tide_store_put_committed(db, 2, 0, "k00007", 6, NULL, 0, NULL) == 0); /* a delete */
    CHECK(tide_store_rollback(db, -1) == 0);
    CHECK(has_n(db, 2, 0, 0, 5000, 1, 100) == 4999 && ABSENT(db, 2, 0, "k00007"));
    CHECK(count(tide_store_iter(db, 2, 0, NULL, 0, NULL, 0)) == 4999);
    db = reopen(db, "restore", BUDGET); /* no commit */
    CHECK(db && has_n(db, 2, 0, 0, 5000, 1, 100) == 4999 && ABSENT(db, 2, 0, "k00007"));
    if (!db) return;

    CASE("a committed write under an uncommitted one: the uncommitted stays on top");
    CHECK(PUT(db, 2, 0, "k00001", "dirty") == 0);
    CHECK(tide_store_put_committed(db, 2, 0, "k00001", 6, "restored", 8, NULL) == 0);
    CHECK(HAS(db, 2, 0, "k00001", "dirty"));
    CHECK(tide_store_rollback(db, 0) == 1 && HAS(db, 2, 0, "k00001", "restored"));

    CASE("an uncommitted write over a committed one waiting in memory keeps it for a rollback");
    CHECK(tide_store_put_committed(db, 2, 0, "k00002", 6, "restored", 8, NULL) == 0);
    CHECK(PUT(db, 2, 0, "k00002", "dirty") == 0);
    CHECK(tide_store_rollback(db, 0) == 1 && HAS(db, 2, 0, "k00002", "restored"));
    tide_store_close(db);
    CHECK(tide_store_wipe(dir("restore"), NULL) == 0);
}

static void test_delete_range_drops_writes(void) {
    CASE("a range delete drops the uncommitted writes in its range; a rollback keeps it");
    tide_store_db_t *db = open_cache("range", 0);
    CHECK(db != NULL);
    if (!db) return;
    CHECK(PUT(db, 1, 6, "a", "1") == 0 && PUT(db, 1, 6, "b", "1") == 0 && commit(db) == 0);
    CHECK(PUT(db, 1, 6, "a", "u") == 0 && PUT(db, 1, 6, "c", "u") == 0);
    CHECK(PUT(db, 1, 6, "z", "u") == 0 && PUT(db, 1, 7, "a", "u") == 0);
    CHECK(tide_store_put_committed(db, 1, 6, "d", 1, "r", 1, NULL) == 0);
    CHECK(tide_store_delete_range(db, 1, 6, "a", 1, "e", 1, NULL) == 0);
    CHECK(ABSENT(db, 1, 6, "a") && ABSENT(db, 1, 6, "b") && ABSENT(db, 1, 6, "c"));
    CHECK(ABSENT(db, 1, 6, "d") && HAS(db, 1, 6, "z", "u") && HAS(db, 1, 7, "a", "u"));
    CHECK(!tide_store_spilled(db, -1)); /* a restore's start, not a transaction's write */
    CHECK(tide_store_rollback(db, -1) == 2); /* z and partition 7's a */
    CHECK(ABSENT(db, 1, 6, "a") && ABSENT(db, 1, 6, "b") && ABSENT(db, 1, 6, "d"));
    CHECK(PUT(db, 1, 8, "a", "u") == 0 && tide_store_delete_partition(db, 8, NULL) == 0);
    CHECK(ABSENT(db, 1, 8, "a") && tide_store_rollback(db, -1) == 0);
    db = reopen(db, "range", 0);
    CHECK(db && !strcmp(drain(tide_store_iter(db, 1, 6, NULL, 0, NULL, 0)), ""));
    tide_store_close(db);
    CHECK(tide_store_wipe(dir("range"), NULL) == 0);
}

/* ---------------------------------------------------------------- a model */

/* Random operations on two partitions of one store, checked at every step
 * against a plain model: committed and current values of NK keys. The
 * cache is small, so entries are evicted, dirty data passes the budget and
 * values outgrow their entries; iterations write while they run. */
enum { NK = 200, NP = 2 };
typedef struct model {
    char *committed[NP][NK], *current[NP][NK]; /* NULL: absent */
    int dirty[NP][NK];
} model_t;

static uint64_t model_rnd = 88172645463325252ULL;
static unsigned rnd(unsigned n) {
    model_rnd ^= model_rnd << 13;
    model_rnd ^= model_rnd >> 7;
    model_rnd ^= model_rnd << 17;
    return (unsigned)(model_rnd % n);
}

static void set_str(char **slot, const char *v) {
    free(*slot);
    *slot = v ? strdup(v) : NULL;
}

/* a write through the store and into the model; v NULL deletes */
static int model_write(model_t *m, tide_store_db_t *db, int p, int i, const char *v, int committed) {
    char k[16];
    size_t kl = nkey(k, i);
    int rc = committed ? tide_store_put_committed(db, 7, p, k, kl, v, v ? strlen(v) : 0, NULL)
             : v      ? tide_store_put(db, 7, p, k, kl, v, strlen(v), NULL)
                      : tide_store_delete(db, 7, p, k, kl, NULL);
    if (committed) {
        set_str(&m->committed[p][i], v);
        if (!m->dirty[p][i]) set_str(&m->current[p][i], v);
    } else {
        set_str(&m->current[p][i], v);
        m->dirty[p][i] = 1;
    }
    return rc;
}

static void model_commit(model_t *m, int p_only) {
    for (int p = 0; p < NP; p++)
        for (int i = 0; i < NK; i++) {
            if (p_only >= 0 && p != p_only) continue;
            if (p_only == -2) set_str(&m->committed[p][i], m->current[p][i]); /* commit */
            else set_str(&m->current[p][i], m->committed[p][i]);             /* rollback */
            m->dirty[p][i] = 0;
        }
}

static const char *random_value(void) {
    static char v[128];
    size_t n = 1 + rnd(rnd(4) ? 12 : 100); /* mostly short, sometimes much longer */
    for (size_t j = 0; j < n; j++) v[j] = (char)('a' + rnd(26));
    v[n] = '\0';
    return v;
}

/* The first key > after (-1: any) present now in partition p, or NK. */
static int model_next(const model_t *m, int p, int after) {
    int i = after + 1;
    while (i < NK && !m->current[p][i]) i++;
    return i;
}

/* Iterate partition p from key `from` while writing at random; every step
 * must return the model's next key and value. */
static int model_iterate(model_t *m, tide_store_db_t *db, int p, int from, int long_tx) {
    char fk[16];
    size_t fl = nkey(fk, from);
    tide_store_iter_t *it = tide_store_iter(db, 7, p, fk, fl, NULL, 0);
    if (!it) return 0;
    int at = from - 1, ok = 1;
    const char *k, *v;
    size_t kl, vl;
    for (;;) {
        int want = model_next(m, p, at);
        int r = tide_store_iter_next(it, &k, &kl, &v, &vl);
        if (want == NK) {
            ok &= r == 0;
            break;
        }
        const char *wv = m->current[p][want];
        char wk[16];
        size_t wkl = nkey(wk, want);
        if (r != 1 || kl != wkl || memcmp(k, wk, kl) || vl != strlen(wv) || memcmp(v, wv, vl)) {
            printf("  (step after %d: wanted %s=%s, got %d %.*s)\n", at, wk, wv, r,
                   r == 1 ? (int)kl : 0, r == 1 ? k : "");
            ok = 0;
            break;
        }
        at = want;
        switch (rnd(12)) { /* a write while iterating, somewhere */
        case 0: model_write(m, db, p, at, NULL, 0); break;             /* this key */
        case 1: model_write(m, db, p, at, random_value(), 0); break;
        case 2: model_write(m, db, p, (at + 1 + (int)rnd(5)) % NK, random_value(), 0); break;
        case 3: model_write(m, db, p, (at + 1 + (int)rnd(5)) % NK, NULL, 0); break;
        case 4: model_write(m, db, (int)rnd(NP), (int)rnd(NK), random_value(), 0); break;
        case 5:
            if (!long_tx && rnd(8) == 0) {
                ok &= commit(db) == 0;
                model_commit(m, -2);
            }
            break;
        case 6:
            if (!long_tx && rnd(8) == 0) {
                int rp = (int)rnd(NP + 1) - 1;
                tide_store_rollback(db, rp);
                model_commit(m, rp);
            }
            break;
        default: break;
        }
    }
    tide_store_iter_free(it);
    return ok;
}

static void test_model(void) {
    CASE("random writes, commits, rollbacks, restores, crashes and live iterations match a model");
    const size_t budget = 16 * 1024;
    tide_store_db_t *db = open_cache("model", budget);
    CHECK(db != NULL);
    if (!db) return;
    static model_t m;
    int bad_get = 0, bad_iter = 0, iterations = 0, crashes = 0, pressure = 0;
    for (int step = 0; step < 30000 && db; step++) {
        int p = (int)rnd(NP), i = (int)rnd(NK);
        unsigned op = rnd(100);
        /* every other 1500 steps, one long transaction: its writes pile up
         * past the budget (no commit, rollback or crash) */
        int long_tx = (step / 1500) % 2;
        if (long_tx && (op >= 75 && op < 84 ? 1 : op == 96)) op = 50;
        if (op < 35) {
            CHECK(model_write(&m, db, p, i, random_value(), 0) == 0);
        } else if (op < 45) {
            CHECK(model_write(&m, db, p, i, NULL, 0) == 0);
        } else if (op < 50) { /* a restore's write, never over a dirty key (as in the host) */
            if (!m.dirty[p][i]) CHECK(model_write(&m, db, p, i, rnd(5) ? random_value() : NULL, 1) == 0);
        } else if (op < 75) {
            char k[16];
            const char *v;
            size_t vl;
            int r = tide_store_get(db, 7, p, k, nkey(k, i), &v, &vl, NULL);
            const char *w = m.current[p][i];
            if (w ? r != 1 || vl != strlen(w) || memcmp(v, w, vl) : r != 0) bad_get++;
        } else if (op < 80) {
            CHECK(commit(&*db) == 0);
            model_commit(&m, -2);
        } else if (op < 84) {
            int rp = (int)rnd(NP + 1) - 1;
            tide_store_rollback(db, rp);
            model_commit(&m, rp);
        } else if (op < 96) {
            iterations++;
            bad_iter += !model_iterate(&m, db, p, rnd(3) ? 0 : i, long_tx);
        } else if (op < 97) { /* a crash: what was not committed is gone */
            crashes++;
            db = reopen(db, "model", budget);
            model_commit(&m, -1);
        }
        pressure |= db && tide_store_pressure(db);
        if (db && tide_store_spilled(db, -1)) break; /* the model has no spills: see below */
    }
    CHECK(db != NULL && !bad_get && !bad_iter);
    if (bad_get || bad_iter) printf("  (%d bad gets, %d bad of %d iterations)\n", bad_get, bad_iter, iterations);
    CHECK(db && !tide_store_spilled(db, -1)); /* 2 x 200 keys fit in 4 budgets */
    printf("  (pressure %d crashes %d iterations %d)\n", pressure, crashes, iterations);
    CHECK(pressure && crashes > 100 && iterations > 1000);
    tide_store_close(db);
    for (int p = 0; p < NP; p++)
        for (int i = 0; i < NK; i++) {
            free(m.committed[p][i]);
            free(m.current[p][i]);
        }
    CHECK(tide_store_wipe(dir("model"), NULL) == 0);
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
    CHECK(tide_store_commit(db, &err) == 0 && tide_store_flush(db, &err) == 0 && !err);
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

    CASE("an iterator is live: it sees the writes made before each step");
    tide_store_iter_t *it = tide_store_iter_prefix(db, 10, 5, "ab", 2);
    CHECK(PUT(db, 10, 5, "abd", "later") == 0);
    CHECK(tide_store_delete(db, 10, 5, "ab", 2, &err) == 0);
    CHECK(!strcmp(drain(it), "abc=v,abd=later,"));
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
    CHECK(tide_store_commit(db, &err) == 0 && tide_store_flush(db, &err) == 0 && !err);
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
        if (i % 1000 == 999) bad |= tide_store_commit(db, &err) != 0;
    }
    CHECK(!tide_store_spilled(db, -1)); /* commits kept it within memory */
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

    test_commit_and_crash();
    test_rollback();
    test_merge();
    test_writes_while_iterating();
    test_budget();
    test_restore_writes();
    test_delete_range_drops_writes();
    test_model();

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
