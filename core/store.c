/*
 * store.c: a worker's local state in one RocksDB database (see store.h).
 *
 * It owns the RocksDB handle, the LRU block cache every store of the worker
 * shares, the value of the last lookup and the iterators still open on the
 * database. It turns (store, partition, key) into one flat RocksDB key,
 * [store u8][partition u32 big-endian][key], and bounds every iterator and
 * range delete to the (store, partition) it was asked for, so one task can
 * never read or erase another's keys. It must never repair, wipe or
 * otherwise "fix" a database on its own (the caller decides, and restores
 * from the changelogs), and never delete a directory that does not look
 * like a RocksDB database.
 *
 * A db is used by one thread at a time (its worker): tide_store_get returns
 * a buffer owned by the db, so two threads sharing one would race on it.
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <ftw.h>
#include <rocksdb/c.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"

#define KEY_HDR 5 /* store id + partition */
#define DEFAULT_BLOCK_CACHE (8u << 20)
#define DEFAULT_WRITE_BUFFER (16u << 20)
#define DEFAULT_RECORD_CACHE (16u << 20)
/* Enough for the keys detectors use (ids, short composites) without a
 * malloc per operation; longer keys fall back to the heap. */
#define KEY_STACK 256

/* The record cache, as Kafka Streams has one: the latest value of recently
 * used keys, in front of RocksDB. Reads of cached keys and every write stay
 * in memory; dirty entries reach RocksDB in one write batch at a flush (each
 * commit), when the cache passes its budget, and before an iterator or a
 * range delete reads RocksDB directly. Durability is unchanged: the
 * changelog has every write, and a commit flushes before it checkpoints. */
typedef struct cache_entry {
    struct cache_entry *next; /* bucket chain */
    uint64_t hash;
    size_t klen, vlen;        /* klen includes the [store][partition] header */
    uint32_t dirty_at;        /* its place in db->dirty, when dirty */
    int dirty, deleted;       /* not yet in RocksDB; a tombstone */
    char data[];              /* the key, then the value */
} cache_entry_t;

/* A dirty entry as the write-back sorts it: the first 8 bytes of its key,
 * big-endian, decide most comparisons without reading the entry. */
typedef struct dirty_ref {
    uint64_t head;
    cache_entry_t *e;
} dirty_ref_t;

struct tide_store_db {
    cache_entry_t **buckets;
    size_t n_buckets, n_entries, cache_used, cache_budget;
    cache_entry_t **dirty; /* the dirty entries, so a write-back need not scan */
    size_t n_dirty, cap_dirty;
    int spilled; /* dirty entries reached RocksDB before a commit */
    rocksdb_t *rdb;
    rocksdb_cache_t *cache;
    rocksdb_writeoptions_t *wo;
    rocksdb_readoptions_t *ro;
    rocksdb_pinnableslice_t *last; /* the value tide_store_get handed out */
    tide_store_iter_t *iters;      /* open iterators, detached at close */
};

struct tide_store_iter {
    tide_store_db_t *db; /* NULL once the db is closed under us */
    tide_store_iter_t *prev, *next;
    rocksdb_iterator_t *it;
    /* The read options hold Slices that point into lo/hi (the C API does not
     * copy bounds), so both live exactly as long as the RocksDB iterator. */
    rocksdb_readoptions_t *ro;
    const rocksdb_snapshot_t *snap;
    int started, done;
    size_t lolen, hilen;
    char *lo, *hi; /* in the same allocation, after the struct */
};

/* --- errors: *errp is malloc'd, caller frees; errp may be NULL --- */

static int fail(char **errp, const char *fmt, ...) {
    if (errp) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(errp, fmt, ap) < 0) *errp = NULL;
        va_end(ap);
    }
    return -1;
}

/* Hand a RocksDB error string (malloc'd) to the caller. */
static int pass(char **errp, char *e) {
    if (errp) *errp = e;
    else free(e);
    return -1;
}

/* --- keys --- */

/* Kafka partitions are 0..INT32_MAX; a negative one (librdkafka's
 * RD_KAFKA_PARTITION_UA) reaching the store is a bug upstream. Refusing it
 * also guarantees every (store, partition) prefix has a successor, so every
 * range we build has a finite end. */
