/*
 * guard.h: the limits of detector code that runs inside a Lua state it
 * shares with tide's own Lua: `tide test`, `tide replay` and the busted test
 * driver. Live, each detector is a worker process that the supervisor's
 * watchdog kills; here the detector runs in the caller's process, so a
 * guarded call fails with a located TimeoutError or MemoryError instead.
 *
 * How a call is stopped: a watchdog thread signals the Lua thread when the
 * call's budget runs out; the signal arms a count hook that raises at the
 * next Lua instruction. LuaJIT's compiled code ignores hooks, so the state
 * runs LuaJIT's profiler in line mode, which makes traces check for a pending
 * hook at every line. A call stuck inside a C function (a pathological
 * pattern search) cannot be interrupted: past a grace period the process
 * exits with a message naming the call. One state per process is guarded.
 * Only bindings/ includes this.
 */
#ifndef TIDE_GUARD_H
#define TIDE_GUARD_H
#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "heap.h"

/* Exit code of a process stopped by the hard deadline; `tide test` and
 * `tide replay` also return it when a record broke a limit. */
#define TIDE_EXIT_LIMIT 3

/* How long past its budget a call stuck in C may run before the process
 * exits. */
#define TIDE_GUARD_GRACE_MS 1000

typedef enum tide_guard_status {
    TIDE_GUARD_OK = 0,
    TIDE_GUARD_NOMEM,
    TIDE_GUARD_OTHER_STATE, /* another state of this process is guarded */
} tide_guard_status_t;

/* What a guarded call replaced, restored by tide_guard_leave. */
typedef struct tide_guard_call {
    int prev_owner, prev_active, prev_raised;
    int64_t prev_deadline, prev_budget;
} tide_guard_call_t;

/* Install the guard on L's state (once; later calls return its status):
 * the heap wrapper, the profiler, the signal handler, the watchdog thread. */
tide_guard_status_t tide_guard_install(lua_State *L);
/* After lua_close of the guarded state: drop it (and its heap wrapper), so
 * that another state may be guarded. */
void tide_guard_forget(void);
/* The heap of the guarded state (NULL before install). */
tide_heap_t *tide_guard_heap(void);

/* Run the next Lua code on behalf of heap owner `owner` within `budget_ms`
 * (a nested call keeps the earlier deadline when it is sooner). `label`
 * names the call in the hard-exit message and locates errors raised where
 * no detector frame is on the stack; it is copied. */
void tide_guard_enter(int owner, int64_t budget_ms, const char *label, tide_guard_call_t *c);
void tide_guard_leave(const tide_guard_call_t *c);

#endif
