/*
 * heap.c: the Lua heap cap (see heap.h).
 *
 * Owns the allocator wrapper of one lua_State and, for shared states, a hash
 * from each block a detector's code allocated to its size and owner, so that
 * the block is taken off that owner's count whenever it is freed, whoever
 * runs then. The hash lives outside the Lua heap (plain malloc). The wrapper
 * never calls into Lua and never raises: refusing means returning NULL, which
 * LuaJIT turns into a memory error; the over-limit callback only sets flags.
 */
#include "heap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct owner {
    size_t used, peak, limit;
    int over; /* past the limit since it last went back under it */
} owner_t;

typedef struct slot {
    void *p; /* NULL: empty */
    size_t size;
    int owner;
} slot_t;

struct tide_heap {
    lua_Alloc inner; /* LuaJIT's allocator, which does the work */
    void *inner_ud;
    size_t used, peak, limit; /* the whole state; limit 0: none */
    int current;              /* owner charged now; 0: nobody */
    owner_t *owners;          /* [0] unused */
    int n_owners, cap_owners;
    slot_t *slots; /* open addressing, linear probing; cap a power of 2 */
    size_t n_slots, cap_slots;
    tide_heap_over_fn over;
    void *over_ud;
};

/* ------------------------------------------------------------ the hash */

static size_t slot_of(const tide_heap_t *h, const void *p) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (h->cap_slots - 1);
}

static slot_t *find(tide_heap_t *h, const void *p) {
    if (!h->n_slots) return NULL;
    for (size_t i = slot_of(h, p);; i = (i + 1) & (h->cap_slots - 1)) {
        if (h->slots[i].p == p) return &h->slots[i];
        if (!h->slots[i].p) return NULL;
    }
}

static void put(tide_heap_t *h, void *p, size_t size, int owner) {
    size_t i = slot_of(h, p);
    while (h->slots[i].p) i = (i + 1) & (h->cap_slots - 1);
    h->slots[i] = (slot_t){p, size, owner};
    h->n_slots++;
}

/* Remove a slot, shifting later ones of the same run back (no tombstones). */
static void drop(tide_heap_t *h, slot_t *s) {
    size_t mask = h->cap_slots - 1, i = (size_t)(s - h->slots), j = i;
    h->slots[i].p = NULL;
    h->n_slots--;
    for (;;) {
        j = (j + 1) & mask;
        if (!h->slots[j].p) return;
        size_t k = slot_of(h, h->slots[j].p);
        /* j's entry may move to i unless its home lies cyclically in (i, j] */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
        h->slots[i] = h->slots[j];
        h->slots[j].p = NULL;
        i = j;
    }
}

/* Room for one more entry at a load of at most 1/2; -1 when out of memory. */
static int reserve(tide_heap_t *h) {
    if (2 * (h->n_slots + 1) <= h->cap_slots) return 0;
    size_t ncap = h->cap_slots ? 2 * h->cap_slots : 1024;
    slot_t *old = h->slots;
    size_t old_cap = h->cap_slots;
    h->slots = calloc(ncap, sizeof(slot_t));
    if (!h->slots) {
        h->slots = old;
        return -1;
    }
    h->cap_slots = ncap;
    h->n_slots = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].p) put(h, old[i].p, old[i].size, old[i].owner);
    free(old);
    return 0;
}

/* ------------------------------------------------------- the allocator */

static void charge(tide_heap_t *h, int id, size_t size) {
    owner_t *o = &h->owners[id];
    o->used += size;
    if (o->used > o->peak) o->peak = o->used;
}

static void discharge(tide_heap_t *h, int id, size_t size) {
    owner_t *o = &h->owners[id];
    o->used -= size < o->used ? size : o->used;
    if (o->over && o->used <= o->limit) o->over = 0;
}

/* May the current owner grow by taking the block (osize bytes, charged to
 * `from`) to nsize? Calls the over-limit hook the first time it passes its
 * limit; refuses past limit + slack (a quarter of the limit, 1 MiB at least). */
static int owner_may_grow(tide_heap_t *h, int from, size_t osize, size_t nsize) {
    owner_t *o = &h->owners[h->current];
    size_t gain = nsize - (from == h->current ? osize : 0);
    if (!o->limit || nsize <= osize || o->used + gain <= o->limit) return 1;
    size_t slack = o->limit / 4 > (1u << 20) ? o->limit / 4 : (1u << 20);
    if (o->used + gain > o->limit + slack) return 0;
    if (!o->over) {
        o->over = 1;
        if (h->over) h->over(h->over_ud);
    }
    return 1;
}

