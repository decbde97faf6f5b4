/*
 * http.c: the admin HTTP server (see http.h) and the documents it serves.
 *
 * It owns one listening socket, one thread, a wake-up pipe and the client
 * connections (at most MAX_CONNS at once). The thread multiplexes them with
 * poll on non-blocking sockets: it reads a request of at most 8 KiB of
 * headers, renders the whole answer into memory as soon as the request is
 * complete, then writes it out as the client reads and closes. Every phase
 * has a deadline, so a slow or silent client delays neither the others nor
 * tide_http_stop, which returns at once.
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
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEADER_MAX 8192        /* request line and headers */
#define READ_TIMEOUT_MS 3000   /* for the whole request, against slow senders */
#define WRITE_TIMEOUT_MS 5000  /* for the whole response, against slow readers */
#define LINGER_MS 500          /* reading the client's close after ours */
#define MAX_CONNS 32           /* at once; more wait in the listen backlog */

struct tide_http {
    tide_supervisor_t *sv;
    int listen_fd;
    int wake[2];   /* tide_http_stop writes; every poll watches wake[0] */
    int port;
    int loopback;  /* bound to 127.0.0.0/8: check Host (DNS rebinding) */
    pthread_t thread;
    size_t page_len;
    struct conn *conns[MAX_CONNS]; /* owned by the server thread */
    int n_conns;
    int64_t accept_paused_until;   /* monotonic ms */
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
    /* a string holding JSON: the page parses it, and a torn copy cannot
     * break this answer's own JSON */
    tide_buf_puts(b, ",\"topology\":");
    json_str_or_null(b, d->topology, sizeof(d->topology));
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
    const char *extra_headers; /* "Name: value\r\n"..., or NULL */
    const char *body;          /* borrowed static text, or NULL: use buf */
    size_t body_len;
    tide_buf_t buf;
} response_t;

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static void plain(response_t *r, int status, const char *text) {
    r->status = status;
    r->type = "text/plain; charset=utf-8";
    r->body = text;
    r->body_len = strlen(text);
}

/* The page may run its own inline script and talk to us; nothing else. */
#define PAGE_CSP                                                                   \
    "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "    \
    "style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; " \
    "form-action 'none'; frame-ancestors 'none'\r\n"

