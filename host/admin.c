/*
 * admin.c: the admin server's documents (see admin.h).
 *
 * It owns the routes, the snapshot it asks its owner to fill for each
 * request, and the renderers: Prometheus text, the JSON of /api/detectors,
 * /readyz and /healthz. The transport is http.c's. It renders only from the
 * snapshot, a copy, so no lock is held while it renders or while http.c
 * sends. It never writes to its owner's state and never logs. Anything a
 * detector wrote (names, error messages, tracebacks, problems) is escaped for
 * the format it lands in.
 */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "log.h"

struct tide_admin {
    tide_http_t *http;
    tide_admin_fill_fn fill;
    void *ud;
    size_t page_len;
    tide_http_handler_fn queries; /* GET /api/detectors/NAME/..., or NULL */
    void *queries_ud;
};

const char *tide_det_state_name(tide_det_state_t s) {
    static const char *const names[TIDE_DS_COUNT] = {
        "starting", "running", "reloading", "restarting", "quarantined", "failed", "stopping"};
    return (unsigned)s < TIDE_DS_COUNT ? names[s] : "unknown";
}

tide_admin_detector_t *tide_admin_snapshot_add(tide_admin_snapshot_t *s) {
    if (s->n_dets == s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        tide_admin_detector_t *d = realloc(s->dets, (size_t)cap * sizeof(*d));
        if (!d) {
            s->oom = 1;
            return NULL;
        }
        s->dets = d;
        s->cap = cap;
    }
    tide_admin_detector_t *d = &s->dets[s->n_dets++];
    memset(d, 0, sizeof(*d));
    return d;
}

void tide_admin_snapshot_free(tide_admin_snapshot_t *s) {
    free(s->dets);
    s->dets = NULL;
    s->n_dets = s->cap = 0;
}

/* ------------------------------------------------------------- /metrics */

/* The per-detector samples with one value each, in exposition order. */
typedef enum metric {
    M_RECORDS_IN, M_RECORDS_OUT, M_ERRORS, M_DLQ, M_DROPPED, M_DROPPED_LATE,
    M_LAG, M_HEAP, M_PARTITIONS, M_CPU, M_RSS,
    M_RESTARTS, M_RELOADS, M_RELOAD_FAILURES, M_WATCHDOG_KILLS,
    M_RESTORING, M_RESTORED, M_STORE_MEMORY,
    M_LATE, M_ROLLBACKS, M_TXN_COMMITTED, M_TXN_ABORTED, M_BROKER_WAITING, M_OUTPUT_MISSING,
    M_STANDBY_TASKS, M_STANDBY_LAG,
} metric_t;

/* A family may have several rows, adjacent, told apart by their labels
 * (",reason=..."; NULL: none); the first carries its help. */
