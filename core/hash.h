/*
 * hash.h: FNV-1a, 64 bits. The record cache buckets keys with it and a
 * detector's version is its source's hash, so both must agree on one
 * definition. Not for anything an adversary chooses to collide.
 */
#ifndef TIDE_HASH_H
#define TIDE_HASH_H
#include <stddef.h>
#include <stdint.h>

static inline uint64_t tide_fnv1a64(const void *buf, size_t len) {
    const unsigned char *b = buf;
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}

#endif
