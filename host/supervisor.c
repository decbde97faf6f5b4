/*
 * supervisor.c: `tide run DIR` (see supervisor.h).
 *
 * Owns the detector table, the inotify watch on the folder, the worker
 * processes and their shared status blocks. One loop: wait for a folder
 * event, a child's exit or a 100 ms tick; then act on changes whose burst has
 * settled (start, hot swap, stop), reap workers (restart with backoff,
 * quarantine, mark a poison record), run the watchdog, and sample CPU and RSS.
 * It starts the admin server and fills its snapshots: the server's thread
 * copies the table under the supervisor's lock (on_admin_fill) and renders
 * from the copy, so it never reads the table while the loop changes it.
 * It never runs Lua and never consumes or produces a detector's records:
 * workers do. Its one link to Kafka is the directory (directory.h), where it
 * says which tasks its workers hold and learns which tasks other instances
 * hold, for the query router (router.h) and for the standby replicas it asks
 * its workers to keep.
 */
#include "supervisor.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "devbroker.h"
#include "directory.h"
#include "log.h"
#include "router.h"
#include "sources.h"
#include "status.h"
#include "txnid.h"
#include "worker.h"

#define CRASH_WINDOW 64 /* crash times kept, for quarantine */

/* Is a version of the files, staged in our copy, waiting to be validated? */
typedef enum trial {
    TRIAL_NONE = 0,
    TRIAL_SPAWN,  /* by a worker starting on it */
    TRIAL_RELOAD, /* by a running worker's hot swap */
} trial_t;

/* One detector: a file (or a folder holding init.lua) and its worker. */
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
    int channel;         /* the worker's query channel in the router, 0: none */
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
    /* restarts and quarantine */
    int64_t next_restart_at; /* monotonic ms */
    int64_t backoff_ms;
    int64_t change_seen_at;  /* monotonic ms of the last change event, 0 none */
    int64_t crash_times[CRASH_WINDOW]; /* monotonic ms, oldest first */
    int n_crash;
    int removed;             /* stop and forget once it exits */
    int watchdog_killed;     /* the current worker's kill was the watchdog's */
    int was_running;         /* the current worker has reached running */
    char poison[TIDE_STATUS_TOPICS][300]; /* "topic:partition:offset" to skip */
    int poison_hits[TIDE_STATUS_TOPICS];
    int n_poison;
    /* versions (sources.h): workers load our copy of the files; NULL when
     * it could not be made, and they read the files themselves */
    tide_sources_t *src;
    trial_t trial;
    char trial_version[32];       /* the staged version, "" when unknown */
    tide_reload_event_t refused;  /* a newer version refused while an older
                                   * one runs on (ms 0: none) */
} tide_detector_t;

/* The supervisor: its table, and what its loop keeps beside it. The admin
 * server's thread reads the table only through on_admin_fill, under lock. */
typedef struct sv_state {
    pthread_mutex_t lock;
    const tide_config_t *config;
    const char *dir;
    const char *bootstraps;
    char *sources_root; /* <state.dir>/<application.id>/.sources */
    tide_detector_t **dets;
    int n_dets;
    int64_t started_ms; /* wall clock */
    volatile sig_atomic_t *stop;
    int inotify;
    int dir_wd;
    int config_fd; /* the effective configuration, as a properties file */
    tide_devbroker_t *dev;
    tide_directory_t *directory; /* who holds which task, on every instance */
    tide_router_t *router;   /* interactive queries */
    char instance[33];       /* this instance's process id */
    char server[300];        /* its admin address, as others reach it */
    int replicas;            /* num.standby.replicas */
    int64_t debounce_ms, batch_timeout_ms, backoff_max_ms;
    int poison_kills, quarantine_crashes;
    long clk_tck, page_size;
    int64_t next_sample_ms;
    struct {
        int wd;
        char *path; /* a folder detector's folder */
    } subwatch[256];
    int n_subwatch;
} sv_state_t;

/* Totals of a detector: earlier workers plus the current one. */
static void totals(const tide_detector_t *d, tide_det_totals_t *out) {
    *out = d->base;
    const tide_status_block_t *st = d->st;
    if (!st) return;
    out->records_in += st->records_in;
    out->records_out += st->records_out;
    out->dlq += st->dlq;
    out->errors += st->errors;
    out->dropped += st->dropped;
    out->batches += st->batches;
    /* Reloads as the supervisor has recorded them in the history, not the
     * worker's live counts: the API then never shows a reload counted that
     * its history does not have yet. */
    out->reloads += d->seen_reloads;
    out->reload_failures += d->seen_failures;
    for (int i = 0; i < TIDE_STATUS_HIST; i++) out->hist[i] += st->hist[i];
    out->hist_sum += st->hist_sum;
    out->dropped_late += st->dropped_late;
    out->rollbacks += st->rollbacks;
    out->txn_committed += st->txn_committed;
    out->txn_aborted += st->txn_aborted;
    for (int i = 0; i < TIDE_STATUS_HIST; i++) out->commit_hist[i] += st->commit_hist[i];
    out->commit_hist_sum += st->commit_hist_sum;
}

/* ---------------------------------------------------------------- the folder */

/* Is `name` (in the folder) a detector file? Editors' temporary, swap and
 * backup files and hidden files are not. */
static int is_detector_file(const char *name) {
    size_t n = strlen(name);
    if (n < 5 || name[0] == '.' || name[0] == '#') return 0;
    return !strcmp(name + n - 4, ".lua");
}

