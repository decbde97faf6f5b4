/*
 * skiplist.c: an ordered set of borrowed byte keys (see skiplist.h).
 *
 * A skip list rather than a balanced tree: a new node is linked after one
 * descent with no rebalancing, and a reader holding a node keeps a valid
 * position while other keys are inserted around it (only removals, which
 * the store announces to its iterators, invalidate one). It owns its nodes
 * and their arena, never the keys or items they point to, and never
 * compares anything but key bytes.
 *
 * Levels grow with probability 1/4, as in LevelDB's memtable: about 1.33
 * pointers per node, and a search touches ~4 nodes per level.
 */
#include "skiplist.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEIGHT 16 /* 4^16 keys before the top level stops thinning */
#define BLOCK (64u << 10)
#define NODE_MAX (sizeof(tide_skiplist_node_t) + MAX_HEIGHT * sizeof(tide_skiplist_node_t *))

typedef struct block {
    struct block *next;
    size_t used;
    _Alignas(max_align_t) char mem[]; /* BLOCK - sizeof(struct block) bytes */
} block_t;

struct tide_skiplist {
    tide_skiplist_node_t *head; /* MAX_HEIGHT levels, no key */
    int height;                 /* levels in use */
    uint32_t rnd;
    size_t count;
    block_t *blocks; /* the one being filled first */
    size_t n_blocks;
};

static int key_cmp(const char *a, size_t alen, const char *b, size_t blen) {
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c) return c;
    return alen < blen ? -1 : alen > blen;
}

static block_t *block_new(block_t *next) {
    block_t *b = malloc(BLOCK);
    if (!b) return NULL;
    b->next = next;
    b->used = 0;
    return b;
}

tide_skiplist_t *tide_skiplist_new(void) {
    tide_skiplist_t *sl = calloc(1, sizeof(*sl));
    if (!sl) return NULL;
    sl->head = calloc(1, NODE_MAX);
    if (!sl->head) {
        tide_skiplist_free(sl);
        return NULL;
    }
    sl->height = 1;
    sl->rnd = 0x2545f491u;
    return sl;
}

void tide_skiplist_free(tide_skiplist_t *sl) {
    if (!sl) return;
    for (block_t *b = sl->blocks, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    free(sl->head);
    free(sl);
}

int tide_skiplist_reserve(tide_skiplist_t *sl) {
    if (sl->blocks && BLOCK - sizeof(block_t) - sl->blocks->used >= NODE_MAX) return 0;
    block_t *b = block_new(sl->blocks);
    if (!b) return -1;
    sl->blocks = b;
    sl->n_blocks++;
    return 0;
}

static int random_height(tide_skiplist_t *sl) {
    /* xorshift32: any generator with even low bits does */
    uint32_t x = sl->rnd;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    sl->rnd = x;
    int h = 1;
    while (h < MAX_HEIGHT && (x & 3) == 0) {
        h++;
        x >>= 2;
    }
    return h;
}

/* prev[i]: the last node at level i whose key is < key (after: <= key). */
static tide_skiplist_node_t *descend(const tide_skiplist_t *sl, const char *key, size_t klen,
                                     int after, tide_skiplist_node_t **prev) {
    tide_skiplist_node_t *x = sl->head;
    for (int i = sl->height - 1; i >= 0; i--) {
        tide_skiplist_node_t *n;
        while ((n = x->next[i])) {
            int c = key_cmp(n->key, n->klen, key, klen);
            if (c > 0 || (c == 0 && !after)) break;
            x = n;
        }
        if (prev) prev[i] = x;
    }
    return x->next[0];
}

tide_skiplist_node_t *tide_skiplist_insert(tide_skiplist_t *sl, const char *key, size_t klen,
                                           void *item) {
    tide_skiplist_node_t *prev[MAX_HEIGHT];
    descend(sl, key, klen, 0, prev);
    int h = random_height(sl);
    for (int i = sl->height; i < h; i++) prev[i] = sl->head;
    if (h > sl->height) sl->height = h;
    size_t size = sizeof(tide_skiplist_node_t) + (size_t)h * sizeof(tide_skiplist_node_t *);
    block_t *b = sl->blocks; /* reserve made room for the tallest node */
    tide_skiplist_node_t *n = (tide_skiplist_node_t *)(b->mem + b->used);
    b->used += (size + sizeof(void *) - 1) & ~(sizeof(void *) - 1);
    n->key = key;
    n->klen = klen;
    n->item = item;
    for (int i = 0; i < h; i++) {
        n->next[i] = prev[i]->next[i];
        prev[i]->next[i] = n;
    }
    sl->count++;
    return n;
}

void tide_skiplist_remove(tide_skiplist_t *sl, tide_skiplist_node_t *node) {
    tide_skiplist_node_t *prev[MAX_HEIGHT];
    descend(sl, node->key, node->klen, 0, prev);
    /* Above the node's own height no predecessor points at it, so its
     * missing next[] entries are never read. */
    for (int i = 0; i < sl->height && prev[i]->next[i] == node; i++)
        prev[i]->next[i] = node->next[i];
    sl->count--;
}

void tide_skiplist_clear(tide_skiplist_t *sl) {
    block_t *keep = sl->blocks;
    while (keep && keep->next) {
        block_t *b = keep->next;
        keep->next = b->next;
        free(b);
    }
    if (keep) keep->used = 0;
    sl->n_blocks = keep != NULL;
    memset(sl->head, 0, NODE_MAX);
    sl->height = 1;
    sl->count = 0;
}

tide_skiplist_node_t *tide_skiplist_seek(const tide_skiplist_t *sl, const char *key,
                                         size_t klen, int after) {
    return descend(sl, key, klen, after, NULL);
}

size_t tide_skiplist_count(const tide_skiplist_t *sl) { return sl->count; }

size_t tide_skiplist_bytes(const tide_skiplist_t *sl) {
    return sizeof(*sl) + NODE_MAX + sl->n_blocks * BLOCK;
}
