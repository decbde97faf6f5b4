/*
 * store.c: a worker's local state in one RocksDB database (see store.h).
 *
 * It owns the RocksDB handle, the LRU block cache every store of the worker
 * shares, the record cache in front of RocksDB, the value of the last lookup
 * and the iterators still open on the database. It turns (store, partition,
 * key) into one flat RocksDB key, [store u8][partition u32 big-endian][key],
 * and bounds every iterator and range delete to the (store, partition) it
 * was asked for, so one task can never read or erase another's keys.
 *
 * The contract it keeps: RocksDB holds only committed state. A write stays
 * in the record cache, dirty, until tide_store_commit writes every dirty
 * entry in one batch; a rollback forgets dirty entries, and a crash or a
 * close without a commit loses them, as an aborted transaction would. The
 * one exception is documented where it happens (a transaction too large for
 * memory spills, and says so through tide_store_spilled). It must never
 * write a dirty entry to RocksDB otherwise, never repair, wipe or "fix" a
 * database on its own (the caller decides, and restores from the
 * changelogs), and never delete a directory that does not look like a
 * RocksDB database.
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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "rdb.h"
#include "skiplist.h"

#define KEY_HDR 5 /* store id + partition */
#define DEFAULT_BLOCK_CACHE (8u << 20)
#define DEFAULT_WRITE_BUFFER (16u << 20)
#define DEFAULT_RECORD_CACHE (16u << 20)
/* Enough for the keys detectors use (ids, short composites) without a
 * malloc per operation; longer keys fall back to the heap. */
#define KEY_STACK 256
/* Dirty entries may pass the cache budget (tide_store_pressure asks the
 * worker to commit early) up to this many budgets; past it they spill to
 * RocksDB rather than exhaust memory (tide_store_spilled). */
#define SPILL_FACTOR 4

/* The record cache, as Kafka Streams has one: the latest value of recently
 * used keys, in front of RocksDB. An entry is in one of three states:
 *
 *   CLEAN    the value RocksDB holds (read from it, or written and
 *            committed); evicted by a clock sweep when the cache is full
 *   DIRTY    a write not committed yet: never evicted, never in RocksDB
 *            before tide_store_commit (but for the spill escape), dropped by
 *            a rollback
 *   PENDING  a committed write (a restore's) not yet in RocksDB: written
 *            back whenever convenient (over budget, a commit, an iterator)
 *
 * Durability is the changelog's: every write is changelogged, and a
 * checkpoint flushes memtables only after a commit. */
enum entry_state { CLEAN, DIRTY, PENDING };

typedef struct tide_skiplist_node idx_node_t;

typedef struct cache_entry {
    struct cache_entry *next; /* bucket chain */
    uint64_t hash;
    size_t klen, vlen;        /* klen includes the [store][partition] header */
    idx_node_t *node;         /* DIRTY in an indexed store: its node in db->index */
    uint32_t list_at;         /* DIRTY, PENDING: its place in db->dirty, db->pending */
    uint8_t state;            /* enum entry_state */
    uint8_t deleted;          /* a tombstone */
    uint8_t ref;              /* read since the clock hand last passed */
    char data[];              /* the key, then the value */
} cache_entry_t;

/* Entries of one state, so a write-back or a rollback need not scan. */
typedef struct entry_list {
    cache_entry_t **v;
    size_t n, cap;
} entry_list_t;

/* An entry as the write-back sorts it: the first 8 bytes of its key,
 * big-endian, decide most comparisons without reading the entry. */
typedef struct entry_ref {
    uint64_t head;
    cache_entry_t *e;
} entry_ref_t;