static int bad_partition(int32_t partition, char **errp) {
    if (partition >= 0) return 0;
    fail(errp, "store: partition %d out of range (0..2147483647)", (int)partition);
    return 1;
}

static void put_header(char *b, uint8_t store, int32_t partition) {
    uint32_t p = (uint32_t)partition;
    b[0] = (char)store;
    b[1] = (char)(p >> 24);
    b[2] = (char)(p >> 16);
    b[3] = (char)(p >> 8);
    b[4] = (char)p;
}

/* Build header + key in buf when it fits, else on the heap; release with
 * key_done. NULL only when out of memory. */
static char *key_make(char *buf, uint8_t store, int32_t partition, const char *key,
                      size_t klen) {
    char *b = klen <= KEY_STACK - KEY_HDR ? buf : malloc(KEY_HDR + klen);
    if (!b) return NULL;
    put_header(b, store, partition);
    if (klen) memcpy(b + KEY_HDR, key, klen);
    return b;
}

static void key_done(char *buf, char *b) {
    if (b != buf) free(b);
}

/* The smallest key greater than every key starting with b[0..n): drop
 * trailing 0xFF bytes and increment the last one. Returns the new length,
 * never 0 here: b[1], the partition's top byte, is at most 0x7F. */
static size_t successor(char *b, size_t n) {
    while (n > 0 && (unsigned char)b[n - 1] == 0xFF) n--;
    if (n > 0) b[n - 1] = (char)((unsigned char)b[n - 1] + 1);
    return n;
}

static int bytes_cmp(const char *a, size_t alen, const char *b, size_t blen) {
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c) return c;
    return alen < blen ? -1 : alen > blen;
}

/* --- open, close, wipe --- */

