/*
 * http.h: the admin HTTP server of `tide run`.
 *
 * A small HTTP/1.1 server on its own thread, loopback by default, GET and
 * HEAD only, one request per connection, several connections at once. It
 * serves what the supervisor knows:
 *
 *   GET /                the status page (host/status_page.html, embedded)
 *   GET /api/detectors   the detector table as JSON
 *   GET /metrics         Prometheus text exposition format
 *   GET /healthz         200 "ok" while the supervisor runs
 *   GET /readyz          200 once every detector has run, else 503 and why
 *
 * It reads the supervisor's table only under tide_supervisor_lock(), renders
 * into memory, and writes to the socket after unlocking, so a slow or stuck
 * client can never hold the supervisor up.
 */
#ifndef TIDE_HTTP_H
#define TIDE_HTTP_H
#include <stdint.h>

#include "buf.h"
#include "supervisor.h"

typedef struct tide_http tide_http_t;

/* Listen on addr:port and start serving. addr is an IPv4 literal or
 * "localhost"; NULL or "" means 127.0.0.1. port 0 picks a free port (see
 * tide_http_port). sv is borrowed and must outlive the server. Returns NULL
 * with *errp (malloc'd, the caller frees) = "admin http 127.0.0.1:8080: reason". */
tide_http_t *tide_http_start(const char *addr, int port, tide_supervisor_t *sv, char **errp);
/* The port actually bound. */
int tide_http_port(const tide_http_t *h);
/* Stop accepting, drop the connections in flight, join the thread, free h.
 * Returns at once. NULL is a no-op. */
void tide_http_stop(tide_http_t *h);

/* The renderers behind /metrics and /api/detectors, for other callers (a CLI,
 * tests). The caller holds tide_supervisor_lock(). now_ms is the wall clock
 * in ms since the epoch. They append to b; check b->oom afterwards. */
void tide_http_render_metrics(tide_buf_t *b, const tide_supervisor_t *sv, int64_t now_ms);
void tide_http_render_detectors(tide_buf_t *b, const tide_supervisor_t *sv, int64_t now_ms);

/* The status page, generated at build time from host/status_page.html by
 * host/embed_file.lua. */
extern const char tide_status_page_html[];

#endif
