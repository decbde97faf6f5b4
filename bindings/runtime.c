/*
 * runtime.c: one detector's Lua runtime, behind runtime.h.
 *
 * Owns the lua_State (with a capped allocator), the sink its emits go to and
 * the registry references to the dispatcher and close(). It preloads tide's
 * scripts from the copies embedded in the binary, so the host needs no files
 * besides the detector. It never talks to Kafka: the host lays out batches
 * and produces what the sink holds.
 */
#include "runtime.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guard.h"
#include "heap.h"
#include "lua_call.h"

struct tide_runtime {
    lua_State *L;
    tide_heap_t *heap; /* the Lua heap cap (bindings/heap.c), whole state */
    tide_runtime_opts_t opts;
    const tide_api_t *api;
    tide_sink_t sink;
    tide_log_hook_t log_hook;
    tide_lua_error_t err;
    int run_ref, close_ref, task_ref, punctuate_ref, restore_ref, stream_time_ref;
    int commit_ref, rollback_ref; /* LUA_REFNIL when the dispatcher has none */
    int dropped_late_ref;
    int query_ref, query_cancel_ref; /* interactive queries (tide.query) */
    tide_detector_info_t info;
};

static char *dupstr(const char *s) { return strdup(s ? s : ""); }

static char *field_str(lua_State *L, int t, const char *k) {
    lua_getfield(L, t, k);
    char *s = dupstr(lua_tostring(L, -1));
    lua_pop(L, 1);
    return s;
}

