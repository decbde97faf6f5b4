/*
 * http.c: the admin HTTP server (see http.h) and the documents it serves.
 *
 * HTTP itself is libmicrohttpd's: parsing, limits, HEAD, keeping the
 * connections. This file owns the listening socket (bound here, so a refusal
 * says why), one server thread that runs libmicrohttpd in its own poll loop,
 * a wake-up pipe, and a deadline per connection phase: a request must arrive
 * whole within READ_TIMEOUT_MS of the accept and its answer leave within
 * WRITE_TIMEOUT_MS, or the connection is cut. The answer is rendered into
 * memory as soon as the request is complete, so a slow or silent client
 * delays neither the others nor tide_http_stop, which returns at once.
 *
 * It must never hold tide_supervisor_lock() across socket I/O, never write to
 * the supervisor's table (it only reads it), and never log: the supervisor
 * logs what tide_http_start returns. Anything a detector wrote (names, error
 * messages, tracebacks) is escaped for the format it lands in.
 */
#include "http.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEADER_MAX 8192        /* libmicrohttpd's memory per connection: request line and
                                  headers must fit, else 431 */
#define READ_TIMEOUT_MS 3000   /* for the whole request, against slow senders */
#define WRITE_TIMEOUT_MS 5000  /* for the whole response, against slow readers */
#define IDLE_TIMEOUT_S 10      /* libmicrohttpd's own, a backstop behind the two above */
#define MAX_CONNS 32           /* at once; more wait in the listen backlog */

/* Every connection, from accept to close, with the deadline of its phase:
 * reading the request, then writing the answer. libmicrohttpd's own timeout
 * is for inactivity only, so a client that trickles a byte at a time would
 * never meet it; this one counts from the start of the phase. */
struct conn {
    int fd; /* -1: a free slot */
    int64_t deadline; /* monotonic ms */
    int cut;          /* past its deadline: shut down, libmicrohttpd closes it */
};

struct tide_http {
    tide_supervisor_t *sv;
    struct MHD_Daemon *d;
    int wake[2];   /* tide_http_stop writes; the server thread polls wake[0] */
    int port;
    int loopback;  /* bound to 127.0.0.0/8: check Host (DNS rebinding) */
    pthread_t thread;
    size_t page_len;
    struct conn conns[MAX_CONNS]; /* touched by the server thread only */
};

/* ------------------------------------------------------------- /metrics */

/* The per-detector samples with one value each, in exposition order. */
typedef enum metric {
    M_RECORDS_IN, M_RECORDS_OUT, M_ERRORS, M_DLQ, M_DROPPED,
    M_LAG, M_HEAP, M_PARTITIONS, M_CPU, M_RSS,
    M_RESTARTS, M_RELOADS, M_RELOAD_FAILURES, M_WATCHDOG_KILLS,
    M_RESTORING, M_RESTORED, M_STORE_MEMORY,
} metric_t;

static const struct {
    metric_t m;
    const char *name, *type, *help;
} metrics[] = {
    {M_RECORDS_IN, "tide_records_in_total", "counter",
     "Records consumed by the detector, over all its workers."},
    {M_RECORDS_OUT, "tide_records_out_total", "counter",
     "Records the detector emitted to its outputs."},
    {M_ERRORS, "tide_errors_total", "counter",
     "Records whose processing failed."},
    {M_DLQ, "tide_dlq_records_total", "counter",
     "Records sent to the dead-letter topic."},
    {M_DROPPED, "tide_dropped_records_total", "counter",
     "Records dropped: skipped by the error policy or already processed."},
    {M_LAG, "tide_consumer_lag_records", "gauge",
     "Records behind the log end over the worker's assigned partitions."},
    {M_HEAP, "tide_lua_heap_bytes", "gauge",
     "Lua heap in use by the worker."},
    {M_PARTITIONS, "tide_assigned_partitions", "gauge",
     "Input partitions assigned to the worker."},
    {M_CPU, "tide_worker_cpu_seconds_total", "counter",
     "CPU time (user + system) of the current worker; restarts at 0 with it."},
    {M_RSS, "tide_worker_rss_bytes", "gauge",
     "Resident memory of the current worker."},
    {M_RESTARTS, "tide_worker_restarts_total", "counter",
     "Worker restarts after a crash or a hang."},
    {M_RELOADS, "tide_reloads_total", "counter",
     "Hot reloads that swapped in a new version."},
    {M_RELOAD_FAILURES, "tide_reload_failures_total", "counter",
     "Hot reloads refused because the new version failed validation."},
    {M_WATCHDOG_KILLS, "tide_watchdog_kills_total", "counter",
     "Workers killed by the watchdog for a batch past its budget."},
    {M_RESTORING, "tide_restoring_tasks", "gauge",
     "Tasks whose state stores are being restored from their changelogs."},
    {M_RESTORED, "tide_restored_records_total", "counter",
     "Changelog records applied while restoring, by the current worker."},
    {M_STORE_MEMORY, "tide_store_memory_bytes", "gauge",
     "Memory of the worker's RocksDB stores (block cache and memtables)."},
};

