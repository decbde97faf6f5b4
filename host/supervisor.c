/*
 * supervisor.c: `tide run DIR` (see supervisor.h).
 *
 * Owns the detector table, the inotify watch on the folder, the worker
 * processes and their shared status blocks. One loop: wait for a folder
 * event, a child's exit or a 100 ms tick; then act on changes whose burst has
 * settled (start, hot swap, stop), reap workers (restart with backoff,
 * quarantine, mark a poison record), run the watchdog, and sample CPU and RSS.
 * It never runs Lua and never talks to Kafka: workers do.
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
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "devbroker.h"
#include "http.h"
#include "log.h"
#include "worker.h"

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

void tide_supervisor_lock(void) { pthread_mutex_lock(&table_lock); }
void tide_supervisor_unlock(void) { pthread_mutex_unlock(&table_lock); }

const char *tide_det_state_name(tide_det_state_t s) {
    static const char *const names[] = {"starting",    "running", "reloading", "restarting",
                                        "quarantined", "failed",  "stopping"};
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

void tide_detector_totals(const tide_detector_t *d, tide_det_totals_t *out) {
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
}

/* What the loop keeps beside the public table. */
typedef struct sv_state {
    tide_supervisor_t sv;
    int inotify;
    int dir_wd;
    int config_fd; /* the effective configuration, as a properties file */
    tide_devbroker_t *dev;
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

/* Per-detector bookkeeping the table does not show. */
typedef struct det_extra {
    int removed;                          /* stop and forget once it exits */
    int watchdog_killed;                  /* the last kill was the watchdog's */
    int was_running;
    int64_t crash_times[64];
    int n_crash;
} det_extra_t;

static det_extra_t *extra_of(tide_detector_t *d) {
    /* The extra lives right after the detector in one allocation. */
    return (det_extra_t *)(d + 1);
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
    for (int i = 0; i < s->sv.n_dets; i++)
        if (!strcmp(s->sv.dets[i]->path, path)) return s->sv.dets[i];
    return NULL;
}

static tide_detector_t *find_pid(sv_state_t *s, pid_t pid) {
    for (int i = 0; i < s->sv.n_dets; i++)
        if (s->sv.dets[i]->pid == pid) return s->sv.dets[i];
    return NULL;
}

static tide_detector_t *add_detector(sv_state_t *s, const char *path) {
    tide_detector_t *d = calloc(1, sizeof(*d) + sizeof(det_extra_t));
    tide_detector_t **nd = realloc(s->sv.dets, (size_t)(s->sv.n_dets + 1) * sizeof(*nd));
    if (!d || !nd) {
        free(d);
        return NULL;
    }
    s->sv.dets = nd;
    d->path = strdup(path);
    d->status_fd = -1;
    d->backoff_ms = 500;
    const char *base = strrchr(path, '/');
    snprintf(d->name, sizeof(d->name), "%s", base ? base + 1 : path);
    char *dot = strrchr(d->name, '.');
    if (dot && !strcmp(dot, ".lua")) *dot = '\0';
    d->state = TIDE_DS_STARTING;
    s->sv.dets[s->sv.n_dets++] = d;
    return d;
}

static void remove_detector(sv_state_t *s, tide_detector_t *d) {
    for (int i = 0; i < s->sv.n_dets; i++)
        if (s->sv.dets[i] == d) {
            s->sv.dets[i] = s->sv.dets[--s->sv.n_dets];
            break;
        }
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "detector %s removed", d->name);
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
    DIR *dir = opendir(s->sv.dir);
    if (!dir) return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof(path), "%s/%s", s->sv.dir, e->d_name);
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
                snprintf(path, sizeof(path), "%s/%s", s->sv.dir, ev->name);
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

static void close_status(tide_detector_t *d) {
    if (d->st) {
        tide_detector_totals(d, &d->base);
        tide_status_unmap(d->st);
        d->st = NULL;
    }
    if (d->status_fd >= 0) close(d->status_fd);
    d->status_fd = -1;
}

