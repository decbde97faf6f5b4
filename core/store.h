/*
 * store.h: a detector worker's local state, one RocksDB database.
 *
 * Every store of every task (input partition) lives in the same database,
 * under a key prefix: [store id: 1 byte][partition: 4 bytes big-endian][key].
 * RocksDB memory is bounded per worker: one block cache and one write-buffer
 * budget shared by all stores. This unit knows nothing of Kafka or Lua: the
 * changelog, the checkpoint protocol and the Lua API are built on top of it.
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
void tide_store_close(tide_store_db_t *db);
/* Remove a database directory and everything in it. */
int tide_store_wipe(const char *path, char **errp);

/* Point operations within (store, partition). Keys and values are bytes. */
int tide_store_put(tide_store_db_t *db, uint8_t store, int32_t partition, const char *key,
                   size_t klen, const char *val, size_t vlen, char **errp);
int tide_store_delete(tide_store_db_t *db, uint8_t store, int32_t partition, const char *key,
                      size_t klen, char **errp);
/* 1 and *val, *vlen set (owned by db, valid until the next get on this db),
 * 0 when absent, -1 on error. */
int tide_store_get(tide_store_db_t *db, uint8_t store, int32_t partition, const char *key,
                   size_t klen, const char **val, size_t *vlen, char **errp);

/* Keys k with from <= k < to, in byte order, within (store, partition).
 * from NULL: from the first key; to NULL: to the last. A prefix scan is
 * tide_store_iter_prefix. The iterator sees a snapshot taken at creation. */
tide_store_iter_t *tide_store_iter(tide_store_db_t *db, uint8_t store, int32_t partition,
                                   const char *from, size_t flen, const char *to, size_t tlen);
tide_store_iter_t *tide_store_iter_prefix(tide_store_db_t *db, uint8_t store, int32_t partition,
                                          const char *prefix, size_t plen);
/* 1 with the next entry (pointers valid until the next call), 0 at the end. */
int tide_store_iter_next(tide_store_iter_t *it, const char **key, size_t *klen,
                         const char **val, size_t *vlen);
void tide_store_iter_free(tide_store_iter_t *it);

/* Delete keys from <= k < to (NULL: unbounded) within (store, partition). */
int tide_store_delete_range(tide_store_db_t *db, uint8_t store, int32_t partition,
                            const char *from, size_t flen, const char *to, size_t tlen,
                            char **errp);
/* Delete everything of one partition, every store (a task whose local state
 * cannot be trusted). */
int tide_store_delete_partition(tide_store_db_t *db, int32_t partition, char **errp);

/* Transactions. Writes stay in the record cache until tide_store_commit
 * writes them to RocksDB; tide_store_rollback drops those of a partition
 * (-1: all) instead. tide_store_uncommitted_spilled: writes reached RocksDB
 * before their commit (the cache over its budget, an iterator, a range
 * delete), so a rollback cannot be exact. tide_store_pressure: the cache
 * is over its budget (commit soon). */
int tide_store_commit(tide_store_db_t *db, char **errp);
void tide_store_rollback(tide_store_db_t *db, int32_t partition);
int tide_store_uncommitted_spilled(const tide_store_db_t *db);
int tide_store_pressure(const tide_store_db_t *db);
/* Make every write so far durable (memtables flushed to table files; there
 * is no write-ahead log: the changelogs are), before a checkpoint. */
int tide_store_flush(tide_store_db_t *db, char **errp);

/* Iterators not freed yet (each holds a snapshot). */
int tide_store_open_iterators(const tide_store_db_t *db);

/* Approximate bytes of memory RocksDB uses (block cache + memtables). */
uint64_t tide_store_memory_bytes(tide_store_db_t *db);

#endif