/* 0 when the detector has no such sample now (no worker, lag unknown). */
static int metric_value(metric_t m, const tide_detector_t *d, const tide_det_totals_t *t,
                        double *v) {
    const tide_status_block_t *st = d->st;
    switch (m) {
    case M_RECORDS_IN: *v = (double)t->records_in; return 1;
    case M_RECORDS_OUT: *v = (double)t->records_out; return 1;
    case M_ERRORS: *v = (double)t->errors; return 1;
    case M_DLQ: *v = (double)t->dlq; return 1;
    case M_DROPPED: *v = (double)t->dropped; return 1;
    case M_LAG:
        if (!st || st->lag < 0) return 0;
        *v = (double)st->lag;
        return 1;
    case M_HEAP:
        if (!st) return 0;
        *v = (double)st->lua_heap_bytes;
        return 1;
    case M_PARTITIONS:
        if (!st) return 0;
        *v = (double)st->assigned_partitions;
        return 1;
    case M_CPU:
        if (d->pid <= 0) return 0;
        *v = d->cpu_seconds;
        return 1;
    case M_RSS:
        if (d->pid <= 0) return 0;
        *v = (double)d->rss_bytes;
        return 1;
    case M_RESTORING:
        if (!st) return 0;
        *v = (double)st->restoring_tasks;
        return 1;
    case M_RESTORED:
        if (!st) return 0;
        *v = (double)st->restored_records;
        return 1;
    case M_STORE_MEMORY:
        if (!st) return 0;
        *v = (double)st->store_memory_bytes;
        return 1;
    case M_RESTARTS: *v = (double)d->restarts; return 1;
    case M_RELOADS: *v = (double)t->reloads; return 1;
    case M_RELOAD_FAILURES: *v = (double)t->reload_failures; return 1;
    case M_WATCHDOG_KILLS: *v = (double)d->watchdog_kills; return 1;
    }
    return 0;
}