/* The list of strings on top of the stack. */
static char **read_list(lua_State *L, int *n) {
    *n = (int)lua_objlen(L, -1);
    char **v = calloc((size_t)*n + 1, sizeof(char *));
    for (int i = 0; v && i < *n; i++) {
        lua_rawgeti(L, -1, i + 1);
        v[i] = dupstr(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return v;
}

static void free_list(char **v, int n) {
    for (int i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

/* The stores on top of the stack: { { name =, memory = }, ... } in id order. */
static void read_stores(lua_State *L, tide_detector_info_t *d) {
    d->n_stores = (int)lua_objlen(L, -1);
    d->store_names = calloc((size_t)d->n_stores + 1, sizeof(char *));
    d->store_memory = calloc((size_t)d->n_stores + 1, sizeof(int));
    d->store_global = calloc((size_t)d->n_stores + 1, sizeof(char *));
    for (int i = 0; i < d->n_stores && d->store_names && d->store_memory && d->store_global; i++) {
        lua_rawgeti(L, -1, i + 1);
        d->store_names[i] = field_str(L, lua_gettop(L), "name");
        lua_getfield(L, -1, "memory");
        d->store_memory[i] = lua_toboolean(L, -1);
        lua_getfield(L, -2, "global"); /* a global table's topic, or nil */
        d->store_global[i] = lua_isstring(L, -1) ? dupstr(lua_tostring(L, -1)) : NULL;
        lua_pop(L, 3);
    }
}

static tide_on_error_t on_error_of(const char *p) {
    if (p && !strcmp(p, "skip")) return TIDE_ON_ERROR_SKIP;
    if (p && !strcmp(p, "stop")) return TIDE_ON_ERROR_STOP;
    return TIDE_ON_ERROR_DLQ;
}

typedef enum info_kind { INFO_STRING, INFO_LIST, INFO_ON_ERROR, INFO_STORES, INFO_COUNT } info_kind_t;

/* What the runtime reads of tide.host's info table, by name: the list
 * scripts/tide/fields.lua keeps as M.info. A name that only one side knows
 * makes the runtime refuse to open (spec/c/test_runtime.c opens one). */
static const struct info_field {
    const char *name;
    info_kind_t kind;
    size_t at;    /* where the value goes in tide_detector_info_t */
    size_t count; /* where a list's length goes */
} info_fields[] = {
#define AT(m) offsetof(tide_detector_info_t, m)
    {"name", INFO_STRING, AT(name), 0},
    {"version", INFO_STRING, AT(version), 0},
    {"description", INFO_STRING, AT(description), 0},
    {"inputs", INFO_LIST, AT(inputs), AT(n_inputs)},
    {"outputs", INFO_LIST, AT(outputs), AT(n_outputs)},
    {"on_error", INFO_ON_ERROR, AT(on_error), 0},
    {"stores", INFO_STORES, AT(store_names), AT(n_stores)},
    {"punctuators", INFO_COUNT, AT(n_punctuators), 0},
    {"topology", INFO_STRING, AT(topology), 0},
#undef AT
};
#define N_INFO_FIELDS (sizeof(info_fields) / sizeof(info_fields[0]))

static int lua_type_of(info_kind_t k) {
    switch (k) {
    case INFO_STRING:
    case INFO_ON_ERROR: return LUA_TSTRING;
    case INFO_COUNT: return LUA_TNUMBER;
    default: return LUA_TTABLE;
    }
}

/* Whether the table at t has a name that info_fields does not hold; the
 * first such name goes to name[size]. */
static int has_unknown_info(lua_State *L, int t, char *name, size_t size) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        size_t i = 0;
        const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
        while (i < N_INFO_FIELDS && strcmp(info_fields[i].name, k)) i++;
        if (i == N_INFO_FIELDS) {
            snprintf(name, size, "%s", k);
            lua_pop(L, 1);
            return 1;
        }
    }
    return 0;
}

/* Read the info table at t into d; TIDE_ERROR with *errp when it and
 * info_fields disagree (a field missing, of another type, or unknown). */
static tide_status_t read_info(lua_State *L, int t, tide_detector_info_t *d, char **errp) {
    char unknown[64];
    if (has_unknown_info(L, t, unknown, sizeof(unknown))) {
        if (asprintf(errp, "tide.host's detector info has '%s', which bindings/runtime.c does not read",
                     unknown) < 0) *errp = NULL;
        return TIDE_ERROR;
    }
    for (size_t i = 0; i < N_INFO_FIELDS; i++) {
        const struct info_field *f = &info_fields[i];
        void *at = (char *)d + f->at;
        lua_getfield(L, t, f->name);
        if (lua_type(L, -1) != lua_type_of(f->kind)) {
            if (asprintf(errp, "tide.host's detector info has no %s '%s' (bindings/runtime.c reads it)",
                         lua_typename(L, lua_type_of(f->kind)), f->name) < 0) *errp = NULL;
            lua_pop(L, 1);
            return TIDE_ERROR;
        }
        switch (f->kind) {
        case INFO_STRING: *(char **)at = dupstr(lua_tostring(L, -1)); break;
        case INFO_LIST: *(char ***)at = read_list(L, (int *)((char *)d + f->count)); break;
        case INFO_ON_ERROR: *(tide_on_error_t *)at = on_error_of(lua_tostring(L, -1)); break;
        case INFO_STORES: read_stores(L, d); break;
        case INFO_COUNT: *(int *)at = (int)lua_tointeger(L, -1); break;
        }
        lua_pop(L, 1);
    }
    return TIDE_OK;
}

static void free_info(tide_detector_info_t *d) {
    for (size_t i = 0; i < N_INFO_FIELDS; i++) {
        const struct info_field *f = &info_fields[i];
        void *at = (char *)d + f->at;
        switch (f->kind) {
        case INFO_STRING: free(*(char **)at); break;
        case INFO_LIST: free_list(*(char ***)at, *(int *)((char *)d + f->count)); break;
        case INFO_STORES:
            free_list(d->store_names, d->n_stores);
            free(d->store_memory);
            free_list(d->store_global, d->n_stores);
            break;
        default: break;
        }
    }
}

/* open_db(name) for tide.host: the host's callback, as a Lua function.
 * Upvalue 1: the runtime. */
static int open_db(lua_State *L) {
    tide_runtime_t *rt = lua_touserdata(L, lua_upvalueindex(1));
    const char *name = luaL_checkstring(L, 1);
    if (!rt->opts.open_db)
        return luaL_error(L, "this host keeps no RocksDB state (declare tide.kv{ memory = true })");
    char *err = NULL;
    void *db = rt->opts.open_db(rt->opts.open_db_ud, name, &err);
    if (!db) {
        lua_pushfstring(L, "cannot open the state store: %s", err ? err : "unknown error");
        free(err);
        return lua_error(L);
    }
    lua_pushlightuserdata(L, db);
    return 1;
}

const char *tide_on_error_name(tide_on_error_t p) {
    switch (p) {
    case TIDE_ON_ERROR_SKIP: return "skip";
    case TIDE_ON_ERROR_STOP: return "stop";
    default: return "dlq";
    }
}

/* Pushes where to read the detector's files from: a copy, or nil. */
static void push_source_copy(lua_State *L, const tide_runtime_opts_t *o, const char *path) {
    (void)path;
    if (o->source_copy) lua_pushstring(L, o->source_copy);
    else lua_pushnil(L);
}

/* require("tide.host").open(path, sink, open_db, application_id,
 * source_copy): keeps run,
 * close and the hooks in the registry and reads the detector's info. On
 * failure sets *errp and leaves close() unset: a detector that did not open
 * is never closed. */
static tide_status_t load_detector(tide_runtime_t *rt, const char *path, char **errp) {
    lua_State *L = rt->L;
    lua_getglobal(L, "require");
    lua_pushstring(L, "tide.host");
    if (tide_lua_pcall(L, 1, 1, &rt->err) != 0) goto fail;
    lua_getfield(L, -1, "open");
    lua_remove(L, -2);
    lua_pushstring(L, path);
    lua_pushlightuserdata(L, &rt->sink);
    lua_pushlightuserdata(L, rt);
    lua_pushcclosure(L, open_db, 1);
    lua_pushstring(L, rt->opts.application_id ? rt->opts.application_id : "tide");
    tide_lua_push_registry(L, &rt->opts.registry);
    push_source_copy(L, &rt->opts, path);
    if (tide_lua_pcall(L, 6, 4, &rt->err) != 0) goto fail;
    /* run, info, close, hooks */
    const struct {
        const char *name;
        int *ref;
    } hooks[] = {
        {"task", &rt->task_ref}, {"punctuate", &rt->punctuate_ref}, {"restore", &rt->restore_ref},
        {"stream_time", &rt->stream_time_ref}, {"commit", &rt->commit_ref},
        {"rollback", &rt->rollback_ref}, {"dropped_late", &rt->dropped_late_ref},
        {"query", &rt->query_ref}, {"query_cancel", &rt->query_cancel_ref},
    };
    for (size_t i = 0; i < sizeof(hooks) / sizeof(hooks[0]); i++) {
        lua_getfield(L, -1, hooks[i].name);
        *hooks[i].ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pop(L, 1);
    rt->close_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (read_info(L, lua_gettop(L), &rt->info, errp) != TIDE_OK) {
        if (!*errp) *errp = strdup("cannot read the detector's info");
        rt->close_ref = LUA_NOREF;
        return TIDE_ERROR;
    }
    lua_pop(L, 1);
    rt->run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return TIDE_OK;

fail:
    *errp = dupstr(rt->err.message);
    return TIDE_ERROR;
}

/* A runtime with a fresh state and tide's scripts preloaded, no detector
 * yet; NULL with *errp. */
static tide_runtime_t *new_runtime(const tide_runtime_opts_t *o, char **errp) {
    tide_runtime_t *rt = calloc(1, sizeof(*rt));
    if (!rt) {
        *errp = strdup("not enough memory");
        return NULL;
    }
    rt->opts = *o;
    rt->api = o->api ? o->api : &tide_default_api;
    rt->run_ref = rt->close_ref = LUA_NOREF;
    rt->task_ref = rt->punctuate_ref = rt->restore_ref = rt->stream_time_ref = LUA_NOREF;
    rt->commit_ref = rt->rollback_ref = rt->dropped_late_ref = LUA_NOREF;
    rt->query_ref = rt->query_cancel_ref = LUA_NOREF;
    tide_sink_init(&rt->sink);
    rt->L = luaL_newstate();
    if (!rt->L) {
        free(rt);
        *errp = strdup("cannot create a Lua state");
        return NULL;
    }
    lua_State *L = rt->L;
    rt->heap = tide_heap_of(L);
    if (!rt->heap) {
        lua_close(L);
        free(rt);
        *errp = strdup("not enough memory");
        return NULL;
    }
    luaL_openlibs(L);
    rt->log_hook = (tide_log_hook_t){o->log, o->log_ud, &rt->sink, 0, 0, 0};
    lua_pushlightuserdata(L, (void *)rt->api);
    lua_setfield(L, LUA_REGISTRYINDEX, TIDE_REG_API);
    lua_pushlightuserdata(L, &rt->log_hook);
    lua_setfield(L, LUA_REGISTRYINDEX, TIDE_REG_LOG);
    if (tide_lua_preload(L) != 0) {
        *errp = dupstr(lua_tostring(L, -1));
        tide_runtime_close(rt);
        return NULL;
    }
    return rt;
}

tide_status_t tide_runtime_open(const tide_runtime_opts_t *o, const char *path,
                                tide_runtime_t **rtp, char **errp) {
    *rtp = NULL;
    tide_runtime_t *rt = new_runtime(o, errp);
    if (!rt) return TIDE_ERROR;
    if (load_detector(rt, path, errp) != TIDE_OK) {
        tide_runtime_close(rt);
        return TIDE_ERROR;
    }
    /* Loading is done: from now on the detector lives within its cap. */
    lua_gc(rt->L, LUA_GCCOLLECT, 0);
    tide_heap_set_limit(rt->heap, o->memory_limit);
    rt->err.memory_limit = o->memory_limit;
    *rtp = rt;
    return TIDE_OK;
}

tide_status_t tide_runtime_describe(const tide_runtime_opts_t *o, const char *path,
                                    tide_runtime_t **rtp, char **errp) {
    *rtp = NULL;
    tide_runtime_t *rt = new_runtime(o, errp);
    if (!rt) return TIDE_ERROR;
    lua_State *L = rt->L;
    lua_getglobal(L, "require");
    lua_pushstring(L, "tide.host");
    int rc = tide_lua_pcall(L, 1, 1, &rt->err);
    if (rc == 0) {
        lua_getfield(L, -1, "describe");
        lua_remove(L, -2);
        lua_pushstring(L, path);
        lua_pushstring(L, o->application_id ? o->application_id : "tide");
        push_source_copy(L, o, path);
        rc = tide_lua_pcall(L, 3, 1, &rt->err);
        if (rc != 0) *errp = dupstr(rt->err.message);
        else if (read_info(L, lua_gettop(L), &rt->info, errp) != TIDE_OK) rc = -1;
    } else {
        *errp = dupstr(rt->err.message);
    }
    if (rc != 0) {
        if (!*errp) *errp = strdup("cannot read the detector's info");
        tide_runtime_close(rt);
        return TIDE_ERROR;
    }
    lua_pop(L, 1);
    *rtp = rt;
    return TIDE_OK;
}

const tide_detector_info_t *tide_runtime_info(const tide_runtime_t *rt) {
    return &rt->info;
}

tide_sink_t *tide_runtime_sink(tide_runtime_t *rt) { return &rt->sink; }

tide_status_t tide_runtime_dispatch(tide_runtime_t *rt, tide_batch_t *b, int64_t now_ms,
                                    tide_failure_fn on_failure, void *ud) {
    return tide_lua_dispatch(rt->L, rt->run_ref, b, now_ms, &rt->sink, rt->api,
                             rt->info.on_error, rt->info.name, rt->info.version,
                             &rt->err, on_failure, ud);
}

/* Call a hook that reports nothing but errors (logged). */
static int call_hook(tide_runtime_t *rt, int nargs, int nresults) {
    if (tide_lua_pcall(rt->L, nargs, nresults, &rt->err) == 0) return 0;
    if (rt->opts.log) rt->opts.log(rt->opts.log_ud, TIDE_LOG_ERROR, rt->err.message, NULL);
    else fprintf(stderr, "tide: %s\n", rt->err.message);
    return -1;
}

void tide_runtime_task(tide_runtime_t *rt, int32_t partition, int active, int64_t stream_time) {
    lua_rawgeti(rt->L, LUA_REGISTRYINDEX, rt->task_ref);
    lua_pushinteger(rt->L, partition);
    lua_pushboolean(rt->L, active);
    if (stream_time >= 0) lua_pushnumber(rt->L, (lua_Number)stream_time);
    else lua_pushnil(rt->L);
    call_hook(rt, 3, 0);
}

void tide_runtime_commit(tide_runtime_t *rt) {
    if (rt->commit_ref == LUA_REFNIL || rt->commit_ref == LUA_NOREF) return;
    lua_rawgeti(rt->L, LUA_REGISTRYINDEX, rt->commit_ref);
    call_hook(rt, 0, 0);
}

void tide_runtime_rollback(tide_runtime_t *rt, int32_t partition, int64_t stream_time) {
    if (rt->rollback_ref == LUA_REFNIL || rt->rollback_ref == LUA_NOREF) return;
    lua_rawgeti(rt->L, LUA_REGISTRYINDEX, rt->rollback_ref);
    lua_pushinteger(rt->L, partition);
    if (stream_time >= 0) lua_pushnumber(rt->L, (lua_Number)stream_time);
    else lua_pushnil(rt->L);
    call_hook(rt, 2, 0);
}

uint64_t tide_runtime_dropped_late(tide_runtime_t *rt) {
    if (rt->dropped_late_ref == LUA_REFNIL || rt->dropped_late_ref == LUA_NOREF) return 0;
    lua_rawgeti(rt->L, LUA_REGISTRYINDEX, rt->dropped_late_ref);
    if (call_hook(rt, 0, 1)) return 0;
    uint64_t n = (uint64_t)lua_tonumber(rt->L, -1);
    lua_pop(rt->L, 1);
    return n;
}

int64_t tide_runtime_stream_time(tide_runtime_t *rt, int32_t partition) {
    lua_rawgeti(rt->L, LUA_REGISTRYINDEX, rt->stream_time_ref);
    lua_pushinteger(rt->L, partition);
    if (call_hook(rt, 1, 1)) return -1;
    int64_t st = (int64_t)lua_tonumber(rt->L, -1);
    lua_pop(rt->L, 1);
    return st;
}

int tide_runtime_punctuate(tide_runtime_t *rt, int64_t now_ms) {
    lua_State *L = rt->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->punctuate_ref);
    lua_pushnumber(L, (lua_Number)now_ms);
    if (call_hook(rt, 1, 1)) return 1;
    int failures = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return failures;
}

void tide_runtime_restore(tide_runtime_t *rt, int store, int32_t partition, const char *key,
                          size_t klen, const char *val, size_t vlen) {
    lua_State *L = rt->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->restore_ref);
    lua_pushinteger(L, store);
    lua_pushinteger(L, partition);
    lua_pushlstring(L, key, klen);
    if (val) lua_pushlstring(L, val, vlen);
    else lua_pushnil(L);
    call_hook(rt, 4, 0);
}

void tide_runtime_dead_letter(tide_runtime_t *rt, const tide_rec_t *rec, const char *cls,
                              const char *message) {
    tide_lua_error_t e = {0};
    snprintf(e.cls, sizeof(e.cls), "%s", cls);
    e.message = (char *)message;
    e.traceback = "";
    tide_lua_dead_letter(&rt->sink, rt->api, rec, &e, rt->info.name, rt->info.version);
}

static int has_ref(int ref) { return ref != LUA_REFNIL && ref != LUA_NOREF; }

/* The answer of a query that failed in Lua itself (out of memory, say). */
static tide_query_step_t query_failed(tide_runtime_t *rt, int *status, char **body,
                                      size_t *body_len) {
    *status = 500;
    *body = strdup("{\"error\":\"the query failed in the detector's runtime (logged)\"}");
    *body_len = *body ? strlen(*body) : 0;
    (void)rt;
    return TIDE_QUERY_DONE;
}

tide_query_step_t tide_runtime_query(tide_runtime_t *rt, uint32_t id, const char *req,
                                     size_t len, const int32_t *parts, int n, int budget_ms,
                                     int *status, char **body, size_t *body_len) {
    lua_State *L = rt->L;
    if (!has_ref(rt->query_ref)) return query_failed(rt, status, body, body_len);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->query_ref);
    lua_pushnumber(L, (lua_Number)id);
    lua_pushlstring(L, req, len);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, parts[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, budget_ms);
    if (call_hook(rt, 4, 2)) return query_failed(rt, status, body, body_len);
    tide_query_step_t r = TIDE_QUERY_MORE;
    if (!lua_isnil(L, -2)) {
        size_t bl = 0;
        const char *b = lua_tolstring(L, -1, &bl);
        *status = (int)lua_tointeger(L, -2);
        *body = malloc(bl + 1);
        if (*body) {
            memcpy(*body, b ? b : "", bl);
            (*body)[bl] = '\0';
        }
        *body_len = *body ? bl : 0;
        r = TIDE_QUERY_DONE;
    }
    lua_pop(L, 2);
    return r;
}