static int is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int exists(const char *path) {
    if (is_dir(path)) {
        char init[4096];
        snprintf(init, sizeof(init), "%s/init.lua", path);
        return access(init, R_OK) == 0;
    }
    return access(path, R_OK) == 0;
}

static tide_detector_t *find_path(sv_state_t *s, const char *path) {
    for (int i = 0; i < s->n_dets; i++)
        if (!strcmp(s->dets[i]->path, path)) return s->dets[i];
    return NULL;
}

static tide_detector_t *find_pid(sv_state_t *s, pid_t pid) {
    for (int i = 0; i < s->n_dets; i++)
        if (s->dets[i]->pid == pid) return s->dets[i];
    return NULL;
}

static tide_detector_t *add_detector(sv_state_t *s, const char *path) {
    tide_detector_t *d = calloc(1, sizeof(*d));
    tide_detector_t **nd = realloc(s->dets, (size_t)(s->n_dets + 1) * sizeof(*nd));
    if (!d || !nd) {
        free(d);
        return NULL;
    }
    s->dets = nd;
    d->path = strdup(path);
    d->status_fd = -1;
    d->backoff_ms = 500;
    const char *base = strrchr(path, '/');
    snprintf(d->name, sizeof(d->name), "%s", base ? base + 1 : path);
    char *dot = strrchr(d->name, '.');
    if (dot && !strcmp(dot, ".lua")) *dot = '\0';
    d->state = TIDE_DS_STARTING;
    char *err = NULL;
    d->src = tide_sources_new(s->sources_root, path, &err);
    if (!d->src) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "%s: no copy of its files (%s): a restart "
                 "after a refused change will load the file as it is", path, err);
        free(err);
    }
    s->dets[s->n_dets++] = d;
    return d;
}

static void remove_detector(sv_state_t *s, tide_detector_t *d) {
    for (int i = 0; i < s->n_dets; i++)
        if (s->dets[i] == d) {
            s->dets[i] = s->dets[--s->n_dets];
            break;
        }
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "detector %s removed", d->name);
    tide_sources_free(d->src, 1);
    free(d->path);
    free(d);
}

/* A change to a detector's file: act once the burst has settled. */
static void touch(sv_state_t *s, const char *path) {
    tide_detector_t *d = find_path(s, path);
    if (!d) {
        if (!exists(path)) return;
        d = add_detector(s, path);
        if (!d) return;
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "new detector %s", path);
    }
    d->change_seen_at = tide_mono_ms();
}

static void watch_subdir(sv_state_t *s, const char *path) {
    for (int i = 0; i < s->n_subwatch; i++)
        if (!strcmp(s->subwatch[i].path, path)) return;
    if (s->n_subwatch == (int)(sizeof(s->subwatch) / sizeof(s->subwatch[0]))) return;
    int wd = inotify_add_watch(s->inotify, path,
                               IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE);
    if (wd < 0) return;
    s->subwatch[s->n_subwatch].wd = wd;
    s->subwatch[s->n_subwatch].path = strdup(path);
    s->n_subwatch++;
}

static void scan(sv_state_t *s) {
    DIR *dir = opendir(s->dir);
    if (!dir) return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof(path), "%s/%s", s->dir, e->d_name);
        if (is_dir(path)) {
            watch_subdir(s, path);
            if (exists(path)) touch(s, path);
        } else if (is_detector_file(e->d_name)) {
            touch(s, path);
        }
    }
    closedir(dir);
}

/* A file is read once it is complete: closed after writing, or renamed into
 * place. Its creation alone (IN_CREATE) is not a change: it is still empty or
 * half-written then. */
#define FILE_EVENTS (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE)

static void on_folder_events(sv_state_t *s) {
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(s->inotify, buf, sizeof(buf));
        if (n <= 0) return;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (!ev->len) continue;
            char path[4096];
            if (ev->wd == s->dir_wd) {
                snprintf(path, sizeof(path), "%s/%s", s->dir, ev->name);
                if (ev->mask & IN_ISDIR) {
                    if (ev->mask & (IN_CREATE | IN_MOVED_TO)) watch_subdir(s, path);
                    touch(s, path);
                } else if (is_detector_file(ev->name) && (ev->mask & FILE_EVENTS)) {
                    touch(s, path);
                }
                continue;
            }
            /* In a folder detector: any Lua file there changes it. */
            for (int i = 0; i < s->n_subwatch; i++)
                if (s->subwatch[i].wd == ev->wd && is_detector_file(ev->name) &&
                    (ev->mask & FILE_EVENTS)) {
                    touch(s, s->subwatch[i].path);
                    break;
                }
        }
    }
}

/* ---------------------------------------------------------------- workers */

/* The worker is gone: its status, its query channel and its place in the
 * directory go with it. */
static void close_status(sv_state_t *s, tide_detector_t *d) {
    if (d->st) {
        totals(d, &d->base);
        tide_directory_withdraw(s->directory, d->name);
        tide_status_unmap(d->st);
        d->st = NULL;
    }
    if (d->status_fd >= 0) close(d->status_fd);
    d->status_fd = -1;
    tide_router_detach(s->router, d->channel);
    d->channel = 0;
}

/* A query channel for a new worker: *child is its end (kept open across
 * exec), the router holds ours. -1 when there is no router. */