tide_store_db_t *tide_store_open(const tide_store_opts_t *o, char **errp) {
    if (!o || !o->path || !*o->path) {
        fail(errp, "store: no path given");
        return NULL;
    }
    size_t cache_bytes = o->block_cache_bytes ? o->block_cache_bytes : DEFAULT_BLOCK_CACHE;
    size_t wb_bytes = o->write_buffer_bytes ? o->write_buffer_bytes : DEFAULT_WRITE_BUFFER;

    tide_store_db_t *db = calloc(1, sizeof(*db));
    if (!db) {
        fail(errp, "store: out of memory");
        return NULL;
    }
    db->cache = rocksdb_cache_create_lru(cache_bytes);

    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(t, db->cache);
    /* Whole-key bloom filters: most lookups in a detector are for keys it
     * has never seen (a new card, a new user), and a filter answers those
     * without reading a data block. The table options take ownership. */
    rocksdb_block_based_options_set_filter_policy(t, rocksdb_filterpolicy_create_bloom_full(10));
    /* Index and filter blocks go into the block cache, so they count against
     * its budget instead of growing with the number of open files; L0's are
     * pinned because every lookup consults them. They must be partitioned
     * (4 KiB pieces under a small pinned top level): a whole filter is
     * ~1.2 MiB per million keys, larger than one of the cache's 512 KiB
     * shards, so it was evicted as soon as it was read and every lookup
     * re-read it: 8k gets/s instead of 100k in the 1M-key bench. */
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(t, 1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(t, 1);
    rocksdb_block_based_options_set_index_type(
        t, rocksdb_block_based_table_index_type_two_level_index_search);
    rocksdb_block_based_options_set_partition_filters(t, 1);
    rocksdb_block_based_options_set_pin_top_level_index_and_filter(t, 1);

    rocksdb_options_t *opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(opts, 1);
    rocksdb_options_set_block_based_table_factory(opts, t); /* copies t */
    /* The memtable budget. RocksDB 7.8's C API has no WriteBufferManager
     * constructor, but db_write_buffer_size makes RocksDB build one for this
     * database: past the budget it flushes the largest memtable. That alone
     * does not stop memtables from piling up while flushes lag, so each
     * memtable is a quarter of the budget and at most four may exist before
     * writes stall: the hard ceiling is the budget itself. */
    rocksdb_options_set_db_write_buffer_size(opts, wb_bytes);
    rocksdb_options_set_write_buffer_size(opts, wb_bytes / 4);
    rocksdb_options_set_max_write_buffer_number(opts, 4);
    /* A bloom filter over each memtable's keys too: a lookup for a new key
     * (most of them, in a detector that meets new cards and users all the
     * time) then skips the skip-list walks of up to four memtables. */
    rocksdb_options_set_memtable_prefix_bloom_size_ratio(opts, 0.1);
    rocksdb_options_set_memtable_whole_key_filtering(opts, 1);
    /* LZ4 costs little CPU and Debian's librocksdb links it. */
    rocksdb_options_set_compression(opts, rocksdb_lz4_compression);
    /* Open table files keep a descriptor each; the worker also holds broker
     * sockets, so keep RocksDB to a fixed share. */
    rocksdb_options_set_max_open_files(opts, 256);
    /* RocksDB's own LOG files would otherwise accumulate forever. */
    rocksdb_options_set_keep_log_file_num(opts, 4);
    rocksdb_options_set_max_log_file_size(opts, 4u << 20);

    char *e = NULL;
    db->rdb = rocksdb_open(opts, o->path, &e);
    rocksdb_options_destroy(opts);
    rocksdb_block_based_options_destroy(t);
    if (e || !db->rdb) {
        fail(errp, "store: cannot open %s: %s", o->path, e ? e : "unknown error");
        free(e);
        if (db->rdb) rocksdb_close(db->rdb);
        rocksdb_cache_destroy(db->cache);
        free(db);
        return NULL;
    }
    /* No write-ahead log, as in Kafka Streams: the changelog topic is the
     * log. A write costs a memtable insert and no system call; what the
     * checkpoint covers is made durable by tide_store_flush, and a crash
     * loses only writes the changelog replays (close flushes memtables). */
    db->wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_disable_WAL(db->wo, 1);
    db->ro = rocksdb_readoptions_create();
    db->cache_budget = o->cache_bytes ? o->cache_bytes : DEFAULT_RECORD_CACHE;
    db->n_buckets = 1 << 16;
    db->buckets = calloc(db->n_buckets, sizeof(*db->buckets));
    if (!db->buckets) {
        tide_store_close(db);
        fail(errp, "store: out of memory");
        return NULL;
    }
    return db;
}

/* ---------------------------------------------------------------- cache */

static cache_entry_t **cache_slot(tide_store_db_t *db, const char *k, size_t klen, uint64_t h) {
    cache_entry_t **p = &db->buckets[h & (db->n_buckets - 1)];
    while (*p && ((*p)->hash != h || (*p)->klen != klen || memcmp((*p)->data, k, klen)))
        p = &(*p)->next;
    return p;
}

static void cache_clear(tide_store_db_t *db) {
    for (size_t i = 0; i < db->n_buckets; i++) {
        cache_entry_t *e = db->buckets[i];
        while (e) {
            cache_entry_t *next = e->next;
            free(e);
            e = next;
        }
        db->buckets[i] = NULL;
    }
    db->n_entries = db->cache_used = db->n_dirty = 0;
}

/* Mark e dirty; it joins the list the next write-back reads. */
static int mark_dirty(tide_store_db_t *db, cache_entry_t *e, char **errp) {
    if (e->dirty) return 0;
    if (db->n_dirty == db->cap_dirty) {
        size_t cap = db->cap_dirty ? db->cap_dirty * 2 : 1024;
        cache_entry_t **d = realloc(db->dirty, cap * sizeof(*d));
        if (!d) return fail(errp, "store: out of memory");
        db->dirty = d;
        db->cap_dirty = cap;
    }
    e->dirty = 1;
    e->dirty_at = (uint32_t)db->n_dirty;
    db->dirty[db->n_dirty++] = e;
    return 0;
}

static uint64_t key_head(const cache_entry_t *e) {
    uint64_t h = 0;
    for (size_t i = 0; i < 8; i++) h = h << 8 | (i < e->klen ? (unsigned char)e->data[i] : 0);
    return h;
}

static int entry_order(const void *a, const void *b) {
    const dirty_ref_t *x = a, *y = b;
    if (x->head != y->head) return x->head < y->head ? -1 : 1;
    size_t n = x->e->klen < y->e->klen ? x->e->klen : y->e->klen;
    int c = memcmp(x->e->data, y->e->data, n);
    if (c) return c;
    return x->e->klen < y->e->klen ? -1 : x->e->klen > y->e->klen;
}

/* Write every dirty entry to RocksDB in one batch; entries stay, clean.
 * The batch goes in key order: the memtable's skip list then inserts each
 * key next to the one before instead of searching from the top (in hash
 * order, the inserts were 30% of a count-per-key detector's time). */
static int cache_write_back(tide_store_db_t *db, char **errp) {
    size_t n = db->n_dirty;
    if (!n) return 0;
    db->spilled = 1; /* tide_store_commit clears it: its write-back is a commit's */
    dirty_ref_t *order = malloc(n * sizeof(*order));
    if (!order) return fail(errp, "store: out of memory");
    for (size_t i = 0; i < n; i++) order[i] = (dirty_ref_t){key_head(db->dirty[i]), db->dirty[i]};
    qsort(order, n, sizeof(*order), entry_order);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    for (size_t i = 0; i < n; i++) {
        cache_entry_t *e = order[i].e;
        if (e->deleted) rocksdb_writebatch_delete(wb, e->data, e->klen);
        else rocksdb_writebatch_put(wb, e->data, e->klen, e->data + e->klen, e->vlen);
    }
    free(order);
    char *err = NULL;
    rocksdb_write(db->rdb, db->wo, wb, &err);
    rocksdb_writebatch_destroy(wb);
    if (err) return pass(errp, err);
    for (size_t i = 0; i < n; i++) db->dirty[i]->dirty = 0;
    db->n_dirty = 0;
    return 0;
}

/* Double the buckets once there are as many entries: chains stay short
 * however large state.cache.bytes lets the cache grow. On no memory the
 * cache simply keeps its buckets. */
static void cache_grow(tide_store_db_t *db) {
    size_t n = db->n_buckets * 2;
    cache_entry_t **b = calloc(n, sizeof(*b));
    if (!b) return;
    for (size_t i = 0; i < db->n_buckets; i++) {
        cache_entry_t *e = db->buckets[i];
        while (e) {
            cache_entry_t *next = e->next;
            cache_entry_t **slot = &b[e->hash & (n - 1)];
            e->next = *slot;
            *slot = e;
            e = next;
        }
    }
    free(db->buckets);
    db->buckets = b;
    db->n_buckets = n;
}

/* Remember key -> value (val NULL: a tombstone). Over budget, everything
 * goes to RocksDB and the cache starts empty: simple, and a count-per-key
 * detector's hot keys come straight back. */
static int cache_set(tide_store_db_t *db, const char *k, size_t klen, const char *val,
                     size_t vlen, int dirty, char **errp) {
    size_t size = sizeof(cache_entry_t) + klen + vlen;
    if (db->cache_used + size > db->cache_budget) {
        if (cache_write_back(db, errp)) return -1;
        cache_clear(db);
        if (size > db->cache_budget) { /* larger than the whole cache */
            char *err = NULL;
            if (val) rocksdb_put(db->rdb, db->wo, k, klen, val, vlen, &err);
            else rocksdb_delete(db->rdb, db->wo, k, klen, &err);
            return err ? pass(errp, err) : 0;
        }
    }
    if (db->n_entries >= db->n_buckets) cache_grow(db);
    uint64_t h = tide_fnv1a64(k, klen);
    cache_entry_t **slot = cache_slot(db, k, klen, h);
    cache_entry_t *old = *slot;
    if (old && malloc_usable_size(old) >= size) {
        /* A new value for a cached key that fits (a count's next number):
         * overwrite it where it is, no malloc and no free. */
        if (dirty && mark_dirty(db, old, errp)) return -1;
        db->cache_used -= old->vlen;
        old->vlen = val ? vlen : 0;
        old->deleted = val == NULL;
        if (val) memcpy(old->data + klen, val, vlen);
        db->cache_used += old->vlen;
        return 0;
    }
    cache_entry_t *e = malloc(size);
    if (!e) return fail(errp, "store: out of memory");
    e->hash = h;
    e->klen = klen;
    e->vlen = val ? vlen : 0;
    e->dirty = 0;
    e->deleted = val == NULL;
    memcpy(e->data, k, klen);
    if (val) memcpy(e->data + klen, val, vlen);
    if (old && old->dirty) { /* the new entry takes the old one's place in the list */
        e->dirty = 1;
        e->dirty_at = old->dirty_at;
        db->dirty[e->dirty_at] = e;
    }
    if (dirty && mark_dirty(db, e, errp)) {
        free(e);
        return -1;
    }
    if (old) { /* replace */
        e->next = old->next;
        db->cache_used -= sizeof(cache_entry_t) + old->klen + old->vlen;
        free(old);
    } else {
        e->next = NULL;
        db->n_entries++;
    }
    *slot = e;
    db->cache_used += sizeof(cache_entry_t) + klen + e->vlen;
    return 0;
}

/* Release what an iterator holds inside RocksDB; its memory stays. */
static void iter_detach(tide_store_iter_t *it) {
    tide_store_db_t *db = it->db;
    if (!db) return;
    rocksdb_iter_destroy(it->it);
    rocksdb_readoptions_destroy(it->ro);
    rocksdb_release_snapshot(db->rdb, it->snap);
    if (it->prev) it->prev->next = it->next;
    else db->iters = it->next;
    if (it->next) it->next->prev = it->prev;
    it->db = NULL;
    it->it = NULL;
    it->ro = NULL;
    it->snap = NULL;
    it->done = 1;
}

int tide_store_open_iterators(const tide_store_db_t *db) {
    int n = 0;
    for (const tide_store_iter_t *it = db->iters; it; it = it->next) n++;
    return n;
}

void tide_store_close(tide_store_db_t *db) {
    if (!db) return;
    /* Iterators freed by a garbage collector may outlive the db; detach
     * them now so their later free touches nothing of RocksDB. */
    while (db->iters) iter_detach(db->iters);
    if (db->last) rocksdb_pinnableslice_destroy(db->last);
    if (db->buckets) {
        /* what the cache holds goes to RocksDB, which flushes it on close */
        char *err = NULL;
        if (db->rdb && cache_write_back(db, &err)) {
            fprintf(stderr, "tide: store: %s\n", err);
            free(err);
        }
        cache_clear(db);
        free(db->buckets);
    }
    free(db->dirty);
    if (db->rdb) rocksdb_close(db->rdb);
    rocksdb_cache_destroy(db->cache);
    rocksdb_writeoptions_destroy(db->wo);
    rocksdb_readoptions_destroy(db->ro);
    free(db);
}

/* nftw passes no context; the first failure is kept here. */
static _Thread_local int wipe_errno;
static _Thread_local char wipe_failed[256];

static int on_wipe_entry(const char *path, const struct stat *st, int flag, struct FTW *f) {
    if (remove(path) == 0) return 0;
    wipe_errno = errno;
    snprintf(wipe_failed, sizeof(wipe_failed), "%s", path);
    return 1;
}

/* A RocksDB directory has LOCK from the first open on (CURRENT and IDENTITY
 * soon after); an empty directory is harmless to remove. Anything else is
 * someone's data under a misconfigured path, and is refused. */
static int looks_like_db(const char *path) {
    static const char *marks[] = {"LOCK", "CURRENT", "IDENTITY"};
    DIR *d = opendir(path);
    if (!d) return 0;
    int dfd = dirfd(d), yes = 0, empty = 1;
    for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]) && !yes; i++)
        yes = faccessat(dfd, marks[i], F_OK, AT_SYMLINK_NOFOLLOW) == 0;
    struct dirent *de;
    while (!yes && empty && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) empty = 0;
    closedir(d);
    return yes || empty;
}