static void family(tide_buf_t *b, const char *name, const char *type, const char *help) {
    tide_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{detector="..." then the caller adds more labels or "}" */
static void sample_open(tide_buf_t *b, const char *name, const tide_detector_t *d) {
    tide_buf_puts(b, name);
    tide_buf_puts(b, "{detector=");
    tide_buf_prom_label(b, d->name, sizeof(d->name));
}

static const tide_det_state_t all_states[] = {
    TIDE_DS_STARTING, TIDE_DS_RUNNING, TIDE_DS_RELOADING, TIDE_DS_RESTARTING,
    TIDE_DS_QUARANTINED, TIDE_DS_FAILED, TIDE_DS_STOPPING,
};

void tide_http_render_metrics(tide_buf_t *b, const tide_supervisor_t *sv, int64_t now_ms) {
    (void)now_ms;
    int n = sv->n_dets;
    tide_det_totals_t *tot = calloc(n > 0 ? (size_t)n : 1, sizeof(*tot));
    if (!tot) {
        b->oom = 1;
        return;
    }
    for (int i = 0; i < n; i++) tide_detector_totals(sv->dets[i], &tot[i]);

    family(b, "tide_start_time_seconds", "gauge", "When the supervisor started, seconds since the epoch.");
    tide_buf_puts(b, "tide_start_time_seconds ");
    tide_buf_prom_num(b, (double)sv->started_ms / 1000.0);
    tide_buf_puts(b, "\n");
    family(b, "tide_ready", "gauge", "1 once every detector has reached running.");
    tide_buf_printf(b, "tide_ready %d\n", sv->ready ? 1 : 0);

    family(b, "tide_detector_info", "gauge", "The version of the code each detector runs.");
    for (int i = 0; i < n; i++) {
        const tide_detector_t *d = sv->dets[i];
        sample_open(b, "tide_detector_info", d);
        tide_buf_puts(b, ",version=");
        tide_buf_prom_label(b, d->version, sizeof(d->version));
        tide_buf_puts(b, "} 1\n");
    }

    family(b, "tide_detector_state", "gauge", "1 for the detector's current state, 0 for the others.");
    for (int i = 0; i < n; i++) {
        const tide_detector_t *d = sv->dets[i];
        for (size_t s = 0; s < sizeof(all_states) / sizeof(all_states[0]); s++) {
            sample_open(b, "tide_detector_state", d);
            tide_buf_printf(b, ",state=\"%s\"} %d\n", tide_det_state_name(all_states[s]),
                            d->state == all_states[s] ? 1 : 0);
        }
    }

    for (size_t k = 0; k < sizeof(metrics) / sizeof(metrics[0]); k++) {
        family(b, metrics[k].name, metrics[k].type, metrics[k].help);
        for (int i = 0; i < n; i++) {
            double v;
            if (!metric_value(metrics[k].m, sv->dets[i], &tot[i], &v)) continue;
            sample_open(b, metrics[k].name, sv->dets[i]);
            tide_buf_puts(b, "} ");
            tide_buf_prom_num(b, v);
            tide_buf_puts(b, "\n");
        }
    }

    family(b, "tide_batch_duration_seconds", "histogram",
           "Time the detector spent on one batch of records.");
    for (int i = 0; i < n; i++) {
        const tide_detector_t *d = sv->dets[i];
        uint64_t cum = 0;
        for (int k = 0; k < TIDE_STATUS_HIST; k++) {
            cum += tot[i].hist[k];
            sample_open(b, "tide_batch_duration_seconds_bucket", d);
            tide_buf_puts(b, ",le=\"");
            if (k < TIDE_STATUS_HIST - 1) tide_buf_prom_num(b, tide_status_hist_bounds[k]);
            else tide_buf_puts(b, "+Inf");
            tide_buf_printf(b, "\"} %llu\n", (unsigned long long)cum);
        }
        sample_open(b, "tide_batch_duration_seconds_sum", d);
        tide_buf_puts(b, "} ");
        tide_buf_prom_num(b, tot[i].hist_sum);
        tide_buf_puts(b, "\n");
        sample_open(b, "tide_batch_duration_seconds_count", d);
        tide_buf_printf(b, "} %llu\n", (unsigned long long)cum);
    }
    free(tot);
}

/* ------------------------------------------------------ /api/detectors */

#define JSON_FIELD(b, arr) tide_buf_json_strn((b), (arr), sizeof(arr))

/* A string field that is null when empty. */
static void json_str_or_null(tide_buf_t *b, const char *s, size_t n) {
    if (!s || !s[0]) tide_buf_puts(b, "null");
    else tide_buf_json_strn(b, s, n);
}

static void render_last_error(tide_buf_t *b, const tide_status_block_t *st) {
    if (!st || st->last_error_ms == 0) {
        tide_buf_puts(b, "null");
        return;
    }
    tide_buf_printf(b, "{\"time_ms\":%lld,\"class\":", (long long)st->last_error_ms);
    JSON_FIELD(b, st->last_error_class);
    tide_buf_puts(b, ",\"message\":");
    JSON_FIELD(b, st->last_error);
    tide_buf_puts(b, ",\"traceback\":");
    JSON_FIELD(b, st->last_traceback);
    tide_buf_puts(b, ",\"topic\":");
    json_str_or_null(b, st->last_error_topic, sizeof(st->last_error_topic));
    if (st->last_error_topic[0] && st->last_error_partition >= 0)
        tide_buf_printf(b, ",\"partition\":%d", (int)st->last_error_partition);
    else tide_buf_puts(b, ",\"partition\":null");
    if (st->last_error_topic[0] && st->last_error_offset >= 0)
        tide_buf_printf(b, ",\"offset\":%lld}", (long long)st->last_error_offset);
    else tide_buf_puts(b, ",\"offset\":null}");
}

static void render_detector(tide_buf_t *b, const tide_detector_t *d, int64_t now_mono) {
    const tide_status_block_t *st = d->st;
    tide_det_totals_t t;
    tide_detector_totals(d, &t);

    tide_buf_puts(b, "{\"name\":");
    JSON_FIELD(b, d->name);
    tide_buf_puts(b, ",\"path\":");
    tide_buf_json_str(b, d->path);
    tide_buf_puts(b, ",\"version\":");
    JSON_FIELD(b, d->version);
    tide_buf_puts(b, ",\"description\":");
    JSON_FIELD(b, d->description);
    tide_buf_puts(b, ",\"state\":");
    tide_buf_json_str(b, tide_det_state_name(d->state));
    tide_buf_printf(b, ",\"pid\":%d,\"started_ms\":%lld,\"restarts\":%llu,\"watchdog_kills\":%llu",
                    (int)d->pid, (long long)d->started_ms, (unsigned long long)d->restarts,
                    (unsigned long long)d->watchdog_kills);
    tide_buf_puts(b, ",\"cpu_seconds\":");
    tide_buf_json_num(b, d->cpu_seconds);
    tide_buf_printf(b, ",\"rss_bytes\":%llu", (unsigned long long)d->rss_bytes);
    if (st && st->lag >= 0) tide_buf_printf(b, ",\"lag\":%lld", (long long)st->lag);
    else tide_buf_puts(b, ",\"lag\":null");
    if (st)
        tide_buf_printf(b,
                        ",\"lua_heap_bytes\":%llu,\"assigned_partitions\":%d,"
                        "\"restoring_tasks\":%d,\"restored_records\":%llu,\"store_memory_bytes\":%llu",
                        (unsigned long long)st->lua_heap_bytes, (int)st->assigned_partitions,
                        (int)st->restoring_tasks, (unsigned long long)st->restored_records,
                        (unsigned long long)st->store_memory_bytes);
    else
        tide_buf_puts(b, ",\"lua_heap_bytes\":null,\"assigned_partitions\":null,"
                         "\"restoring_tasks\":null,\"restored_records\":null,"
                         "\"store_memory_bytes\":null");
    /* how long the batch in flight has run: what the watchdog looks at */
    int64_t started = st ? st->batch_started_ms : 0;
    if (started > 0 && now_mono >= started)
        tide_buf_printf(b, ",\"batch_running_ms\":%lld", (long long)(now_mono - started));
    else tide_buf_puts(b, ",\"batch_running_ms\":null");

    tide_buf_printf(b,
                    ",\"counters\":{\"records_in\":%llu,\"records_out\":%llu,\"errors\":%llu,"
                    "\"dlq\":%llu,\"dropped\":%llu,\"batches\":%llu,\"batch_seconds\":",
                    (unsigned long long)t.records_in, (unsigned long long)t.records_out,
                    (unsigned long long)t.errors, (unsigned long long)t.dlq,
                    (unsigned long long)t.dropped, (unsigned long long)t.batches);
    tide_buf_json_num(b, t.hist_sum);
    tide_buf_printf(b, ",\"reloads\":%llu,\"reload_failures\":%llu}",
                    (unsigned long long)t.reloads, (unsigned long long)t.reload_failures);

    tide_buf_puts(b, ",\"last_error\":");
    render_last_error(b, st);
    tide_buf_puts(b, ",\"last_exit\":");
    json_str_or_null(b, d->last_exit, sizeof(d->last_exit));
    tide_buf_puts(b, ",\"problem\":");
    json_str_or_null(b, d->problem, sizeof(d->problem));

    /* reloads[] holds the last n_reloads attempts, oldest first */
    tide_buf_puts(b, ",\"reloads\":[");
    int nr = d->n_reloads < 0 ? 0 : d->n_reloads > TIDE_RELOAD_HISTORY ? TIDE_RELOAD_HISTORY
                                                                       : d->n_reloads;
    for (int i = 0; i < nr; i++) {
        const tide_reload_event_t *r = &d->reloads[i];
        tide_buf_printf(b, "%s{\"ms\":%lld,\"ok\":%s,\"version\":", i ? "," : "",
                        (long long)r->ms, r->ok ? "true" : "false");
        JSON_FIELD(b, r->version);
        tide_buf_puts(b, ",\"message\":");
        json_str_or_null(b, r->message, sizeof(r->message));
        tide_buf_puts(b, "}");
    }
    tide_buf_puts(b, "]}");
}

void tide_http_render_detectors(tide_buf_t *b, const tide_supervisor_t *sv, int64_t now_ms) {
    tide_buf_printf(b, "{\"now_ms\":%lld,\"started_ms\":%lld,\"ready\":%s,\"detectors\":[",
                    (long long)now_ms, (long long)sv->started_ms, sv->ready ? "true" : "false");
    int64_t now_mono = tide_mono_ms();
    for (int i = 0; i < sv->n_dets; i++) {
        if (i) tide_buf_puts(b, ",\n");
        render_detector(b, sv->dets[i], now_mono);
    }
    tide_buf_puts(b, "]}\n");
}

/* ------------------------------------------------------ /healthz /readyz */

static int stopping(const tide_supervisor_t *sv) { return sv->stop && *sv->stop; }

/* 200 or 503, with a one-line reason in b. */
static int render_readyz(tide_buf_t *b, const tide_supervisor_t *sv) {
    if (stopping(sv)) {
        tide_buf_puts(b, "not ready: stopping\n");
        return 503;
    }
    if (sv->ready) {
        tide_buf_puts(b, "ready\n");
        return 200;
    }
    tide_buf_puts(b, "not ready: waiting for");
    int shown = 0, waiting = 0;
    for (int i = 0; i < sv->n_dets; i++) {
        const tide_detector_t *d = sv->dets[i];
        if (d->state == TIDE_DS_RUNNING) continue;
        if (waiting++ >= 5) continue;
        tide_buf_printf(b, "%s ", shown++ ? "," : "");
        tide_buf_append(b, d->name, strnlen(d->name, sizeof(d->name)));
        tide_buf_printf(b, " (%s)", tide_det_state_name(d->state));
    }
    if (waiting > shown) tide_buf_printf(b, " and %d more", waiting - shown);
    if (!waiting) tide_buf_puts(b, sv->n_dets ? " the first batches" : " detectors");
    tide_buf_puts(b, "\n");
    return 503;
}

/* ------------------------------------------------------------- serving */

typedef struct response {
    int status;
    const char *type;
    const char *extra_name, *extra_value; /* one more header, or NULL */
    const char *body;          /* borrowed static text, or NULL: use buf */
    size_t body_len;
    tide_buf_t buf;
} response_t;

static void plain(response_t *r, int status, const char *text) {
    r->status = status;
    r->type = "text/plain; charset=utf-8";
    r->body = text;
    r->body_len = strlen(text);
}

/* The page may run its own inline script and talk to us; nothing else. */
#define PAGE_CSP                                                                   \
    "default-src 'none'; script-src 'unsafe-inline'; "                             \
    "style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; " \
    "form-action 'none'; frame-ancestors 'none'"

static void route(tide_http_t *h, const char *path, response_t *r) {
    tide_supervisor_t *sv = h->sv;
    if (!strcmp(path, "/") || !strcmp(path, "/index.html")) {
        r->status = 200;
        r->type = "text/html; charset=utf-8";
        r->extra_name = "Content-Security-Policy";
        r->extra_value = PAGE_CSP;
        r->body = tide_status_page_html;
        r->body_len = h->page_len;
        return;
    }
    if (!strcmp(path, "/healthz")) {
        tide_supervisor_lock();
        int stop = stopping(sv);
        tide_supervisor_unlock();
        plain(r, stop ? 503 : 200, stop ? "stopping\n" : "ok\n");
        return;
    }
    int64_t now = tide_wall_ms();
    if (!strcmp(path, "/readyz")) {
        tide_supervisor_lock();
        r->status = render_readyz(&r->buf, sv);
        tide_supervisor_unlock();
        r->type = "text/plain; charset=utf-8";
    } else if (!strcmp(path, "/metrics")) {
        tide_supervisor_lock();
        tide_http_render_metrics(&r->buf, sv, now);
        tide_supervisor_unlock();
        r->status = 200;
        r->type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (!strcmp(path, "/api/detectors")) {
        tide_supervisor_lock();
        tide_http_render_detectors(&r->buf, sv, now);
        tide_supervisor_unlock();
        r->status = 200;
        r->type = "application/json";
    } else {
        plain(r, 404, "not found\n");
        return;
    }
    if (r->buf.oom) {
        tide_buf_free(&r->buf);
        plain(r, 500, "out of memory\n");
    }
}

/* A browser page elsewhere could resolve its own name to 127.0.0.1 and read
 * us (DNS rebinding): on loopback, only loopback names are served. */
static int host_allowed(const char *host) {
    char name[256];
    size_t len;
    if (host[0] == '[') len = strcspn(host, "]") + 1; /* [::1]:port */
    else len = strcspn(host, ":");
    if (len >= sizeof(name)) return 0;
    memcpy(name, host, len);
    name[len] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, name, &a) == 1) return (ntohl(a.s_addr) >> 24) == 127;
    return !strcasecmp(name, "localhost") || !strcasecmp(name, "localhost.") ||
           !strcmp(name, "[::1]");
}

/* What to answer to a request that libmicrohttpd has parsed. */
static void answer(tide_http_t *h, struct MHD_Connection *mc, const char *url,
                   const char *method, const char *version, response_t *r) {
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD)) {
        plain(r, 405, "only GET and HEAD\n");
        r->extra_name = "Allow";
        r->extra_value = "GET, HEAD";
        return;
    }
    const char *host = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if ((!host || !host[0]) && !strcmp(version, MHD_HTTP_VERSION_1_1)) {
        plain(r, 400, "missing Host header\n");
        return;
    }
    if (h->loopback && host && host[0] && !host_allowed(host)) {
        plain(r, 403, "this server answers to loopback names only\n");
        return;
    }
    if (url[0] != '/') {
        plain(r, 400, "bad request target\n");
        return;
    }
    char path[1024];
    size_t plen = strcspn(url, "?#");
    if (plen >= sizeof(path)) {
        plain(r, 404, "not found\n");
        return;
    }
    memcpy(path, url, plen);
    path[plen] = '\0';
    route(h, path, r);
}

