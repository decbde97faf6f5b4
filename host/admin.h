/*
 * admin.h: the documents of `tide run DIR`'s admin server, rendered from a
 * snapshot of the detectors.
 *
 *   GET /                the status page (host/status_page.html, embedded)
 *   GET /api/detectors   the detectors as JSON
 *   GET /metrics         Prometheus text exposition format
 *   GET /healthz         200 "ok" while the process runs (503 once stopping)
 *   GET /readyz          200 when every detector runs (or hot-swaps), else 503
 *                        and why: each failed or quarantined detector with
 *                        its problem, those waiting for the broker or for an
 *                        output topic, those still starting
 *
 * The admin module knows nothing of the supervisor: for each request it asks
 * its owner to fill a snapshot (tide_admin_fill_fn, called on the server
 * thread), then renders from that copy with no lock held. The types below
 * are a detector as the outside sees it; the supervisor keeps them and fills
 * them in.
 */
#ifndef TIDE_ADMIN_H
#define TIDE_ADMIN_H
#include <stdint.h>

#include "buf.h"
#include "status.h"

/* A detector's state as the supervisor shows it. */
typedef enum tide_det_state {
    TIDE_DS_STARTING = 0, /* worker started, not running records yet */
    TIDE_DS_RUNNING,
    TIDE_DS_RELOADING,   /* a new version is being validated in the worker */
    TIDE_DS_RESTARTING,  /* worker died; waiting out the backoff */
    TIDE_DS_QUARANTINED, /* failed too often; waits for the file to change */
    TIDE_DS_FAILED,      /* the file does not load (see problem); waits for a fix */
    TIDE_DS_STOPPING,    /* file removed; worker committing and leaving */
} tide_det_state_t;
#define TIDE_DS_COUNT 7

const char *tide_det_state_name(tide_det_state_t s);

#define TIDE_RELOAD_HISTORY 16

/* One reload attempt, as the status page lists it. */
typedef struct tide_reload_event {
    int64_t ms;          /* wall clock, ms since the epoch */
    int ok;
    char version[32];    /* the version tried, "" when unknown */
    char message[1024];  /* "file:line: reason" when it failed */
} tide_reload_event_t;

/* Counters of a detector over all its workers. */
typedef struct tide_det_totals {
    uint64_t records_in, records_out, dlq, errors, dropped, batches;
    uint64_t reloads, reload_failures;
    uint64_t hist[TIDE_STATUS_HIST];  /* batch processing time */
    double hist_sum;
    uint64_t dropped_late;            /* records dropped as late (windows past grace) */
    uint64_t rollbacks;               /* back to the last commit */
    uint64_t txn_committed, txn_aborted; /* exactly-once transactions */
    uint64_t commit_hist[TIDE_STATUS_HIST]; /* commit duration */
    double commit_hist_sum;
} tide_det_totals_t;

/* The last record that failed, as the worker reported it. */
typedef struct tide_det_error {
    int64_t ms;          /* wall clock; 0: none */
    char cls[32];
    char topic[256];     /* "" when the error is tied to no record */
    int32_t partition;
    int64_t offset;
    char message[1024];
    char traceback[4096];
} tide_det_error_t;

/* Gauges of the current worker; valid only when the detector has one. */
typedef struct tide_det_gauges {
    int64_t lag;         /* -1: unknown */
    uint64_t lua_heap_bytes;
    int32_t assigned_partitions;
    int32_t restoring_tasks;
    uint64_t restored_records;
    uint64_t store_memory_bytes;
    int64_t batch_running_ms; /* how long the batch in flight has run; -1: none */
    char guarantee[24];       /* at_least_once, exactly_once_v2; "" unknown */
    int64_t broker_waiting_since_ms; /* wall: a commit waits for the broker; 0: not */
    char missing_topic[256];  /* an output topic the broker does not have, "" none */
    int64_t missing_topic_since_ms;
} tide_det_gauges_t;

/* One detector in a snapshot. */
typedef struct tide_admin_detector {
    char name[128];
    char path[1024];
    char version[32];        /* of the code running (or last run) */
    char description[512];
    char topology[16384];    /* the running code's topology, JSON ("" unknown) */
    tide_det_state_t state;
    int32_t pid;             /* the worker, 0 when none */
    int has_worker;          /* gauges are valid */
    tide_det_gauges_t gauges;
    int64_t started_ms;      /* wall clock, when the current worker started */
    uint64_t restarts, watchdog_kills;
    double cpu_seconds;      /* of the current worker */
    uint64_t rss_bytes;
    char last_exit[128];     /* how the last worker ended, "" if none did */
    char problem[2048];      /* why it is failed or quarantined, else "" */
    tide_det_totals_t totals;
    tide_det_error_t last_error;
    tide_reload_event_t reloads[TIDE_RELOAD_HISTORY]; /* oldest first */
    int n_reloads;
    /* The file's newer version that was refused while this one runs on
     * (refused.ms 0: none): "running v1; v2 refused: file:line: reason". */
    tide_reload_event_t refused;
} tide_admin_detector_t;

typedef struct tide_admin_snapshot {
    int64_t now_ms;          /* wall clock, when filled */
    int64_t started_ms;      /* wall clock, when the supervisor started */
    int stopping;
    tide_admin_detector_t *dets; /* owned by the snapshot */
    int n_dets, cap;
    int oom;                 /* a detector could not be added */
} tide_admin_snapshot_t;

/* Fills s (empty, now_ms set) on the server thread; takes whatever lock its
 * owner needs, copies, and returns: it must not block on I/O. */
typedef void (*tide_admin_fill_fn)(void *ud, tide_admin_snapshot_t *s);

/* A zeroed detector appended to s; NULL (and s->oom) when out of memory. */
tide_admin_detector_t *tide_admin_snapshot_add(tide_admin_snapshot_t *s);
void tide_admin_snapshot_free(tide_admin_snapshot_t *s);

typedef struct tide_admin tide_admin_t;

/* Serve the documents on addr:port (see tide_http_start: NULL or "" is
 * 127.0.0.1, port 0 a free port). fill and ud are borrowed and must outlive
 * the server. NULL with *errp (malloc'd) on failure. */
tide_admin_t *tide_admin_start(const char *addr, int port, tide_admin_fill_fn fill, void *ud,
                               char **errp);
int tide_admin_port(const tide_admin_t *a);
/* Stop serving and free a; returns at once. NULL is a no-op. */
void tide_admin_stop(tide_admin_t *a);

/* The renderers, for tests and other callers. They append to b; check
 * b->oom afterwards. readyz returns the status, 200 or 503. */
void tide_admin_render_metrics(tide_buf_t *b, const tide_admin_snapshot_t *s);
void tide_admin_render_detectors(tide_buf_t *b, const tide_admin_snapshot_t *s);
int tide_admin_render_readyz(tide_buf_t *b, const tide_admin_snapshot_t *s);
/* Ready: not stopping, and every detector running, reloading or leaving. */
int tide_admin_ready(const tide_admin_snapshot_t *s);

/* The status page, generated at build time from host/status_page.html by
 * bindings/embed.lua. */
extern const char tide_status_page_html[];

#endif
