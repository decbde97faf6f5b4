/*
 * supervisor.h: `tide run DIR`, one process per host.
 *
 * The supervisor watches a folder of detectors and keeps one worker process
 * per detector (`tide worker FILE`): starts new ones, asks changed ones to hot
 * swap, stops removed ones, restarts crashed or hung ones with backoff, and
 * quarantines those that keep failing. It reads each worker's shared status
 * block (status.h) and serves it over the admin HTTP server.
 *
 * Threads: the supervisor loop owns the table below; the HTTP thread reads it
 * under tide_supervisor_lock(). Nothing else touches it.
 */
#ifndef TIDE_SUPERVISOR_H
#define TIDE_SUPERVISOR_H
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
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

const char *tide_det_state_name(tide_det_state_t s);

#define TIDE_RELOAD_HISTORY 16

/* One reload attempt, as the status page lists it. */
typedef struct tide_reload_event {
    int64_t ms;          /* wall clock, ms since the epoch */
    int ok;
    char version[32];    /* the version tried */
    char message[1024];  /* "file:line: reason" when it failed */
} tide_reload_event_t;

/* Counters that survive worker restarts (the worker's own restart at 0). */
typedef struct tide_det_totals {
    uint64_t records_in, records_out, dlq, errors, dropped, batches;
    uint64_t reloads, reload_failures;
    uint64_t hist[TIDE_STATUS_HIST];
    double hist_sum;
} tide_det_totals_t;

typedef struct tide_detector {
    char *path;          /* the .lua file, or the folder holding init.lua */
    char name[128];      /* the detector's name once known, else from the path */
    char version[32];    /* of the running code */
    char description[512]; /* the running code's description */
    char topology[16384];  /* the running code's topology, JSON ("" unknown) */
    tide_det_state_t state;
    pid_t pid;           /* the worker, 0 when none */
    tide_status_block_t *st;   /* the worker's shared status, NULL when none */
    int status_fd;
    int64_t started_ms;  /* wall clock, when the current worker started */
    uint64_t restarts;   /* worker restarts after a crash or a hang */
    uint64_t watchdog_kills;
    double cpu_seconds;  /* of the current worker (utime + stime) */
    uint64_t rss_bytes;  /* of the current worker */
    char last_exit[128]; /* how the last worker ended, "" if none did */
    char problem[2048];  /* why it is failed or quarantined */
    tide_det_totals_t base; /* totals of earlier workers of this detector */
    tide_reload_event_t reloads[TIDE_RELOAD_HISTORY]; /* ring, oldest first */
    int n_reloads;
    /* The current worker's reloads and refused reloads that the history has
     * (the totals count these, so they never run ahead of the history). */
    uint64_t seen_reloads, seen_failures;
    /* supervisor bookkeeping */
    int64_t next_restart_at; /* monotonic ms */
    int64_t backoff_ms;
    int64_t change_seen_at;  /* monotonic ms of the last change event, 0 none */
    int crashes;             /* recent crashes, for quarantine */
    char poison[TIDE_STATUS_TOPICS][300]; /* "topic:partition:offset" to skip */
    int poison_hits[TIDE_STATUS_TOPICS];
    int n_poison;
} tide_detector_t;

typedef struct tide_supervisor {
    const tide_config_t *config;
    const char *dir;
    const char *bootstraps;
    tide_detector_t **dets;
    int n_dets;
    int64_t started_ms; /* wall clock */
    int ready;          /* every detector has reached running once */
    volatile sig_atomic_t *stop;
} tide_supervisor_t;

/* Totals of a detector: earlier workers plus the current one. */
void tide_detector_totals(const tide_detector_t *d, tide_det_totals_t *out);

/* The HTTP thread reads the table under this lock. */
void tide_supervisor_lock(void);
void tide_supervisor_unlock(void);

/* Run the folder until *stop; returns the exit code. */
struct tide_devbroker;
int tide_supervisor_run(const tide_config_t *c, const char *dir, const char *bootstraps,
                        struct tide_devbroker *dev, volatile sig_atomic_t *stop);

#endif