/* Hand the answer to libmicrohttpd, which sends it (HEAD without the body). */
static enum MHD_Result queue(struct MHD_Connection *mc, response_t *r) {
    struct MHD_Response *resp;
    if (r->body) {
        resp = MHD_create_response_from_buffer(r->body_len, (void *)r->body,
                                               MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer(r->buf.len, r->buf.data, MHD_RESPMEM_MUST_FREE);
        if (resp) r->buf = TIDE_BUF_INIT; /* the response frees it */
    }
    tide_buf_free(&r->buf);
    if (!resp) return MHD_NO; /* out of memory: libmicrohttpd drops the connection */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (r->extra_name) MHD_add_response_header(resp, r->extra_name, r->extra_value);
    enum MHD_Result ok = MHD_queue_response(mc, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ok;
}


static struct conn *conn_of(struct MHD_Connection *mc) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    tide_http_t *h = cls;
    struct conn *c = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (c) c->fd = -1;
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    for (int i = 0; ci && i < MAX_CONNS; i++)
        if (h->conns[i].fd < 0) {
            h->conns[i] = (struct conn){ci->connect_fd, tide_mono_ms() + READ_TIMEOUT_MS, 0};
            *socket_context = &h->conns[i];
            return;
        }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_context) {
    (void)upload_data;
    (void)upload_data_size;
    (void)req_context;
    tide_http_t *h = cls;
    response_t r;
    memset(&r, 0, sizeof(r));
    answer(h, mc, url, method, version, &r);
    struct conn *c = conn_of(mc);
    if (c) c->deadline = tide_mono_ms() + WRITE_TIMEOUT_MS;
    return queue(mc, &r);
}

/* Shut down the sockets of connections past their deadline; libmicrohttpd
 * sees them end and closes them (it owns the descriptors). Returns the next
 * deadline, or -1. */
static int64_t cut_overdue(tide_http_t *h, int64_t now) {
    int64_t next = -1;
    for (int i = 0; i < MAX_CONNS; i++) {
        struct conn *c = &h->conns[i];
        if (c->fd < 0 || c->cut) continue;
        if (now >= c->deadline) {
            shutdown(c->fd, SHUT_RDWR);
            c->cut = 1;
        } else if (next < 0 || c->deadline < next) {
            next = c->deadline;
        }
    }
    return next;
}

/* The server thread: libmicrohttpd's epoll descriptor, the wake-up pipe and
 * the deadlines, in one poll; libmicrohttpd runs only here. */
static void *serve(void *arg) {
    tide_http_t *h = arg;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    int efd = di ? di->epoll_fd : -1;
    for (;;) {
        int64_t now = tide_mono_ms();
        int64_t next = cut_overdue(h, now);
        MHD_UNSIGNED_LONG_LONG mt;
        int timeout = next < 0 ? -1 : (int)(next - now);
        if (MHD_get_timeout(h->d, &mt) == MHD_YES && (timeout < 0 || mt < (unsigned)timeout))
            timeout = (int)mt;
        struct pollfd p[2] = {{h->wake[0], POLLIN, 0}, {efd, POLLIN, 0}};
        if (poll(p, 2, timeout) < 0 && errno != EINTR) usleep(10 * 1000); /* ENOMEM */
        if (p[0].revents) break;
        MHD_run(h->d);
    }
    return NULL;
}

static tide_http_t *start_failed(tide_http_t *h, int fd, char **errp, const char *addr, int port,
                                 const char *what) {
    if (errp) {
        if (asprintf(errp, "admin http %s:%d: %s", addr, port, what) < 0) *errp = NULL;
    }
    if (fd >= 0) close(fd);
    if (h) {
        if (h->d) MHD_stop_daemon(h->d);
        if (h->wake[0] >= 0) close(h->wake[0]);
        if (h->wake[1] >= 0) close(h->wake[1]);
        free(h);
    }
    return NULL;
}

/* Our own listening socket, so that a refusal says why (libmicrohttpd's
 * start only fails) and port 0 tells us the port it picked. */
static int listen_on(const struct sockaddr_in *sa, int *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in bound;
    socklen_t sl = sizeof(bound);
    if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &sl) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    *port = ntohs(bound.sin_port);
    return fd;
}