static const struct {
    metric_t m;
    const char *name, *type, *help, *labels;
} metrics[] = {
    {M_RECORDS_IN, "tide_records_in_total", "counter",
     "Records consumed by the detector, over all its workers.", NULL},
    {M_RECORDS_OUT, "tide_records_out_total", "counter",
     "Records the detector emitted to its outputs.", NULL},
    {M_ERRORS, "tide_errors_total", "counter",
     "Records whose processing failed.", NULL},
    {M_DLQ, "tide_dlq_records_total", "counter",
     "Records sent to the dead-letter topic.", NULL},
    {M_DROPPED, "tide_dropped_records_total", "counter",
     "Records dropped (Kafka Streams' dropped-records): reason=\"skipped\" by the error policy "
     "or already processed, reason=\"late\" past their window's grace.", ",reason=\"skipped\""},
    {M_DROPPED_LATE, "tide_dropped_records_total", "counter", NULL, ",reason=\"late\""},
    {M_LAG, "tide_consumer_lag_records", "gauge",
     "Records behind the log end over the worker's assigned partitions.", NULL},
    {M_HEAP, "tide_lua_heap_bytes", "gauge",
     "Lua heap in use by the worker.", NULL},
    {M_PARTITIONS, "tide_assigned_partitions", "gauge",
     "Input partitions assigned to the worker.", NULL},
    {M_CPU, "tide_worker_cpu_seconds_total", "counter",
     "CPU time (user + system) of the current worker; restarts at 0 with it.", NULL},
    {M_RSS, "tide_worker_rss_bytes", "gauge",
     "Resident memory of the current worker.", NULL},
    {M_RESTARTS, "tide_worker_restarts_total", "counter",
     "Worker restarts after a crash or a hang.", NULL},
    {M_RELOADS, "tide_reloads_total", "counter",
     "Hot reloads that swapped in a new version.", NULL},
    {M_RELOAD_FAILURES, "tide_reload_failures_total", "counter",
     "Hot reloads refused because the new version failed validation.", NULL},
    {M_WATCHDOG_KILLS, "tide_watchdog_kills_total", "counter",
     "Workers killed by the watchdog for a batch past its budget.", NULL},
    {M_RESTORING, "tide_restoring_tasks", "gauge",
     "Tasks whose state stores are being restored from their changelogs.", NULL},
    {M_RESTORED, "tide_restored_records_total", "counter",
     "Changelog records applied while restoring, by the current worker.", NULL},
    {M_STORE_MEMORY, "tide_store_memory_bytes", "gauge",
     "Memory of the worker's RocksDB stores (block cache and memtables).", NULL},
    {M_LATE, "tide_late_records_total", "counter",
     "Records dropped as late: their window had closed (past its grace).", NULL},
    {M_ROLLBACKS, "tide_rollbacks_total", "counter",
     "Rollbacks to the last commit (its stores, inputs and, under exactly-once, outputs).", NULL},
    {M_TXN_COMMITTED, "tide_transactions_committed_total", "counter",
     "Transactions committed (processing.guarantee exactly_once_v2).", NULL},
    {M_TXN_ABORTED, "tide_transactions_aborted_total", "counter",
     "Transactions aborted (processing.guarantee exactly_once_v2).", NULL},
    {M_BROKER_WAITING, "tide_broker_waiting", "gauge",
     "1 while the worker's commit waits for the broker, else 0.", NULL},
    {M_OUTPUT_MISSING, "tide_output_topic_missing", "gauge",
     "1 while an output topic does not exist and the inputs wait for it, else 0.", NULL},
    {M_STANDBY_TASKS, "tide_standby_tasks", "gauge",
     "Standby replicas the worker keeps (num.standby.replicas).", NULL},
    {M_STANDBY_LAG, "tide_standby_lag_records", "gauge",
     "Changelog records the worker's standby replicas are behind.", NULL},
};

/* A gauge of the current worker: 0 when there is none. */
static int worker_gauge(metric_t m, const tide_admin_detector_t *d, double *v) {
    const tide_det_gauges_t *g = &d->gauges;
    if (!d->has_worker) return 0;
    switch (m) {
    case M_LAG:
        if (g->lag < 0) return 0;
        *v = (double)g->lag;
        return 1;
    case M_HEAP: *v = (double)g->lua_heap_bytes; return 1;
    case M_PARTITIONS: *v = (double)g->assigned_partitions; return 1;
    case M_RESTORING: *v = (double)g->restoring_tasks; return 1;
    case M_RESTORED: *v = (double)g->restored_records; return 1;
    case M_STORE_MEMORY: *v = (double)g->store_memory_bytes; return 1;
    case M_BROKER_WAITING: *v = g->broker_waiting_since_ms ? 1 : 0; return 1;
    case M_OUTPUT_MISSING: *v = g->missing_topic[0] ? 1 : 0; return 1;
    case M_STANDBY_TASKS: {
        int n = 0;
        for (int32_t p = 0; p < d->tasks.partitions; p++) n += d->tasks.state[p] == TIDE_TASKMAP_STANDBY;
        *v = n;
        return 1;
    }
    case M_STANDBY_LAG:
        if (g->standby_lag < 0) return 0;
        *v = (double)g->standby_lag;
        return 1;
    default: return 0;
    }
}

