/*
 * lua_call.c: the one way from C into Lua (tide_lua_pcall), and the loop that
 * applies a detector's error policy to a batch (tide_lua_dispatch).
 *
 * No call into Lua anywhere in tide bypasses tide_lua_pcall: it installs the
 * message handler that classifies errors and keeps their tracebacks, and it
 * recovers the heap after a memory error. The dispatch loop is the DESIGN's
 * "no pcall per record": one protected call per batch; on failure, drop what
 * the failed record emitted, dead-letter it, and resume after it.
 */
#include "lua_call.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

void tide_lua_error_free(tide_lua_error_t *err) {
    free(err->message);
    free(err->traceback);
    err->message = err->traceback = NULL;
    err->cls[0] = '\0';
}

static void set_error(tide_lua_error_t *err, const char *cls, const char *msg,
                      size_t msg_len, const char *trace) {
    tide_lua_error_free(err);
    snprintf(err->cls, sizeof(err->cls), "%s", cls);
    err->message = malloc(msg_len + 1);
    if (err->message) {
        memcpy(err->message, msg, msg_len);
        err->message[msg_len] = '\0';
    }
    err->traceback = strdup(trace ? trace : "");
}

/* Message handler: runs at the point of the error, so the traceback is the
 * detector's stack. Upvalue 1: the tide_lua_error_t. */
static int on_error(lua_State *L) {
    tide_lua_error_t *err = lua_touserdata(L, lua_upvalueindex(1));
    char cls[sizeof(err->cls)] = "ProcessError";
    if (lua_istable(L, 1)) {
        lua_getfield(L, 1, "class");
        lua_getfield(L, 1, "message");
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
            snprintf(cls, sizeof(cls), "%s", lua_tostring(L, -2));
            lua_replace(L, 1); /* the message becomes the error */
            lua_pop(L, 1);
        } else {
            lua_pop(L, 2);
        }
    }
    size_t len = 0;
    const char *msg = lua_tolstring(L, 1, &len);
    if (!msg) {
        msg = luaL_typename(L, 1);
        len = strlen(msg);
    }
    luaL_traceback(L, L, NULL, 1);
    set_error(err, cls, msg, len, lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_pushlstring(L, err->message ? err->message : "", len);
    return 1;
}

int tide_lua_pcall(lua_State *L, int nargs, int nresults, tide_lua_error_t *err) {
    int base = lua_gettop(L) - nargs; /* the function's slot */
    lua_pushlightuserdata(L, err);
    lua_pushcclosure(L, on_error, 1);
    lua_insert(L, base);
    int rc = lua_pcall(L, nargs, nresults, base);
    if (rc == 0) {
        lua_remove(L, base);
        return 0;
    }
    if (rc == LUA_ERRMEM) {
        /* The handler does not run for memory errors. */
        char msg[128];
        int n = err->memory_limit
                    ? snprintf(msg, sizeof(msg),
                               "not enough memory: the detector reached its "
                               "limit of %zu bytes of Lua heap",
                               err->memory_limit)
                    : snprintf(msg, sizeof(msg), "not enough memory");
        set_error(err, "MemoryError", msg, (size_t)n, "");
    } else if (rc != LUA_ERRRUN) {
        size_t len = 0;
        const char *m = lua_tolstring(L, -1, &len);
        set_error(err, "ProcessError", m ? m : "error in error handling",
                  m ? len : 23, "");
    }
    lua_settop(L, base - 1);
    if (rc == LUA_ERRMEM) lua_gc(L, LUA_GCCOLLECT, 0);
    return rc;
}

/* Copy the failed record's own headers, then say why it failed. */
void tide_lua_dead_letter(tide_sink_t *s, const tide_api_t *api, const tide_rec_t *r,
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