int tide_store_wipe(const char *path, char **errp) {
    if (!path || !*path) return fail(errp, "store: wipe: no path given");
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return 0;
        return fail(errp, "store: wipe %s: %s", path, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode))
        return fail(errp, "store: wipe %s: not a directory", path);
    if (!looks_like_db(path))
        return fail(errp, "store: wipe %s: not a RocksDB database, refusing to delete it",
                    path);
    wipe_errno = 0;
    wipe_failed[0] = '\0';
    /* Depth first (children before their directory), never following
     * symlinks nor crossing into another mount. */
    int r = nftw(path, on_wipe_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    if (r == 0) return 0;
    if (r > 0) return fail(errp, "store: wipe %s: %s", wipe_failed, strerror(wipe_errno));
    return fail(errp, "store: wipe %s: %s", path, strerror(errno));
}

/* --- point operations --- */

int tide_store_put(tide_store_db_t *db, uint8_t store, int32_t partition, const char *key,
                   size_t klen, const char *val, size_t vlen, char **errp) {
    if (bad_partition(partition, errp)) return -1;
    char buf[KEY_STACK], *k = key_make(buf, store, partition, key, klen);
    if (!k) return fail(errp, "store: out of memory");
    int rc = cache_set(db, k, KEY_HDR + klen, val ? val : "", vlen, 1, errp);
    key_done(buf, k);
    return rc;
}

