/*
 * lua_call.h: the one way from C into Lua, and the batch dispatch loop.
 * Only bindings/ includes this (it needs lua.h).
 */
#ifndef TIDE_LUA_CALL_H
#define TIDE_LUA_CALL_H
#include <lua.h>

#include "runtime_types.h"
#include "sink.h"

/* The last error caught by tide_lua_pcall. Owned by its user; strings are
 * malloc'd and replaced on the next error. */
typedef struct tide_lua_error {
    char cls[32];
    char *message;
    char *traceback;
    size_t memory_limit; /* for the MemoryError message; 0: none */
} tide_lua_error_t;

/* lua_pcall, run on a coroutine of its own: on error, keeps the traceback
 * from where the error was raised, classifies the error (a tide.errors object
 * keeps its class; a memory error is a MemoryError; anything else a
 * ProcessError) and describes it in *err, at most TIDE_ERROR_MESSAGE_MAX
 * bytes: an error object that is not a string is described by a protected
 * tostring(), a memory error and a stack overflow by the detector's file and
 * line. A coroutine.yield out of the call fails it. Returns lua_pcall's
 * status; on error leaves nothing on the stack. */
int tide_lua_pcall(lua_State *L, int nargs, int nresults, tide_lua_error_t *err);
void tide_lua_error_free(tide_lua_error_t *err);

/* "file:line" of the innermost Lua frame of L that is not tide's own code
 * (a script "@.../tide/name.lua"), into out ("file: in the function at line
 * N" when its current line is unknown); 0 when there is none. Reads the
 * stack only: it allocates nothing, so it works at the heap's limit. */
int tide_lua_where(lua_State *L, char *out, size_t cap);
/* Is `source` (a chunk name) one of tide's own scripts? */
int tide_lua_is_tide_source(const char *source);

/* The policy loop behind tide_runtime_dispatch, shared with tide.core:
 * `run_ref` is a registry reference to the dispatcher's run function.
 * A record raising TIDE_RETRY_CLASS ends the loop with TIDE_RETRY, the
 * cursor at it; it is neither reported nor dead-lettered. */
tide_status_t tide_lua_dispatch(lua_State *L, int run_ref, tide_batch_t *b, int64_t now_ms,
                                tide_sink_t *s, const tide_api_t *api,
                                tide_on_error_t policy, const char *detector,
                                const char *version, tide_lua_error_t *err,
                                tide_failure_fn on_failure, void *ud);

/* Append a dead-letter entry for r (its key, value and headers, plus
 * tide.error.* and tide.source.* headers from err) to the sink. */
void tide_lua_dead_letter(tide_sink_t *s, const tide_api_t *api, const tide_rec_t *r,
                          const tide_lua_error_t *err, const char *detector,
                          const char *version);

/* Registry keys for what tide.core hands to Lua, and for the metatable of
 * tide's error objects (set by tide.errors): only an error with it has its
 * class believed, so that a detector cannot pass for a MemoryError. */
#define TIDE_REG_API "tide.api"
#define TIDE_REG_LOG "tide.log"
#define TIDE_REG_ERROR_MT "tide.error.mt"

/* Longest error message and traceback kept (dead-letter headers, logs). */
#define TIDE_ERROR_MESSAGE_MAX 8192
#define TIDE_ERROR_TRACEBACK_MAX 16384

/* Where ctx.log and print() go (registry TIDE_REG_LOG, a lightuserdata).
 * A detector that logs in a loop is held to TIDE_LOG_LINES_PER_S lines a
 * second; the rest are counted and the count logged: a flood must not fill
 * the host's disk before the watchdog stops it. */
#define TIDE_LOG_LINES_PER_S 1000
typedef struct tide_log_hook {
    tide_log_fn fn;
    void *ud;
    const tide_sink_t *sink; /* for the record being processed, if any */
    int64_t window_ms;       /* the second being counted (monotonic) */
    long lines, dropped;
} tide_log_hook_t;

/* The module loader, also preloaded into every runtime. */
int luaopen_tide_core(lua_State *L);

/* Default api: emits into a sink; headers from tide_test_headers_t. */
extern const tide_api_t tide_default_api;

/* Headers of a record built by tide.core for tests (rec->msg points here). */
typedef struct tide_test_headers {
    int n;
    const char **names;
    const char **vals;
    const int32_t *lens;
} tide_test_headers_t;

/* Scripts and the FFI header embedded by the build (build/gen/embedded.c). */
typedef struct tide_embedded {
    const char *module, *path, *source;
    size_t len;
} tide_embedded_t;
extern const tide_embedded_t tide_embedded[];
extern const char tide_ffi_cdef[];

/* package.preload[module] = each embedded script, and tide.core. 0, or -1
 * with the message on the stack. */
int tide_lua_preload(lua_State *L);

/* Pushes the schema registry's settings as a table: url, user_info,
 * timeout_ms, backoff_max_ms, auto_register, use_latest. */
void tide_lua_push_registry(lua_State *L, const tide_registry_opts_t *r);

/* FNV-1a 64-bit of the bytes, as 16 hex digits plus NUL into out[17]. */
void tide_hash_hex(const char *buf, size_t len, char out[17]);

#endif
