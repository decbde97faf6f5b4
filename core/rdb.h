/*
 * rdb.h: the part of librocksdb's C API that core/store.c uses, reached
 * through a table that rdb.c fills when a worker first opens a store.
 *
 * tide does not link librocksdb: most detectors keep no RocksDB state, and
 * a process that merely links it maps and touches about 6 MB of its pages
 * (and libstdc++'s) at start, which every idle worker would carry. store.c
 * includes this header instead of <rocksdb/c.h> and calls the functions by
 * their own names (the macros below point them at the table). Add a name
 * to TIDE_RDB_FUNCS before calling it.
 */
#ifndef TIDE_RDB_H
#define TIDE_RDB_H
#include <rocksdb/c.h>

#define TIDE_RDB_FUNCS(X) \
    X(rocksdb_block_based_options_create) \
    X(rocksdb_block_based_options_destroy) \
    X(rocksdb_block_based_options_set_block_cache) \
    X(rocksdb_block_based_options_set_cache_index_and_filter_blocks) \
    X(rocksdb_block_based_options_set_filter_policy) \
    X(rocksdb_block_based_options_set_index_type) \
    X(rocksdb_block_based_options_set_partition_filters) \
    X(rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache) \
    X(rocksdb_block_based_options_set_pin_top_level_index_and_filter) \
    X(rocksdb_cache_create_lru) \
    X(rocksdb_cache_destroy) \
    X(rocksdb_cache_get_usage) \
    X(rocksdb_close) \
    X(rocksdb_create_iterator) \
    X(rocksdb_create_snapshot) \
    X(rocksdb_delete) \
    X(rocksdb_filterpolicy_create_bloom_full) \
    X(rocksdb_flush) \
    X(rocksdb_flushoptions_create) \
    X(rocksdb_flushoptions_destroy) \
    X(rocksdb_flushoptions_set_wait) \
    X(rocksdb_get_pinned) \
    X(rocksdb_iter_destroy) \
    X(rocksdb_iter_key) \
    X(rocksdb_iter_next) \
    X(rocksdb_iter_seek) \
    X(rocksdb_iter_valid) \
    X(rocksdb_iter_value) \
    X(rocksdb_open) \
    X(rocksdb_options_create) \
    X(rocksdb_options_destroy) \
    X(rocksdb_options_set_block_based_table_factory) \
    X(rocksdb_options_set_compression) \
    X(rocksdb_options_set_create_if_missing) \
    X(rocksdb_options_set_db_write_buffer_size) \
    X(rocksdb_options_set_keep_log_file_num) \
    X(rocksdb_options_set_max_log_file_size) \
    X(rocksdb_options_set_max_open_files) \
    X(rocksdb_options_set_max_write_buffer_number) \
    X(rocksdb_options_set_memtable_prefix_bloom_size_ratio) \
    X(rocksdb_options_set_memtable_whole_key_filtering) \
    X(rocksdb_options_set_write_buffer_size) \
    X(rocksdb_pinnableslice_destroy) \
    X(rocksdb_pinnableslice_value) \
    X(rocksdb_property_int) \
    X(rocksdb_put) \
    X(rocksdb_readoptions_create) \
    X(rocksdb_readoptions_destroy) \
    X(rocksdb_readoptions_set_iterate_lower_bound) \
    X(rocksdb_readoptions_set_iterate_upper_bound) \
    X(rocksdb_readoptions_set_snapshot) \
    X(rocksdb_release_snapshot) \
    X(rocksdb_write) \
    X(rocksdb_writebatch_create) \
    X(rocksdb_writebatch_delete) \
    X(rocksdb_writebatch_delete_range) \
    X(rocksdb_writebatch_destroy) \
    X(rocksdb_writebatch_put) \
    X(rocksdb_writeoptions_create) \
    X(rocksdb_writeoptions_destroy) \
    X(rocksdb_writeoptions_disable_WAL)

typedef struct tide_rdb {
#define TIDE_RDB_MEMBER(f) __typeof__(f) *f;
    TIDE_RDB_FUNCS(TIDE_RDB_MEMBER)
#undef TIDE_RDB_MEMBER
} tide_rdb_t;

/* The table, filled by tide_rdb_load. */
extern tide_rdb_t tide_rdb;

/* Load librocksdb (once; later calls return at once): 0, or -1 with *errp
 * (malloc'd) saying why. */
int tide_rdb_load(char **errp);