static int spawn(sv_state_t *s, tide_detector_t *d) {
    det_extra_t *x = extra_of(d);
    int sfd;
    tide_status_block_t *st = tide_status_create(&sfd);
    if (!st) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "cannot create a status block: %s", strerror(errno));
        return -1;
    }
    char sfd_s[16], cfg[64];
    snprintf(sfd_s, sizeof(sfd_s), "%d", sfd);
    snprintf(cfg, sizeof(cfg), "/proc/self/fd/%d", s->config_fd);
    const char *argv[16 + 2 * TIDE_STATUS_TOPICS];
    int a = 0;
    argv[a++] = "tide";
    argv[a++] = "worker";
    argv[a++] = d->path;
    argv[a++] = "-c";
    argv[a++] = cfg;
    argv[a++] = "-b";
    argv[a++] = s->sv.bootstraps;
    argv[a++] = "--status-fd";
    argv[a++] = sfd_s;
    if (s->dev) argv[a++] = "--await-topics";
    for (int i = 0; i < d->n_poison; i++)
        if (d->poison_hits[i] >= s->poison_kills) {
            argv[a++] = "--skip";
            argv[a++] = d->poison[i];
        }
    argv[a] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        tide_status_unmap(st);
        close(sfd);
        return -1;
    }
    if (pid == 0) {
        /* The two fds the worker needs survive exec; nothing else does. */
        fcntl(sfd, F_SETFD, 0);
        fcntl(s->config_fd, F_SETFD, 0);
        execv("/proc/self/exe", (char *const *)argv);
        _exit(127);
    }
    d->pid = pid;
    d->st = st;
    d->status_fd = sfd;
    d->started_ms = tide_wall_ms();
    d->state = TIDE_DS_STARTING;
    d->cpu_seconds = 0;
    d->rss_bytes = 0;
    d->seen_reloads = d->seen_failures = 0;
    x->watchdog_killed = 0;
    x->was_running = 0;
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

/* A live worker's reload results since the last look, into the history. */
static void follow_reloads(tide_detector_t *d) {
    const tide_status_block_t *st = d->st;
    if (st->reloads != d->seen_reloads) {
        d->seen_reloads = st->reloads;
        add_reload_event(d, 1, st->last_reload_version, "");
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "detector %s hot-swapped to version %s", d->name,
                 st->last_reload_version);
    }
    if (st->reload_failures != d->seen_failures) {
        d->seen_failures = st->reload_failures;
        add_reload_event(d, 0, "", st->last_reload_error);
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "detector %s: reload refused, old version runs on: %s",
                 d->name, st->last_reload_error);
    }
}

