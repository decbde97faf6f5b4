/*
 * core.c: the Lua C module `tide.core`.
 *
 * The same module is preloaded into every detector runtime in the host and
 * built as tide/core.so for plain busted (the rockspec), so scripts/ run
 * unchanged in both. It holds the cold path: the FFI header text, the api
 * pointer, logging, hashing, and for tests and the driver, sinks and batches
 * made from Lua tables, and the dispatch loop with the error policy. The hot
 * path (records, emits) goes through the FFI, not through these functions.
 */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "guard.h"
#include "heap.h"
#include "avro_codec.h"
#include "httpc.h"
#include "lua_call.h"
#include "state.h"
#include "store.h"

/* --- default api: emits into a sink, headers from tide_test_headers_t --- */

static int default_emit(tide_sink_t *s, int32_t o, const char *k, int32_t kl,
                        const char *v, int32_t vl) {
    return tide_sink_emit(s, o, k, kl, v, vl);
}
static int default_emit_header(tide_sink_t *s, const char *n, int32_t nl,
                               const char *v, int32_t vl) {
    return tide_sink_emit_header(s, n, nl, v, vl);
}
static int test_header_count(const tide_rec_t *r) {
    const tide_test_headers_t *h = r->msg;
    return h ? h->n : 0;
}
static int test_header_get(const tide_rec_t *r, int32_t i, const char **name,
                           const void **val, size_t *len) {
    const tide_test_headers_t *h = r->msg;
    if (!h || i < 0 || i >= h->n) return -1;
    *name = h->names[i];
    *val = h->vals[i];
    *len = h->vals[i] ? (size_t)h->lens[i] : 0;
    return 0;
}

/* Designated: reordering tide_api_t must not swap two members of one type. */
const tide_api_t tide_default_api = {
    .emit = default_emit,
    .emit_header = default_emit_header,
    .utf8_valid = tide_utf8_valid,
    .json_may_overflow = tide_json_may_overflow,
    .header_count = test_header_count,
    .header_get = test_header_get,
    .emit_partition = tide_sink_emit_partition,
    .store_get = tide_state_get,
    .store_put = tide_state_put,
    .store_iter = tide_state_iter,
    .store_iter_next = tide_state_iter_next,
    .store_iter_free = tide_state_iter_free,
    .sink_timestamp = tide_sink_set_timestamp,
};

static const tide_api_t *current_api(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, TIDE_REG_API);
    const tide_api_t *api = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return api ? api : &tide_default_api;
}

static int core_api(lua_State *L) {
    lua_pushlightuserdata(L, (void *)current_api(L));
    return 1;
}

static int core_avro_api(lua_State *L) {
    lua_pushlightuserdata(L, (void *)&tide_avro_api);
    return 1;
}

static int core_hash(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char out[17];
    tide_hash_hex(s, len, out);
    lua_pushstring(L, out);
    return 1;
}

/* May one more line be logged this second? Says how many were dropped
 * once the next second lets lines through again. */
static int log_allowed(tide_log_hook_t *hook) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (now - hook->window_ms >= 1000) {
        if (hook->dropped) {
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "dropped %ld log lines of the detector (more than %d a second)",
                     hook->dropped, TIDE_LOG_LINES_PER_S);
            hook->fn(hook->ud, TIDE_LOG_WARN, msg, NULL);
        }
        hook->window_ms = now;
        hook->lines = hook->dropped = 0;
    }
    if (hook->lines++ < TIDE_LOG_LINES_PER_S) return 1;
    if (hook->dropped++ == 0) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "the detector logs more than %d lines a second: the rest of this second's "
                 "are dropped",
                 TIDE_LOG_LINES_PER_S);
        hook->fn(hook->ud, TIDE_LOG_WARN, msg, NULL);
    }
    return 0;
}

/* core.log(level, msg): to the host's logger, or stderr under busted. */
static int core_log(lua_State *L) {
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    int level = luaL_checkoption(L, 1, "info", levels);
    const char *msg = luaL_checkstring(L, 2);
    lua_getfield(L, LUA_REGISTRYINDEX, TIDE_REG_LOG);
    tide_log_hook_t *hook = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (hook && hook->fn) {
        if (!log_allowed(hook)) return 0;
        const tide_rec_t *rec = NULL;
        if (hook->sink && hook->sink->batch) {
            const tide_batch_t *b = hook->sink->batch;
            if (b->cursor >= 0 && b->cursor < b->n) rec = &b->recs[b->cursor];
        }
        hook->fn(hook->ud, (tide_log_level_t)level, msg, rec);
    } else {
        fprintf(stderr, "[%s] %s\n", levels[level], msg);
    }
    return 0;
}