void tide_runtime_query_cancel(tide_runtime_t *rt, uint32_t id) {
    if (!has_ref(rt->query_cancel_ref)) return;
    lua_rawgeti(rt->L, LUA_REGISTRYINDEX, rt->query_cancel_ref);
    lua_pushnumber(rt->L, (lua_Number)id);
    call_hook(rt, 1, 0);
}

size_t tide_runtime_heap_bytes(const tide_runtime_t *rt) { return tide_heap_used(rt->heap); }
size_t tide_runtime_heap_peak(const tide_runtime_t *rt) { return tide_heap_peak(rt->heap); }

void tide_runtime_stop(tide_runtime_t *rt) {
    if (!rt->L || rt->close_ref == LUA_NOREF) return;
    lua_rawgeti(rt->L, LUA_REGISTRYINDEX, rt->close_ref);
    luaL_unref(rt->L, LUA_REGISTRYINDEX, rt->close_ref);
    rt->close_ref = LUA_NOREF;
    if (tide_lua_pcall(rt->L, 0, 0, &rt->err) != 0 && rt->opts.log)
        rt->opts.log(rt->opts.log_ud, TIDE_LOG_ERROR, rt->err.message, NULL);
}

void tide_runtime_close(tide_runtime_t *rt) {
    if (!rt) return;
    tide_runtime_stop(rt);
    if (rt->L) lua_close(rt->L);
    tide_heap_free(rt->heap);
    tide_lua_error_free(&rt->err);
    tide_sink_free(&rt->sink);
    free_info(&rt->info);
    free(rt);
}