int tide_store_delete(tide_store_db_t *db, uint8_t store, int32_t partition, const char *key,
                      size_t klen, char **errp) {
    if (bad_partition(partition, errp)) return -1;
    char buf[KEY_STACK], *k = key_make(buf, store, partition, key, klen);
    if (!k) return fail(errp, "store: out of memory");
    int rc = cache_set(db, k, KEY_HDR + klen, NULL, 0, 1, errp);
    key_done(buf, k);
    return rc;
}

int tide_store_get(tide_store_db_t *db, uint8_t store, int32_t partition, const char *key,
                   size_t klen, const char **val, size_t *vlen, char **errp) {
    *val = NULL;
    *vlen = 0;
    if (bad_partition(partition, errp)) return -1;
    char buf[KEY_STACK], *k = key_make(buf, store, partition, key, klen);
    if (!k) return fail(errp, "store: out of memory");
    /* The previous value's lifetime ends here, as the header promises. A
     * pinnable slice spares the copy rocksdb_get makes: a value found in a
     * table stays in its cache block, pinned until the next get. */
    if (db->last) {
        rocksdb_pinnableslice_destroy(db->last);
        db->last = NULL;
    }
    cache_entry_t *c = *cache_slot(db, k, KEY_HDR + klen, tide_fnv1a64(k, KEY_HDR + klen));
    if (c) {
        key_done(buf, k);
        if (c->deleted) return 0;
        *val = c->data + c->klen;
        *vlen = c->vlen;
        return 1;
    }
    char *e = NULL;
    rocksdb_pinnableslice_t *v = rocksdb_get_pinned(db->rdb, db->ro, k, KEY_HDR + klen, &e);
    key_done(buf, k);
    if (e) {
        if (v) rocksdb_pinnableslice_destroy(v);
        return pass(errp, e);
    }
    if (!v) return 0;
    db->last = v;
    *val = rocksdb_pinnableslice_value(v, vlen);
    /* Keep it: the next read of this key (a count's next increment) stays
     * in memory. The pinned value above stays valid until the next get. */
    char *cerr = NULL;
    if (cache_set(db, k, KEY_HDR + klen, *val, *vlen, 0, &cerr)) free(cerr);
    return 1;
}