/* --- sinks, for tests and the driver --- */

#define SINK_MT "tide.sink"
#define BATCH_MT "tide.batch"

static tide_sink_t *check_sink(lua_State *L, int i) {
    tide_sink_t **p = luaL_checkudata(L, i, SINK_MT);
    if (!*p) luaL_argerror(L, i, "attempt to use a closed sink");
    return *p;
}

/* core.sink([limit]): limit caps the bytes its emits may hold (0: none). */
static int sink_new(lua_State *L) {
    size_t limit = (size_t)luaL_optnumber(L, 1, 0);
    tide_sink_t **p = lua_newuserdata(L, sizeof(*p));
    *p = NULL;
    luaL_getmetatable(L, SINK_MT);
    lua_setmetatable(L, -2);
    *p = malloc(sizeof(**p));
    if (!*p) return luaL_error(L, "not enough memory");
    tide_sink_init(*p);
    (*p)->limit = limit;
    return 1;
}

static int sink_close(lua_State *L) {
    tide_sink_t **p = luaL_checkudata(L, 1, SINK_MT);
    if (*p) {
        tide_sink_free(*p);
        free(*p);
        *p = NULL;
    }
    return 0;
}

static int sink_ptr(lua_State *L) {
    lua_pushlightuserdata(L, check_sink(L, 1));
    return 1;
}

static int sink_clear(lua_State *L) {
    tide_sink_clear(check_sink(L, 1));
    return 0;
}

static void push_bytes(lua_State *L, const char *p, int32_t len) {
    if (len < 0) lua_pushnil(L);
    else lua_pushlstring(L, p, (size_t)len);
}

/* sink:entries() -> { { output =, source =, partition =, key =, value =, headers = {} } }
 * (partition -1: the partitioner's choice) */