static void route(tide_http_t *h, const char *path, response_t *r) {
    tide_supervisor_t *sv = h->sv;
    if (!strcmp(path, "/") || !strcmp(path, "/index.html")) {
        r->status = 200;
        r->type = "text/html; charset=utf-8";
        r->extra_headers = PAGE_CSP;
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

/* Case-insensitive "Name:" at the start of a header line; returns the value,
 * trimmed, copied into out (empty when absent). */
static void header_value(const char *headers, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    out[0] = '\0';
    for (const char *line = headers; line && *line;) {
        if (!strncasecmp(line, name, nl) && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t') v++;
            size_t len = strcspn(v, "\r\n");
            while (len && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
            if (len >= cap) len = cap - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return;
        }
        line = strchr(line, '\n');
        if (line) line++;
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

/* Parse a complete request (c->req up to the blank line, NUL-terminated
 * there) and route it. *head is set for HEAD. */
static void answer(tide_http_t *h, char *req, response_t *r, int *head) {
    /* request line: METHOD SP target SP HTTP/1.x */
    char *line_end = req + strcspn(req, "\r\n");
    char *headers = *line_end ? line_end + 1 : line_end;
    *line_end = '\0';
    char *sp1 = strchr(req, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strchr(sp2 + 1, ' ') || sp1 == req || sp2 == sp1 + 1) {
        plain(r, 400, "bad request\n");
        return;
    }
    *sp1 = *sp2 = '\0';
    const char *method = req, *target = sp1 + 1, *version = sp2 + 1;
    if (strncmp(version, "HTTP/1.", 7) || !version[7] || version[8]) {
        plain(r, strncmp(version, "HTTP/", 5) ? 400 : 505, "unsupported protocol\n");
        return;
    }
    *head = !strcmp(method, "HEAD");
    if (!*head && strcmp(method, "GET")) {
        plain(r, 405, "only GET and HEAD\n");
        r->extra_headers = "Allow: GET, HEAD\r\n";
        return;
    }
    if (target[0] != '/') {
        plain(r, 400, "bad request target\n");
        return;
    }
    char host[300];
    header_value(headers, "Host", host, sizeof(host));
    if (!host[0] && version[7] == '1') {
        plain(r, 400, "missing Host header\n");
        return;
    }
    if (h->loopback && host[0] && !host_allowed(host)) {
        plain(r, 403, "this server answers to loopback names only\n");
        return;
    }
    char path[1024];
    size_t plen = strcspn(target, "?#");
    if (plen >= sizeof(path)) {
        plain(r, 404, "not found\n");
        return;
    }
    memcpy(path, target, plen);
    path[plen] = '\0';
    route(h, path, r);
}

/* Clients, each in one phase with a deadline; the thread multiplexes them
 * with poll, so a slow one delays nobody. */
typedef enum conn_phase { READING, WRITING, DRAINING, CLOSED } conn_phase_t;

typedef struct conn {
    int fd;
    conn_phase_t phase;
    int64_t deadline;        /* of the phase, monotonic ms */
    size_t n;                /* request bytes read */
    char req[HEADER_MAX + 1];
    tide_buf_t out;          /* the whole answer, rendered at once */
    size_t off;              /* of out, sent */
} conn_t;

static void conn_close(conn_t *c) {
    close(c->fd);
    c->fd = -1;
    c->phase = CLOSED;
    tide_buf_free(&c->out);
}

static void conn_write(conn_t *c, int64_t now);

/* Serialize the answer into c->out and start writing it. */
static void conn_reply(conn_t *c, response_t *r, int head, int64_t now) {
    const char *body = r->body ? r->body : r->buf.data ? r->buf.data : "";
    size_t len = r->body ? r->body_len : r->buf.len;
    char date[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    tide_buf_reset(&c->out);
    tide_buf_printf(&c->out,
                    "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                    "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                    "%sConnection: close\r\n\r\n",
                    r->status, reason(r->status), date, r->type, len,
                    r->extra_headers ? r->extra_headers : "");
    if (!head) tide_buf_append(&c->out, body, len);
    tide_buf_free(&r->buf);
    if (c->out.oom) {
        conn_close(c);
        return;
    }
    c->phase = WRITING;
    c->off = 0;
    c->deadline = now + WRITE_TIMEOUT_MS;
    conn_write(c, now);
}

static void conn_reply_plain(conn_t *c, int status, const char *text, int64_t now) {
    response_t r;
    memset(&r, 0, sizeof(r));
    plain(&r, status, text);
    conn_reply(c, &r, 0, now);
}

static void conn_read(tide_http_t *h, conn_t *c, int64_t now) {
    for (;;) {
        if (c->n == HEADER_MAX) {
            conn_reply_plain(c, 431, "request headers too large\n", now);
            return;
        }
        ssize_t got = recv(c->fd, c->req + c->n, HEADER_MAX - c->n, 0);
        if (got == 0) {
            conn_close(c); /* the client left */
            return;
        }
        if (got < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) conn_close(c);
            else if (now >= c->deadline) conn_reply_plain(c, 408, "request timeout\n", now);
            return;
        }
        c->n += (size_t)got;
        c->req[c->n] = '\0';
        if (memchr(c->req, '\0', c->n)) {
            conn_reply_plain(c, 400, "bad request\n", now);
            return;
        }
        char *end = strstr(c->req, "\r\n\r\n");
        if (!end) end = strstr(c->req, "\n\n"); /* bare-LF clients */
        if (end) {
            *end = '\0';
            response_t r;
            memset(&r, 0, sizeof(r));
            int head = 0;
            answer(h, c->req, &r, &head);
            conn_reply(c, &r, head, now);
            return;
        }
    }
}

static void conn_write(conn_t *c, int64_t now) {
    while (c->off < c->out.len) {
        ssize_t w = send(c->fd, c->out.data + c->off, c->out.len - c->off, MSG_NOSIGNAL);
        if (w > 0) {
            c->off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else {
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && now < c->deadline) return;
            conn_close(c); /* gone, or too slow to read its answer */
            return;
        }
    }
    /* Close our side, then read until the client closes: closing with
     * unread input would reset the connection and could lose the answer. */
    tide_buf_free(&c->out);
    shutdown(c->fd, SHUT_WR);
    c->phase = DRAINING;
    c->deadline = now + LINGER_MS;
}

static void conn_drain(conn_t *c, int64_t now) {
    char sink[512];
    for (;;) {
        ssize_t got = recv(c->fd, sink, sizeof(sink), 0);
        if (got > 0 || (got < 0 && errno == EINTR)) continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && now < c->deadline) return;
        conn_close(c);
        return;
    }
}

static void accept_all(tide_http_t *h, int64_t now) {
    while (h->n_conns < MAX_CONNS) {
        int fd = accept4(h->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            /* out of descriptors or memory: pause instead of spinning on
             * a listen queue that stays readable */
            if (errno != EAGAIN && errno != EWOULDBLOCK) h->accept_paused_until = now + 100;
            return;
        }
        conn_t *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return;
        }
        c->fd = fd;
        c->phase = READING;
        c->deadline = now + READ_TIMEOUT_MS;
        h->conns[h->n_conns++] = c;
        conn_read(h, c, now); /* the request is often there already */
    }
}

static void *serve(void *arg) {
    tide_http_t *h = arg;
    struct pollfd p[MAX_CONNS + 2];
    for (;;) {
        int64_t now = tide_mono_ms(), next = -1;
        int np = 0;
        p[np++] = (struct pollfd){h->wake[0], POLLIN, 0};
        int listening = h->n_conns < MAX_CONNS && now >= h->accept_paused_until;
        if (listening) p[np++] = (struct pollfd){h->listen_fd, POLLIN, 0};
        else if (h->n_conns < MAX_CONNS) next = h->accept_paused_until;
        int first = np;
        for (int i = 0; i < h->n_conns; i++) {
            conn_t *c = h->conns[i];
            p[np++] = (struct pollfd){c->fd, c->phase == WRITING ? POLLOUT : POLLIN, 0};
            if (next < 0 || c->deadline < next) next = c->deadline;
        }
        int timeout = next < 0 ? -1 : next <= now ? 0 : (int)(next - now);
        int n = poll(p, (nfds_t)np, timeout);
        if (n < 0) {
            if (errno != EINTR) usleep(10 * 1000); /* ENOMEM: try again shortly */
            continue;
        }
        if (p[0].revents) break;
        now = tide_mono_ms();
        for (int i = 0; i < h->n_conns; i++) {
            conn_t *c = h->conns[i];
            if (p[first + i].revents || now >= c->deadline) {
                if (c->phase == READING) conn_read(h, c, now);
                else if (c->phase == WRITING) conn_write(c, now);
                else if (c->phase == DRAINING) conn_drain(c, now);
            }
        }
        int kept = 0;
        for (int i = 0; i < h->n_conns; i++) {
            if (h->conns[i]->phase == CLOSED) free(h->conns[i]);
            else h->conns[kept++] = h->conns[i];
        }
        h->n_conns = kept;
        if (listening && p[1].revents) accept_all(h, now);
    }
    for (int i = 0; i < h->n_conns; i++) {
        conn_close(h->conns[i]);
        free(h->conns[i]);
    }
    h->n_conns = 0;
    return NULL;
}

static tide_http_t *start_failed(tide_http_t *h, char **errp, const char *addr, int port,
                                 const char *what) {
    if (errp) {
        if (asprintf(errp, "admin http %s:%d: %s", addr, port, what) < 0) *errp = NULL;
    }
    if (h) {
        if (h->listen_fd >= 0) close(h->listen_fd);
        if (h->wake[0] >= 0) close(h->wake[0]);
        if (h->wake[1] >= 0) close(h->wake[1]);
        free(h);
    }
    return NULL;
}

tide_http_t *tide_http_start(const char *addr, int port, tide_supervisor_t *sv, char **errp) {
    if (!addr || !addr[0] || !strcmp(addr, "localhost")) addr = "127.0.0.1";
    if (port < 0 || port > 65535) return start_failed(NULL, errp, addr, port, "port out of range");
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        return start_failed(NULL, errp, addr, port, "not an IPv4 address");

    tide_http_t *h = calloc(1, sizeof(*h));
    if (!h) return start_failed(NULL, errp, addr, port, strerror(ENOMEM));
    h->sv = sv;
    h->listen_fd = h->wake[0] = h->wake[1] = -1;
    h->loopback = (ntohl(sa.sin_addr.s_addr) >> 24) == 127;
    h->page_len = strlen(tide_status_page_html);

    h->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (h->listen_fd < 0) return start_failed(h, errp, addr, port, strerror(errno));
    int one = 1;
    setsockopt(h->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(h->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(h->listen_fd, 16) != 0)
        return start_failed(h, errp, addr, port, strerror(errno));
    socklen_t sl = sizeof(sa);
    if (getsockname(h->listen_fd, (struct sockaddr *)&sa, &sl) != 0)
        return start_failed(h, errp, addr, port, strerror(errno));
    h->port = ntohs(sa.sin_port);
    if (pipe2(h->wake, O_CLOEXEC | O_NONBLOCK) != 0)
        return start_failed(h, errp, addr, port, strerror(errno));

    /* Signals belong to the supervisor's thread: the server thread blocks
     * them all (it inherits the mask it is created with). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&h->thread, NULL, serve, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) return start_failed(h, errp, addr, port, strerror(rc));
    return h;
}

int tide_http_port(const tide_http_t *h) { return h->port; }

void tide_http_stop(tide_http_t *h) {
    if (!h) return;
    ssize_t w = write(h->wake[1], "x", 1);
    (void)w;
    pthread_join(h->thread, NULL);
    close(h->listen_fd);
    close(h->wake[0]);
    close(h->wake[1]);
    free(h);
}