/* Follow a live worker's status: running, reload results. */
static void follow(sv_state_t *s, tide_detector_t *d) {
    tide_status_block_t *st = d->st;
    det_extra_t *x = extra_of(d);
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
    follow_reloads(d);
    if (d->state == TIDE_DS_STOPPING) return;
    if (st->state == TIDE_WS_RUNNING) {
        if (d->state != TIDE_DS_RUNNING) {
            d->state = TIDE_DS_RUNNING;
            d->problem[0] = '\0';
        }
        x->was_running = 1;
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

static void on_exit_status(sv_state_t *s, tide_detector_t *d, int status) {
    det_extra_t *x = extra_of(d);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    if (sig)
        snprintf(d->last_exit, sizeof(d->last_exit), "killed by signal %d%s", sig,
                 x->watchdog_killed ? " (watchdog: batch over its time budget)" : "");
    else
        snprintf(d->last_exit, sizeof(d->last_exit), "exit code %d", code);
    if (sig || code == TIDE_WORKER_FAILED) blame_record(s, d);
    char load_error[2048] = "";
    if (d->st) {
        snprintf(load_error, sizeof(load_error), "%s", d->st->last_reload_error);
        follow_reloads(d); /* those since the last pass, into the history */
    }
    close_status(d);
    d->pid = 0;
    tide_log(sig || code ? TIDE_LOG_WARN : TIDE_LOG_INFO, TIDE_AT_NONE, "worker of %s ended: %s",
             d->name, d->last_exit);

    if (x->removed || d->state == TIDE_DS_STOPPING) {
        remove_detector(s, d);
        return;
    }
    if (code == TIDE_WORKER_LOAD_FAILED) {
        d->state = TIDE_DS_FAILED;
        snprintf(d->problem, sizeof(d->problem), "%s", load_error);
        add_reload_event(d, 0, "", load_error);
        return;
    }
    if (code == TIDE_WORKER_RENAMED) {
        spawn(s, d); /* a new detector under the new name: its own group */
        return;
    }
    if (code == TIDE_WORKER_STOPPED_ON_ERROR) {
        d->state = TIDE_DS_FAILED;
        snprintf(d->problem, sizeof(d->problem),
                 "stopped on a failed record (on_error = \"stop\"); fix the detector or the "
                 "record, then save the file to start it again");
        return;
    }
    /* A crash, a hang, or an unexpected exit: restart with backoff, unless
     * it keeps happening. */
    d->restarts++;
    int64_t now = tide_mono_ms();
    if (x->n_crash == 64) {
        memmove(x->crash_times, x->crash_times + 1, sizeof(x->crash_times[0]) * 63);
        x->n_crash--;
    }
    x->crash_times[x->n_crash++] = now;
    int recent = 0;
    for (int i = 0; i < x->n_crash; i++)
        if (now - x->crash_times[i] <= 5 * 60 * 1000) recent++;
    if (recent >= s->quarantine_crashes) {
        d->state = TIDE_DS_QUARANTINED;
        snprintf(d->problem, sizeof(d->problem),
                 "quarantined after %d crashes in 5 minutes (last: %s); save the file to "
                 "start it again",
                 recent, d->last_exit);
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "detector %s quarantined: %s", d->name, d->problem);
        return;
    }
    if (x->was_running) d->backoff_ms = 500; /* it ran: start the backoff over */
    d->state = TIDE_DS_RESTARTING;
    d->next_restart_at = now + d->backoff_ms;
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "restarting %s in %lld ms", d->name,
             (long long)d->backoff_ms);
    d->backoff_ms = d->backoff_ms * 2 > s->backoff_max_ms ? s->backoff_max_ms : d->backoff_ms * 2;
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
    for (int i = 0; i < s->sv.n_dets; i++) {
        tide_detector_t *d = s->sv.dets[i];
        if (!d->change_seen_at || now - d->change_seen_at < s->debounce_ms) continue;
        d->change_seen_at = 0;
        if (!exists(d->path)) {
            if (d->pid) {
                tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "%s removed: stopping its worker", d->path);
                extra_of(d)->removed = 1;
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
            d->state = TIDE_DS_RELOADING;
            kill(d->pid, SIGHUP);
        } else if (!d->pid) {
            /* New, failed, quarantined or restarting: a saved file is a
             * fresh start. */
            extra_of(d)->n_crash = 0;
            d->backoff_ms = 500;
            d->n_poison = 0;
            spawn(s, d);
        }
    }
}

static void restart_due(sv_state_t *s, int64_t now) {
    for (int i = 0; i < s->sv.n_dets; i++) {
        tide_detector_t *d = s->sv.dets[i];
        if (d->state == TIDE_DS_RESTARTING && !d->pid && now >= d->next_restart_at) spawn(s, d);
    }
}

/* Kill a worker whose batch has run past its budget: an infinite loop in
 * compiled code or a pathological pattern cannot be stopped from inside. */
static void watchdog(sv_state_t *s, int64_t now) {
    for (int i = 0; i < s->sv.n_dets; i++) {
        tide_detector_t *d = s->sv.dets[i];
        if (!d->pid || !d->st || extra_of(d)->watchdog_killed) continue;
        int64_t started = d->st->batch_started_ms;
        if (started && now - started > s->batch_timeout_ms) {
            tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE,
                     "detector %s: batch running for %lld ms (budget %lld): killing worker %d",
                     d->name, (long long)(now - started), (long long)s->batch_timeout_ms,
                     (int)d->pid);
            extra_of(d)->watchdog_killed = 1;
            d->watchdog_kills++;
            kill(d->pid, SIGKILL);
        }
    }
}