/* --- iterators --- */

/* lo is [hdr][lo_key]; hi is [hdr][hi_key] when hi_key is given, else the
 * successor of lo (prefix scan) or of the header alone (to the end of the
 * partition). */
enum hi_kind { HI_KEY, HI_PREFIX_END, HI_PARTITION_END };

static tide_store_iter_t *iter_new(tide_store_db_t *db, uint8_t store, int32_t partition,
                                   const char *lo_key, size_t lo_klen, enum hi_kind kind,
                                   const char *hi_key, size_t hi_klen) {
    if (!db || partition < 0) return NULL;
    /* RocksDB must hold every write before it is read in order */
    char *err = NULL;
    if (cache_write_back(db, &err)) {
        free(err);
        return NULL;
    }
    size_t lolen = KEY_HDR + lo_klen;
    size_t hilen = KEY_HDR + (kind == HI_KEY ? hi_klen : kind == HI_PREFIX_END ? lo_klen : 0);
    tide_store_iter_t *it = calloc(1, sizeof(*it) + lolen + hilen);
    if (!it) return NULL;
    it->lo = (char *)(it + 1);
    it->hi = it->lo + lolen;
    put_header(it->lo, store, partition);
    if (lo_klen) memcpy(it->lo + KEY_HDR, lo_key, lo_klen);
    put_header(it->hi, store, partition);
    if (kind == HI_KEY && hi_klen) memcpy(it->hi + KEY_HDR, hi_key, hi_klen);
    if (kind == HI_PREFIX_END && lo_klen) memcpy(it->hi + KEY_HDR, lo_key, lo_klen);
    it->lolen = lolen;
    it->hilen = kind == HI_KEY ? hilen : successor(it->hi, hilen);

    /* A RocksDB iterator already reads as of its creation; the explicit
     * snapshot states the header's promise instead of relying on that. */
    it->snap = rocksdb_create_snapshot(db->rdb);
    it->ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_snapshot(it->ro, it->snap);
    /* Both bounds: the upper one is what keeps a scan inside its
     * (store, partition); the lower one lets RocksDB skip whole files. */
    rocksdb_readoptions_set_iterate_lower_bound(it->ro, it->lo, it->lolen);
    rocksdb_readoptions_set_iterate_upper_bound(it->ro, it->hi, it->hilen);
    it->it = rocksdb_create_iterator(db->rdb, it->ro);
    rocksdb_iter_seek(it->it, it->lo, it->lolen);

    it->db = db;
    it->next = db->iters;
    if (db->iters) db->iters->prev = it;
    db->iters = it;
    return it;
}

