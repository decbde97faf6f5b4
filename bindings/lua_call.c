/*
 * lua_call.c: the one way from C into Lua (tide_lua_pcall), and the loop that
 * applies a detector's error policy to a batch (tide_lua_dispatch).
 *
 * No call into Lua anywhere in tide bypasses tide_lua_pcall: it runs the call
 * on a coroutine of its own (a pool per state), reads the traceback of a
 * failure from the coroutine's stack afterwards, classifies the error,
 * describes it without letting a hostile error object run away, and recovers
 * the heap after a memory error. The dispatch loop is the DESIGN's
 * "no pcall per record": one protected call per batch; on failure, drop what
 * the failed record emitted, dead-letter it, and resume after it.
 */
#include "lua_call.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "heap.h"

void tide_lua_error_free(tide_lua_error_t *err) {
    free(err->message);
    free(err->traceback);
    err->message = err->traceback = NULL;
    err->cls[0] = '\0';
}

int tide_lua_is_tide_source(const char *s) {
    if (!s || s[0] != '@') return 0;
    size_t n = strlen(s);
    const char *slash = strrchr(s, '/');
    if (n < 6 || strcmp(s + n - 4, ".lua") || !slash || slash - s < 5) return 0;
    for (const char *p = slash + 1; p < s + n - 4; p++)
        if (!isalnum((unsigned char)*p) && *p != '_') return 0;
    if (memcmp(slash - 4, "tide", 4)) return 0;
    return slash[-5] == '@' || slash[-5] == '/';
}

int tide_lua_where(lua_State *L, char *out, size_t cap) {
    lua_Debug d;
    for (int level = 0; level < 200 && lua_getstack(L, level, &d); level++) {
        if (!lua_getinfo(L, "Sl", &d) || d.what[0] == 'C' || tide_lua_is_tide_source(d.source))
            continue;
        /* The innermost frame of a coroutine that failed has no current
         * line when a Lua instruction itself failed (a memory error). */
        if (d.currentline > 0) snprintf(out, cap, "%s:%d", d.short_src, d.currentline);
        else snprintf(out, cap, "%s: in the function at line %d", d.short_src, d.linedefined);
        return 1;
    }
    return 0;
}

/* A copy of at most `max` bytes of s, saying where it was cut. */
static char *capped(const char *s, size_t len, size_t max) {
    char note[80] = "";
    if (len > max) {
        snprintf(note, sizeof(note), "... (cut at %zu of %zu bytes)", max, len);
        len = max;
    }
    size_t nl = strlen(note);
    char *out = malloc(len + nl + 1);
    if (!out) return NULL;
    memcpy(out, s, len);
    memcpy(out + len, note, nl + 1);
    return out;
}

static void set_error(tide_lua_error_t *err, const char *cls, const char *msg,
                      size_t msg_len, const char *trace) {
    tide_lua_error_free(err);
    snprintf(err->cls, sizeof(err->cls), "%s", cls);
    err->message = capped(msg, msg_len, TIDE_ERROR_MESSAGE_MAX);
    trace = trace ? trace : "";
    err->traceback = capped(trace, strlen(trace), TIDE_ERROR_TRACEBACK_MAX);
}

/* Is the value at idx one of tide's own error objects? */
static int is_tide_error(lua_State *L, int idx) {
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
    lua_getfield(L, LUA_REGISTRYINDEX, TIDE_REG_ERROR_MT);
    int yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

/* Push the message of the error object at idx: a string or number as it
 * is, a tide error's message, else what a protected tostring() says (a
 * __tostring that fails, or hangs past a guarded call's budget, gives a
 * plain description instead). */
static void push_message(lua_State *L, int idx) {
    int t = lua_type(L, idx);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        lua_pushvalue(L, idx);
        lua_tostring(L, -1);
        return;
    }
    if (is_tide_error(L, idx)) {
        lua_pushstring(L, "message");
        lua_rawget(L, idx);
        if (lua_type(L, -1) == LUA_TSTRING) return;
        lua_pop(L, 1);
    }
    if (t == LUA_TNIL) {
        lua_pushstring(L, "nil");
        return;
    }
    lua_getglobal(L, "tostring");
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) == 0 && lua_type(L, -1) == LUA_TSTRING) return;
    lua_pop(L, 1);
    lua_pushfstring(L, "(error object is a %s value)", lua_typename(L, t));
}