/* 0 when the detector has no such sample now (no worker, lag unknown). */
static int metric_value(metric_t m, const tide_admin_detector_t *d, double *v) {
    const tide_det_totals_t *t = &d->totals;
    switch (m) {
    case M_RECORDS_IN: *v = (double)t->records_in; return 1;
    case M_RECORDS_OUT: *v = (double)t->records_out; return 1;
    case M_ERRORS: *v = (double)t->errors; return 1;
    case M_DLQ: *v = (double)t->dlq; return 1;
    case M_DROPPED: *v = (double)t->dropped; return 1;
    case M_DROPPED_LATE: *v = (double)t->dropped_late; return 1;
    case M_CPU:
        if (d->pid <= 0) return 0;
        *v = d->cpu_seconds;
        return 1;
    case M_RSS:
        if (d->pid <= 0) return 0;
        *v = (double)d->rss_bytes;
        return 1;
    case M_RESTARTS: *v = (double)d->restarts; return 1;
    case M_RELOADS: *v = (double)t->reloads; return 1;
    case M_RELOAD_FAILURES: *v = (double)t->reload_failures; return 1;
    case M_WATCHDOG_KILLS: *v = (double)d->watchdog_kills; return 1;
    case M_LATE: *v = (double)t->dropped_late; return 1;
    case M_ROLLBACKS: *v = (double)t->rollbacks; return 1;
    case M_TXN_COMMITTED: *v = (double)t->txn_committed; return 1;
    case M_TXN_ABORTED: *v = (double)t->txn_aborted; return 1;
    default: return worker_gauge(m, d, v);
    }
}