static int query_channel(sv_state_t *s, tide_detector_t *d, int *child) {
    int sv[2];
    *child = -1;
    if (!s->router || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) return -1;
    d->channel = tide_router_attach(s->router, sv[0]);
    if (!d->channel) {
        close(sv[1]);
        return -1;
    }
    *child = sv[1];
    return 0;
}

/* The worker's command line into argv (its strings in bufs, which must
 * outlive the exec). */
typedef struct spawn_bufs {
    char sfd[16], cfg[64], qfd[16];
} spawn_bufs_t;

static void worker_argv(sv_state_t *s, tide_detector_t *d, int sfd, int qfd, spawn_bufs_t *b,
                        const char **argv) {
    snprintf(b->sfd, sizeof(b->sfd), "%d", sfd);
    snprintf(b->qfd, sizeof(b->qfd), "%d", qfd);
    snprintf(b->cfg, sizeof(b->cfg), "/proc/self/fd/%d", s->config_fd);
    int a = 0;
    argv[a++] = "tide";
    argv[a++] = "worker";
    argv[a++] = d->path;
    argv[a++] = "-c";
    argv[a++] = b->cfg;
    argv[a++] = "-b";
    argv[a++] = s->bootstraps;
    argv[a++] = "--status-fd";
    argv[a++] = b->sfd;
    if (s->dev) argv[a++] = "--await-topics";
    if (qfd >= 0) {
        argv[a++] = "--query-fd";
        argv[a++] = b->qfd;
    }
    if (d->src) {
        argv[a++] = "--source-copy";
        argv[a++] = tide_sources_current(d->src);
    }
    for (int i = 0; i < d->n_poison; i++)
        if (d->poison_hits[i] >= s->poison_kills) {
            argv[a++] = "--skip";
            argv[a++] = d->poison[i];
        }
    argv[a] = NULL;
}

static int spawn(sv_state_t *s, tide_detector_t *d) {
    int sfd;
    tide_status_block_t *st = tide_status_create(&sfd);
    if (!st) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "cannot create a status block: %s", strerror(errno));
        return -1;
    }
    int qfd;
    query_channel(s, d, &qfd);
    spawn_bufs_t bufs;
    const char *argv[16 + 2 * TIDE_STATUS_TOPICS];
    worker_argv(s, d, sfd, qfd, &bufs, argv);
    pid_t pid = fork();
    if (pid < 0) {
        tide_status_unmap(st);
        close(sfd);
        if (qfd >= 0) close(qfd);
        tide_router_detach(s->router, d->channel);
        d->channel = 0;
        return -1;
    }
    if (pid == 0) {
        /* The fds the worker needs survive exec; nothing else does. */
        fcntl(sfd, F_SETFD, 0);
        fcntl(s->config_fd, F_SETFD, 0);
        if (qfd >= 0) fcntl(qfd, F_SETFD, 0);
        execv("/proc/self/exe", (char *const *)argv);
        _exit(127);
    }
    if (qfd >= 0) close(qfd);
    d->pid = pid;
    d->st = st;
    d->status_fd = sfd;
    d->started_ms = tide_wall_ms();
    d->state = TIDE_DS_STARTING;
    d->cpu_seconds = 0;
    d->rss_bytes = 0;
    d->seen_reloads = d->seen_failures = 0;
    d->watchdog_killed = 0;
    d->was_running = 0;
    if (d->trial == TRIAL_RELOAD) d->trial = TRIAL_SPAWN; /* died before it answered */
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "started worker %d for %s", (int)pid, d->path);
    return 0;
}

static void add_reload_event(tide_detector_t *d, int ok, const char *version, const char *msg) {
    if (d->n_reloads == TIDE_RELOAD_HISTORY) {
        memmove(&d->reloads[0], &d->reloads[1], sizeof(d->reloads[0]) * (TIDE_RELOAD_HISTORY - 1));
        d->n_reloads--;
    }
    tide_reload_event_t *e = &d->reloads[d->n_reloads++];
    e->ms = tide_wall_ms();
    e->ok = ok;
    snprintf(e->version, sizeof(e->version), "%s", version ? version : "");
    snprintf(e->message, sizeof(e->message), "%s", msg ? msg : "");
}

/* ---------------------------------------------------------------- versions */

/* The files as they are now into our copy, for a worker to try. */
static void stage(tide_detector_t *d, trial_t how) {
    d->trial = how;
    d->trial_version[0] = '\0';
    char *err = NULL;
    if (d->src && tide_sources_stage(d->src, d->trial_version, &err) != TIDE_SOURCES_OK) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "detector %s: %s; its workers read its files "
                 "themselves from now on", d->name, err);
        free(err);
        tide_sources_free(d->src, 1);
        d->src = NULL;
    }
}

/* The version on trial validated: restarts load it from now on. */
static void accept_trial(tide_detector_t *d) {
    if (d->trial == TRIAL_NONE) return;
    d->trial = TRIAL_NONE;
    d->refused.ms = 0;
    char *err = NULL;
    if (d->src && tide_sources_accept(d->src, &err) != TIDE_SOURCES_OK) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "detector %s: %s", d->name, err);
        free(err);
    }
}

/* The version on trial was refused: the last one that validated goes back
 * into our copy. Returns 1 when there is one (restarts load it), else 0.
 * runs_on: a worker still runs the older version (a refused hot swap). */
