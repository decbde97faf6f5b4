/*
 * store.h: a detector worker's local state, one RocksDB database.
 *
 * Every store of every task (input partition) lives in the same database,
 * under a key prefix: [store id: 1 byte][partition: 4 bytes big-endian][key].
 * RocksDB memory is bounded per worker: one block cache and one write-buffer
 * budget shared by all stores. This unit knows nothing of Kafka or Lua: the
 * changelog, the checkpoint protocol and the Lua API are built on top of it.
 *
 * Transactions. RocksDB holds only committed state. tide_store_put and
 * tide_store_delete are uncommitted writes: reads and iterators of this db
 * see them at once, but they stay in memory (the record cache) until
 * tide_store_commit writes them all to RocksDB in one batch.
 * tide_store_rollback forgets them instead, and a crash (or a close without
 * a commit) loses them, so after either RocksDB is exactly the last commit
 * and the changelog's tail past the checkpoint rebuilds the rest. The worker:
 *
 *   process records        tide_store_put / _delete / _get / _iter
 *   transaction committed  tide_store_commit (ALOS: once outputs are acked)
 *   transaction aborted    tide_store_rollback(db, p) for each partition
 *                          rewound, or -1 for all; but a partition with
 *                          tide_store_spilled(db, p) set cannot be rolled
 *                          back in memory: wipe and restore it instead
 *   checkpoint             tide_store_flush (what is committed, to table
 *                          files; uncommitted writes stay in memory), then
 *                          write the checkpoint file: at any time
 *   restore                from the start: tide_store_delete_range or
 *                          _partition first; then tide_store_put_committed
 *                          for each changelog record (both outside
 *                          transactions: no commit needed, a rollback keeps
 *                          them, memory stays bounded)
 *   dirty data > budget    tide_store_pressure(db) is 1: commit early
 *
 * Errors: functions return 0 on success and -1 with *errp (malloc'd, caller
 * frees) on failure, as RocksDB's C API does; lookups return 1 found, 0 not.
 */
#ifndef TIDE_STORE_H
#define TIDE_STORE_H
#include <stddef.h>
#include <stdint.h>

typedef struct tide_store_db tide_store_db_t;
typedef struct tide_store_iter tide_store_iter_t;

typedef struct tide_store_opts {
    const char *path;          /* a directory; created if missing */
    size_t block_cache_bytes;  /* shared LRU block cache (0: 8 MiB) */
    size_t write_buffer_bytes; /* total memtable budget (0: 16 MiB) */
    size_t cache_bytes;        /* record cache in front of RocksDB (0: 16 MiB) */
} tide_store_opts_t;

/* Open (creating it if needed). A database that cannot be opened (corrupt,
 * wrong format) is reported, never repaired here: the caller wipes it with
 * tide_store_wipe() and restores from the changelogs. */
tide_store_db_t *tide_store_open(const tide_store_opts_t *o, char **errp);
/* Close. Uncommitted writes are lost, as in a crash: commit first to keep
 * them. Committed ones (tide_store_put_committed) are kept. */
void tide_store_close(tide_store_db_t *db);
/* Remove a database directory and everything in it. */
int tide_store_wipe(const char *path, char **errp);

/* Point operations within (store, partition). Keys and values are bytes.
 * put and delete are uncommitted writes (see above). */
int tide_store_put(tide_store_db_t *db, uint8_t store, int32_t partition, const char *key,
                   size_t klen, const char *val, size_t vlen, char **errp);
int tide_store_delete(tide_store_db_t *db, uint8_t store, int32_t partition, const char *key,
                      size_t klen, char **errp);
/* A committed write (val NULL: a delete), for restores, which happen
 * outside transactions: no commit is needed and a rollback keeps it. The
 * cache holds a bounded amount and writes it to RocksDB when full, at a
 * commit, a flush, a close and before an iterator reads. The partition must
 * have no uncommitted writes of the key; if it has, they stay on top of
 * this value until they are committed or rolled back. */
int tide_store_put_committed(tide_store_db_t *db, uint8_t store, int32_t partition,
                             const char *key, size_t klen, const char *val, size_t vlen,
                             char **errp);
/* 1 and *val, *vlen set, 0 when absent, -1 on error. The value is owned by
 * db and valid until the next call on db. */
int tide_store_get(tide_store_db_t *db, uint8_t store, int32_t partition, const char *key,
                   size_t klen, const char **val, size_t *vlen, char **errp);