tide_store_iter_t *tide_store_iter(tide_store_db_t *db, uint8_t store, int32_t partition,
                                   const char *from, size_t flen, const char *to, size_t tlen) {
    return iter_new(db, store, partition, from, from ? flen : 0, to ? HI_KEY : HI_PARTITION_END,
                    to, tlen);
}

tide_store_iter_t *tide_store_iter_prefix(tide_store_db_t *db, uint8_t store, int32_t partition,
                                          const char *prefix, size_t plen) {
    return iter_new(db, store, partition, prefix, prefix ? plen : 0, HI_PREFIX_END, NULL, 0);
}

int tide_store_iter_next(tide_store_iter_t *it, const char **key, size_t *klen,
                         const char **val, size_t *vlen) {
    if (!it || it->done) return 0;
    /* The first call returns what the seek found; RocksDB forbids Next() on
     * an exhausted iterator, hence `done`. */
    if (it->started) rocksdb_iter_next(it->it);
    it->started = 1;
    if (!rocksdb_iter_valid(it->it)) {
        it->done = 1;
        return 0;
    }
    size_t kl;
    const char *k = rocksdb_iter_key(it->it, &kl);
    *key = k + KEY_HDR;
    *klen = kl - KEY_HDR;
    *val = rocksdb_iter_value(it->it, vlen);
    return 1;
}

void tide_store_iter_free(tide_store_iter_t *it) {
    if (!it) return;
    iter_detach(it);
    free(it);
}

/* --- range deletes --- */

int tide_store_delete_range(tide_store_db_t *db, uint8_t store, int32_t partition,
                            const char *from, size_t flen, const char *to, size_t tlen,
                            char **errp) {
    if (bad_partition(partition, errp)) return -1;
    /* Cached writes first, then the range goes in RocksDB, and the cache
     * forgets everything (it may hold keys of the range). */
    if (cache_write_back(db, errp)) return -1;
    cache_clear(db);
    if (!from) flen = 0;
    /* An empty or inverted range deletes nothing; RocksDB would reject the
     * inverted one as an error. */
    if (to && bytes_cmp(from ? from : "", flen, to, tlen) >= 0) return 0;
    size_t lolen = KEY_HDR + flen, hilen = KEY_HDR + (to ? tlen : 0);
    char *lo = malloc(lolen + hilen);
    if (!lo) return fail(errp, "store: out of memory");
    char *hi = lo + lolen;
    put_header(lo, store, partition);
    if (flen) memcpy(lo + KEY_HDR, from, flen);
    put_header(hi, store, partition);
    if (to && tlen) memcpy(hi + KEY_HDR, to, tlen);
    if (!to) hilen = successor(hi, KEY_HDR);

    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    /* The C API of 7.8 has no handle for the default column family, which
     * rocksdb_delete_range_cf needs; a one-entry batch does the same. */
    rocksdb_writebatch_delete_range(b, lo, lolen, hi, hilen);
    char *e = NULL;
    rocksdb_write(db->rdb, db->wo, b, &e);
    rocksdb_writebatch_destroy(b);
    free(lo);
    return e ? pass(errp, e) : 0;
}