static int sink_entries(lua_State *L) {
    tide_sink_t *s = check_sink(L, 1);
    lua_createtable(L, (int)s->n, 0);
    for (size_t i = 0; i < s->n; i++) {
        const tide_sink_entry_t *e = &s->entries[i];
        lua_createtable(L, 0, 7);
        lua_pushinteger(L, e->output);
        lua_setfield(L, -2, "output");
        lua_pushinteger(L, e->partition);
        lua_setfield(L, -2, "partition");
        lua_pushinteger(L, e->source);
        lua_setfield(L, -2, "source");
        lua_pushnumber(L, (lua_Number)e->timestamp);
        lua_setfield(L, -2, "timestamp");
        push_bytes(L, tide_sink_key(s, e), e->key_len);
        lua_setfield(L, -2, "key");
        push_bytes(L, tide_sink_val(s, e), e->val_len);
        lua_setfield(L, -2, "value");
        lua_createtable(L, 0, (int)e->hdr_count);
        for (uint32_t h = 0; h < e->hdr_count; h++) {
            const tide_sink_hdr_t *hd = &s->hdrs[e->hdr_first + h];
            lua_pushlstring(L, tide_sink_bytes(s, hd->name_off),
                            (size_t)hd->name_len);
            push_bytes(L, tide_sink_bytes(s, hd->val_off), hd->val_len);
            lua_rawset(L, -3);
        }
        lua_setfield(L, -2, "headers");
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

/* --- batches made from Lua tables --- */

typedef struct test_batch {
    tide_batch_t b;
    tide_test_headers_t *hdrs; /* one per record */
    int n;
    int closed;
} test_batch_t;

static test_batch_t *check_batch(lua_State *L, int i) {
    test_batch_t *tb = luaL_checkudata(L, i, BATCH_MT);
    if (tb->closed) luaL_argerror(L, i, "attempt to use a closed batch");
    return tb;
}

static void free_batch(test_batch_t *tb) {
    if (tb->closed) return;
    for (int i = 0; i < tb->n && tb->hdrs; i++) {
        free(tb->hdrs[i].names);
        free(tb->hdrs[i].vals);
        free((void *)tb->hdrs[i].lens);
    }
    free(tb->hdrs);
    free(tb->b.recs);
    tb->closed = 1;
}

static int batch_close(lua_State *L) {
    free_batch(luaL_checkudata(L, 1, BATCH_MT));
    return 0;
}

/* The string at stack index `idx` (absolute), pinned in the table at `pins`
 * for the batch's lifetime; NULL with *len = -1 for nil. */
static const char *pin(lua_State *L, int idx, int pins, int32_t *len) {
    if (lua_isnil(L, idx)) {
        *len = -1;
        return NULL;
    }
    size_t l;
    const char *s = lua_tolstring(L, idx, &l);
    if (!s) luaL_error(L, "batch: record fields must be strings or numbers");
    lua_pushvalue(L, idx);
    lua_rawseti(L, pins, (int)lua_objlen(L, pins) + 1);
    *len = (int32_t)l;
    return s;
}

static const char *pin_field(lua_State *L, int t, const char *field, int pins,
                             int32_t *len) {
    lua_getfield(L, t, field);
    const char *s = pin(L, lua_gettop(L), pins, len);
    lua_pop(L, 1);
    return s;
}

static lua_Number num_field(lua_State *L, int t, const char *field, lua_Number def) {
    lua_getfield(L, t, field);
    lua_Number v = luaL_optnumber(L, -1, def);
    lua_pop(L, 1);
    return v;
}

static void batch_headers(lua_State *L, int hdrs, int pins, tide_test_headers_t *h) {
    int nh = (int)lua_objlen(L, hdrs);
    int32_t *lens = calloc((size_t)nh + 1, sizeof(int32_t));
    h->names = calloc((size_t)nh + 1, sizeof(char *));
    h->vals = calloc((size_t)nh + 1, sizeof(char *));
    h->lens = lens;
    if (!h->names || !h->vals || !lens) luaL_error(L, "not enough memory");
    for (int j = 0; j < nh; j++) {
        int32_t nlen;
        lua_rawgeti(L, hdrs, j + 1);
        int pair = lua_gettop(L);
        luaL_argcheck(L, lua_istable(L, pair), 1, "a header is a { name, value } pair");
        lua_rawgeti(L, pair, 1);
        h->names[j] = pin(L, lua_gettop(L), pins, &nlen);
        lua_rawgeti(L, pair, 2);
        h->vals[j] = pin(L, lua_gettop(L), pins, &lens[j]);
        lua_pop(L, 3);
        luaL_argcheck(L, h->names[j] != NULL, 1, "a header has no name");
        h->n = j + 1;
    }
}

/* core.batch({ { key=, value=, topic=, partition=, offset=, timestamp=,
 *               headers = { {name, value}, ... } }, ... }) */
static int batch_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_objlen(L, 1);
    test_batch_t *tb = lua_newuserdata(L, sizeof(*tb));
    memset(tb, 0, sizeof(*tb));
    tb->closed = 1; /* until allocated */
    luaL_getmetatable(L, BATCH_MT);
    lua_setmetatable(L, -2);
    lua_newtable(L);
    int pins = lua_gettop(L);
    tb->b.recs = calloc((size_t)(n ? n : 1), sizeof(tide_rec_t));
    tb->hdrs = calloc((size_t)(n ? n : 1), sizeof(tide_test_headers_t));
    if (!tb->b.recs || !tb->hdrs) {
        free(tb->b.recs);
        free(tb->hdrs);
        return luaL_error(L, "not enough memory");
    }
    tb->closed = 0;
    tb->n = n;
    tb->b.n = n;
    for (int i = 0; i < n; i++) {
        tide_rec_t *r = &tb->b.recs[i];
        int32_t len;
        lua_rawgeti(L, 1, i + 1);
        int t = lua_gettop(L);
        if (!lua_istable(L, t)) return luaL_error(L, "batch: record %d is not a table", i + 1);
        r->key = pin_field(L, t, "key", pins, &r->key_len);
        r->val = pin_field(L, t, "value", pins, &r->val_len);
        r->topic = pin_field(L, t, "topic", pins, &len);
        if (!r->topic) r->topic = "";
        r->partition = (int32_t)num_field(L, t, "partition", 0);
        r->offset = (int64_t)num_field(L, t, "offset", i);
        r->timestamp = (int64_t)num_field(L, t, "timestamp", -1);
        r->index = i;
        lua_getfield(L, t, "headers");
        if (lua_istable(L, -1)) {
            batch_headers(L, lua_gettop(L), pins, &tb->hdrs[i]);
            r->msg = &tb->hdrs[i];
        }
        lua_pop(L, 2);
    }
    lua_setfenv(L, -2);
    return 1;
}

static int batch_ptr(lua_State *L) {
    lua_pushlightuserdata(L, &check_batch(L, 1)->b);
    return 1;
}

static int batch_cursor(lua_State *L) {
    lua_pushinteger(L, check_batch(L, 1)->b.cursor);
    return 1;
}

/* core.dispatch(run, batch, sink, on_error, detector, version, now_ms)
 *   -> failures { { index=, class=, message=, traceback= } }, stopped, retry */
static void collect_failure(void *ud, const tide_rec_t *r, const tide_failure_t *f) {
    lua_State *L = ud;
    (void)r;
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, f->index);
    lua_setfield(L, -2, "index");
    lua_pushstring(L, f->cls);
    lua_setfield(L, -2, "class");
    lua_pushstring(L, f->message);
    lua_setfield(L, -2, "message");
    lua_pushstring(L, f->traceback);
    lua_setfield(L, -2, "traceback");
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
}