/* Classify and describe the error object at idx into *err (traceback kept). */
static void describe(lua_State *L, int idx, tide_lua_error_t *err) {
    char cls[sizeof(err->cls)] = "ProcessError";
    if (is_tide_error(L, idx)) {
        lua_pushstring(L, "class");
        lua_rawget(L, idx);
        if (lua_type(L, -1) == LUA_TSTRING) snprintf(cls, sizeof(cls), "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    char *trace = err->traceback;
    err->traceback = NULL;
    push_message(L, idx);
    size_t len = 0;
    const char *msg = lua_tolstring(L, -1, &len);
    set_error(err, cls, msg ? msg : "?", msg ? len : 1, trace);
    free(trace);
    lua_pop(L, 1);
}

/* The heap cap that applies to the code running on L: the caller's, else
 * the current heap owner's (the driver's), else the whole state's. */
static size_t cap_of(lua_State *L, const tide_lua_error_t *err) {
    if (err->memory_limit) return err->memory_limit;
    tide_heap_t *h = tide_heap_find(L);
    if (!h) return 0;
    size_t owner = tide_heap_owner_limit(h, tide_heap_current(h));
    return owner ? owner : tide_heap_limit(h);
}

/* A memory error at `where` ("" when unknown). Allocates nothing in Lua:
 * the heap is at its limit. */
static void memory_error(lua_State *L, tide_lua_error_t *err, const char *where) {
    char msg[400];
    size_t cap = cap_of(L, err);
    int n = cap ? snprintf(msg, sizeof(msg),
                           "%s%snot enough memory: the detector reached its limit of %zu bytes "
                           "of Lua heap",
                           where, *where ? ": " : "", cap)
                : snprintf(msg, sizeof(msg), "%s%snot enough memory", where, *where ? ": " : "");
    set_error(err, "MemoryError", msg, (size_t)n, "");
}

/* A thread for one call: an idle one of the state's pool, or a new one;
 * pushed onto L. */
static lua_State *take_thread(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, "tide.threads");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, "tide.threads");
    }
    int n = (int)lua_objlen(L, -1);
    if (n > 0) {
        lua_rawgeti(L, -1, n);
        lua_pushnil(L);
        lua_rawseti(L, -3, n);
    } else {
        lua_newthread(L);
    }
    lua_remove(L, -2);
    return lua_tothread(L, -1);
}

/* Back to the pool: the thread at idx ended its call normally. */
static void give_back(lua_State *L, int idx) {
    lua_getfield(L, LUA_REGISTRYINDEX, "tide.threads");
    lua_pushvalue(L, idx);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    lua_pop(L, 1);
}

typedef struct failure {
    lua_State *co;
    int rc;
    tide_lua_error_t *err;
    const char *where;
} failure_t;

/* Describe a failure (lua_cpcall'd: describing allocates). */
static int describe_failure(lua_State *L) {
    failure_t *f = lua_touserdata(L, 1);
    lua_settop(L, 0);
    luaL_traceback(L, f->co, NULL, 0);
    f->err->traceback = capped(lua_tostring(L, -1), lua_objlen(L, -1), TIDE_ERROR_TRACEBACK_MAX);
    lua_pop(L, 1);
    if (f->rc == LUA_YIELD)
        lua_pushfstring(L, "%s%scoroutine.yield outside a coroutine of the detector's own",
                        f->where, *f->where ? ": " : "");
    else
        lua_xmove(f->co, L, 1);
    describe(L, lua_gettop(L), f->err);
    return 0;
}

/* The call ended in an error (or a yield) on thread co, whose stack is as
 * the error left it: describe it into *err, traceback from there. */