/* ---------------------------------------------------------------- CLI */

static void set_number(lua_State *L, const char *k, lua_Number v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_bytes(lua_State *L, const char *k, const char *s, int32_t len) {
    if (s && len >= 0) lua_pushlstring(L, s, (size_t)len);
    else lua_pushnil(L);
    lua_setfield(L, -2, k);
}

/* Append one record read by the host to the list on top of the stack:
 * { topic, partition, offset, timestamp, key, value, headers = { name = value } }. */
static void push_cli_record(void *ud, const tide_cli_record_t *r) {
    lua_State *L = ud;
    lua_createtable(L, 0, 7);
    set_bytes(L, "topic", r->topic, (int32_t)strlen(r->topic));
    set_number(L, "partition", r->partition);
    set_number(L, "offset", (lua_Number)r->offset);
    if (r->timestamp >= 0) set_number(L, "timestamp", (lua_Number)r->timestamp);
    set_bytes(L, "key", r->key, r->key_len);
    set_bytes(L, "value", r->value, r->value_len);
    lua_createtable(L, 0, (int)r->n_headers);
    for (size_t i = 0; i < r->n_headers; i++) {
        if (!r->header_values[i]) continue; /* a map cannot hold a null */
        lua_pushlstring(L, r->header_values[i], r->header_lens[i]);
        lua_setfield(L, -2, r->header_names[i]);
    }
    lua_setfield(L, -2, "headers");
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
}

static int64_t int_field(lua_State *L, int t, const char *k, int64_t dflt) {
    lua_getfield(L, t, k);
    int64_t v = lua_isnumber(L, -1) ? (int64_t)lua_tonumber(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

/* host.read_topic(bootstrap|nil, topic, { {partition=, from=, to=}, ... })
 * -> records | nil, msg. Upvalue 1: a userdata holding the reader. */
static int cli_read_topic(lua_State *L) {
    tide_cli_reader_fn reader = *(tide_cli_reader_fn *)lua_touserdata(L, lua_upvalueindex(1));
    const char *bootstrap = luaL_optstring(L, 1, NULL);
    const char *topic = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    int n = (int)lua_objlen(L, 3);
    /* A userdata, so that nothing leaks when Lua raises. */
    tide_cli_range_t *ranges = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof(*ranges));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 3, i + 1);
        luaL_checktype(L, -1, LUA_TTABLE);
        ranges[i].partition = (int32_t)int_field(L, lua_gettop(L), "partition", -1);
        ranges[i].from = int_field(L, lua_gettop(L), "from", 0);
        ranges[i].to = int_field(L, lua_gettop(L), "to", -1);
        lua_pop(L, 1);
    }
    lua_newtable(L);
    char *err = NULL;
    if (reader(bootstrap, topic, ranges, n, push_cli_record, L, &err)) {
        lua_pushnil(L);
        lua_pushstring(L, err ? err : "cannot read the topic");
        free(err);
        return 2;
    }
    return 1;
}

