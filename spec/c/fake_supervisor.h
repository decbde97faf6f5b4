/*
 * fake_supervisor.h: a detector table kept by hand, in the admin snapshot's
 * shape, for the admin server's tests (test_http.c, http_fixture.c). Test
 * code only.
 *
 * It plays the supervisor's part towards the admin server: fake_fill copies
 * the table into a snapshot under the table's lock, as the supervisor's
 * on_admin_fill does. Never include this outside spec/.
 */
#ifndef TIDE_FAKE_SUPERVISOR_H
#define TIDE_FAKE_SUPERVISOR_H
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "log.h"

typedef struct fake_sv {
    pthread_mutex_t lock;
    int64_t started_ms;
    volatile sig_atomic_t *stop;
    tide_admin_detector_t **dets;
    int n_dets;
} fake_sv_t;

static inline void fake_init(fake_sv_t *sv, volatile sig_atomic_t *stop) {
    memset(sv, 0, sizeof(*sv));
    pthread_mutex_init(&sv->lock, NULL);
    sv->stop = stop;
}

/* A detector; with a worker (pid > 0) it has live gauges. */
static inline tide_admin_detector_t *fake_detector(const char *name, tide_det_state_t state,
                                                   int pid) {
    tide_admin_detector_t *d = calloc(1, sizeof(*d));
    snprintf(d->path, sizeof(d->path), "/srv/detectors/%s.lua", name);
    snprintf(d->name, sizeof(d->name), "%s", name);
    snprintf(d->version, sizeof(d->version), "%s", "3f9a2c71d0e4b5a6");
    d->state = state;
    d->gauges.lag = -1;
    d->gauges.batch_running_ms = -1;
    if (pid > 0) {
        d->pid = pid;
        d->has_worker = 1;
        d->started_ms = tide_wall_ms() - 90 * 1000;
        d->cpu_seconds = 1.25;
        d->rss_bytes = 48u << 20;
        d->gauges.assigned_partitions = 4;
        d->gauges.lua_heap_bytes = 3u << 20;
    }
    return d;
}

/* One batch of n records that took `seconds`, as the totals count it. */
static inline void fake_batch(tide_admin_detector_t *d, uint64_t n, double seconds) {
    d->totals.records_in += n;
    d->totals.records_out += n / 2;
    d->totals.batches++;
    d->totals.hist[tide_status_bucket(seconds)]++;
    d->totals.hist_sum += seconds;
}

static inline void fake_error(tide_admin_detector_t *d, const char *topic, int partition,
                              long long offset, const char *message) {
    tide_det_error_t *e = &d->last_error;
    d->totals.errors++;
    d->totals.dlq++;
    e->ms = tide_wall_ms();
    snprintf(e->cls, sizeof(e->cls), "ProcessError");
    snprintf(e->topic, sizeof(e->topic), "%s", topic);
    e->partition = partition;
    e->offset = offset;
    snprintf(e->message, sizeof(e->message), "%s", message);
    snprintf(e->traceback, sizeof(e->traceback),
             "stack traceback:\n\t%s:7: in function 'process'\n\t[tide]/dispatch.lua:88: in "
             "function <[tide]/dispatch.lua:61>",
             d->path);
}

static inline void fake_reload(tide_admin_detector_t *d, int ok, const char *version,
                               const char *message) {
    if (d->n_reloads == TIDE_RELOAD_HISTORY) {
        memmove(&d->reloads[0], &d->reloads[1], sizeof(d->reloads[0]) * (TIDE_RELOAD_HISTORY - 1));
        d->n_reloads--;
    }
    tide_reload_event_t *r = &d->reloads[d->n_reloads++];
    r->ms = tide_wall_ms();
    r->ok = ok;
    snprintf(r->version, sizeof(r->version), "%s", version);
    snprintf(r->message, sizeof(r->message), "%s", message ? message : "");
    if (ok) {
        snprintf(d->version, sizeof(d->version), "%s", version);
        d->totals.reloads++;
    } else {
        d->totals.reload_failures++;
    }
}

/* The worker goes away: no gauges, no pid. */
static inline void fake_worker_gone(tide_admin_detector_t *d, const char *how) {
    d->has_worker = 0;
    d->pid = 0;
    d->cpu_seconds = 0;
    d->rss_bytes = 0;
    snprintf(d->last_exit, sizeof(d->last_exit), "%s", how);
}

static inline void fake_add(fake_sv_t *sv, tide_admin_detector_t *d) {
    sv->dets = realloc(sv->dets, sizeof(*sv->dets) * (size_t)(sv->n_dets + 1));
    sv->dets[sv->n_dets++] = d;
}

/* The tide_admin_fill_fn: a copy under the lock. */
static inline void fake_fill(void *ud, tide_admin_snapshot_t *s) {
    fake_sv_t *sv = ud;
    pthread_mutex_lock(&sv->lock);
    s->started_ms = sv->started_ms;
    s->stopping = sv->stop && *sv->stop;
    for (int i = 0; i < sv->n_dets; i++) {
        tide_admin_detector_t *o = tide_admin_snapshot_add(s);
        if (!o) break;
        *o = *sv->dets[i];
    }
    pthread_mutex_unlock(&sv->lock);
}

static inline void fake_free(fake_sv_t *sv) {
    for (int i = 0; i < sv->n_dets; i++) free(sv->dets[i]);
    free(sv->dets);
    sv->dets = NULL;
    sv->n_dets = 0;
    pthread_mutex_destroy(&sv->lock);
}

#endif