static int core_dispatch(lua_State *L) {
    static const char *const policies[] = {"dlq", "skip", "stop", NULL};
    luaL_checktype(L, 1, LUA_TFUNCTION);
    test_batch_t *tb = check_batch(L, 2);
    tide_sink_t *s = check_sink(L, 3);
    int policy = luaL_checkoption(L, 4, "dlq", policies);
    const char *detector = luaL_optstring(L, 5, "");
    const char *version = luaL_optstring(L, 6, "");
    int64_t now_ms = (int64_t)luaL_optnumber(L, 7, 0);
    lua_pushvalue(L, 1);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L); /* failures, filled by collect_failure */
    tide_lua_error_t err = {0};
    tide_status_t st =
        tide_lua_dispatch(L, ref, &tb->b, now_ms, s, current_api(L), (tide_on_error_t)policy,
                          detector, version, &err, collect_failure, L);
    tide_lua_error_free(&err);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    lua_pushboolean(L, st == TIDE_STOPPED);
    lua_pushboolean(L, st == TIDE_RETRY);
    return 3;
}

/* --- the schema registry's HTTP client (cold path) --- */

#define HTTPC_MT "tide.http_client"

static tide_httpc_t *check_httpc(lua_State *L, int i) {
    tide_httpc_t **p = luaL_checkudata(L, i, HTTPC_MT);
    if (!*p) luaL_argerror(L, i, "attempt to use a closed http client");
    return *p;
}

static int httpc_new(lua_State *L) {
    tide_httpc_t **p = lua_newuserdata(L, sizeof(*p));
    *p = NULL;
    luaL_getmetatable(L, HTTPC_MT);
    lua_setmetatable(L, -2);
    if (!(*p = tide_httpc_new())) return luaL_error(L, "cannot create an HTTP client");
    return 1;
}

static int httpc_close(lua_State *L) {
    tide_httpc_t **p = luaL_checkudata(L, 1, HTTPC_MT);
    tide_httpc_free(*p);
    *p = NULL;
    return 0;
}

/* client:request(method, url, body|nil, user_info|nil, timeout_ms)
 *   -> status, body | nil, "why no response came" */
static int httpc_request(lua_State *L) {
    tide_httpc_t *h = check_httpc(L, 1);
    const char *method = luaL_checkstring(L, 2);
    const char *url = luaL_checkstring(L, 3);
    size_t blen = 0;
    const char *body = luaL_optlstring(L, 4, NULL, &blen);
    const char *user_info = luaL_optstring(L, 5, NULL);
    long timeout = (long)luaL_optnumber(L, 6, 5000);
    long status = 0;
    char *resp = NULL, *err = NULL;
    size_t rlen = 0;
    if (tide_httpc_request(h, method, url, body, blen, user_info, timeout, &status, &resp,
                           &rlen, &err) != TIDE_HTTPC_OK) {
        lua_pushnil(L);
        lua_pushstring(L, err ? err : "no response");
        free(err);
        return 2;
    }
    lua_pushinteger(L, status);
    lua_pushlstring(L, resp, rlen);
    free(resp);
    return 2;
}