#ifndef TIDE_RDB_IMPL
#define rocksdb_block_based_options_create (*tide_rdb.rocksdb_block_based_options_create)
#define rocksdb_block_based_options_destroy (*tide_rdb.rocksdb_block_based_options_destroy)
#define rocksdb_block_based_options_set_block_cache (*tide_rdb.rocksdb_block_based_options_set_block_cache)
#define rocksdb_block_based_options_set_cache_index_and_filter_blocks (*tide_rdb.rocksdb_block_based_options_set_cache_index_and_filter_blocks)
#define rocksdb_block_based_options_set_filter_policy (*tide_rdb.rocksdb_block_based_options_set_filter_policy)
#define rocksdb_block_based_options_set_index_type (*tide_rdb.rocksdb_block_based_options_set_index_type)
#define rocksdb_block_based_options_set_partition_filters (*tide_rdb.rocksdb_block_based_options_set_partition_filters)
#define rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache (*tide_rdb.rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache)
#define rocksdb_block_based_options_set_pin_top_level_index_and_filter (*tide_rdb.rocksdb_block_based_options_set_pin_top_level_index_and_filter)
#define rocksdb_cache_create_lru (*tide_rdb.rocksdb_cache_create_lru)
#define rocksdb_cache_destroy (*tide_rdb.rocksdb_cache_destroy)
#define rocksdb_cache_get_usage (*tide_rdb.rocksdb_cache_get_usage)
#define rocksdb_close (*tide_rdb.rocksdb_close)
#define rocksdb_create_iterator (*tide_rdb.rocksdb_create_iterator)
#define rocksdb_create_snapshot (*tide_rdb.rocksdb_create_snapshot)
#define rocksdb_delete (*tide_rdb.rocksdb_delete)
#define rocksdb_filterpolicy_create_bloom_full (*tide_rdb.rocksdb_filterpolicy_create_bloom_full)
#define rocksdb_flush (*tide_rdb.rocksdb_flush)
#define rocksdb_flushoptions_create (*tide_rdb.rocksdb_flushoptions_create)
#define rocksdb_flushoptions_destroy (*tide_rdb.rocksdb_flushoptions_destroy)
#define rocksdb_flushoptions_set_wait (*tide_rdb.rocksdb_flushoptions_set_wait)
#define rocksdb_get_pinned (*tide_rdb.rocksdb_get_pinned)
#define rocksdb_iter_destroy (*tide_rdb.rocksdb_iter_destroy)
#define rocksdb_iter_key (*tide_rdb.rocksdb_iter_key)
#define rocksdb_iter_next (*tide_rdb.rocksdb_iter_next)
#define rocksdb_iter_seek (*tide_rdb.rocksdb_iter_seek)
#define rocksdb_iter_valid (*tide_rdb.rocksdb_iter_valid)
#define rocksdb_iter_value (*tide_rdb.rocksdb_iter_value)
#define rocksdb_open (*tide_rdb.rocksdb_open)
#define rocksdb_options_create (*tide_rdb.rocksdb_options_create)
#define rocksdb_options_destroy (*tide_rdb.rocksdb_options_destroy)
#define rocksdb_options_set_block_based_table_factory (*tide_rdb.rocksdb_options_set_block_based_table_factory)
#define rocksdb_options_set_compression (*tide_rdb.rocksdb_options_set_compression)
#define rocksdb_options_set_create_if_missing (*tide_rdb.rocksdb_options_set_create_if_missing)
#define rocksdb_options_set_db_write_buffer_size (*tide_rdb.rocksdb_options_set_db_write_buffer_size)
#define rocksdb_options_set_keep_log_file_num (*tide_rdb.rocksdb_options_set_keep_log_file_num)
#define rocksdb_options_set_max_log_file_size (*tide_rdb.rocksdb_options_set_max_log_file_size)
#define rocksdb_options_set_max_open_files (*tide_rdb.rocksdb_options_set_max_open_files)
#define rocksdb_options_set_max_write_buffer_number (*tide_rdb.rocksdb_options_set_max_write_buffer_number)
#define rocksdb_options_set_memtable_prefix_bloom_size_ratio (*tide_rdb.rocksdb_options_set_memtable_prefix_bloom_size_ratio)
#define rocksdb_options_set_memtable_whole_key_filtering (*tide_rdb.rocksdb_options_set_memtable_whole_key_filtering)
#define rocksdb_options_set_write_buffer_size (*tide_rdb.rocksdb_options_set_write_buffer_size)
#define rocksdb_pinnableslice_destroy (*tide_rdb.rocksdb_pinnableslice_destroy)
#define rocksdb_pinnableslice_value (*tide_rdb.rocksdb_pinnableslice_value)
#define rocksdb_property_int (*tide_rdb.rocksdb_property_int)
#define rocksdb_put (*tide_rdb.rocksdb_put)
#define rocksdb_readoptions_create (*tide_rdb.rocksdb_readoptions_create)
#define rocksdb_readoptions_destroy (*tide_rdb.rocksdb_readoptions_destroy)
#define rocksdb_readoptions_set_iterate_lower_bound (*tide_rdb.rocksdb_readoptions_set_iterate_lower_bound)
#define rocksdb_readoptions_set_iterate_upper_bound (*tide_rdb.rocksdb_readoptions_set_iterate_upper_bound)
#define rocksdb_readoptions_set_snapshot (*tide_rdb.rocksdb_readoptions_set_snapshot)
#define rocksdb_release_snapshot (*tide_rdb.rocksdb_release_snapshot)
#define rocksdb_write (*tide_rdb.rocksdb_write)
#define rocksdb_writebatch_create (*tide_rdb.rocksdb_writebatch_create)
#define rocksdb_writebatch_delete (*tide_rdb.rocksdb_writebatch_delete)
#define rocksdb_writebatch_delete_range (*tide_rdb.rocksdb_writebatch_delete_range)
#define rocksdb_writebatch_destroy (*tide_rdb.rocksdb_writebatch_destroy)
#define rocksdb_writebatch_put (*tide_rdb.rocksdb_writebatch_put)
#define rocksdb_writeoptions_create (*tide_rdb.rocksdb_writeoptions_create)
#define rocksdb_writeoptions_destroy (*tide_rdb.rocksdb_writeoptions_destroy)
#define rocksdb_writeoptions_disable_WAL (*tide_rdb.rocksdb_writeoptions_disable_WAL)
#endif

#endif