static int refuse_trial(tide_detector_t *d, const char *why, int runs_on) {
    if (d->trial == TRIAL_NONE) return 0;
    d->trial = TRIAL_NONE;
    char *err = NULL;
    tide_sources_result_t rc = d->src ? tide_sources_revert(d->src, &err) : TIDE_SOURCES_NONE;
    if (rc == TIDE_SOURCES_ERROR) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "detector %s: %s", d->name, err);
        free(err);
    }
    if (rc == TIDE_SOURCES_OK || runs_on) {
        tide_reload_event_t *r = &d->refused;
        r->ms = tide_wall_ms();
        r->ok = 0;
        snprintf(r->version, sizeof(r->version), "%s", d->trial_version);
        snprintf(r->message, sizeof(r->message), "%s", why);
    }
    return rc == TIDE_SOURCES_OK;
}

/* A live worker's reload results since the last look, into the history. */
static void follow_reloads(tide_detector_t *d) {
    const tide_status_block_t *st = d->st;
    if (st->reloads != d->seen_reloads) {
        d->seen_reloads = st->reloads;
        add_reload_event(d, 1, st->last_reload_version, "");
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "detector %s hot-swapped to version %s", d->name,
                 st->last_reload_version);
        accept_trial(d);
    }
    if (st->reload_failures != d->seen_failures) {
        d->seen_failures = st->reload_failures;
        add_reload_event(d, 0, d->trial_version, st->last_reload_error);
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "detector %s: reload refused, old version runs on: %s",
                 d->name, st->last_reload_error);
        refuse_trial(d, st->last_reload_error, 1);
    }
}

/* Follow a live worker's status: running, reload results. */
static void follow(sv_state_t *s, tide_detector_t *d) {
    tide_status_block_t *st = d->st;
    if (!st) return;
    /* Our development broker starts empty: create what the worker declared. */
    if (s->dev && !st->topics_ready && __atomic_load_n(&st->n_declared, __ATOMIC_ACQUIRE) > 0) {
        for (int i = 0; i < st->n_declared && i < TIDE_STATUS_TOPICS; i++) {
            char *err = NULL;
            if (tide_devbroker_create_topic(s->dev, st->declared[i], 0, &err)) {
                tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "%s", err);
                free(err);
            }
        }
        __atomic_store_n(&st->topics_ready, 1, __ATOMIC_RELEASE);
    }
    if (st->detector[0]) snprintf(d->name, sizeof(d->name), "%s", st->detector);
    if (st->version[0]) snprintf(d->version, sizeof(d->version), "%s", st->version);
    snprintf(d->description, sizeof(d->description), "%s", st->description);
    snprintf(d->topology, sizeof(d->topology), "%s", st->topology);
    /* a worker that has loaded the version on trial has validated it */
    if (d->trial == TRIAL_SPAWN && st->version[0]) accept_trial(d);
    follow_reloads(d);
    if (d->state == TIDE_DS_STOPPING) return;
    if (st->state == TIDE_WS_RUNNING) {
        if (d->state != TIDE_DS_RUNNING) {
            d->state = TIDE_DS_RUNNING;
            d->problem[0] = '\0';
        }
        d->was_running = 1;
    } else if (st->state == TIDE_WS_RELOADING) {
        d->state = TIDE_DS_RELOADING;
    }
}

/* The record a dead worker was on counts against it (poison pill). */
static void blame_record(sv_state_t *s, tide_detector_t *d) {
    tide_status_block_t *st = d->st;
    if (!st || !st->batch_started_ms) return;
    int32_t c = st->batch.cursor;
    if (c < 0 || c >= st->batch.n || c >= TIDE_STATUS_MAX_BATCH) return;
    char key[300];
    snprintf(key, sizeof(key), "%s:%d:%lld", st->topics[st->rec_topic[c] % TIDE_STATUS_TOPICS],
             (int)st->rec_partition[c], (long long)st->rec_offset[c]);
    int i;
    for (i = 0; i < d->n_poison; i++)
        if (!strcmp(d->poison[i], key)) break;
    if (i == d->n_poison) {
        if (d->n_poison == TIDE_STATUS_TOPICS) return;
        snprintf(d->poison[i], sizeof(d->poison[i]), "%s", key);
        d->poison_hits[i] = 0;
        d->n_poison++;
    }
    d->poison_hits[i]++;
    tide_log(TIDE_LOG_WARN, TIDE_AT_NONE,
             "detector %s died on record %s (%d time(s)%s)", d->name, key, d->poison_hits[i],
             d->poison_hits[i] >= s->poison_kills ? "; it will be dead-lettered unrun" : "");
}

/* How the last worker ended, into d->last_exit. */
static void describe_exit(tide_detector_t *d, int code, int sig) {
    if (sig)
        snprintf(d->last_exit, sizeof(d->last_exit), "killed by signal %d%s", sig,
                 d->watchdog_killed ? " (watchdog: batch over its time budget)" : "");
    else
        snprintf(d->last_exit, sizeof(d->last_exit), "exit code %d", code);
}