/* --- limits for the driver: core.guard (see bindings/guard.h) --- */

#define GUARD_MT "tide.guard"

typedef struct guard_ud {
    int owner;
    int64_t budget_ms; /* <= 0: none */
    char label[256];
} guard_ud_t;

/* core.guard{ memory = bytes, timeout_ms = ms, label = text }: a heap
 * owner with its cap and the budget of each call made through it. */
static int guard_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Number memory = num_field(L, 1, "memory", 0);
    lua_Number timeout = num_field(L, 1, "timeout_ms", 0);
    luaL_argcheck(L, memory >= 0 && timeout >= 0, 1, "limits must not be negative");
    tide_guard_status_t st = tide_guard_install(L);
    if (st == TIDE_GUARD_OTHER_STATE)
        return luaL_error(L, "another Lua state of this process runs guarded detectors");
    if (st != TIDE_GUARD_OK) return luaL_error(L, "not enough memory");
    int owner = tide_heap_owner(tide_guard_heap(), (size_t)memory);
    if (!owner) return luaL_error(L, "not enough memory");
    guard_ud_t *g = lua_newuserdata(L, sizeof(*g));
    g->owner = owner;
    g->budget_ms = (int64_t)timeout;
    lua_getfield(L, 1, "label");
    snprintf(g->label, sizeof(g->label), "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    lua_pop(L, 1);
    luaL_getmetatable(L, GUARD_MT);
    lua_setmetatable(L, -2);
    return 1;
}

static guard_ud_t *check_guard(lua_State *L) { return luaL_checkudata(L, 1, GUARD_MT); }

/* guard:call(fn, ...) -> fn(...), charged to the guard's owner within its
 * budget; an error is raised again, unchanged, once the call is over. A
 * plain lua_pcall, as pcall() itself: the caller (Lua) is the one that
 * describes errors; entering, calling and leaving stay one C step, so that
 * no hook can raise between them and leave the guard armed. */
static int guard_call(lua_State *L) {
    guard_ud_t *g = check_guard(L);
    luaL_checkany(L, 2);
    int base = 2, nargs = lua_gettop(L) - 2;
    tide_guard_call_t c;
    tide_guard_enter(g->owner, g->budget_ms > 0 ? g->budget_ms : INT64_MAX / 4, g->label, &c);
    int rc = lua_pcall(L, nargs, LUA_MULTRET, 0);
    tide_guard_leave(&c);
    if (rc) {
        if (rc == LUA_ERRMEM) lua_gc(L, LUA_GCCOLLECT, 0);
        return lua_error(L);
    }
    return lua_gettop(L) - base + 1;
}

/* guard:label(text): what the call in progress is, for messages. */
static int guard_label(lua_State *L) {
    guard_ud_t *g = check_guard(L);
    snprintf(g->label, sizeof(g->label), "%s", luaL_checkstring(L, 2));
    return 0;
}

/* guard:heap() -> bytes in use, peak, limit (the owner's). */
static int guard_heap(lua_State *L) {
    guard_ud_t *g = check_guard(L);
    tide_heap_t *h = tide_guard_heap();
    lua_pushnumber(L, (lua_Number)tide_heap_owner_used(h, g->owner));
    lua_pushnumber(L, (lua_Number)tide_heap_owner_peak(h, g->owner));
    lua_pushnumber(L, (lua_Number)tide_heap_owner_limit(h, g->owner));
    return 3;
}

static int guard_gc(lua_State *L) {
    (void)L;
    return 0; /* the owner keeps its id: blocks freed later still find it */
}

/* core.heap_room() -> bytes the running code may still allocate, and the
 * cap they are counted against (math.huge, 0 without one): what a
 * detector's heap has left, live or in the driver. */
static int core_heap_room(lua_State *L) {
    tide_heap_t *h = tide_heap_find(L);
    size_t room = h ? tide_heap_room(h) : (size_t)-1;
    size_t cap = h ? tide_heap_owner_limit(h, tide_heap_current(h)) : 0;
    if (h && !cap) cap = tide_heap_limit(h);
    lua_pushnumber(L, room == (size_t)-1 ? HUGE_VAL : (lua_Number)room);
    lua_pushnumber(L, (lua_Number)cap);
    return 2;
}