/* Keys k with from <= k < to, in byte order, within (store, partition).
 * from NULL: from the first key; to NULL: to the last. A prefix scan is
 * tide_store_iter_prefix. NULL on error (out of memory).
 *
 * An iterator sees the writes made before its creation, committed or not,
 * merged in key order (a delete hides the key). It is live: the db may be
 * written while it is open (a sweep that deletes or updates what it
 * meets), and each call returns the smallest key greater than the last one
 * returned that the range holds at the time of the call, with its value at
 * that time. So keys come in strictly increasing order, never twice; a key
 * not written since the creation is returned; a key written ahead of the
 * iterator is seen as written (deleted: not returned), one written behind
 * it is not revisited. A commit, rollback or range delete while it is open
 * changes nothing to that. The first iterator over a store indexes the
 * store's uncommitted writes, and from then on each of its writes is
 * indexed as it is made: a store never iterated pays nothing for it. */
tide_store_iter_t *tide_store_iter(tide_store_db_t *db, uint8_t store, int32_t partition,
                                   const char *from, size_t flen, const char *to, size_t tlen);
tide_store_iter_t *tide_store_iter_prefix(tide_store_db_t *db, uint8_t store, int32_t partition,
                                          const char *prefix, size_t plen);
/* 1 with the next entry, 0 at the end, -1 out of memory. The key stays
 * valid until the next call on it; the value until the next call on it or
 * on its db. */
int tide_store_iter_next(tide_store_iter_t *it, const char **key, size_t *klen,
                         const char **val, size_t *vlen);
void tide_store_iter_free(tide_store_iter_t *it);

/* Delete keys from <= k < to (NULL: unbounded) within (store, partition),
 * in RocksDB at once. For a task that (re)starts its restore, outside any
 * transaction, like tide_store_put_committed: a rollback does not undo it,
 * and uncommitted writes in the range are dropped (that data is being
 * replaced). */
int tide_store_delete_range(tide_store_db_t *db, uint8_t store, int32_t partition,
                            const char *from, size_t flen, const char *to, size_t tlen,
                            char **errp);
/* Delete everything of one partition, every store (a task whose local state
 * cannot be trusted), as delete_range does. */
int tide_store_delete_partition(tide_store_db_t *db, int32_t partition, char **errp);

/* Write every uncommitted write (and committed one still in memory) to
 * RocksDB, in one write batch, in key order; memtables are not flushed.
 * Clears the spilled marks. On error nothing is written and the writes stay
 * uncommitted. */
int tide_store_commit(tide_store_db_t *db, char **errp);
/* Forget the uncommitted writes of one partition (-1: all): reads see the
 * last commit again. Returns how many keys were rolled back. */
size_t tide_store_rollback(tide_store_db_t *db, int32_t partition);
/* 1 when uncommitted writes take more memory than the record cache's
 * budget: commit soon. They may grow to 4 budgets; past that they spill to
 * RocksDB (see tide_store_spilled) rather than exhaust memory. */
int tide_store_pressure(const tide_store_db_t *db);
/* 1 when uncommitted writes of the partition (-1: of any) reached RocksDB
 * since the last commit (the spill past 4 budgets), so that a rollback
 * cannot restore its last committed state: the worker wipes the partition
 * (tide_store_delete_partition) and restores it from the changelog. */
int tide_store_spilled(const tide_store_db_t *db, int32_t partition);
/* tide_store_spilled(db, -1): any partition. */
int tide_store_uncommitted_spilled(const tide_store_db_t *db);

/* Make what is committed durable (memtables flushed to table files; there
 * is no write-ahead log: the changelogs are), before a checkpoint. Commits
 * nothing: uncommitted writes stay in memory, so a checkpoint may be taken
 * between two commits. */
int tide_store_flush(tide_store_db_t *db, char **errp);

/* Iterators not freed yet. */
int tide_store_open_iterators(const tide_store_db_t *db);

/* What the record cache holds, for metrics and tests. */
typedef struct tide_store_stats {
    size_t cache_bytes;       /* every entry (tide_store_memory_bytes has it too) */
    size_t uncommitted_bytes; /* the part that holds uncommitted writes */
    size_t uncommitted_keys;
    size_t unwritten_bytes;   /* committed writes not in RocksDB yet */
    size_t budget;            /* the record cache's budget (state.cache.bytes) */
} tide_store_stats_t;
void tide_store_stats(const tide_store_db_t *db, tide_store_stats_t *st);

/* Approximate bytes of memory the store uses (block cache, memtables, the
 * record cache and its index). */
uint64_t tide_store_memory_bytes(tide_store_db_t *db);

#endif