static void failed(lua_State *L, lua_State *co, int rc, tide_lua_error_t *err) {
    char where[300] = "";
    tide_lua_where(co, where, sizeof(where));
    if (rc == LUA_ERRMEM) {
        memory_error(L, err, where);
        return;
    }
    failure_t f = {co, rc, err, where};
    if (lua_cpcall(L, describe_failure, &f)) {
        lua_pop(L, 1);
        free(err->traceback);
        err->traceback = NULL;
        static const char msg[] = "(an error that could not be described: not enough memory)";
        set_error(err, "ProcessError", msg, sizeof(msg) - 1, "");
    }
}

/* Every call runs on a coroutine of its own, without a message handler: a
 * coroutine that failed keeps its stack, so the traceback is read from it
 * afterwards, and nothing has to run at the point of the error. (With a
 * handler, a stack overflow in compiled code leaves LuaJIT no room to call
 * it, and the call ends with "error in error handling".) */
int tide_lua_pcall(lua_State *L, int nargs, int nresults, tide_lua_error_t *err) {
    int base = lua_gettop(L) - nargs; /* the function's slot */
    lua_State *co = take_thread(L);
    lua_insert(L, base); /* the thread stays anchored below the call */
    if (!lua_checkstack(co, nargs + 1 + LUA_MINSTACK)) {
        lua_settop(L, base - 1);
        memory_error(L, err, "");
        return LUA_ERRMEM;
    }
    lua_xmove(L, co, nargs + 1);
    free(err->traceback);
    err->traceback = NULL;
    int rc = lua_resume(co, nargs);
    if (rc == 0) {
        int n = lua_gettop(co);
        if (nresults != LUA_MULTRET && n != nresults) lua_settop(co, n = nresults);
        if (!lua_checkstack(L, n + LUA_MINSTACK)) {
            lua_settop(co, 0);
            rc = LUA_ERRMEM;
        } else {
            lua_xmove(co, L, n);
            give_back(L, base);
            lua_remove(L, base);
            return 0;
        }
    }
    failed(L, co, rc, err);
    lua_settop(L, base - 1);
    if (rc == LUA_ERRMEM) lua_gc(L, LUA_GCCOLLECT, 0);
    return rc == LUA_YIELD ? LUA_ERRRUN : rc;
}

/* Copy the failed record's own headers, then say why it failed. */
static void dead_letter(tide_sink_t *s, const tide_api_t *api, const tide_rec_t *r,
                        const tide_lua_error_t *err, const char *detector,
                        const char *version) {
    if (tide_sink_emit(s, TIDE_OUTPUT_DLQ, r->key, r->key_len, r->val,
                       r->val_len))
        return;
    int nh = api->header_count(r);
    for (int i = 0; i < nh; i++) {
        const char *name;
        const void *val;
        size_t vlen;
        if (api->header_get(r, i, &name, &val, &vlen) == 0)
            tide_sink_emit_header(s, name, (int32_t)strlen(name), val,
                                  val ? (int32_t)vlen : -1);
    }
    char num[32];
#define HDR(n, v) tide_sink_emit_header(s, n, (int32_t)strlen(n), v, (int32_t)strlen(v))
    HDR("tide.error.class", err->cls);
    HDR("tide.error.message", err->message ? err->message : "");
    HDR("tide.error.traceback", err->traceback ? err->traceback : "");
    HDR("tide.source.topic", r->topic ? r->topic : "");
    snprintf(num, sizeof(num), "%d", (int)r->partition);
    HDR("tide.source.partition", num);
    snprintf(num, sizeof(num), "%lld", (long long)r->offset);
    HDR("tide.source.offset", num);
    snprintf(num, sizeof(num), "%lld", (long long)r->timestamp);
    HDR("tide.source.timestamp", num);
    HDR("tide.detector", detector);
    HDR("tide.detector.version", version);
#undef HDR
}