static void family(tide_buf_t *b, const char *name, const char *type, const char *help) {
    tide_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{detector="..." then the caller adds more labels or "}" */
static void sample_open(tide_buf_t *b, const char *name, const tide_admin_detector_t *d) {
    tide_buf_puts(b, name);
    tide_buf_puts(b, "{detector=");
    tide_buf_prom_label(b, d->name, sizeof(d->name));
}

static void render_host_families(tide_buf_t *b, const tide_admin_snapshot_t *s) {
    family(b, "tide_start_time_seconds", "gauge",
           "When the supervisor started, seconds since the epoch.");
    tide_buf_puts(b, "tide_start_time_seconds ");
    tide_buf_prom_num(b, (double)s->started_ms / 1000.0);
    tide_buf_puts(b, "\n");
    family(b, "tide_ready", "gauge",
           "1 when every detector runs (what /readyz answers 200 to), else 0.");
    tide_buf_printf(b, "tide_ready %d\n", tide_admin_ready(s));
}

static void render_info_and_state(tide_buf_t *b, const tide_admin_snapshot_t *s) {
    family(b, "tide_detector_info", "gauge", "The version of the code each detector runs.");
    for (int i = 0; i < s->n_dets; i++) {
        const tide_admin_detector_t *d = &s->dets[i];
        sample_open(b, "tide_detector_info", d);
        tide_buf_puts(b, ",version=");
        tide_buf_prom_label(b, d->version, sizeof(d->version));
        tide_buf_puts(b, "} 1\n");
    }
    family(b, "tide_detector_state", "gauge",
           "1 for the detector's current state, 0 for the others.");
    for (int i = 0; i < s->n_dets; i++) {
        const tide_admin_detector_t *d = &s->dets[i];
        for (int st = 0; st < TIDE_DS_COUNT; st++) {
            sample_open(b, "tide_detector_state", d);
            tide_buf_printf(b, ",state=\"%s\"} %d\n", tide_det_state_name((tide_det_state_t)st),
                            (int)d->state == st ? 1 : 0);
        }
    }
}

/* One histogram family over every detector: the batch or the commit times. */
static void render_histogram(tide_buf_t *b, const tide_admin_snapshot_t *s, const char *name,
                             const char *help, int commits) {
    char series[128];
    family(b, name, "histogram", help);
    for (int i = 0; i < s->n_dets; i++) {
        const tide_admin_detector_t *d = &s->dets[i];
        const uint64_t *hist = commits ? d->totals.commit_hist : d->totals.hist;
        uint64_t cum = 0;
        for (int k = 0; k < TIDE_STATUS_HIST; k++) {
            cum += hist[k];
            snprintf(series, sizeof(series), "%s_bucket", name);
            sample_open(b, series, d);
            tide_buf_puts(b, ",le=\"");
            if (k < TIDE_STATUS_HIST - 1) tide_buf_prom_num(b, tide_status_hist_bounds[k]);
            else tide_buf_puts(b, "+Inf");
            tide_buf_printf(b, "\"} %llu\n", (unsigned long long)cum);
        }
        snprintf(series, sizeof(series), "%s_sum", name);
        sample_open(b, series, d);
        tide_buf_puts(b, "} ");
        tide_buf_prom_num(b, commits ? d->totals.commit_hist_sum : d->totals.hist_sum);
        tide_buf_puts(b, "\n");
        snprintf(series, sizeof(series), "%s_count", name);
        sample_open(b, series, d);
        tide_buf_printf(b, "} %llu\n", (unsigned long long)cum);
    }
}

void tide_admin_render_metrics(tide_buf_t *b, const tide_admin_snapshot_t *s) {
    render_host_families(b, s);
    render_info_and_state(b, s);
    for (size_t k = 0; k < sizeof(metrics) / sizeof(metrics[0]); k++) {
        if (metrics[k].help) family(b, metrics[k].name, metrics[k].type, metrics[k].help);
        for (int i = 0; i < s->n_dets; i++) {
            double v;
            if (!metric_value(metrics[k].m, &s->dets[i], &v)) continue;
            sample_open(b, metrics[k].name, &s->dets[i]);
            if (metrics[k].labels) tide_buf_puts(b, metrics[k].labels);
            tide_buf_puts(b, "} ");
            tide_buf_prom_num(b, v);
            tide_buf_puts(b, "\n");
        }
    }
    render_histogram(b, s, "tide_batch_duration_seconds",
                     "Time the detector spent on one batch of records.", 0);
    render_histogram(b, s, "tide_commit_duration_seconds",
                     "Time a commit took (flush, stores, checkpoint, offsets or transaction).", 1);
}

/* ------------------------------------------------------ /api/detectors */

#define JSON_FIELD(b, arr) tide_buf_json_strn((b), (arr), sizeof(arr))

/* A string field that is null when empty. */
static void json_str_or_null(tide_buf_t *b, const char *s, size_t n) {
    if (!s || !s[0]) tide_buf_puts(b, "null");
    else tide_buf_json_strn(b, s, n);
}

static void render_last_error(tide_buf_t *b, const tide_det_error_t *e) {
    if (e->ms == 0) {
        tide_buf_puts(b, "null");
        return;
    }
    tide_buf_printf(b, "{\"time_ms\":%lld,\"class\":", (long long)e->ms);
    JSON_FIELD(b, e->cls);
    tide_buf_puts(b, ",\"message\":");
    JSON_FIELD(b, e->message);
    tide_buf_puts(b, ",\"traceback\":");
    JSON_FIELD(b, e->traceback);
    tide_buf_puts(b, ",\"topic\":");
    json_str_or_null(b, e->topic, sizeof(e->topic));
    if (e->topic[0] && e->partition >= 0)
        tide_buf_printf(b, ",\"partition\":%d", (int)e->partition);
    else tide_buf_puts(b, ",\"partition\":null");
    if (e->topic[0] && e->offset >= 0) tide_buf_printf(b, ",\"offset\":%lld}", (long long)e->offset);
    else tide_buf_puts(b, ",\"offset\":null}");
}

static void render_reload(tide_buf_t *b, const tide_reload_event_t *r) {
    tide_buf_printf(b, "{\"ms\":%lld,\"ok\":%s,\"version\":", (long long)r->ms,
                    r->ok ? "true" : "false");
    JSON_FIELD(b, r->version);
    tide_buf_puts(b, ",\"message\":");
    json_str_or_null(b, r->message, sizeof(r->message));
    tide_buf_puts(b, "}");
}

/* The guarantee, and what the worker waits for at the broker. */
static void render_broker(tide_buf_t *b, const tide_admin_detector_t *d) {
    const tide_det_gauges_t *g = &d->gauges;
    tide_buf_puts(b, ",\"guarantee\":");
    json_str_or_null(b, d->has_worker ? g->guarantee : "", sizeof(g->guarantee));
    if (d->has_worker && g->broker_waiting_since_ms)
        tide_buf_printf(b, ",\"broker_waiting_since_ms\":%lld", (long long)g->broker_waiting_since_ms);
    else tide_buf_puts(b, ",\"broker_waiting_since_ms\":null");
    tide_buf_puts(b, ",\"missing_topic\":");
    if (d->has_worker && g->missing_topic[0]) {
        tide_buf_puts(b, "{\"topic\":");
        JSON_FIELD(b, g->missing_topic);
        tide_buf_printf(b, ",\"since_ms\":%lld}", (long long)g->missing_topic_since_ms);
    } else {
        tide_buf_puts(b, "null");
    }
}

static void render_gauges(tide_buf_t *b, const tide_admin_detector_t *d) {
    const tide_det_gauges_t *g = &d->gauges;
    if (d->has_worker && g->lag >= 0) tide_buf_printf(b, ",\"lag\":%lld", (long long)g->lag);
    else tide_buf_puts(b, ",\"lag\":null");
    if (d->has_worker)
        tide_buf_printf(b,
                        ",\"lua_heap_bytes\":%llu,\"assigned_partitions\":%d,"
                        "\"restoring_tasks\":%d,\"restored_records\":%llu,\"store_memory_bytes\":%llu",
                        (unsigned long long)g->lua_heap_bytes, (int)g->assigned_partitions,
                        (int)g->restoring_tasks, (unsigned long long)g->restored_records,
                        (unsigned long long)g->store_memory_bytes);
    else
        tide_buf_puts(b, ",\"lua_heap_bytes\":null,\"assigned_partitions\":null,"
                         "\"restoring_tasks\":null,\"restored_records\":null,"
                         "\"store_memory_bytes\":null");
    render_broker(b, d);
    /* how long the batch in flight has run: what the watchdog looks at */
    if (d->has_worker && g->batch_running_ms >= 0)
        tide_buf_printf(b, ",\"batch_running_ms\":%lld", (long long)g->batch_running_ms);
    else tide_buf_puts(b, ",\"batch_running_ms\":null");
}

static void render_partitions(tide_buf_t *b, const tide_det_tasks_t *t, int state) {
    tide_buf_puts(b, "[");
    int first = 1;
    for (int32_t p = 0; p < t->partitions && p < TIDE_STATUS_MAX_TASKS; p++)
        if (t->state[p] == state) {
            tide_buf_printf(b, first ? "%d" : ",%d", (int)p);
            first = 0;
        }
    tide_buf_puts(b, "]");
}

/* Its stores (each can be queried) and its tasks. */
static void render_tasks(tide_buf_t *b, const tide_admin_detector_t *d) {
    const tide_det_tasks_t *t = &d->tasks;
    tide_buf_puts(b, ",\"stores\":[");
    for (int i = 0; d->has_worker && i < t->n_stores && i < TIDE_STATUS_STORES; i++) {
        tide_buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        JSON_FIELD(b, t->stores[i]);
        tide_buf_printf(b, ",\"memory\":%s}", t->store_memory[i] ? "true" : "false");
    }
    tide_buf_puts(b, "]");
    if (!d->has_worker || t->partitions <= 0) {
        tide_buf_puts(b, ",\"tasks\":null");
        return;
    }
    tide_buf_printf(b, ",\"tasks\":{\"partitions\":%d,\"active\":", (int)t->partitions);
    render_partitions(b, t, TIDE_TASKMAP_ACTIVE);
    tide_buf_puts(b, ",\"restoring\":");
    render_partitions(b, t, TIDE_TASKMAP_RESTORING);
    tide_buf_puts(b, ",\"standby\":");
    render_partitions(b, t, TIDE_TASKMAP_STANDBY);
    if (d->gauges.standby_lag >= 0)
        tide_buf_printf(b, ",\"standby_lag\":%lld", (long long)d->gauges.standby_lag);
    else tide_buf_puts(b, ",\"standby_lag\":null");
    tide_buf_printf(b, ",\"standby_records\":%llu}", (unsigned long long)d->gauges.standby_records);
}

static void render_counters(tide_buf_t *b, const tide_det_totals_t *t) {
    tide_buf_printf(b,
                    ",\"counters\":{\"records_in\":%llu,\"records_out\":%llu,\"errors\":%llu,"
                    "\"dlq\":%llu,\"dropped\":%llu,\"batches\":%llu,\"batch_seconds\":",
                    (unsigned long long)t->records_in, (unsigned long long)t->records_out,
                    (unsigned long long)t->errors, (unsigned long long)t->dlq,
                    (unsigned long long)t->dropped, (unsigned long long)t->batches);
    tide_buf_json_num(b, t->hist_sum);
    tide_buf_printf(b, ",\"reloads\":%llu,\"reload_failures\":%llu",
                    (unsigned long long)t->reloads, (unsigned long long)t->reload_failures);
    tide_buf_printf(b,
                    ",\"dropped_late\":%llu,\"rollbacks\":%llu,\"transactions_committed\":%llu,"
                    "\"transactions_aborted\":%llu,\"commit_seconds\":",
                    (unsigned long long)t->dropped_late, (unsigned long long)t->rollbacks,
                    (unsigned long long)t->txn_committed, (unsigned long long)t->txn_aborted);
    tide_buf_json_num(b, t->commit_hist_sum);
    tide_buf_puts(b, "}");
}

static void render_detector(tide_buf_t *b, const tide_admin_detector_t *d) {
    tide_buf_puts(b, "{\"name\":");
    JSON_FIELD(b, d->name);
    tide_buf_puts(b, ",\"path\":");
    JSON_FIELD(b, d->path);
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
    render_gauges(b, d);
    render_tasks(b, d);
    render_counters(b, &d->totals);
    tide_buf_puts(b, ",\"last_error\":");
    render_last_error(b, &d->last_error);
    tide_buf_puts(b, ",\"last_exit\":");
    json_str_or_null(b, d->last_exit, sizeof(d->last_exit));
    tide_buf_puts(b, ",\"problem\":");
    json_str_or_null(b, d->problem, sizeof(d->problem));
    tide_buf_puts(b, ",\"refused\":");
    if (d->refused.ms) {
        tide_buf_printf(b, "{\"ms\":%lld,\"version\":", (long long)d->refused.ms);
        json_str_or_null(b, d->refused.version, sizeof(d->refused.version));
        tide_buf_puts(b, ",\"message\":");
        JSON_FIELD(b, d->refused.message);
        tide_buf_puts(b, "}");
    } else {
        tide_buf_puts(b, "null");
    }
    tide_buf_puts(b, ",\"reloads\":[");
    int nr = d->n_reloads < 0 ? 0 : d->n_reloads > TIDE_RELOAD_HISTORY ? TIDE_RELOAD_HISTORY
                                                                       : d->n_reloads;
    for (int i = 0; i < nr; i++) {
        if (i) tide_buf_puts(b, ",");
        render_reload(b, &d->reloads[i]);
    }
    tide_buf_puts(b, "]}");
}

void tide_admin_render_detectors(tide_buf_t *b, const tide_admin_snapshot_t *s) {
    tide_buf_printf(b, "{\"now_ms\":%lld,\"started_ms\":%lld,\"ready\":%s,\"detectors\":[",
                    (long long)s->now_ms, (long long)s->started_ms,
                    tide_admin_ready(s) ? "true" : "false");
    for (int i = 0; i < s->n_dets; i++) {
        if (i) tide_buf_puts(b, ",\n");
        render_detector(b, &s->dets[i]);
    }
    tide_buf_puts(b, "]}\n");
}

/* ------------------------------------------------------ /healthz /readyz */

/* Why a detector is not ready. */
typedef enum unready {
    READY = 0,
    UNREADY_BROKEN,  /* failed or quarantined: waits for its file to change */
    UNREADY_WAITING, /* runs, but a commit waits for the broker, or an output topic */
    UNREADY_STARTING /* starting or restarting */
} unready_t;

static unready_t unready(const tide_admin_detector_t *d) {
    switch (d->state) {
    case TIDE_DS_FAILED:
    case TIDE_DS_QUARANTINED: return UNREADY_BROKEN;
    case TIDE_DS_STARTING:
    case TIDE_DS_RESTARTING: return UNREADY_STARTING;
    case TIDE_DS_STOPPING: return READY; /* being removed: not waited for */
    default: break; /* running, or hot-swapping while the old version runs */
    }
    const tide_det_gauges_t *g = &d->gauges;
    if (d->has_worker && (g->broker_waiting_since_ms || g->missing_topic[0]))
        return UNREADY_WAITING;
    return READY;
}

int tide_admin_ready(const tide_admin_snapshot_t *s) {
    if (s->stopping) return 0;
    for (int i = 0; i < s->n_dets; i++)
        if (unready(&s->dets[i])) return 0;
    return 1;
}

/* Text from a detector on one line of the body: line breaks become spaces. */
static void one_line(tide_buf_t *b, const char *text, size_t cap) {
    size_t n = strnlen(text, cap), from = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && text[i] != '\n' && text[i] != '\r') continue;
        tide_buf_append(b, text + from, i - from);
        if (i < n) tide_buf_puts(b, " ");
        from = i + 1;
    }
}

