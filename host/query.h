/*
 * query.h: the worker's side of interactive queries.
 *
 * The supervisor's query router (router.h) holds one end of a socket pair per
 * worker; the worker holds the other and answers, between two batches, the
 * reads of its stores that come through it. The frames, both ways, are
 *
 *   request  [u32 length][u32 id][i32 partition][u8 flags][JSON query]
 *   answer   [u32 length][u32 id][u16 HTTP status][JSON body]
 *
 * (big-endian; length counts what follows it). partition -1 reads every
 * task the worker holds; flags bit 0 cancels query `id`. The JSON query is
 * what scripts/tide/query.lua reads ({"store": ..., "key": ...}).
 *
 * The worker decides when (tide_query_serve is called only where the stores
 * hold exactly the last commit: see worker.c); this unit reads requests,
 * answers those it can from the runtime within a slice of time, and sends
 * the answers. A task that is restoring gets 503; one the worker does not
 * hold (it moved) gets 503 too, so the router asks again.
 */
#ifndef TIDE_QUERY_H
#define TIDE_QUERY_H
#include <stddef.h>
#include <stdint.h>

#include "runtime.h"
#include "task.h"

enum {
    TIDE_QUERY_HEADER = 13,   /* request: length, id, partition, flags */
    TIDE_QUERY_ANSWER_HEADER = 10, /* answer: length, id, status */
    TIDE_QUERY_CANCEL = 1,    /* flags: forget query id */
    TIDE_QUERY_MAX_REQUEST = 64 * 1024,
};

typedef struct tide_query tide_query_t;

/* The worker's end, fd (owned from now on); NULL when out of memory. */
tide_query_t *tide_query_new(int fd);
/* Read what arrived (never blocks) and send what is left of earlier
 * answers. Returns how many queries wait to be answered. */
int tide_query_poll(tide_query_t *q);
/* Answer waiting queries from rt for up to budget_ms (a long scan goes on at
 * the next call); the stores must hold the last commit, nothing more. */
void tide_query_serve(tide_query_t *q, tide_runtime_t *rt, tide_tasks_t *tasks, int budget_ms);
/* Answer every waiting query with 503 (the worker is swapping versions or
 * stopping) and forget them; running ones are cancelled in rt. */
void tide_query_refuse_all(tide_query_t *q, tide_runtime_t *rt, const char *why);
/* Queries answered since the start. */
uint64_t tide_query_answered(const tide_query_t *q);
void tide_query_free(tide_query_t *q);

/* Frame helpers, shared with the router. */
static inline void tide_query_put32(unsigned char *b, uint32_t v) {
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}
static inline uint32_t tide_query_get32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

#endif