/* A worker that ended for a reason of its own, not a crash: 1 when handled. */
static int on_planned_exit(sv_state_t *s, tide_detector_t *d, int code, const char *load_error) {
    if (code == TIDE_WORKER_LOAD_FAILED) {
        add_reload_event(d, 0, d->trial != TRIAL_NONE ? d->trial_version : "", load_error);
        if (refuse_trial(d, load_error, 0)) {
            tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "detector %s: new version refused, starting "
                     "the last version that validated: %s", d->name, load_error);
            spawn(s, d);
            return 1;
        }
        d->state = TIDE_DS_FAILED;
        snprintf(d->problem, sizeof(d->problem), "%s", load_error);
        return 1;
    }
    if (code == TIDE_WORKER_RENAMED) {
        accept_trial(d); /* it loaded, under a new name */
        spawn(s, d);     /* a new detector under the new name: its own group */
        return 1;
    }
    if (code == TIDE_WORKER_STOPPED_ON_ERROR) {
        d->state = TIDE_DS_FAILED;
        snprintf(d->problem, sizeof(d->problem),
                 "stopped on a failed record (on_error = \"stop\"); fix the detector or the "
                 "record, then save the file to start it again");
        return 1;
    }
    return 0;
}

/* A crash, a hang, or an unexpected exit: restart with backoff, unless it
 * keeps happening. */
static void on_crash(sv_state_t *s, tide_detector_t *d) {
    d->restarts++;
    int64_t now = tide_mono_ms();
    if (d->n_crash == CRASH_WINDOW) {
        memmove(d->crash_times, d->crash_times + 1, sizeof(d->crash_times[0]) * (CRASH_WINDOW - 1));
        d->n_crash--;
    }
    d->crash_times[d->n_crash++] = now;
    int recent = 0;
    for (int i = 0; i < d->n_crash; i++)
        if (now - d->crash_times[i] <= 5 * 60 * 1000) recent++;
    if (recent >= s->quarantine_crashes) {
        d->state = TIDE_DS_QUARANTINED;
        snprintf(d->problem, sizeof(d->problem),
                 "quarantined after %d crashes in 5 minutes (last: %s); save the file to "
                 "start it again",
                 recent, d->last_exit);
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "detector %s quarantined: %s", d->name, d->problem);
        return;
    }
    if (d->was_running) d->backoff_ms = 500; /* it ran: start the backoff over */
    d->state = TIDE_DS_RESTARTING;
    d->next_restart_at = now + d->backoff_ms;
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "restarting %s in %lld ms", d->name,
             (long long)d->backoff_ms);
    d->backoff_ms = d->backoff_ms * 2 > s->backoff_max_ms ? s->backoff_max_ms : d->backoff_ms * 2;
}

static void on_exit_status(sv_state_t *s, tide_detector_t *d, int status) {
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    describe_exit(d, code, sig);
    if (sig || code == TIDE_WORKER_FAILED) blame_record(s, d);
    char load_error[2048] = "";
    if (d->st) {
        snprintf(load_error, sizeof(load_error), "%s", d->st->last_reload_error);
        follow_reloads(d); /* those since the last pass, into the history */
    }
    close_status(s, d);
    d->pid = 0;
    tide_log(sig || code ? TIDE_LOG_WARN : TIDE_LOG_INFO, TIDE_AT_NONE, "worker of %s ended: %s",
             d->name, d->last_exit);
    if (d->removed || d->state == TIDE_DS_STOPPING) {
        remove_detector(s, d);
        return;
    }
    if (!on_planned_exit(s, d, code, load_error)) on_crash(s, d);
}

static void reap(sv_state_t *s) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        tide_detector_t *d = find_pid(s, pid);
        if (d) on_exit_status(s, d, status);
    }
}

/* Act on settled changes: start, hot swap or stop. */
static void settle(sv_state_t *s, int64_t now) {
    for (int i = 0; i < s->n_dets; i++) {
        tide_detector_t *d = s->dets[i];
        if (!d->change_seen_at || now - d->change_seen_at < s->debounce_ms) continue;
        int gone = !exists(d->path);
        /* one version on trial at a time: the next waits for its answer */
        if (!gone && d->pid && d->trial != TRIAL_NONE && d->state != TIDE_DS_STOPPING) continue;
        d->change_seen_at = 0;
        if (gone) {
            if (d->pid) {
                tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "%s removed: stopping its worker", d->path);
                d->removed = 1;
                d->state = TIDE_DS_STOPPING;
                kill(d->pid, SIGTERM);
            } else {
                remove_detector(s, d);
                i--;
            }
            continue;
        }
        if (d->pid && d->state != TIDE_DS_STOPPING) {
            tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "%s changed: hot swap", d->path);
            stage(d, TRIAL_RELOAD);
            d->state = TIDE_DS_RELOADING;
            kill(d->pid, SIGHUP);
        } else if (!d->pid) {
            /* New, failed, quarantined or restarting: a saved file is a
             * fresh start. */
            d->n_crash = 0;
            d->backoff_ms = 500;
            d->n_poison = 0;
            stage(d, TRIAL_SPAWN);
            spawn(s, d);
        }
    }
}

static void restart_due(sv_state_t *s, int64_t now) {
    for (int i = 0; i < s->n_dets; i++) {
        tide_detector_t *d = s->dets[i];
        if (d->state == TIDE_DS_RESTARTING && !d->pid && now >= d->next_restart_at) spawn(s, d);
    }
}

/* Kill a worker whose batch has run past its budget: an infinite loop in
 * compiled code or a pathological pattern cannot be stopped from inside. */