/* Push require("tide.cli").main and its arguments: command, args, host. */
static int push_cli_call(lua_State *L, const char *command, int argc, char **argv,
                         const tide_cli_opts_t *o, tide_lua_error_t *err) {
    lua_getglobal(L, "require");
    lua_pushstring(L, "tide.cli");
    if (tide_lua_pcall(L, 1, 1, err)) return -1;
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    lua_pushstring(L, command);
    lua_createtable(L, argc, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_newtable(L);
    if (o->reader) {
        *(tide_cli_reader_fn *)lua_newuserdata(L, sizeof(o->reader)) = o->reader;
        lua_pushcclosure(L, cli_read_topic, 1);
        lua_setfield(L, -2, "read_topic");
    }
    lua_createtable(L, 0, 2);
    set_number(L, "memory", (lua_Number)o->memory_limit);
    set_number(L, "timeout_ms", (lua_Number)o->timeout_ms);
    lua_setfield(L, -2, "limits");
    return 0;
}

int tide_runtime_cli(const char *command, int argc, char **argv, const tide_cli_opts_t *o) {
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "tide: cannot create a Lua state\n");
        return 2;
    }
    luaL_openlibs(L);
    tide_lua_error_t err = {0};
    int rc = 2;
    if (tide_lua_preload(L) != 0) {
        fprintf(stderr, "tide: %s\n", lua_tostring(L, -1));
    } else if (push_cli_call(L, command, argc, argv, o, &err) ||
               tide_lua_pcall(L, 3, 1, &err)) {
        fprintf(stderr, "tide: %s\n%s\n", err.message, err.traceback ? err.traceback : "");
    } else {
        rc = (int)lua_tointeger(L, -1);
    }
    tide_lua_error_free(&err);
    lua_close(L);
    tide_guard_forget();
    return rc;
}