/* "NAME why\n" for a detector that is not ready. */
static void readyz_line(tide_buf_t *b, const tide_admin_detector_t *d, int64_t now_ms) {
    const tide_det_gauges_t *g = &d->gauges;
    one_line(b, d->name, sizeof(d->name));
    tide_buf_printf(b, " %s", tide_det_state_name(d->state));
    if (unready(d) == UNREADY_BROKEN && d->problem[0]) {
        tide_buf_puts(b, ": ");
        one_line(b, d->problem, sizeof(d->problem));
    } else if (unready(d) == UNREADY_WAITING && g->broker_waiting_since_ms) {
        tide_buf_printf(b, ": broker unreachable for %lld s",
                        (long long)((now_ms - g->broker_waiting_since_ms) / 1000));
    } else if (unready(d) == UNREADY_WAITING) {
        tide_buf_puts(b, ": waiting for output topic ");
        one_line(b, g->missing_topic, sizeof(g->missing_topic));
        tide_buf_puts(b, " to exist");
    }
    tide_buf_puts(b, "\n");
}

#define READYZ_STARTING_SHOWN 5

/* 200 "ready", or 503 with one line per reason: every failed or quarantined
 * detector with its problem, every one waiting for the broker or an output
 * topic, then (a few of) those still starting. */