/* core.limits() -> { memory =, timeout_ms = }: the host's defaults. */
static int core_limits(lua_State *L) {
    lua_createtable(L, 0, 2);
    lua_pushnumber(L, TIDE_DEFAULT_MEMORY_LIMIT);
    lua_setfield(L, -2, "memory");
    lua_pushnumber(L, TIDE_DEFAULT_BATCH_TIMEOUT_MS);
    lua_setfield(L, -2, "timeout_ms");
    return 1;
}

/* core.sleep_ms(ms): a registry backoff, bounded by the caller. */
static int core_sleep_ms(lua_State *L) {
    double ms = luaL_checknumber(L, 1);
    if (ms > 0) {
        struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (double)(long)(ms / 1000) * 1000) * 1e6)};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* core.now_ms(): a monotonic clock, for backoffs. */
static int core_now_ms(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec * 1000 + (lua_Number)ts.tv_nsec / 1e6);
    return 1;
}

/* One metatable per class, as Lua's io library does: methods, and __gc
 * running the same close() a caller may call first. */
static void register_class(lua_State *L, const char *name, const luaL_Reg *methods,
                           lua_CFunction close) {
    if (luaL_newmetatable(L, name)) {
        lua_newtable(L);
        luaL_register(L, NULL, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
}

/* core.store_open(dir) -> db (lightuserdata) | nil, msg: a RocksDB store
 * database for the test driver; core.store_close(db). */
static int core_store_open(lua_State *L) {
    tide_store_opts_t o = {luaL_checkstring(L, 1), 0, 0, 0};
    char *err = NULL;
    tide_store_db_t *db = tide_store_open(&o, &err);
    if (!db) {
        lua_pushnil(L);
        lua_pushstring(L, err ? err : "cannot open the store");
        free(err);
        return 2;
    }
    lua_pushlightuserdata(L, db);
    return 1;
}

static int core_store_iterators(lua_State *L) {
    luaL_checktype(L, 1, LUA_TLIGHTUSERDATA);
    lua_pushinteger(L, tide_store_open_iterators(lua_touserdata(L, 1)));
    return 1;
}

static int core_store_close(lua_State *L) {
    luaL_checktype(L, 1, LUA_TLIGHTUSERDATA);
    tide_store_close(lua_touserdata(L, 1));
    return 0;
}

int luaopen_tide_core(lua_State *L) {
    static const luaL_Reg sink_methods[] = {
        {"ptr", sink_ptr}, {"entries", sink_entries}, {"clear", sink_clear},
        {"close", sink_close}, {NULL, NULL}};
    static const luaL_Reg batch_methods[] = {
        {"ptr", batch_ptr}, {"cursor", batch_cursor}, {"close", batch_close},
        {NULL, NULL}};
    static const luaL_Reg guard_methods[] = {
        {"call", guard_call}, {"label", guard_label}, {"heap", guard_heap}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {
        {"api", core_api},     {"hash", core_hash},   {"log", core_log},
        {"guard", guard_new},  {"heap_room", core_heap_room}, {"limits", core_limits},
        {"avro_api", core_avro_api}, {"http_client", httpc_new},
        {"sleep_ms", core_sleep_ms}, {"now_ms", core_now_ms},
        {"sink", sink_new},    {"batch", batch_new},  {"dispatch", core_dispatch},
        {"store_open", core_store_open}, {"store_close", core_store_close},
        {"store_iterators", core_store_iterators},
        {NULL, NULL}};

    register_class(L, SINK_MT, sink_methods, sink_close);
    register_class(L, BATCH_MT, batch_methods, batch_close);
    register_class(L, GUARD_MT, guard_methods, guard_gc);
    static const luaL_Reg httpc_methods[] = {
        {"request", httpc_request}, {"close", httpc_close}, {NULL, NULL}};
    register_class(L, HTTPC_MT, httpc_methods, httpc_close);

    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    lua_pushstring(L, tide_ffi_cdef);
    lua_setfield(L, -2, "cdef");
    return 1;
}
