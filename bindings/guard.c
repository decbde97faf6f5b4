/*
 * guard.c: limits for detector code in a shared Lua state (see guard.h).
 *
 * Owns the process-wide watchdog: one thread that watches the deadline of
 * the guarded call in progress, the SIGALRM handler that arms the hook, the
 * hook that raises a located TimeoutError or MemoryError, and LuaJIT's
 * profiler, started in line mode only so that compiled traces notice a
 * pending hook. It never raises from a signal handler or from the allocator:
 * those only set flags and arm the hook; errors are raised by the hook, where
 * the Lua state is consistent.
 */
#include "guard.h"

#include <dlfcn.h>
#include <lauxlib.h>
#include <luajit.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lua_call.h"

#define POLL_MS 10
#define RESEND_MS 100 /* re-arm the hook this often while a call is late */

/* What the signal handler, the allocator and the thread share. Fields the
 * thread reads are written with __atomic stores. */
static struct {
    lua_State *L;      /* a thread of the guarded state, anchored in its registry */
    tide_heap_t *heap;
    pthread_t lua_thread;
    int profiling;
    int active, owner;
    int64_t deadline, budget; /* monotonic ms */
    int gen;                  /* bumped by every enter and leave */
    volatile sig_atomic_t expired, memory, raised;
    int collected;            /* the hook collected since the cap was passed */
    lua_Hook prev_hook;       /* a hook that was set before ours, if any */
    int prev_mask, prev_count, hooked;
    char label[512];
} W;

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------- frames */

/* "file:line" of the innermost detector frame, else the call's label. */
static void locate(lua_State *L, char *out, size_t cap) {
    if (!tide_lua_where(L, out, cap)) snprintf(out, cap, "%s", W.label[0] ? W.label : "?");
}

/* May the hook raise in the code running now? Always in a detector's
 * frame. In tide's own frames only once per call (that stops a loop a
 * detector made tide run), and never in an error handler (status set). */
static int may_raise_here(lua_State *L) {
    lua_Debug d;
    if (!lua_getstack(L, 0, &d) || !lua_getinfo(L, "S", &d)) return 1;
    if (!tide_lua_is_tide_source(d.source)) return 1;
    return lua_status(L) == 0 && !W.raised;
}

/* --------------------------------------------------------------- hook */

static void unhook(lua_State *L) {
    if (!W.hooked) return;
    W.hooked = 0;
    lua_sethook(L, W.prev_hook, W.prev_mask, W.prev_count);
}

static void on_hook(lua_State *L, lua_Debug *ar);

/* Arm the hook (from the signal handler or the allocator): a count hook on
 * every instruction, and a profiler tick so that a running trace exits at
 * its next line. */
static void arm(void) {
    if (!W.hooked) {
        W.prev_hook = lua_gethook(W.L);
        W.prev_mask = lua_gethookmask(W.L);
        W.prev_count = lua_gethookcount(W.L);
        W.hooked = 1;
    }
    lua_sethook(W.L, on_hook, LUA_MASKCOUNT, 1);
    if (W.profiling) raise(SIGPROF);
}

static void raise_limit(lua_State *L, const char *cls, const char *what) {
    char where[600];
    locate(L, where, sizeof(where));
    W.raised = 1;
    lua_createtable(L, 0, 2);
    lua_pushstring(L, "class");
    lua_pushstring(L, cls);
    lua_rawset(L, -3);
    lua_pushstring(L, "message");
    lua_pushfstring(L, "%s: %s", where, what);
    lua_rawset(L, -3);
    lua_getfield(L, LUA_REGISTRYINDEX, TIDE_REG_ERROR_MT);
    lua_setmetatable(L, -2);
    lua_error(L);
}

static void on_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    char what[160];
    if (!W.active) {
        unhook(L);
        return;
    }
    if (W.memory) {
        /* Garbage counts until it is collected: collect (once), then judge. */
        if (!W.collected) {
            W.collected = 1;
            lua_gc(L, LUA_GCCOLLECT, 0);
        }
        if (!tide_heap_owner_over(W.heap, W.owner)) {
            W.memory = 0;
            if (!W.expired) unhook(L);
            return;
        }
        if (!may_raise_here(L)) return; /* at the next instruction, then */
        W.memory = 0;
        snprintf(what, sizeof(what),
                 "not enough memory: the detector reached its limit of %zu bytes of Lua heap",
                 tide_heap_owner_limit(W.heap, W.owner));
        raise_limit(L, "MemoryError", what);
    }
    if (W.expired && may_raise_here(L)) {
        snprintf(what, sizeof(what),
                 "watchdog: the call ran past its budget of %lld ms (detector.batch.timeout.ms)",
                 (long long)W.budget);
        raise_limit(L, "TimeoutError", what);
    }
}

/* ------------------------------------------------- signals and thread */

static void on_alarm(int sig) {
    (void)sig;
    if (!__atomic_load_n(&W.active, __ATOMIC_ACQUIRE)) return;
    W.expired = 1;
    arm();
}

static void on_over(void *ud) {
    (void)ud;
    if (!W.active) return;
    W.memory = 1;
    W.collected = 0;
    arm();
}

static void hard_exit(int64_t late) {
    char msg[900];
    int n = snprintf(msg, sizeof(msg),
                     "tide: watchdog: %s: still running %lld ms after its budget of %lld ms ran "
                     "out, inside code that cannot be interrupted (a C library call such as a "
                     "pathological pattern search); stopping the process\n",
                     W.label[0] ? W.label : "a detector", (long long)late, (long long)W.budget);
    ssize_t w = write(STDERR_FILENO, msg, (size_t)(n < (int)sizeof(msg) ? n : (int)sizeof(msg) - 1));
    (void)w;
    _exit(TIDE_EXIT_LIMIT);
}