static void watchdog(sv_state_t *s, int64_t now) {
    for (int i = 0; i < s->n_dets; i++) {
        tide_detector_t *d = s->dets[i];
        if (!d->pid || !d->st || d->watchdog_killed) continue;
        int64_t started = d->st->batch_started_ms;
        if (started && now - started > s->batch_timeout_ms) {
            tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE,
                     "detector %s: batch running for %lld ms (budget %lld): killing worker %d",
                     d->name, (long long)(now - started), (long long)s->batch_timeout_ms,
                     (int)d->pid);
            d->watchdog_killed = 1;
            d->watchdog_kills++;
            kill(d->pid, SIGKILL);
        }
    }
}

/* CPU seconds and RSS of each worker, from /proc. */
static void sample(sv_state_t *s) {
    for (int i = 0; i < s->n_dets; i++) {
        tide_detector_t *d = s->dets[i];
        if (!d->pid) continue;
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)d->pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')'); /* the command name may hold spaces */
        unsigned long ut = 0, stime = 0;
        long rss = 0;
        if (p && sscanf(p + 2,
                        "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d "
                        "%*d %*d %*u %*u %ld",
                        &ut, &stime, &rss) == 3) {
            d->cpu_seconds = (double)(ut + stime) / (double)s->clk_tck;
            d->rss_bytes = (uint64_t)rss * (uint64_t)s->page_size;
        }
    }
}

static int make_config_fd(const tide_config_t *c, const char *bootstraps) {
    int fd = memfd_create("tide-config", MFD_CLOEXEC);
    if (fd < 0) return -1;
    FILE *f = fdopen(dup(fd), "w");
    if (!f) {
        close(fd);
        return -1;
    }
    tide_config_write(c, f);
    fprintf(f, "bootstrap.servers=%s\n", bootstraps);

    fclose(f);
    return fd;
}

/* ---------------------------------------------------------------- admin */

static void fill_detector(tide_admin_detector_t *o, const tide_detector_t *d, int64_t now_mono) {
    snprintf(o->name, sizeof(o->name), "%s", d->name);
    snprintf(o->path, sizeof(o->path), "%s", d->path);
    memcpy(o->version, d->version, sizeof(o->version));
    memcpy(o->description, d->description, sizeof(o->description));
    memcpy(o->topology, d->topology, sizeof(o->topology));
    o->state = d->state;
    o->pid = (int32_t)d->pid;
    o->started_ms = d->started_ms;
    o->restarts = d->restarts;
    o->watchdog_kills = d->watchdog_kills;
    o->cpu_seconds = d->cpu_seconds;
    o->rss_bytes = d->rss_bytes;
    memcpy(o->last_exit, d->last_exit, sizeof(o->last_exit));
    memcpy(o->problem, d->problem, sizeof(o->problem));
    totals(d, &o->totals);
    memcpy(o->reloads, d->reloads, sizeof(o->reloads));
    o->n_reloads = d->n_reloads;
    o->refused = d->refused;
    const tide_status_block_t *st = d->st;
    if (!st) return;
    o->has_worker = 1;
    o->gauges = (tide_det_gauges_t){.lag = st->lag,
                                    .lua_heap_bytes = st->lua_heap_bytes,
                                    .assigned_partitions = st->assigned_partitions,
                                    .restoring_tasks = st->restoring_tasks,
                                    .restored_records = st->restored_records,
                                    .store_memory_bytes = st->store_memory_bytes,
                                    .batch_running_ms = -1};
    int64_t started = st->batch_started_ms;
    if (started > 0 && now_mono >= started) o->gauges.batch_running_ms = now_mono - started;
    memcpy(o->gauges.guarantee, st->guarantee, sizeof(o->gauges.guarantee));
    o->gauges.guarantee[sizeof(o->gauges.guarantee) - 1] = '\0';
    o->gauges.broker_waiting_since_ms = st->broker_waiting_since_ms;
    memcpy(o->gauges.missing_topic, st->missing_topic, sizeof(o->gauges.missing_topic));
    o->gauges.missing_topic[sizeof(o->gauges.missing_topic) - 1] = '\0';
    o->gauges.missing_topic_since_ms = st->missing_topic_since_ms;
    o->gauges.standby_lag = st->standby_lag;
    o->gauges.standby_records = st->standby_records;
    tide_det_tasks_t *t = &o->tasks;
    t->partitions = tide_status_read_tasks(st, t->state, NULL);
    t->n_stores = st->n_stores < 0 || st->n_stores > TIDE_STATUS_STORES ? 0 : st->n_stores;
    memcpy(t->stores, st->store_names, sizeof(t->stores));
    for (int i = 0; i < TIDE_STATUS_STORES; i++) {
        t->stores[i][sizeof(t->stores[i]) - 1] = '\0';
        t->store_memory[i] = st->store_memory[i];
    }
    tide_det_error_t *e = &o->last_error;
    e->ms = st->last_error_ms;
    memcpy(e->cls, st->last_error_class, sizeof(e->cls));
    memcpy(e->topic, st->last_error_topic, sizeof(e->topic));
    e->partition = st->last_error_partition;
    e->offset = st->last_error_offset;
    memcpy(e->message, st->last_error, sizeof(e->message));
    memcpy(e->traceback, st->last_traceback, sizeof(e->traceback));
}

