/*
 * heap.h: the Lua heap cap, wrapped around LuaJIT's own allocator.
 *
 * Two ways to count. A worker's runtime owns its lua_State, so the cap is on
 * the whole state (tide_heap_set_limit). `tide test`, `tide replay` and the
 * busted driver run detectors inside a state they share with tide's own Lua
 * (and busted's): there each detector is an owner, and what counts against
 * its cap is the memory allocated while its code runs (tide_heap_enter) and
 * still alive, however long after it is freed. Only bindings/ includes this.
 */
#ifndef TIDE_HEAP_H
#define TIDE_HEAP_H
#include <lua.h>
#include <stddef.h>

typedef struct tide_heap tide_heap_t;

/* Called (from inside the allocator) when an owner first grows past its
 * limit; allocations then go on up to limit + slack, so that the caller can
 * raise a located error at a safe point instead of a bare memory error. */
typedef void (*tide_heap_over_fn)(void *ud);

/* The heap wrapper of L's state, installed on first call (it wraps whatever
 * allocator the state has). NULL when out of memory. The wrapper lives as
 * long as the state: free it with tide_heap_free after lua_close, or never
 * for a state tide does not own (busted's). */
tide_heap_t *tide_heap_of(lua_State *L);
/* The wrapper of L's state if it has one, else NULL (nothing installed). */
tide_heap_t *tide_heap_find(lua_State *L);
void tide_heap_free(tide_heap_t *h);

/* Whole-state cap (0: none): growing past it fails. */
void tide_heap_set_limit(tide_heap_t *h, size_t limit);
size_t tide_heap_limit(const tide_heap_t *h);
/* Bytes in use by the whole state, and the peak. */
size_t tide_heap_used(const tide_heap_t *h);
size_t tide_heap_peak(const tide_heap_t *h);

/* A new owner with its cap (0: none); ids start at 1. 0 when out of memory. */
int tide_heap_owner(tide_heap_t *h, size_t limit);
/* Make `owner` (0: nobody) the one new allocations are charged to; returns
 * the previous one. */
int tide_heap_enter(tide_heap_t *h, int owner);
/* An owner's live bytes, peak and cap; whether it is past its cap now. */
size_t tide_heap_owner_used(const tide_heap_t *h, int owner);
size_t tide_heap_owner_peak(const tide_heap_t *h, int owner);
size_t tide_heap_owner_limit(const tide_heap_t *h, int owner);
int tide_heap_owner_over(const tide_heap_t *h, int owner);
/* Who is being charged now (0: nobody). */
int tide_heap_current(const tide_heap_t *h);
/* Bytes the running code may still allocate: the current owner's, else the
 * whole state's; (size_t)-1 without a cap. */
size_t tide_heap_room(const tide_heap_t *h);

void tide_heap_on_over(tide_heap_t *h, tide_heap_over_fn fn, void *ud);

#endif
