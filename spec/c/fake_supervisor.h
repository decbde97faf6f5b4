/*
 * fake_supervisor.h: a supervisor table filled by hand, for the admin server's
 * tests (test_http.c, http_fixture.c). Test code only.
 *
 * The tests link supervisor.o, so the server runs with the real lock, the
 * real totals and the real state names. Never include this outside spec/.
 */
#ifndef TIDE_FAKE_SUPERVISOR_H
#define TIDE_FAKE_SUPERVISOR_H
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "supervisor.h"

/* A detector; with a worker it has a pid and a status block (plain heap
 * memory here, not a memfd: only the supervisor side reads it). */
static inline tide_detector_t *fake_detector(const char *name, tide_det_state_t state, int pid) {
    tide_detector_t *d = calloc(1, sizeof(*d));
    char path[300];
    snprintf(path, sizeof(path), "/srv/detectors/%s.lua", name);
    d->path = strdup(path);
    snprintf(d->name, sizeof(d->name), "%s", name);
    snprintf(d->version, sizeof(d->version), "%s", "3f9a2c71d0e4b5a6");
    d->state = state;
    d->status_fd = -1;
    if (pid > 0) {
        d->pid = pid;
        d->started_ms = tide_wall_ms() - 90 * 1000;
        d->cpu_seconds = 1.25;
        d->rss_bytes = 48u << 20;
        d->st = calloc(1, sizeof(tide_status_block_t));
        d->st->magic = TIDE_STATUS_MAGIC;
        d->st->state = TIDE_WS_RUNNING;
        d->st->pid = pid;
        d->st->lag = -1;
        d->st->assigned_partitions = 4;
        d->st->lua_heap_bytes = 3u << 20;
        snprintf(d->st->detector, sizeof(d->st->detector), "%s", name);
    }
    return d;
}

/* One batch of n records that took `seconds`, as a worker would count it. */
static inline void fake_batch(tide_detector_t *d, uint64_t n, double seconds) {
    tide_status_block_t *st = d->st;
    if (!st) return;
    st->records_in += n;
    st->records_out += n / 2;
    st->batches++;
    st->hist[tide_status_bucket(seconds)]++;
    st->hist_sum += seconds;
}

static inline void fake_error(tide_detector_t *d, const char *topic, int partition, long long offset,
                       const char *message) {
    tide_status_block_t *st = d->st;
    st->errors++;
    st->dlq++;
    st->last_error_ms = tide_wall_ms();
    snprintf(st->last_error_class, sizeof(st->last_error_class), "ProcessError");
    snprintf(st->last_error_topic, sizeof(st->last_error_topic), "%s", topic);
    st->last_error_partition = partition;
    st->last_error_offset = offset;
    snprintf(st->last_error, sizeof(st->last_error), "%s", message);
    snprintf(st->last_traceback, sizeof(st->last_traceback),
             "stack traceback:\n\t%s:7: in function 'process'\n\t[tide]/dispatch.lua:88: in "
             "function <[tide]/dispatch.lua:61>",
             d->path);
}

static inline void fake_reload(tide_detector_t *d, int ok, const char *version, const char *message) {
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
        d->base.reloads++;
    } else {
        d->base.reload_failures++;
    }
}

/* The worker goes away: its counters fold into the detector's base. */
static inline void fake_worker_gone(tide_detector_t *d, const char *how) {
    tide_det_totals_t t;
    tide_detector_totals(d, &t);
    d->base = t;
    free(d->st);
    d->st = NULL;
    d->pid = 0;
    d->cpu_seconds = 0;
    d->rss_bytes = 0;
    snprintf(d->last_exit, sizeof(d->last_exit), "%s", how);
}

static inline void fake_add(tide_supervisor_t *sv, tide_detector_t *d) {
    sv->dets = realloc(sv->dets, sizeof(*sv->dets) * (size_t)(sv->n_dets + 1));
    sv->dets[sv->n_dets++] = d;
}

static inline void fake_free(tide_supervisor_t *sv) {
    for (int i = 0; i < sv->n_dets; i++) {
        free(sv->dets[i]->path);
        free(sv->dets[i]->st);
        free(sv->dets[i]);
    }
    free(sv->dets);
    sv->dets = NULL;
    sv->n_dets = 0;
}

#endif