/* CPU seconds and RSS of each worker, from /proc. */
static void sample(sv_state_t *s) {
    for (int i = 0; i < s->sv.n_dets; i++) {
        tide_detector_t *d = s->sv.dets[i];
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

int tide_supervisor_run(const tide_config_t *c, const char *dir, const char *bootstraps,
                        tide_devbroker_t *dev, volatile sig_atomic_t *stop) {
    sv_state_t st = {0}, *s = &st;
    s->sv.config = c;
    s->sv.dir = dir;
    s->sv.bootstraps = bootstraps;
    s->sv.stop = stop;
    s->sv.started_ms = tide_wall_ms();
    s->dev = dev;
    s->debounce_ms = tide_config_int(c, TIDE_CFG_RELOAD_DEBOUNCE_MS);
    s->batch_timeout_ms = tide_config_int(c, TIDE_CFG_DETECTOR_BATCH_TIMEOUT_MS);
    s->backoff_max_ms = tide_config_int(c, TIDE_CFG_DETECTOR_RESTART_BACKOFF_MAX_MS);
    s->poison_kills = (int)tide_config_int(c, TIDE_CFG_DETECTOR_POISON_KILLS);
    s->quarantine_crashes = (int)tide_config_int(c, TIDE_CFG_DETECTOR_QUARANTINE_CRASHES);
    s->clk_tck = sysconf(_SC_CLK_TCK);
    s->page_size = sysconf(_SC_PAGESIZE);
    tide_log_set_detector(NULL);

    s->config_fd = make_config_fd(c, bootstraps);
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
    char *err = NULL;
    tide_http_t *http = tide_http_start(tide_config_str(c, TIDE_CFG_ADMIN_ADDRESS),
                                        (int)tide_config_int(c, TIDE_CFG_ADMIN_PORT), &s->sv, &err);
    if (!http) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "admin server: %s", err);
        free(err);
        return 2;
    }
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE,
             "admin server listening on http://%s:%d/ (status page, /metrics, /api/detectors)",
             tide_config_str(c, TIDE_CFG_ADMIN_ADDRESS), tide_http_port(http));
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "watching %s for detectors", dir);

    tide_supervisor_lock();
    scan(s);
    for (int i = 0; i < s->sv.n_dets; i++) s->sv.dets[i]->change_seen_at = 1; /* at once */
    tide_supervisor_unlock();

    while (!*stop) {
        struct pollfd pfd = {s->inotify, POLLIN, 0};
        poll(&pfd, 1, 50);
        int64_t now = tide_mono_ms();
        tide_supervisor_lock();
        if (pfd.revents & POLLIN) on_folder_events(s);
        reap(s);
        for (int i = 0; i < s->sv.n_dets; i++) follow(s, s->sv.dets[i]);
        settle(s, now);
        restart_due(s, now);
        watchdog(s, now);
        if (now >= s->next_sample_ms) {
            sample(s);
            s->next_sample_ms = now + 1000;
        }
        int ready = 1;
        for (int i = 0; i < s->sv.n_dets; i++)
            if (!extra_of(s->sv.dets[i])->was_running &&
                s->sv.dets[i]->state != TIDE_DS_FAILED)
                ready = 0;
        s->sv.ready = ready;
        tide_supervisor_unlock();
    }

    /* Shutdown: every worker commits and leaves its group. */
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "stopping %d detector(s)", s->sv.n_dets);
    tide_supervisor_lock();
    for (int i = 0; i < s->sv.n_dets; i++)
        if (s->sv.dets[i]->pid) {
            s->sv.dets[i]->state = TIDE_DS_STOPPING;
            kill(s->sv.dets[i]->pid, SIGTERM);
        }
    tide_supervisor_unlock();
    int64_t deadline = tide_mono_ms() + tide_config_int(c, TIDE_CFG_SHUTDOWN_TIMEOUT_MS) + 5000;
    for (;;) {
        tide_supervisor_lock();
        reap(s);
        int alive = 0;
        for (int i = 0; i < s->sv.n_dets; i++)
            if (s->sv.dets[i]->pid) alive++;
        if (!alive || tide_mono_ms() > deadline) {
            for (int i = 0; i < s->sv.n_dets; i++)
                if (s->sv.dets[i]->pid) kill(s->sv.dets[i]->pid, SIGKILL);
            tide_supervisor_unlock();
            break;
        }
        tide_supervisor_unlock();
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    tide_http_stop(http);
    tide_supervisor_lock();
    while (s->sv.n_dets) {
        tide_detector_t *d = s->sv.dets[0];
        close_status(d);
        remove_detector(s, d);
    }
    free(s->sv.dets);
    s->sv.dets = NULL;
    tide_supervisor_unlock();
    for (int i = 0; i < s->n_subwatch; i++) free(s->subwatch[i].path);
    close(s->inotify);
    close(s->config_fd);
    (void)dev;
    return 0;
}
