/*
 * skiplist.h: an ordered set of byte keys, each with an item pointer, in
 * the byte order RocksDB's default comparator uses (memcmp, then the shorter
 * key first). The store indexes the writes it holds in memory with one, so
 * that its iterators can merge them over RocksDB in order.
 *
 * Keys are borrowed: the caller keeps a key's bytes alive while its node is
 * in the set, and points the node at them again when they move
 * (node->key, node->item are the caller's to update, never the order).
 * Nodes live in an arena: remove unlinks a node (its memory comes back at
 * clear), and a removed node's next pointers must not be followed.
 */
#ifndef TIDE_SKIPLIST_H
#define TIDE_SKIPLIST_H
#include <stddef.h>

typedef struct tide_skiplist_node {
    const char *key; /* borrowed, see above */
    size_t klen;
    void *item;
    struct tide_skiplist_node *next[]; /* one per level; next[0] is the successor */
} tide_skiplist_node_t;

typedef struct tide_skiplist tide_skiplist_t;

/* NULL when out of memory. The arena's first block comes with the first
 * reserve: a set never used costs a few hundred bytes. */
tide_skiplist_t *tide_skiplist_new(void);
void tide_skiplist_free(tide_skiplist_t *sl);

/* Make sure the next insert cannot fail: 0, or -1 when out of memory. */
int tide_skiplist_reserve(tide_skiplist_t *sl);
/* Add key (not in the set yet) after a successful reserve; never fails. */
tide_skiplist_node_t *tide_skiplist_insert(tide_skiplist_t *sl, const char *key, size_t klen,
                                           void *item);
/* Unlink node (in the set) by its key. */
void tide_skiplist_remove(tide_skiplist_t *sl, tide_skiplist_node_t *node);
/* Empty the set and release the arena (but one block, kept for reuse). */
void tide_skiplist_clear(tide_skiplist_t *sl);

/* The first node whose key is >= key (after: > key), NULL past the end. */
tide_skiplist_node_t *tide_skiplist_seek(const tide_skiplist_t *sl, const char *key,
                                         size_t klen, int after);
/* Nodes in the set. */
size_t tide_skiplist_count(const tide_skiplist_t *sl);
/* Bytes of memory held (the arena and the set itself). */
size_t tide_skiplist_bytes(const tide_skiplist_t *sl);

#endif