struct tide_store_db {
    cache_entry_t **buckets;
    size_t n_buckets, n_entries, hand; /* hand: the clock sweep's next bucket */
    size_t used, budget;               /* bytes of every entry; state.cache.bytes */
    size_t dirty_bytes, pending_bytes; /* the part of `used` in those states */
    entry_list_t dirty, pending;
    /* The DIRTY entries of every store an iterator has read, in key order.
     * A store never iterated is never indexed: a count per key pays nothing
     * for iterators it does not use. */
    tide_skiplist_t *index;
    uint8_t indexed[256];
    /* gen: bumped whenever entries leave the index or RocksDB changes (a
     * commit, a rollback, a spill, a range delete, a write-back); ins: at
     * each insert into the index. An open iterator that sees either change
     * finds its place again, past the last key it returned. */
    uint64_t gen, ins;
    /* Partitions whose uncommitted writes reached RocksDB since the last
     * commit; spilled_all when one could not be recorded. */
    int32_t *spilled;
    size_t n_spilled, cap_spilled;
    int spilled_all;
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
    rocksdb_iterator_t *it; /* RocksDB's side: what is committed */
    /* The read options hold Slices that point into lo/hi (the C API does not
     * copy bounds), so both live exactly as long as the RocksDB iterator. */
    rocksdb_readoptions_t *ro;
    idx_node_t *dn;         /* the dirty side: the next node not passed yet */
    uint64_t gen, ins;      /* db->gen, db->ins when both sides were positioned */
    int base_next, dn_next; /* the last entry came from there: step past it */
    int started, done;
    uint8_t store;
    size_t lolen, hilen;
    char *lo, *hi;        /* in the same allocation, after the struct */
    char *last;           /* the last key returned, header included */
    size_t last_len, last_cap;
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

/* Block-based tables reading through the database's LRU cache. */
static rocksdb_block_based_table_options_t *table_options(rocksdb_cache_t *cache) {
    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(t, cache);
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
    return t;
}

/* The database options: tables t, a memtable budget of wb_bytes. */
static rocksdb_options_t *db_options(rocksdb_block_based_table_options_t *t,
                                     size_t wb_bytes) {
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
    return opts;
}

/* The record cache in front of RocksDB: its budget, buckets and ordered
 * index. -1 when out of memory. */
static int record_cache_init(tide_store_db_t *db, size_t cache_bytes) {
    db->budget = cache_bytes ? cache_bytes : DEFAULT_RECORD_CACHE;
    /* About one bucket per 256 bytes of budget (entries are ~80 bytes and
     * the table doubles as they come), so that a clock sweep of a small
     * cache does not walk mostly empty buckets. */
    db->n_buckets = 1024;
    while (db->n_buckets < (1u << 16) && db->n_buckets * 256 < db->budget) db->n_buckets *= 2;
    db->buckets = calloc(db->n_buckets, sizeof(*db->buckets));
    db->index = tide_skiplist_new();
    return db->buckets && db->index ? 0 : -1;
}

tide_store_db_t *tide_store_open(const tide_store_opts_t *o, char **errp) {
    if (!o || !o->path || !*o->path) {
        fail(errp, "store: no path given");
        return NULL;
    }
    char *le = NULL;
    if (tide_rdb_load(&le)) {
        fail(errp, "store: %s", le ? le : "cannot load RocksDB");
        free(le);
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

    rocksdb_block_based_table_options_t *t = table_options(db->cache);
    rocksdb_options_t *opts = db_options(t, wb_bytes);
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
    if (record_cache_init(db, o->cache_bytes)) {
        tide_store_close(db);
        fail(errp, "store: out of memory");
        return NULL;
    }
    return db;
}

/* ---------------------------------------------------------------- cache */

static int partition_of(const char *k) {
    const unsigned char *b = (const unsigned char *)k;
    return (int32_t)((uint32_t)b[1] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 8 | b[4]);
}

static size_t entry_bytes(const cache_entry_t *e) {
    return sizeof(cache_entry_t) + e->klen + e->vlen;
}

/* Count e's bytes in (sign 1) or out of (-1) the totals of its state. */
static void account(tide_store_db_t *db, const cache_entry_t *e, int sign) {
    size_t b = entry_bytes(e);
    db->used = sign > 0 ? db->used + b : db->used - b;
    if (e->state == DIRTY) db->dirty_bytes = sign > 0 ? db->dirty_bytes + b : db->dirty_bytes - b;
    if (e->state == PENDING)
        db->pending_bytes = sign > 0 ? db->pending_bytes + b : db->pending_bytes - b;
}

static size_t clean_bytes(const tide_store_db_t *db) {
    return db->used - db->dirty_bytes - db->pending_bytes;
}

static int list_reserve(entry_list_t *l) {
    if (l->n < l->cap) return 0;
    size_t cap = l->cap ? l->cap * 2 : 1024;
    cache_entry_t **v = realloc(l->v, cap * sizeof(*v));
    if (!v) return -1;
    l->v = v;
    l->cap = cap;
    return 0;
}

static void list_remove(entry_list_t *l, cache_entry_t *e) {
    cache_entry_t *moved = l->v[--l->n];
    l->v[e->list_at] = moved;
    moved->list_at = e->list_at;
}

static entry_list_t *list_of(tide_store_db_t *db, const cache_entry_t *e) {
    return e->state == DIRTY ? &db->dirty : e->state == PENDING ? &db->pending : NULL;
}

/* A DIRTY entry of an indexed store joins the index (reserved for). */
static void index_add(tide_store_db_t *db, cache_entry_t *e) {
    if (!db->indexed[(uint8_t)e->data[0]]) return;
    e->node = tide_skiplist_insert(db->index, e->data, e->klen, e);
    db->ins++;
}

/* Move e to state s; the list of s must have room (list_reserve), and the
 * index a free node when e becomes DIRTY in an indexed store. */
static void set_state(tide_store_db_t *db, cache_entry_t *e, enum entry_state s) {
    if (e->state == s) return;
    if (e->state == CLEAN && s == DIRTY) { /* the common move, straight */
        e->state = DIRTY;
        e->list_at = (uint32_t)db->dirty.n;
        db->dirty.v[db->dirty.n++] = e;
        db->dirty_bytes += entry_bytes(e);
        index_add(db, e);
        return;
    }
    account(db, e, -1);
    entry_list_t *l = list_of(db, e);
    if (l) list_remove(l, e);
    if (e->node) {
        tide_skiplist_remove(db->index, e->node);
        e->node = NULL;
    }
    e->state = (uint8_t)s;
    if ((l = list_of(db, e))) {
        e->list_at = (uint32_t)l->n;
        l->v[l->n++] = e;
    }
    if (s == DIRTY) index_add(db, e);
    account(db, e, 1);
}

static cache_entry_t **cache_slot(tide_store_db_t *db, const char *k, size_t klen, uint64_t h) {
    cache_entry_t **p = &db->buckets[h & (db->n_buckets - 1)];
    while (*p && ((*p)->hash != h || (*p)->klen != klen || memcmp((*p)->data, k, klen)))
        p = &(*p)->next;
    return p;
}

/* Forget e whatever its state (it leaves its list and the index). */
static void entry_drop(tide_store_db_t *db, cache_entry_t *e) {
    cache_entry_t **slot = cache_slot(db, e->data, e->klen, e->hash);
    *slot = e->next;
    set_state(db, e, CLEAN);
    account(db, e, -1);
    db->n_entries--;
    free(e);
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
    db->n_entries = db->used = db->dirty_bytes = db->pending_bytes = 0;
    db->dirty.n = db->pending.n = 0;
    if (db->index) tide_skiplist_clear(db->index);
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
    db->hand = 0;
}

/* Evict CLEAN entries until the cache is at 3/4 of its budget, a clock hand
 * sweeping the buckets: an entry read since the hand last passed (ref) gets
 * a second chance. At most two turns, and it stops once nothing clean is
 * left: the rest is writes, which stay. Callers sweep only when clean
 * entries make up an eighth of the budget, so a sweep frees enough to pay
 * for itself. */
static void cache_evict(tide_store_db_t *db) {
    size_t target = db->budget - db->budget / 4;
    for (size_t steps = 2 * db->n_buckets; steps && db->used > target && clean_bytes(db); steps--) {
        cache_entry_t **p = &db->buckets[db->hand];
        while (*p) {
            cache_entry_t *e = *p;
            if (e->state != CLEAN || e->ref) {
                e->ref = 0;
                p = &e->next;
                continue;
            }
            *p = e->next;
            account(db, e, -1);
            db->n_entries--;
            free(e);
        }
        db->hand = (db->hand + 1) & (db->n_buckets - 1);
    }
}

/* --- write-back --- */

static uint64_t key_head(const cache_entry_t *e) {
    uint64_t h = 0;
    for (size_t i = 0; i < 8; i++) h = h << 8 | (i < e->klen ? (unsigned char)e->data[i] : 0);
    return h;
}

static int entry_order(const void *a, const void *b) {
    const entry_ref_t *x = a, *y = b;
    if (x->head != y->head) return x->head < y->head ? -1 : 1;
    size_t n = x->e->klen < y->e->klen ? x->e->klen : y->e->klen;
    int c = memcmp(x->e->data, y->e->data, n);
    if (c) return c;
    return x->e->klen < y->e->klen ? -1 : x->e->klen > y->e->klen;
}

static void spilled_add(tide_store_db_t *db, int32_t p) {
    for (size_t i = 0; i < db->n_spilled; i++)
        if (db->spilled[i] == p) return;
    if (db->n_spilled == db->cap_spilled) {
        size_t cap = db->cap_spilled ? db->cap_spilled * 2 : 16;
        int32_t *v = realloc(db->spilled, cap * sizeof(*v));
        if (!v) {
            db->spilled_all = 1; /* cannot say which: say all */
            return;
        }
        db->spilled = v;
        db->cap_spilled = cap;
    }
    db->spilled[db->n_spilled++] = p;
}

/* What write_back writes: the PENDING entries, the DIRTY ones (a commit);
 * WB_SPILL: the DIRTY ones are the escape, their partitions are recorded
 * as spilled; WB_DROP: the PENDING ones leave the cache once written. */
enum { WB_PENDING = 1, WB_DIRTY = 2, WB_SPILL = 4, WB_DROP = 8 };

/* Unlink every entry of a list from its chain and free it (the list is
 * emptied by the caller). */
static void drop_all(tide_store_db_t *db, entry_list_t *l) {
    for (size_t i = 0; i < l->n; i++) {
        cache_entry_t *e = l->v[i];
        *cache_slot(db, e->data, e->klen, e->hash) = e->next;
        db->used -= entry_bytes(e);
        db->n_entries--;
        free(e);
    }
}

/* Write the entries of the lists in `which` to RocksDB in one batch; they
 * stay cached, CLEAN (but see WB_DROP). The batch goes in key order: the
 * memtable's skip list then inserts each key next to the one before
 * instead of searching from the top (in hash order, the inserts were 30%
 * of a count-per-key detector's time). */
static int write_back(tide_store_db_t *db, int which, char **errp) {
    int spill = which & WB_SPILL;
    size_t nd = which & WB_DIRTY ? db->dirty.n : 0, np = which & WB_PENDING ? db->pending.n : 0;
    size_t n = nd + np;
    if (!n) return 0;
    entry_ref_t *order = malloc(n * sizeof(*order));
    if (!order) return fail(errp, "store: out of memory");
    for (size_t i = 0; i < nd; i++) order[i] = (entry_ref_t){key_head(db->dirty.v[i]), db->dirty.v[i]};
    for (size_t i = 0; i < np; i++)
        order[nd + i] = (entry_ref_t){key_head(db->pending.v[i]), db->pending.v[i]};
    qsort(order, n, sizeof(*order), entry_order);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    for (size_t i = 0; i < n; i++) {
        cache_entry_t *e = order[i].e;
        if (e->deleted) rocksdb_writebatch_delete(wb, e->data, e->klen);
        else rocksdb_writebatch_put(wb, e->data, e->klen, e->data + e->klen, e->vlen);
    }
    char *err = NULL;
    rocksdb_write(db->rdb, db->wo, wb, &err);
    rocksdb_writebatch_destroy(wb);
    if (err) {
        free(order);
        return pass(errp, err);
    }
    int32_t last = -1;
    for (size_t i = 0; spill && i < n; i++) {
        int32_t p = partition_of(order[i].e->data); /* in key order: runs of one partition */
        if (order[i].e->state == DIRTY && p != last) spilled_add(db, last = p);
    }
    free(order);
    /* Every entry of the lists written leaves its list at once. */
    for (size_t i = 0; i < nd; i++) db->dirty.v[i]->state = CLEAN, db->dirty.v[i]->node = NULL;
    for (size_t i = 0; i < np; i++) db->pending.v[i]->state = CLEAN;
    if (np && (which & WB_DROP)) drop_all(db, &db->pending);
    if (nd) {
        db->dirty.n = db->dirty_bytes = 0;
        tide_skiplist_clear(db->index);
    }
    if (np) db->pending.n = db->pending_bytes = 0;
    db->gen++;
    return 0;
}

/* Before an entry of `size` bytes joins the cache in state s (CLEAN: a
 * value just read from RocksDB). Over budget, committed writes go to
 * RocksDB and clean entries are evicted; uncommitted ones stay, and only
 * past SPILL_FACTOR budgets do they spill. ROOM_NONE: do not cache it (a
 * CLEAN value, when writes fill the cache; a write larger than the cache
 * may hold, which goes straight to RocksDB). */
enum room { ROOM_ERROR = -1, ROOM_OK, ROOM_NONE };

static enum room make_room(tide_store_db_t *db, size_t size, enum entry_state s, char **errp) {
    if (db->used + size <= db->budget) return ROOM_OK;
    /* A restore's writes are a batch, not keys to keep: written, they go,
     * and the next batch has the room (the hot keys stay). */
    if (db->pending.n && write_back(db, WB_PENDING | WB_DROP, errp)) return ROOM_ERROR;
    if (s == DIRTY && db->dirty.n && db->dirty_bytes + size > SPILL_FACTOR * db->budget &&
        write_back(db, WB_DIRTY | WB_SPILL, errp))
        return ROOM_ERROR;
    if (clean_bytes(db) >= db->budget / 8) cache_evict(db);
    switch (s) {
    case CLEAN: return db->used + size <= db->budget ? ROOM_OK : ROOM_NONE;
    case PENDING: return size <= db->budget ? ROOM_OK : ROOM_NONE;
    case DIRTY: return size <= SPILL_FACTOR * db->budget ? ROOM_OK : ROOM_NONE;
    }
    return ROOM_NONE;
}

/* Give the key of *slot (h, k, klen) the value val (NULL: a tombstone): in
 * place when the entry's allocation fits (a count's next number: no malloc,
 * no free), else in a new entry that takes the old one's place in its
 * chain, list and index node. A new key starts CLEAN. NULL when out of
 * memory, the cache unchanged. */
static cache_entry_t *entry_set(tide_store_db_t *db, cache_entry_t **slot, uint64_t h,
                                const char *k, size_t klen, const char *val, size_t vlen) {
    size_t size = sizeof(cache_entry_t) + klen + (val ? vlen : 0);
    cache_entry_t *old = *slot;
    if (old && malloc_usable_size(old) >= size) {
        account(db, old, -1);
        old->vlen = val ? vlen : 0;
        old->deleted = val == NULL;
        if (val) memcpy(old->data + klen, val, vlen);
        account(db, old, 1);
        return old;
    }
    cache_entry_t *e = malloc(size);
    if (!e) return NULL;
    e->hash = h;
    e->klen = klen;
    e->vlen = val ? vlen : 0;
    e->deleted = val == NULL;
    e->ref = 0;
    memcpy(e->data, k, klen);
    if (val) memcpy(e->data + klen, val, vlen);
    if (old) {
        account(db, old, -1);
        e->next = old->next;
        e->state = old->state;
        e->list_at = old->list_at;
        e->node = old->node;
        entry_list_t *l = list_of(db, e);
        if (l) l->v[e->list_at] = e;
        if (e->node) { /* same key bytes, so the same place in the order */
            e->node->key = e->data;
            e->node->item = e;
        }
        free(old);
    } else {
        e->next = NULL;
        e->state = CLEAN;
        e->node = NULL;
        db->n_entries++;
    }
    *slot = e;
    account(db, e, 1);
    return e;
}

/* Write k = val (NULL: delete) to RocksDB at once, bypassing the cache. */
static int write_through(tide_store_db_t *db, const char *k, size_t klen, const char *val,
                         size_t vlen, char **errp) {
    char *err = NULL;
    if (val) rocksdb_put(db->rdb, db->wo, k, klen, val, vlen, &err);
    else rocksdb_delete(db->rdb, db->wo, k, klen, &err);
    return err ? pass(errp, err) : 0;
}

/* An uncommitted write too large for memory (over SPILL_FACTOR budgets on
 * its own): the escape at its extreme. Every dirty entry goes first, then
 * this one, and the cache forgets the key. */
static int spill_one(tide_store_db_t *db, const char *k, size_t klen, const char *val,
                     size_t vlen, char **errp) {
    if (write_back(db, WB_PENDING | WB_DIRTY | WB_SPILL, errp)) return -1;
    if (write_through(db, k, klen, val, vlen, errp)) return -1;
    spilled_add(db, partition_of(k));
    cache_entry_t *c = *cache_slot(db, k, klen, tide_fnv1a64(k, klen));
    if (c) entry_drop(db, c);
    db->gen++;
    return 0;
}

/* An uncommitted write of k: the cache holds it, DIRTY, until a commit. */
static int cache_write(tide_store_db_t *db, const char *k, size_t klen, const char *val,
                       size_t vlen, char **errp) {
    size_t size = sizeof(cache_entry_t) + klen + (val ? vlen : 0);
    if (db->used + size > db->budget) {
        enum room r = make_room(db, size, DIRTY, errp);
        if (r == ROOM_ERROR) return -1;
        if (r == ROOM_NONE) return spill_one(db, k, klen, val, vlen, errp);
    }
    if (db->n_entries >= db->n_buckets) cache_grow(db);
    uint64_t h = tide_fnv1a64(k, klen);
    cache_entry_t **slot = cache_slot(db, k, klen, h);
    cache_entry_t *c = *slot;
    /* A committed value waiting to be written would be lost under a write
     * a rollback may drop: it goes to RocksDB first (a restore's key being
     * written by processing: rare). */
    if (c && c->state == PENDING && write_back(db, WB_PENDING, errp)) return -1;
    int was_dirty = c && c->state == DIRTY;
    if (!was_dirty && (list_reserve(&db->dirty) || (db->indexed[(uint8_t)k[0]] &&
                                                    tide_skiplist_reserve(db->index))))
        return fail(errp, "store: out of memory");
    if (c && malloc_usable_size(c) >= size) {
        /* The hot path: a new value for a cached key that fits (a count's
         * next number), written where it is: no malloc and no free. */
        size_t was = c->vlen;
        c->vlen = val ? vlen : 0;
        c->deleted = val == NULL;
        if (val) memcpy(c->data + klen, val, vlen);
        db->used = db->used - was + c->vlen;
        if (was_dirty) db->dirty_bytes = db->dirty_bytes - was + c->vlen;
        else set_state(db, c, DIRTY);
        return 0;
    }
    cache_entry_t *e = entry_set(db, slot, h, k, klen, val, vlen);
    if (!e) return fail(errp, "store: out of memory");
    set_state(db, e, DIRTY);
    return 0;
}

/* A committed write of k (a restore's): PENDING, written back at the next
 * convenient time. Under a DIRTY entry of the key it goes straight to
 * RocksDB: the uncommitted write stays on top of it until its commit or
 * rollback. */
static int cache_write_committed(tide_store_db_t *db, const char *k, size_t klen,
                                 const char *val, size_t vlen, char **errp) {
    enum room r = make_room(db, sizeof(cache_entry_t) + klen + (val ? vlen : 0), PENDING, errp);
    if (r == ROOM_ERROR) return -1;
    if (db->n_entries >= db->n_buckets) cache_grow(db);
    uint64_t h = tide_fnv1a64(k, klen);
    cache_entry_t **slot = cache_slot(db, k, klen, h);
    if (*slot && (*slot)->state == DIRTY) return write_through(db, k, klen, val, vlen, errp);
    if (r == ROOM_NONE) { /* larger than the whole cache */
        if (*slot) entry_drop(db, *slot);
        db->gen++;
        return write_through(db, k, klen, val, vlen, errp);
    }
    if (list_reserve(&db->pending)) return fail(errp, "store: out of memory");
    cache_entry_t *e = entry_set(db, slot, h, k, klen, val, vlen);
    if (!e) return fail(errp, "store: out of memory");
    set_state(db, e, PENDING);
    return 0;
}

/* Keep a value just read from RocksDB, when there is room: the next read
 * of the key (a count's next increment) stays in memory. */
static void cache_fill(tide_store_db_t *db, const char *k, size_t klen, const char *val,
                       size_t vlen) {
    char *err = NULL;
    if (make_room(db, sizeof(cache_entry_t) + klen + vlen, CLEAN, &err) != ROOM_OK) {
        free(err);
        return;
    }
    if (db->n_entries >= db->n_buckets) cache_grow(db);
    uint64_t h = tide_fnv1a64(k, klen);
    cache_entry_t **slot = cache_slot(db, k, klen, h);
    if (!*slot) entry_set(db, slot, h, k, klen, val, vlen);
}

/* Release what an iterator holds inside RocksDB; its memory stays. */
static void iter_detach(tide_store_iter_t *it) {
    tide_store_db_t *db = it->db;
    if (!db) return;
    rocksdb_iter_destroy(it->it);
    rocksdb_readoptions_destroy(it->ro);
    if (it->prev) it->prev->next = it->next;
    else db->iters = it->next;
    if (it->next) it->next->prev = it->prev;
    it->db = NULL;
    it->it = NULL;
    it->ro = NULL;
    it->dn = NULL;
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
        /* Committed writes still in memory go to RocksDB, which flushes
         * them on close; uncommitted ones are lost, as in a crash. */
        char *err = NULL;
        if (db->rdb && write_back(db, WB_PENDING, &err)) {
            fprintf(stderr, "tide: store: %s\n", err);
            free(err);
        }
        cache_clear(db);
        free(db->buckets);
    }
    free(db->dirty.v);
    free(db->pending.v);
    free(db->spilled);
    tide_skiplist_free(db->index);
    if (db->rdb) rocksdb_close(db->rdb);
    if (db->cache) rocksdb_cache_destroy(db->cache);
    if (db->wo) rocksdb_writeoptions_destroy(db->wo);
    if (db->ro) rocksdb_readoptions_destroy(db->ro);
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

/* val NULL: a delete. */
static int write_key(tide_store_db_t *db, uint8_t store, int32_t partition, const char *key,
                     size_t klen, const char *val, size_t vlen, int committed, char **errp) {
    if (bad_partition(partition, errp)) return -1;
    char buf[KEY_STACK], *k = key_make(buf, store, partition, key, klen);
    if (!k) return fail(errp, "store: out of memory");
    int rc = committed ? cache_write_committed(db, k, KEY_HDR + klen, val, vlen, errp)
                       : cache_write(db, k, KEY_HDR + klen, val, vlen, errp);
    key_done(buf, k);
    return rc;
}

int tide_store_put(tide_store_db_t *db, uint8_t store, int32_t partition, const char *key,
                   size_t klen, const char *val, size_t vlen, char **errp) {
    return write_key(db, store, partition, key, klen, val ? val : "", vlen, 0, errp);
}

int tide_store_delete(tide_store_db_t *db, uint8_t store, int32_t partition, const char *key,
                      size_t klen, char **errp) {
    return write_key(db, store, partition, key, klen, NULL, 0, 0, errp);
}

int tide_store_put_committed(tide_store_db_t *db, uint8_t store, int32_t partition,
                             const char *key, size_t klen, const char *val, size_t vlen,
                             char **errp) {
    return write_key(db, store, partition, key, klen, val, vlen, 1, errp);
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
        c->ref = 1;
        if (c->deleted) return 0;
        *val = c->data + c->klen;
        *vlen = c->vlen;
        return 1;
    }
    char *e = NULL;
    rocksdb_pinnableslice_t *v = rocksdb_get_pinned(db->rdb, db->ro, k, KEY_HDR + klen, &e);
    if (e) {
        key_done(buf, k);
        if (v) rocksdb_pinnableslice_destroy(v);
        return pass(errp, e);
    }
    if (!v) {
        key_done(buf, k);
        return 0;
    }
    db->last = v;
    *val = rocksdb_pinnableslice_value(v, vlen);
    cache_fill(db, k, KEY_HDR + klen, *val, *vlen);
    key_done(buf, k);
    return 1;
}

/* --- iterators --- */

/* Index the dirty entries of one store, the first time it is iterated:
 * from then on each of its writes is indexed as it is made. On no memory
 * nothing of the store stays indexed. */
static int index_store(tide_store_db_t *db, uint8_t store) {
    if (db->indexed[store]) return 0;
    for (size_t i = 0; i < db->dirty.n; i++) {
        cache_entry_t *e = db->dirty.v[i];
        if ((uint8_t)e->data[0] != store) continue;
        if (tide_skiplist_reserve(db->index)) {
            for (size_t j = 0; j < i; j++)
                if (db->dirty.v[j]->node && (uint8_t)db->dirty.v[j]->data[0] == store) {
                    tide_skiplist_remove(db->index, db->dirty.v[j]->node);
                    db->dirty.v[j]->node = NULL;
                }
            return -1;
        }
        e->node = tide_skiplist_insert(db->index, e->data, e->klen, e);
        db->ins++;
    }
    db->indexed[store] = 1;
    return 0;
}

/* Both sides at the first key >= lo (or past the last key returned, when
 * the iterator has started): at creation, and again after the db changed
 * under it (db->gen). A new RocksDB iterator reads what is committed now. */
static void iter_position(tide_store_iter_t *it) {
    tide_store_db_t *db = it->db;
    if (it->it) rocksdb_iter_destroy(it->it);
    it->it = rocksdb_create_iterator(db->rdb, it->ro);
    const char *from = it->started ? it->last : it->lo;
    size_t flen = it->started ? it->last_len : it->lolen;
    rocksdb_iter_seek(it->it, from, flen);
    if (it->started && rocksdb_iter_valid(it->it)) {
        size_t kl;
        const char *k = rocksdb_iter_key(it->it, &kl);
        if (kl == flen && !memcmp(k, from, kl)) rocksdb_iter_next(it->it);
    }
    it->dn = tide_skiplist_seek(db->index, from, flen, it->started);
    it->base_next = it->dn_next = 0;
    it->gen = db->gen;
    it->ins = db->ins;
}

/* lo is [hdr][lo_key]; hi is [hdr][hi_key] when hi_key is given, else the
 * successor of lo (prefix scan) or of the header alone (to the end of the
 * partition). */
enum hi_kind { HI_KEY, HI_PREFIX_END, HI_PARTITION_END };

static tide_store_iter_t *iter_new(tide_store_db_t *db, uint8_t store, int32_t partition,
                                   const char *lo_key, size_t lo_klen, enum hi_kind kind,
                                   const char *hi_key, size_t hi_klen) {
    if (!db || partition < 0) return NULL;
    /* Committed writes reach RocksDB before it is read in order; the
     * store's uncommitted ones are merged from the index. */
    char *err = NULL;
    if (write_back(db, WB_PENDING, &err)) {
        free(err);
        return NULL;
    }
    if (index_store(db, store)) return NULL;
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
    it->store = store;

    /* A RocksDB iterator reads as of its creation (an implicit snapshot),
     * which iter_position relies on. Both bounds: the upper one is what
     * keeps a scan inside its (store, partition); the lower one lets
     * RocksDB skip whole files. */
    it->ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_lower_bound(it->ro, it->lo, it->lolen);
    rocksdb_readoptions_set_iterate_upper_bound(it->ro, it->hi, it->hilen);
    it->db = db;
    iter_position(it);

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

/* Hand out key k (header included) and its value; the key is copied, so
 * the iterator can find its place again if the db changes under it. */
static int iter_yield(tide_store_iter_t *it, const char *k, size_t kl, const char *v, size_t vl,
                      const char **key, size_t *klen, const char **val, size_t *vlen) {
    if (kl > it->last_cap) {
        size_t cap = kl < 64 ? 64 : kl * 2;
        char *b = realloc(it->last, cap);
        if (!b) return -1;
        it->last = b;
        it->last_cap = cap;
    }
    memcpy(it->last, k, kl);
    it->last_len = kl;
    it->started = 1;
    *key = it->last + KEY_HDR;
    *klen = kl - KEY_HDR;
    *val = v;
    *vlen = vl;
    return 1;
}

int tide_store_iter_next(tide_store_iter_t *it, const char **key, size_t *klen,
                         const char **val, size_t *vlen) {
    if (!it || it->done) return 0;
    tide_store_db_t *db = it->db;
    if (it->gen != db->gen) {
        iter_position(it);
    } else {
        /* Step past what the last call returned only now, so that writes
         * made in between are seen (store.h). RocksDB has not changed;
         * the index has only grown, and when it has, the dirty side seeks
         * again: a key written just ahead of the iterator may sort before
         * the node it held. */
        if (it->base_next) rocksdb_iter_next(it->it);
        if (it->ins != db->ins) {
            it->dn = it->started ? tide_skiplist_seek(db->index, it->last, it->last_len, 1)
                                 : tide_skiplist_seek(db->index, it->lo, it->lolen, 0);
            it->ins = db->ins;
        } else if (it->dn_next) {
            it->dn = it->dn->next[0];
        }
        it->base_next = it->dn_next = 0;
    }
    for (;;) {
        const char *bk = NULL;
        size_t bkl = 0;
        if (rocksdb_iter_valid(it->it)) bk = rocksdb_iter_key(it->it, &bkl);
        idx_node_t *dn = it->dn;
        if (dn && bytes_cmp(dn->key, dn->klen, it->hi, it->hilen) >= 0) dn = it->dn = NULL;
        if (!bk && !dn) {
            it->done = 1;
            return 0;
        }
        int c = !dn ? 1 : !bk ? -1 : bytes_cmp(dn->key, dn->klen, bk, bkl);
        if (c > 0) { /* RocksDB's key comes first and nothing overrides it */
            size_t vl;
            const char *v = rocksdb_iter_value(it->it, &vl);
            it->base_next = 1;
            return iter_yield(it, bk, bkl, v, vl, key, klen, val, vlen);
        }
        const cache_entry_t *e = dn->item;
        if (e->deleted) { /* a tombstone hides RocksDB's key, if any */
            it->dn = dn->next[0];
            if (c == 0) rocksdb_iter_next(it->it);
            continue;
        }
        it->dn_next = 1;
        it->base_next = c == 0;
        return iter_yield(it, e->data, e->klen, e->data + e->klen, e->vlen, key, klen, val, vlen);
    }
}

void tide_store_iter_free(tide_store_iter_t *it) {
    if (!it) return;
    iter_detach(it);
    free(it->last);
    free(it);
}

/* --- range deletes --- */

/* Forget every cached entry with lo <= key < hi, whatever its state: a
 * range delete replaces what it covers, written or not. Scans the whole
 * cache; range deletes are rare (a task that restores from the start). */
static void cache_forget_range(tide_store_db_t *db, const char *lo, size_t lolen, const char *hi,
                               size_t hilen) {
    for (size_t i = 0; i < db->n_buckets; i++) {
        cache_entry_t *e = db->buckets[i];
        while (e) {
            cache_entry_t *next = e->next;
            if (bytes_cmp(e->data, e->klen, lo, lolen) >= 0 &&
                bytes_cmp(e->data, e->klen, hi, hilen) < 0)
                entry_drop(db, e);
            e = next;
        }
    }
}

/* Delete [lo, hi) in RocksDB and in the cache, at once. Outside any
 * transaction by contract (a task that restores from the start): a change
 * a rollback keeps, like a restore's writes, so nothing is marked spilled.
 * Open iterators reposition. */
static int delete_ranges(tide_store_db_t *db, const char *const *los,
                         const size_t *lolens, const char *const *his, const size_t *hilens,
                         int n, char **errp) {
    /* Committed writes first: in RocksDB, the range must come after them. */
    if (write_back(db, WB_PENDING, errp)) return -1;
    /* One batch: the ranges go at once or not at all. The C API of 7.8 has
     * no handle for the default column family, which
     * rocksdb_delete_range_cf needs; a batch does the same. */
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    for (int i = 0; i < n; i++) rocksdb_writebatch_delete_range(b, los[i], lolens[i], his[i], hilens[i]);
    char *e = NULL;
    rocksdb_write(db->rdb, db->wo, b, &e);
    rocksdb_writebatch_destroy(b);
    if (e) return pass(errp, e);
    for (int i = 0; i < n; i++) cache_forget_range(db, los[i], lolens[i], his[i], hilens[i]);
    db->gen++;
    return 0;
}

int tide_store_delete_range(tide_store_db_t *db, uint8_t store, int32_t partition,
                            const char *from, size_t flen, const char *to, size_t tlen,
                            char **errp) {
    if (bad_partition(partition, errp)) return -1;
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
    const char *los[] = {lo}, *his[] = {hi};
    int rc = delete_ranges(db, los, &lolen, his, &hilen, 1, errp);
    free(lo);
    return rc;
}

int tide_store_delete_partition(tide_store_db_t *db, int32_t partition, char **errp) {
    if (bad_partition(partition, errp)) return -1;
    /* One range per store id. */
    char keys[256][2][KEY_HDR];
    const char *los[256], *his[256];
    size_t lolens[256], hilens[256];
    for (unsigned s = 0; s < 256; s++) {
        put_header(keys[s][0], (uint8_t)s, partition);
        memcpy(keys[s][1], keys[s][0], KEY_HDR);
        los[s] = keys[s][0];
        lolens[s] = KEY_HDR;
        his[s] = keys[s][1];
        hilens[s] = successor(keys[s][1], KEY_HDR);
    }
    return delete_ranges(db, los, lolens, his, hilens, 256, errp);
}

/* --- transactions --- */

int tide_store_commit(tide_store_db_t *db, char **errp) {
    if (write_back(db, WB_PENDING | WB_DIRTY, errp)) return -1;
    db->n_spilled = 0;
    db->spilled_all = 0;
    return 0;
}

size_t tide_store_rollback(tide_store_db_t *db, int32_t partition) {
    size_t n = 0;
    /* From the end: dropping an entry moves the list's last one into its
     * place, and that one was seen already. */
    for (size_t i = db->dirty.n; i-- > 0;) {
        cache_entry_t *e = db->dirty.v[i];
        if (partition >= 0 && partition_of(e->data) != partition) continue;
        entry_drop(db, e);
        n++;
    }
    if (n) db->gen++;
    return n;
}

int tide_store_pressure(const tide_store_db_t *db) { return db->dirty_bytes > db->budget; }

int tide_store_spilled(const tide_store_db_t *db, int32_t partition) {
    if (db->spilled_all) return 1;
    if (partition < 0) return db->n_spilled > 0;
    for (size_t i = 0; i < db->n_spilled; i++)
        if (db->spilled[i] == partition) return 1;
    return 0;
}

int tide_store_uncommitted_spilled(const tide_store_db_t *db) {
    return tide_store_spilled(db, -1);
}

/* --- durability, accounting --- */

void tide_store_stats(const tide_store_db_t *db, tide_store_stats_t *st) {
    st->cache_bytes = db->used;
    st->uncommitted_bytes = db->dirty_bytes;
    st->uncommitted_keys = db->dirty.n;
    st->unwritten_bytes = db->pending_bytes;
    st->budget = db->budget;
}

int tide_store_flush(tide_store_db_t *db, char **errp) {
    /* Without a WAL, durable means in table files: the committed writes
     * still in memory go to RocksDB, then the memtables are flushed and
     * waited for. Called before a checkpoint says so; the uncommitted
     * writes are no part of it. */
    if (write_back(db, WB_PENDING, errp)) return -1;
    char *e = NULL;
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    rocksdb_flush(db->rdb, fo, &e);
    rocksdb_flushoptions_destroy(fo);
    return e ? pass(errp, e) : 0;
}

uint64_t tide_store_memory_bytes(tide_store_db_t *db) {
    uint64_t total = rocksdb_cache_get_usage(db->cache) + db->used, v;
    total += tide_skiplist_bytes(db->index);
    /* All memtables, including immutable ones still pinned by iterators. */
    if (rocksdb_property_int(db->rdb, "rocksdb.size-all-mem-tables", &v) == 0) total += v;
    /* Table readers outside the cache (small: index and filters are cached). */
    if (rocksdb_property_int(db->rdb, "rocksdb.estimate-table-readers-mem", &v) == 0) total += v;
    return total;
}