int tide_admin_render_readyz(tide_buf_t *b, const tide_admin_snapshot_t *s) {
    if (s->stopping) {
        tide_buf_puts(b, "not ready: stopping\n");
        return 503;
    }
    if (tide_admin_ready(s)) {
        tide_buf_puts(b, "ready\n");
        return 200;
    }
    tide_buf_puts(b, "not ready\n");
    int starting = 0;
    for (int i = 0; i < s->n_dets; i++) {
        unready_t u = unready(&s->dets[i]);
        if (u == READY || (u == UNREADY_STARTING && starting++ >= READYZ_STARTING_SHOWN)) continue;
        readyz_line(b, &s->dets[i], s->now_ms);
    }
    if (starting > READYZ_STARTING_SHOWN)
        tide_buf_printf(b, "and %d more starting\n", starting - READYZ_STARTING_SHOWN);
    return 503;
}

/* ------------------------------------------------------------- routes */

/* The page may run its own inline script and talk to us; nothing else. */
#define PAGE_CSP                                                                   \
    "default-src 'none'; script-src 'unsafe-inline'; "                             \
    "style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; " \
    "form-action 'none'; frame-ancestors 'none'"

static int fill(tide_admin_t *a, tide_admin_snapshot_t *s) {
    memset(s, 0, sizeof(*s));
    s->now_ms = tide_wall_ms();
    a->fill(a->ud, s);
    return !s->oom;
}