/* The admin server's snapshot, on its thread: a copy under our lock. */
static void on_admin_fill(void *ud, tide_admin_snapshot_t *snap) {
    sv_state_t *s = ud;
    int64_t now_mono = tide_mono_ms();
    pthread_mutex_lock(&s->lock);
    snap->started_ms = s->started_ms;
    snap->stopping = *s->stop != 0;
    for (int i = 0; i < s->n_dets; i++) {
        tide_admin_detector_t *o = tide_admin_snapshot_add(snap);
        if (!o) break;
        fill_detector(o, s->dets[i], now_mono);
    }
    pthread_mutex_unlock(&s->lock);
}

/* ---------------------------------------------------------------- queries */

/* The router's view of a detector this host runs (its server thread,
 * under our lock). */
static int on_router_find(void *ud, const char *name, tide_router_local_t *out) {
    sv_state_t *s = ud;
    pthread_mutex_lock(&s->lock);
    tide_detector_t *d = NULL;
    for (int i = 0; i < s->n_dets && !d; i++)
        if (s->dets[i]->st && !strcmp(s->dets[i]->name, name)) d = s->dets[i];
    if (d) {
        const tide_status_block_t *st = d->st;
        out->channel = d->state == TIDE_DS_STOPPING ? 0 : d->channel;
        out->partitions = tide_status_read_tasks(st, out->state, NULL);
        out->n_stores = st->n_stores < 0 || st->n_stores > TIDE_STATUS_STORES ? 0 : st->n_stores;
        for (int i = 0; i < out->n_stores; i++) {
            snprintf(out->stores[i], sizeof(out->stores[i]), "%.*s", (int)sizeof(st->store_names[i]) - 1,
                     st->store_names[i]);
            out->store_memory[i] = st->store_memory[i];
        }
    }
    pthread_mutex_unlock(&s->lock);
    return d != NULL;
}

/* This instance in the directory (its id and address) and the query
 * router behind the admin server. Without them (the broker refuses, say)
 * everything else runs on; the log says what is missing. */
static void start_queries(sv_state_t *s, tide_admin_t *admin) {
    const tide_config_t *c = s->config;
    char *err = NULL;
    if (tide_txnid_process_id(c, s->instance, &err)) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "no process id (%s): interactive queries and standby "
                 "replicas cover this instance only", err);
        free(err);
        err = NULL;
        snprintf(s->instance, sizeof(s->instance), "pid-%d", (int)getpid());
    }
    const char *adv = tide_config_str(c, TIDE_CFG_APPLICATION_SERVER), *addr = tide_config_str(c, TIDE_CFG_ADMIN_ADDRESS);
    if (*adv) snprintf(s->server, sizeof(s->server), "%s", adv);
    else snprintf(s->server, sizeof(s->server), "%s:%d", *addr && strcmp(addr, "localhost") ? addr : "127.0.0.1",
                  tide_admin_port(admin));
    if (!*adv && !strcmp(addr, "0.0.0.0"))
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "admin.address is 0.0.0.0: set application.server to "
                 "the address other instances reach this one at (queries of keys held here)");
    s->replicas = (int)tide_config_int(c, TIDE_CFG_NUM_STANDBY_REPLICAS);
    tide_directory_opts_t dopts = {c, s->bootstraps, s->instance, s->server, s->dev};
    s->directory = tide_directory_start(&dopts, &err);
    if (!s->directory) {
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "%s", err ? err : "directory: cannot start");
        free(err);
        err = NULL;
    }
    tide_router_opts_t ro = {s->directory, on_router_find, s, s->server, s->instance, 0};
    s->router = tide_router_start(&ro, &err);
    if (s->router) tide_admin_set_queries(admin, tide_router_handle, s->router);
    else tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "%s: no interactive queries", err ? err : "router");
    free(err);
}

/* ---------------------------------------------------------------- the loop */

/* Settings, the configuration every worker reads, the watch on the folder. */
static int sv_open(sv_state_t *s, const tide_config_t *c, const char *dir) {
    s->debounce_ms = tide_config_int(c, TIDE_CFG_RELOAD_DEBOUNCE_MS);
    s->batch_timeout_ms = tide_config_int(c, TIDE_CFG_DETECTOR_BATCH_TIMEOUT_MS);
    s->backoff_max_ms = tide_config_int(c, TIDE_CFG_DETECTOR_RESTART_BACKOFF_MAX_MS);
    s->poison_kills = (int)tide_config_int(c, TIDE_CFG_DETECTOR_POISON_KILLS);
    s->quarantine_crashes = (int)tide_config_int(c, TIDE_CFG_DETECTOR_QUARANTINE_CRASHES);
    s->clk_tck = sysconf(_SC_CLK_TCK);
    s->page_size = sysconf(_SC_PAGESIZE);
    if (asprintf(&s->sources_root, "%s/%s/.sources", tide_config_str(c, TIDE_CFG_STATE_DIR),
                 tide_config_str(c, TIDE_CFG_APPLICATION_ID)) < 0)
        s->sources_root = NULL;
    s->config_fd = make_config_fd(c, s->bootstraps);
    s->inotify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (s->config_fd < 0 || s->inotify < 0) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "supervisor: %s", strerror(errno));
        return 1;
    }
    s->dir_wd = inotify_add_watch(s->inotify, dir,
                                  IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                                      IN_CREATE | IN_ONLYDIR);
    if (s->dir_wd < 0) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "cannot watch %s: %s", dir, strerror(errno));
        return 2;
    }
    return 0;
}

/* The directory hears which tasks each worker holds; each worker hears
 * which standby replicas to keep (its status block's standby_wanted). */