void tide_lua_dead_letter(tide_sink_t *s, const tide_api_t *api, const tide_rec_t *r,
                          const tide_lua_error_t *err, const char *detector,
                          const char *version) {
    /* A dead letter is never refused for the sink's limit: the record's
     * own emits, which may have filled it, were dropped already. */
    size_t limit = s->limit;
    s->limit = 0;
    dead_letter(s, api, r, err, detector, version);
    s->limit = limit;
}

tide_status_t tide_lua_dispatch(lua_State *L, int run_ref, tide_batch_t *b, int64_t now_ms,
                                tide_sink_t *s, const tide_api_t *api,
                                tide_on_error_t policy, const char *detector,
                                const char *version, tide_lua_error_t *err,
                                tide_failure_fn on_failure, void *ud) {
    tide_status_t st = TIDE_OK;
    s->batch = b;
    while (b->cursor < b->n) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, run_ref);
        lua_pushlightuserdata(L, b);
        lua_pushnumber(L, (lua_Number)now_ms);
        if (tide_lua_pcall(L, 2, 0, err) == 0) break;

        int32_t i = b->cursor;
        const tide_rec_t *r = &b->recs[i];
        if (!strcmp(err->cls, TIDE_RETRY_CLASS)) {
            /* Not the record's failure: it waits (nothing it emitted stays). */
            size_t keep = s->n;
            while (keep > 0 && s->entries[keep - 1].source == i) keep--;
            tide_sink_truncate(s, keep, TIDE_OUTPUT_CHANGELOG(0));
            st = TIDE_RETRY;
            break;
        }
        /* The failed record's emits are the tail of the sink. They go, but
         * not the changelog entries of its store writes: those writes stay
         * in the stores (as in Kafka Streams, nothing is rolled back), and a
         * store restored from its changelog must hold what the live one did. */
        size_t keep = s->n;
        while (keep > 0 && s->entries[keep - 1].source == i) keep--;
        tide_sink_truncate(s, keep, TIDE_OUTPUT_CHANGELOG(0));

        tide_failure_t f = {i, err->cls, err->message ? err->message : "",
                            err->traceback ? err->traceback : ""};
        if (on_failure) on_failure(ud, r, &f);
        if (policy == TIDE_ON_ERROR_STOP) {
            st = TIDE_STOPPED;
            break;
        }
        if (policy == TIDE_ON_ERROR_DLQ)
            tide_lua_dead_letter(s, api, r, err, detector, version);
        b->cursor = i + 1;
    }
    s->batch = NULL;
    return st;
}

int tide_lua_preload(lua_State *L) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_tide_core);
    lua_setfield(L, -2, "tide.core");
    for (const tide_embedded_t *e = tide_embedded; e->module; e++) {
        char chunk[256];
        snprintf(chunk, sizeof(chunk), "@%s", e->path);
        if (luaL_loadbuffer(L, e->source, e->len, chunk) != 0)
            return -1; /* message on the stack */
        lua_setfield(L, -2, e->module);
    }
    lua_pop(L, 2);
    return 0;
}

void tide_hash_hex(const char *buf, size_t len, char out[17]) {
    snprintf(out, 17, "%016llx", (unsigned long long)tide_fnv1a64(buf, len));
}

/* The registry settings as a Lua table (tide.host.open, the Avro tool). */
void tide_lua_push_registry(lua_State *L, const tide_registry_opts_t *r) {
    lua_createtable(L, 0, 6);
    lua_pushstring(L, r->url ? r->url : "");
    lua_setfield(L, -2, "url");
    lua_pushstring(L, r->user_info ? r->user_info : "");
    lua_setfield(L, -2, "user_info");
    lua_pushnumber(L, r->timeout_ms > 0 ? (lua_Number)r->timeout_ms : 5000);
    lua_setfield(L, -2, "timeout_ms");
    lua_pushnumber(L, r->backoff_max_ms > 0 ? (lua_Number)r->backoff_max_ms : 10000);
    lua_setfield(L, -2, "backoff_max_ms");
    lua_pushboolean(L, r->auto_register);
    lua_setfield(L, -2, "auto_register");
    lua_pushboolean(L, r->use_latest);
    lua_setfield(L, -2, "use_latest");
}
