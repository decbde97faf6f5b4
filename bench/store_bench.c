/*
 * store_bench: the state store alone (core/store.c over RocksDB), without
 * Kafka or Lua, for changes to the record cache that `make bench` would take
 * minutes to judge. Loads, each on a fresh database under DIR, with a fixed
 * seed so two runs do the same operations:
 *
 *   count       a count per key: get, add one, put (text numbers), 64
 *               partitions x 676 keys, as bench/count_per_key.lua does
 *   count_cold  the same over 64 x 17,576 keys (1.1M): most keys miss the
 *               16 MiB record cache, half the reads find nothing
 *   window      a windowed aggregate: per record, a fetch over the key's
 *               last 4 windows (an iterator over a small range), then a put
 *               of the current window; 64 partitions x 100 keys
 *   sweep       a whole-partition iteration that deletes half the keys it
 *               meets while it iterates (a window-expiry sweep)
 *   restore     a changelog applied to an empty store: n committed writes
 *               over the count's 43k keys, then a commit
 *   restore_cold  the same over the cold count's 1.1M keys
 *
 * Usage: store_bench [-f] [-c COMMIT] DIR [RECORDS [LOAD]] (RECORDS: 2M;
 * window runs a quarter of them, sweep a tenth; LOAD: one of the above).
 * Each load commits every COMMIT (50,000) records (tide_store_commit) and
 * makes the store durable (tide_store_flush) every 10th commit, as a worker
 * under exactly-once does between checkpoints; -f flushes at every commit
 * instead (the worker before exactly-once). Prints, per record, the wall time,
 * the wall time spent in commits, and the CPU time of the bench's thread
 * outside commits (the reads and writes themselves, the steadier figure on
 * a busy machine). The figures are for comparing two builds on one
 * machine, not for the README. It never reads anything but the database
 * it writes.
 *
 * `make store-bench` builds it and runs every load on build/store-bench.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

/* How a restore writes (a build of the store before committed writes
 * existed passes -DRESTORE_WRITE=tide_store_put). */
#ifndef RESTORE_WRITE
#define RESTORE_WRITE tide_store_put_committed
#endif

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t next_rand(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545f4914f6cdd1dULL) >> 32);
}

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wall time, and the CPU time of this thread alone: RocksDB's background
 * flushes and compactions are not in it, nor time lost to other processes
 * on a busy machine, so it is the steadier figure for the cache's own work. */
typedef struct timing {
    double wall, cpu, commit_wall;
} timing_t;

static timing_t t_now(void) {
    return (timing_t){clock_s(CLOCK_MONOTONIC), clock_s(CLOCK_THREAD_CPUTIME_ID), 0};
}

static const char *base;
static int flush_each_commit;
static long commit_every = 50000;

static void die(const char *what, char *err) {
    fprintf(stderr, "store_bench: %s: %s\n", what, err ? err : "failed");
    exit(1);
}

static tide_store_db_t *fresh(const char *name) {
    static char path[1024];
    snprintf(path, sizeof(path), "%s/%s", base, name);
    char *err = NULL;
    if (tide_store_wipe(path, &err)) die("wipe", err);
    tide_store_opts_t o = {.path = path};
    tide_store_db_t *db = tide_store_open(&o, &err);
    if (!db) die("open", err);
    return db;
}

static double commit_wall, commit_cpu; /* seconds spent in commits and flushes */

static void commit(tide_store_db_t *db, long n) {
    char *err = NULL;
    timing_t t0 = t_now();
    if (tide_store_commit(db, &err)) die("commit", err);
    if ((flush_each_commit || (n / commit_every) % 10 == 0) && tide_store_flush(db, &err))
        die("flush", err);
    timing_t t = t_now();
    commit_wall += t.wall - t0.wall;
    commit_cpu += t.cpu - t0.cpu;
}

/* Per record: wall time, the wall time of the commits (and flushes) within
 * it, and this thread's CPU time outside commits: the reads and writes. */
static void report(const char *load, long n, timing_t t0) {
    timing_t t = t_now();
    double wall = t.wall - t0.wall, cpu = t.cpu - t0.cpu;
    printf("%-10s %7ld records  wall %5.0f ns  commits %5.0f ns  ops cpu %5.0f ns  %5.2f M/s\n",
           load, n, wall * 1e9 / (double)n, commit_wall * 1e9 / (double)n,
           (cpu - commit_cpu) * 1e9 / (double)n, (double)n / wall / 1e6);
    commit_wall = commit_cpu = 0;
    fflush(stdout);
}

/* The key of a count: `letters` lowercase letters chosen at random. */
static void count_load(const char *name, int letters, long n) {
    tide_store_db_t *db = fresh(name);
    char key[4], val[24];
    timing_t t0 = t_now();
    for (long i = 1; i <= n; i++) {
        int32_t p = (int32_t)(next_rand() % 64);
        for (int j = 0; j < letters; j++) key[j] = (char)('a' + next_rand() % 26);
        const char *v;
        size_t vl;
        char *err = NULL;
        int r = tide_store_get(db, 0, p, key, (size_t)letters, &v, &vl, &err);
        if (r < 0) die("get", err);
        long c = 0;
        if (r == 1) c = strtol(v, NULL, 10); /* values are digits, never more than 20 */
        int len = snprintf(val, sizeof(val), "%ld", c + 1);
        if (tide_store_put(db, 0, p, key, (size_t)letters, val, (size_t)len, &err))
            die("put", err);
        if (i % commit_every == 0) commit(db, i);
    }
    report(name, n, t0);
    tide_store_close(db);
}