/* Watch the call in progress: signal the Lua thread when its budget is
 * spent (again every RESEND_MS), end the process past the grace period. */
static void *watch(void *arg) {
    (void)arg;
    int sent_gen = -1;
    int64_t sent_at = 0;
    for (;;) {
        struct timespec ts = {0, POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
        int gen = __atomic_load_n(&W.gen, __ATOMIC_ACQUIRE);
        int active = __atomic_load_n(&W.active, __ATOMIC_ACQUIRE);
        int64_t deadline = __atomic_load_n(&W.deadline, __ATOMIC_ACQUIRE);
        if (!active || gen != __atomic_load_n(&W.gen, __ATOMIC_ACQUIRE)) continue;
        int64_t now = mono_ms();
        if (now < deadline) continue;
        if (now - deadline > TIDE_GUARD_GRACE_MS) hard_exit(now - deadline);
        if (sent_gen != gen || now - sent_at >= RESEND_MS) {
            sent_gen = gen;
            sent_at = now;
            pthread_kill(W.lua_thread, SIGALRM);
        }
    }
    return NULL;
}

static void on_profile(void *data, lua_State *L, int samples, int vmstate) {
    (void)data, (void)L, (void)samples, (void)vmstate;
}

/* The thread is started with SIGALRM and SIGPROF blocked: both are for the
 * Lua thread. */
static int start_thread(void) {
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    sigaddset(&block, SIGPROF);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    pthread_t t;
    int rc = pthread_create(&t, NULL, watch, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) return -1;
    pthread_detach(t);
    return 0;
}

/* The thread and the signal handler are code of this library: when it is
 * tide.core under busted, lua_close would unload it while the thread runs.
 * Loading it once more with RTLD_NODELETE keeps it until the process ends. */
static void pin_library(void) {
    Dl_info info;
    if (dladdr((void *)pin_library, &info) && info.dli_fname)
        dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

/* ---------------------------------------------------------------- API */

tide_guard_status_t tide_guard_install(lua_State *L) {
    if (W.heap) return tide_heap_find(L) == W.heap ? TIDE_GUARD_OK : TIDE_GUARD_OTHER_STATE;
    tide_heap_t *h = tide_heap_of(L);
    if (!h) return TIDE_GUARD_NOMEM;
    pin_library();
    lua_pushthread(L); /* anchored: the hook is set through it */
    luaL_ref(L, LUA_REGISTRYINDEX);
    W.L = L;
    W.heap = h;
    tide_heap_on_over(h, on_over, NULL);
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    /* Line mode: traces check for a pending hook at each new line. The
     * callback does nothing; the profiler is here for those checks. */
    luaJIT_profile_start(L, "li10", on_profile, NULL);
    W.profiling = 1;
    return start_thread() ? TIDE_GUARD_NOMEM : TIDE_GUARD_OK;
}

void tide_guard_forget(void) {
    __atomic_store_n(&W.active, 0, __ATOMIC_RELEASE);
    tide_heap_free(W.heap); /* lua_close stopped the profiler */
    W.heap = NULL;
    W.L = NULL;
    W.profiling = 0;
    W.hooked = 0;
}

tide_heap_t *tide_guard_heap(void) { return W.heap; }

void tide_guard_enter(int owner, int64_t budget_ms, const char *label, tide_guard_call_t *c) {
    c->prev_owner = tide_heap_enter(W.heap, owner);
    c->prev_active = W.active;
    c->prev_raised = W.raised;
    c->prev_deadline = W.deadline;
    c->prev_budget = W.budget;
    int64_t deadline = mono_ms() + budget_ms;
    if (W.active && W.deadline < deadline) {
        deadline = W.deadline;
        budget_ms = W.budget;
    }
    __atomic_store_n(&W.active, 0, __ATOMIC_RELEASE);
    snprintf(W.label, sizeof(W.label), "%s", label ? label : "");
    W.owner = owner;
    W.budget = budget_ms;
    W.raised = 0;
    __atomic_store_n(&W.deadline, deadline, __ATOMIC_RELEASE);
    __atomic_add_fetch(&W.gen, 1, __ATOMIC_RELEASE);
    W.lua_thread = pthread_self();
    __atomic_store_n(&W.active, 1, __ATOMIC_RELEASE);
    /* Still past its cap from an earlier call (what it keeps): this call
     * fails at its first instruction, unless collecting brings it back. */
    if (tide_heap_owner_over(W.heap, owner)) on_over(NULL);
}

void tide_guard_leave(const tide_guard_call_t *c) {
    __atomic_store_n(&W.active, 0, __ATOMIC_RELEASE);
    tide_heap_enter(W.heap, c->prev_owner);
    W.owner = c->prev_owner;
    W.expired = 0;
    W.memory = 0;
    W.raised = c->prev_raised;
    W.budget = c->prev_budget;
    unhook(W.L);
    __atomic_store_n(&W.deadline, c->prev_deadline, __ATOMIC_RELEASE);
    __atomic_add_fetch(&W.gen, 1, __ATOMIC_RELEASE);
    if (c->prev_active) __atomic_store_n(&W.active, 1, __ATOMIC_RELEASE);
}