static void sync_directory(sv_state_t *s, tide_detector_t *d) {
    tide_status_block_t *st = d->st;
    if (!st || !s->directory || !st->detector[0]) return;
    uint8_t state[TIDE_STATUS_MAX_TASKS];
    int32_t n = tide_status_read_tasks(st, state, NULL);
    if (n > 0) tide_directory_local(s->directory, d->name, n, state);
    if (s->replicas <= 0) return;
    uint8_t wanted[TIDE_STATUS_MAX_TASKS];
    memcpy(wanted, st->standby_wanted, sizeof(wanted));
    tide_directory_standbys(s->directory, d->name, s->replicas, wanted);
    if (!memcmp(wanted, st->standby_wanted, sizeof(wanted))) return;
    __atomic_add_fetch(&st->standby_seq, 1, __ATOMIC_ACQ_REL); /* odd: changing */
    memcpy(st->standby_wanted, wanted, sizeof(wanted));
    __atomic_add_fetch(&st->standby_seq, 1, __ATOMIC_ACQ_REL);
}

/* One pass of the loop, under the lock. */
static void sv_pass(sv_state_t *s, int folder_changed) {
    int64_t now = tide_mono_ms();
    if (folder_changed) on_folder_events(s);
    reap(s);
    for (int i = 0; i < s->n_dets; i++) {
        follow(s, s->dets[i]);
        sync_directory(s, s->dets[i]);
    }
    settle(s, now);
    restart_due(s, now);
    watchdog(s, now);
    if (now >= s->next_sample_ms) {
        sample(s);
        s->next_sample_ms = now + 1000;
    }
}

/* Every worker commits and leaves its group; those still there after the
 * shutdown timeout are killed. */
static void sv_stop_workers(sv_state_t *s) {
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "stopping %d detector(s)", s->n_dets);
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < s->n_dets; i++)
        if (s->dets[i]->pid) {
            s->dets[i]->state = TIDE_DS_STOPPING;
            kill(s->dets[i]->pid, SIGTERM);
        }
    pthread_mutex_unlock(&s->lock);
    int64_t deadline = tide_mono_ms() + tide_config_int(s->config, TIDE_CFG_SHUTDOWN_TIMEOUT_MS) + 5000;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        reap(s);
        int alive = 0;
        for (int i = 0; i < s->n_dets; i++)
            if (s->dets[i]->pid) alive++;
        if (!alive || tide_mono_ms() > deadline) {
            for (int i = 0; i < s->n_dets; i++)
                if (s->dets[i]->pid) kill(s->dets[i]->pid, SIGKILL);
            pthread_mutex_unlock(&s->lock);
            break;
        }
        pthread_mutex_unlock(&s->lock);
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
}

static void sv_close(sv_state_t *s) {
    pthread_mutex_lock(&s->lock);
    while (s->n_dets) {
        tide_detector_t *d = s->dets[0];
        close_status(s, d);
        remove_detector(s, d);
    }
    free(s->dets);
    s->dets = NULL;
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < s->n_subwatch; i++) free(s->subwatch[i].path);
    if (s->inotify >= 0) close(s->inotify);
    if (s->config_fd >= 0) close(s->config_fd);
    free(s->sources_root);
}

int tide_supervisor_run(const tide_config_t *c, const char *dir, const char *bootstraps,
                        tide_devbroker_t *dev, volatile sig_atomic_t *stop) {
    sv_state_t st = {0}, *s = &st;
    pthread_mutex_init(&s->lock, NULL);
    s->config = c;
    s->dir = dir;
    s->bootstraps = bootstraps;
    s->stop = stop;
    s->started_ms = tide_wall_ms();
    s->dev = dev;
    s->inotify = s->config_fd = -1;
    tide_log_set_detector(NULL);
    int rc = sv_open(s, c, dir);
    char *err = NULL;
    tide_admin_t *admin = rc ? NULL
                             : tide_admin_start(tide_config_str(c, TIDE_CFG_ADMIN_ADDRESS),
                                                (int)tide_config_int(c, TIDE_CFG_ADMIN_PORT),
                                                on_admin_fill, s, &err);
    if (!rc && !admin) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "admin server: %s", err);
        free(err);
        rc = 2;
    }
    if (rc) {
        sv_close(s);
        return rc;
    }
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE,
             "admin server listening on http://%s:%d/ (status page, /metrics, /api/detectors)",
             tide_config_str(c, TIDE_CFG_ADMIN_ADDRESS), tide_admin_port(admin));
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "watching %s for detectors", dir);
    start_queries(s, admin);

    pthread_mutex_lock(&s->lock);
    scan(s);
    for (int i = 0; i < s->n_dets; i++) s->dets[i]->change_seen_at = 1; /* at once */
    pthread_mutex_unlock(&s->lock);
    while (!*stop) {
        struct pollfd pfd = {s->inotify, POLLIN, 0};
        poll(&pfd, 1, 50);
        pthread_mutex_lock(&s->lock);
        sv_pass(s, pfd.revents & POLLIN);
        pthread_mutex_unlock(&s->lock);
    }
    sv_stop_workers(s);
    tide_router_stop(s->router); /* every query waiting is answered */
    s->router = NULL;
    tide_admin_stop(admin);
    sv_close(s);
    tide_directory_stop(s->directory); /* this instance's records withdrawn */
    pthread_mutex_destroy(&s->lock);
    return 0;
}
