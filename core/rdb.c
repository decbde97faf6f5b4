/*
 * rdb.c: librocksdb, loaded on first use (see rdb.h). It owns the table of
 * the functions store.c calls and fills it once, from the library named at
 * build time (TIDE_ROCKSDB_SONAME); it never unloads it. Thread-safe: a
 * worker opens its database from one thread, and the Lua module may load
 * it from another, so the loading happens once under pthread_once.
 */
#define TIDE_RDB_IMPL
#include "rdb.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TIDE_ROCKSDB_SONAME
#define TIDE_ROCKSDB_SONAME "librocksdb.so"
#endif

tide_rdb_t tide_rdb;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char load_error[512];

static void load(void) {
    void *h = dlopen(TIDE_ROCKSDB_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(load_error, sizeof(load_error), "cannot load RocksDB (%s): %s", TIDE_ROCKSDB_SONAME,
                 dlerror());
        return;
    }
#define TIDE_RDB_RESOLVE(f)                                                                   \
    if (!load_error[0] && !(*(void **)&tide_rdb.f = dlsym(h, #f)))                              \
        snprintf(load_error, sizeof(load_error), "RocksDB (%s) has no %s", TIDE_ROCKSDB_SONAME, #f);
    TIDE_RDB_FUNCS(TIDE_RDB_RESOLVE)
#undef TIDE_RDB_RESOLVE
}

int tide_rdb_load(char **errp) {
    pthread_once(&once, load);
    if (!load_error[0]) return 0;
    if (errp && !(*errp = strdup(load_error))) *errp = NULL;
    return -1;
}