static void on_request(void *ud, const tide_http_request_t *rq, tide_http_reply_t *r) {
    tide_admin_t *a = ud;
    const char *path = tide_http_path(rq);
    if (!strcmp(path, "/") || !strcmp(path, "/index.html")) {
        r->status = 200;
        r->type = "text/html; charset=utf-8";
        r->header_name = "Content-Security-Policy";
        r->header_value = PAGE_CSP;
        r->body = tide_status_page_html;
        r->body_len = a->page_len;
        return;
    }
    tide_http_handler_fn queries = __atomic_load_n(&a->queries, __ATOMIC_ACQUIRE);
    if (queries && !strncmp(path, "/api/detectors/", 15)) {
        queries(a->queries_ud, rq, r);
        return;
    }
    int healthz = !strcmp(path, "/healthz"), readyz = !strcmp(path, "/readyz");
    int metrics_ = !strcmp(path, "/metrics"), api = !strcmp(path, "/api/detectors");
    if (!healthz && !readyz && !metrics_ && !api) {
        tide_http_reply_text(r, 404, "not found\n");
        return;
    }
    tide_admin_snapshot_t s;
    if (!fill(a, &s)) r->buf.oom = 1;
    r->status = 200;
    r->type = "text/plain; charset=utf-8";
    if (healthz) {
        tide_http_reply_text(r, s.stopping ? 503 : 200, s.stopping ? "stopping\n" : "ok\n");
    } else if (readyz) {
        r->status = tide_admin_render_readyz(&r->buf, &s);
    } else if (metrics_) {
        r->type = "text/plain; version=0.0.4; charset=utf-8";
        tide_admin_render_metrics(&r->buf, &s);
    } else {
        r->type = "application/json";
        tide_admin_render_detectors(&r->buf, &s);
    }
    tide_admin_snapshot_free(&s);
}

tide_admin_t *tide_admin_start(const char *addr, int port, tide_admin_fill_fn fill_fn, void *ud,
                               char **errp) {
    tide_admin_t *a = calloc(1, sizeof(*a));
    if (!a) {
        *errp = strdup("admin http: not enough memory");
        return NULL;
    }
    a->fill = fill_fn;
    a->ud = ud;
    a->page_len = strlen(tide_status_page_html);
    a->http = tide_http_start(addr, port, on_request, a, errp);
    if (!a->http) {
        free(a);
        return NULL;
    }
    return a;
}

int tide_admin_port(const tide_admin_t *a) { return tide_http_port(a->http); }

void tide_admin_set_queries(tide_admin_t *a, tide_http_handler_fn fn, void *ud) {
    a->queries_ud = ud;
    __atomic_store_n(&a->queries, fn, __ATOMIC_RELEASE);
}

void tide_admin_stop(tide_admin_t *a) {
    if (!a) return;
    tide_http_stop(a->http);
    free(a);
}