/* Move the bookkeeping of a block to p (nsize bytes) from its old slot s
 * (NULL: it had no owner). With `take`, it goes to the current owner (a new
 * block, or one the running detector grew); else it stays with its owner. */
static void track(tide_heap_t *h, void *p, size_t nsize, slot_t *s, int take) {
    int owner = take ? h->current : s->owner;
    if (s) {
        discharge(h, s->owner, s->size);
        drop(h, s);
    }
    put(h, p, nsize, owner); /* room was reserved before allocating */
    charge(h, owner, nsize);
}

static void *on_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    tide_heap_t *h = ud;
    slot_t *s = ptr && h->n_slots ? find(h, ptr) : NULL;
    if (nsize == 0) {
        if (s) {
            discharge(h, s->owner, s->size);
            drop(h, s);
        }
        h->inner(h->inner_ud, ptr, osize, 0);
        h->used -= osize;
        return NULL;
    }
    if (h->limit && nsize > osize && h->used - osize + nsize > h->limit) return NULL;
    int take = h->current && (!ptr || nsize > osize);
    if (take && !owner_may_grow(h, s ? s->owner : 0, osize, nsize)) return NULL;
    if ((take || s) && reserve(h)) return NULL;
    if (s) s = find(h, ptr); /* reserve() may have moved it */
    void *p = h->inner(h->inner_ud, ptr, osize, nsize);
    if (!p) return NULL;
    h->used = h->used - osize + nsize;
    if (h->used > h->peak) h->peak = h->used;
    if (take || s) track(h, p, nsize, s, take);
    return p;
}

/* --------------------------------------------------------------- API */

tide_heap_t *tide_heap_of(lua_State *L) {
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    if (f == on_alloc) return ud;
    tide_heap_t *h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    h->inner = f;
    h->inner_ud = ud;
    /* Start at what the state holds, so that freeing those blocks balances. */
    h->used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    h->peak = h->used;
    lua_setallocf(L, on_alloc, h);
    return h;
}

tide_heap_t *tide_heap_find(lua_State *L) {
    void *ud;
    return lua_getallocf(L, &ud) == on_alloc ? ud : NULL;
}

void tide_heap_free(tide_heap_t *h) {
    if (!h) return;
    free(h->owners);
    free(h->slots);
    free(h);
}

void tide_heap_set_limit(tide_heap_t *h, size_t limit) { h->limit = limit; }
size_t tide_heap_limit(const tide_heap_t *h) { return h->limit; }
size_t tide_heap_used(const tide_heap_t *h) { return h->used; }
size_t tide_heap_peak(const tide_heap_t *h) { return h->peak; }

int tide_heap_owner(tide_heap_t *h, size_t limit) {
    if (h->n_owners + 1 >= h->cap_owners) {
        int ncap = h->cap_owners ? 2 * h->cap_owners : 16;
        owner_t *o = realloc(h->owners, (size_t)ncap * sizeof(owner_t));
        if (!o) return 0;
        memset(o + h->cap_owners, 0, (size_t)(ncap - h->cap_owners) * sizeof(owner_t));
        h->owners = o;
        h->cap_owners = ncap;
    }
    int id = ++h->n_owners;
    h->owners[id] = (owner_t){0, 0, limit, 0};
    return id;
}

int tide_heap_enter(tide_heap_t *h, int owner) {
    int prev = h->current;
    h->current = owner > 0 && owner <= h->n_owners ? owner : 0;
    return prev;
}

static const owner_t *owner_at(const tide_heap_t *h, int id) {
    static const owner_t none = {0, 0, 0, 0};
    return id > 0 && id <= h->n_owners ? &h->owners[id] : &none;
}

size_t tide_heap_owner_used(const tide_heap_t *h, int id) { return owner_at(h, id)->used; }
size_t tide_heap_owner_peak(const tide_heap_t *h, int id) { return owner_at(h, id)->peak; }
size_t tide_heap_owner_limit(const tide_heap_t *h, int id) { return owner_at(h, id)->limit; }
int tide_heap_owner_over(const tide_heap_t *h, int id) {
    const owner_t *o = owner_at(h, id);
    return o->limit && o->used > o->limit;
}
int tide_heap_current(const tide_heap_t *h) { return h->current; }

size_t tide_heap_room(const tide_heap_t *h) {
    size_t room = (size_t)-1;
    if (h->limit) room = h->used < h->limit ? h->limit - h->used : 0;
    const owner_t *o = owner_at(h, h->current);
    if (o->limit) {
        size_t r = o->used < o->limit ? o->limit - o->used : 0;
        if (r < room) room = r;
    }
    return room;
}

void tide_heap_on_over(tide_heap_t *h, tide_heap_over_fn fn, void *ud) {
    h->over = fn;
    h->over_ud = ud;
}