int tide_store_delete_partition(tide_store_db_t *db, int32_t partition, char **errp) {
    if (bad_partition(partition, errp)) return -1;
    if (cache_write_back(db, errp)) return -1;
    cache_clear(db);
    /* One range per store id, all in one batch: the partition's state goes
     * at once or not at all. */
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    for (unsigned s = 0; s < 256; s++) {
        char lo[KEY_HDR], hi[KEY_HDR];
        put_header(lo, (uint8_t)s, partition);
        memcpy(hi, lo, KEY_HDR);
        size_t hilen = successor(hi, KEY_HDR);
        rocksdb_writebatch_delete_range(b, lo, KEY_HDR, hi, hilen);
    }
    char *e = NULL;
    rocksdb_write(db->rdb, db->wo, b, &e);
    rocksdb_writebatch_destroy(b);
    return e ? pass(errp, e) : 0;
}

/* --- durability, accounting --- */

int tide_store_commit(tide_store_db_t *db, char **errp) {
    if (cache_write_back(db, errp)) return -1;
    db->spilled = 0;
    return 0;
}

int tide_store_uncommitted_spilled(const tide_store_db_t *db) { return db->spilled; }

int tide_store_pressure(const tide_store_db_t *db) { return db->cache_used > db->cache_budget; }

/* The partition a cached key belongs to ([store u8][partition u32 BE]). */
static int32_t entry_partition(const cache_entry_t *e) {
    const unsigned char *k = (const unsigned char *)e->data;
    return (int32_t)((uint32_t)k[1] << 24 | (uint32_t)k[2] << 16 | (uint32_t)k[3] << 8 | k[4]);
}

static void cache_unlink(tide_store_db_t *db, cache_entry_t *e) {
    cache_entry_t **p = &db->buckets[e->hash & (db->n_buckets - 1)];
    while (*p && *p != e) p = &(*p)->next;
    if (*p) *p = e->next;
    db->cache_used -= sizeof(cache_entry_t) + e->klen + e->vlen;
    db->n_entries--;
    free(e);
}

void tide_store_rollback(tide_store_db_t *db, int32_t partition) {
    size_t k = 0;
    for (size_t i = 0; i < db->n_dirty; i++) {
        cache_entry_t *e = db->dirty[i];
        if (partition >= 0 && entry_partition(e) != partition) {
            e->dirty_at = (uint32_t)k;
            db->dirty[k++] = e;
            continue;
        }
        cache_unlink(db, e);
    }
    db->n_dirty = k;
}

int tide_store_flush(tide_store_db_t *db, char **errp) {
    /* Without a WAL, durable means in table files: write the cache back,
     * flush the memtables and wait. Called at each commit, before the
     * checkpoint says so. */
    if (cache_write_back(db, errp)) return -1;
    char *e = NULL;
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    rocksdb_flush(db->rdb, fo, &e);
    rocksdb_flushoptions_destroy(fo);
    return e ? pass(errp, e) : 0;
}

uint64_t tide_store_memory_bytes(tide_store_db_t *db) {
    uint64_t total = rocksdb_cache_get_usage(db->cache) + db->cache_used, v;
    /* All memtables, including immutable ones still pinned by iterators. */
    if (rocksdb_property_int(db->rdb, "rocksdb.size-all-mem-tables", &v) == 0) total += v;
    /* Table readers outside the cache (small: index and filters are cached). */
    if (rocksdb_property_int(db->rdb, "rocksdb.estimate-table-readers-mem", &v) == 0) total += v;
    return total;
}