static struct MHD_Daemon *start_daemon(tide_http_t *h, int fd) {
    return MHD_start_daemon(
        MHD_USE_EPOLL, 0, NULL, NULL, on_request, h,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNS,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HEADER_MAX,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_SIGPIPE_HANDLED_BY_APP, 0,
        MHD_OPTION_END);
}

tide_http_t *tide_http_start(const char *addr, int port, tide_supervisor_t *sv, char **errp) {
    if (!addr || !addr[0] || !strcmp(addr, "localhost")) addr = "127.0.0.1";
    if (port < 0 || port > 65535)
        return start_failed(NULL, -1, errp, addr, port, "port out of range");
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        return start_failed(NULL, -1, errp, addr, port, "not an IPv4 address");
    int fd = listen_on(&sa, &port);
    if (fd < 0) return start_failed(NULL, -1, errp, addr, port, strerror(errno));

    tide_http_t *h = calloc(1, sizeof(*h));
    if (!h) return start_failed(NULL, fd, errp, addr, port, strerror(ENOMEM));
    h->sv = sv;
    h->port = port;
    h->wake[0] = h->wake[1] = -1;
    h->loopback = (ntohl(sa.sin_addr.s_addr) >> 24) == 127;
    h->page_len = strlen(tide_status_page_html);
    for (int i = 0; i < MAX_CONNS; i++) h->conns[i].fd = -1;
    if (pipe2(h->wake, O_CLOEXEC | O_NONBLOCK) != 0)
        return start_failed(h, fd, errp, addr, port, strerror(errno));
    h->d = start_daemon(h, fd);
    if (!h->d) return start_failed(h, fd, errp, addr, port, "libmicrohttpd did not start");
    /* from here on the daemon owns fd */

    /* Signals belong to the supervisor's thread: the server thread blocks
     * them all (it inherits the mask it is created with). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&h->thread, NULL, serve, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) return start_failed(h, -1, errp, addr, port, strerror(rc));
    return h;
}

int tide_http_port(const tide_http_t *h) { return h->port; }

void tide_http_stop(tide_http_t *h) {
    if (!h) return;
    ssize_t w = write(h->wake[1], "x", 1);
    (void)w;
    pthread_join(h->thread, NULL);
    MHD_stop_daemon(h->d); /* closes the connections and the listening socket */
    close(h->wake[0]);
    close(h->wake[1]);
    free(h);
}
