/*
 * router.h: interactive queries, as `tide run DIR`'s admin server answers
 * them.
 *
 *   GET /api/detectors/NAME/stores                  the detector's stores
 *   GET /api/detectors/NAME/stores/STORE?key=K      K's value (a window store:
 *                                                   K's windows; time_from,
 *                                                   time_to narrow them)
 *   GET /api/detectors/NAME/stores/STORE?from=&to=&prefix=&after=&limit=
 *                                                   entries in key order
 *   GET /api/detectors/NAME/stores/STORE?count      how many entries
 *   GET /api/detectors/NAME/stores/STORE/metadata?key=K
 *                                                   which instance holds K
 *                                                   (Kafka Streams'
 *                                                   queryMetadataForKey)
 *   GET /api/detectors/NAME/instances               every instance of NAME,
 *                                                   its address and tasks
 *
 * A key lives in the task (partition) Kafka's producers put it in: murmur2
 * of its bytes modulo the inputs' partition count (partition=P overrides).
 * The router sends a query for a task this host runs to its worker, over
 * the worker's query channel (query.h), and proxies one for a task another
 * instance runs to that instance's admin server (directory.h says where);
 * scans read this host's tasks and say which instances hold the others. A
 * task that is restoring or moving answers 503 with Retry-After. Only reads;
 * the admin server stays on admin.address.
 *
 * Owns the supervisor's ends of the query channels, the queries waiting for
 * an answer (each bounded by a timeout), and a thread for each of: reading
 * answers, and proxying to other instances. Never blocks the admin server's
 * thread: a query waits as a deferred answer (http.h).
 */
#ifndef TIDE_ROUTER_H
#define TIDE_ROUTER_H
#include <stddef.h>
#include <stdint.h>

#include "directory.h"
#include "http.h"
#include "status.h"

/* What the supervisor knows of a detector it runs, filled under its lock. */
typedef struct tide_router_local {
    int channel;         /* its worker's query channel, 0: no worker */
    int32_t partitions;  /* of its inputs, 0: unknown */
    uint8_t state[TIDE_STATUS_MAX_TASKS]; /* TIDE_TASKMAP_* */
    int n_stores;
    char stores[TIDE_STATUS_STORES][128];
    int store_memory[TIDE_STATUS_STORES];
} tide_router_local_t;

/* 1 with *out when this host runs detector `name`, else 0; on the admin
 * server's thread: it must not block. */
typedef int (*tide_router_find_fn)(void *ud, const char *name, tide_router_local_t *out);

typedef struct tide_router_opts {
    tide_directory_t *directory; /* other instances; NULL: this one only */
    tide_router_find_fn find;
    void *ud;
    const char *server;   /* this instance's address (copied) */
    const char *instance; /* its id (copied) */
    int timeout_ms;       /* how long a query may wait for an answer (0: 10 s) */
} tide_router_opts_t;

typedef struct tide_router tide_router_t;

tide_router_t *tide_router_start(const tide_router_opts_t *o, char **errp);
/* A worker's query channel: the supervisor's end, owned from now on.
 * Returns its id (> 0), or 0 when it cannot be taken. */
int tide_router_attach(tide_router_t *r, int fd);
/* Its worker is gone: queries waiting on it answer 503. */
void tide_router_detach(tide_router_t *r, int channel);
/* The admin server's handler for the routes above (ud: the router). */
void tide_router_handle(void *ud, const tide_http_request_t *rq, tide_http_reply_t *reply);
/* Answer every waiting query (503) and stop. NULL is a no-op. */
void tide_router_stop(tide_router_t *r);

/* The partition of a key: Kafka's murmur2 (the Java producer's, and
 * librdkafka's murmur2_random), made positive, modulo n. */
int32_t tide_router_partition(const char *key, size_t len, int32_t n);
int32_t tide_router_murmur2(const void *key, size_t len);

#endif