/* A restore: a changelog of n records over 64 x 26^letters keys written
 * back, as the host applies one (committed writes, no transaction), then a
 * commit, which writes what is still in memory. */
static void restore_load(const char *name, int letters, long n) {
    tide_store_db_t *db = fresh(name);
    char key[4], val[24];
    char *err = NULL;
    timing_t t0 = t_now();
    for (long i = 1; i <= n; i++) {
        int32_t p = (int32_t)(next_rand() % 64);
        for (int j = 0; j < letters; j++) key[j] = (char)('a' + next_rand() % 26);
        int len = snprintf(val, sizeof(val), "%ld", i);
        if (RESTORE_WRITE(db, 0, p, key, (size_t)letters, val, (size_t)len, &err))
            die("restore write", err);
    }
    if (tide_store_commit(db, &err)) die("commit", err);
    report(name, n, t0);
    tide_store_close(db);
}

/* A window key: [key length u16][key][window start u64], big-endian. */
static size_t window_key(char *b, const char *k, size_t kl, uint64_t start) {
    b[0] = (char)(kl >> 8);
    b[1] = (char)kl;
    memcpy(b + 2, k, kl);
    for (int i = 0; i < 8; i++) b[2 + kl + (size_t)i] = (char)(start >> (56 - 8 * i));
    return 2 + kl + 8;
}

static void window_load(long n) {
    tide_store_db_t *db = fresh("window");
    const uint64_t size = 60000;
    char k[16], lo[32], hi[32], val[24];
    long seen = 0;
    timing_t t0 = t_now();
    for (long i = 1; i <= n; i++) {
        int32_t p = (int32_t)(next_rand() % 64);
        size_t kl = (size_t)snprintf(k, sizeof(k), "user%u", next_rand() % 100);
        uint64_t ts = (uint64_t)i * 5; /* 12,000 records per window */
        uint64_t start = ts - ts % size;
        size_t lol = window_key(lo, k, kl, start >= 3 * size ? start - 3 * size : 0);
        size_t hil = window_key(hi, k, kl, start + 1);
        tide_store_iter_t *it = tide_store_iter(db, 0, p, lo, lol, hi, hil);
        if (!it) die("iter", NULL);
        const char *ik, *iv;
        size_t ikl, ivl;
        long total = 0;
        while (tide_store_iter_next(it, &ik, &ikl, &iv, &ivl) == 1) {
            total += strtol(iv, NULL, 10);
            seen++;
        }
        tide_store_iter_free(it);
        char *err = NULL;
        int len = snprintf(val, sizeof(val), "%ld", total % 1000 + 1);
        size_t wl = window_key(lo, k, kl, start);
        if (tide_store_put(db, 0, p, lo, wl, val, (size_t)len, &err)) die("put", err);
        if (i % commit_every == 0) commit(db, i);
    }
    report("window", n, t0);
    printf("            (%.2f windows read per fetch)\n", (double)seen / (double)n);
    tide_store_close(db);
}

/* Fill one partition, commit half of it, write the other half, then sweep
 * it while deleting every other key met. */
static void sweep_load(long n) {
    tide_store_db_t *db = fresh("sweep");
    char key[16];
    char *err = NULL;
    for (long i = 0; i < n; i++) {
        int kl = snprintf(key, sizeof(key), "k%09ld", i);
        if (tide_store_put(db, 0, 0, key, (size_t)kl, "v", 1, &err)) die("put", err);
        if (i == n / 2) commit(db, 0);
    }
    commit_wall = commit_cpu = 0; /* the fill's commit is not the sweep's */
    timing_t t0 = t_now();
    tide_store_iter_t *it = tide_store_iter(db, 0, 0, NULL, 0, NULL, 0);
    const char *ik, *iv;
    size_t ikl, ivl;
    long met = 0;
    while (tide_store_iter_next(it, &ik, &ikl, &iv, &ivl) == 1)
        if (met++ % 2 == 0 && tide_store_delete(db, 0, 0, ik, ikl, &err)) die("delete", err);
    tide_store_iter_free(it);
    report("sweep", met, t0);
    if (met != n) printf("            (met %ld of %ld keys)\n", met, n);
    tide_store_close(db);
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "fc:")) != -1) {
        if (opt == 'f') flush_each_commit = 1;
        else if (opt == 'c') commit_every = atol(optarg);
        else break;
    }
    if (optind >= argc || commit_every <= 0) {
        fprintf(stderr, "usage: store_bench [-f] [-c COMMIT] DIR [RECORDS [LOAD]]\n");
        return 2;
    }
    base = argv[optind];
    if (mkdir(base, 0755) && errno != EEXIST) {
        perror(base);
        return 1;
    }
    long n = optind + 1 < argc ? atol(argv[optind + 1]) : 2000000;
    const char *only = optind + 2 < argc ? argv[optind + 2] : NULL;
    if (!only || !strcmp(only, "count")) count_load("count", 2, n);
    if (!only || !strcmp(only, "count_cold")) count_load("count_cold", 3, n);
    if (!only || !strcmp(only, "window")) window_load(n / 4);
    if (!only || !strcmp(only, "sweep")) sweep_load(n / 10);
    if (!only || !strcmp(only, "restore")) restore_load("restore", 2, n);
    if (!only || !strcmp(only, "restore_cold")) restore_load("restore_cold", 3, n);
    char *err = NULL;
    char path[1024];
    const char *names[] = {"count", "count_cold", "window", "sweep", "restore", "restore_cold"};
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof(path), "%s/%s", base, names[i]);
        if (tide_store_wipe(path, &err)) die("wipe", err);
    }
    return 0;
}
