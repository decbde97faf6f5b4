/*
 * worker.c: the record loop of one detector (see worker.h).
 *
 * Composes the parts: the runtime (the detector's Lua), the group (consumer,
 * assignment, offsets, record-time order), the tasks (stores, restores,
 * checkpoints), the producer, the committer (commits and rollbacks, under
 * either guarantee) and the status block. Its loop fetches, hands the next
 * batch to the runtime in one call, produces what the detector emitted and
 * runs the periodic jobs. It is the go-between on rebalances, so the group
 * and the tasks never call each other.
 *
 * Never commits ahead of what is durable (the committer's rules); never
 * calls into Lua except through the runtime; never ends because the broker
 * is slow or away. A worker ends for one reason, set in one place
 * (tide_worker_end, in worker_step.c). How it starts, its periodic jobs,
 * its rebalances and its hot swap are in files of their own (worker_int.h).
 */
#include "worker_int.h"

#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "log.h"

/* ---------------------------------------------------------------- batches */

/* Records that must not run: those the supervisor quarantined (they killed
 * workers), and those whose outputs Kafka refused (when they come again
 * after the rollback). */
static int unrun(void *ud, const char *topic, int32_t partition, int64_t offset, const char **cls,
                 const char **message) {
    tide_worker_t *w = ud;
    for (int i = 0; i < w->o->n_skip; i++) {
        char key[320];
        snprintf(key, sizeof(key), "%s:%d:%lld", topic, (int)partition, (long long)offset);
        if (strcmp(w->o->skip[i], key)) continue;
        *cls = "PoisonPill";
        *message = "the record killed or hung the detector's worker repeatedly and was "
                   "quarantined without running it again";
        return 1;
    }
    if (tide_committer_blame(w->committer, topic, partition, offset, message) != TIDE_BLAME_GUILTY)
        return 0;
    *cls = "ProductionError";
    return 1;
}

/* After a rollback, the records to blame are dealt with one at a time: a
 * record whose outputs shared a refused batch runs alone, with a commit
 * before and after it, so that a refusal names it or clears it; one that is
 * dead-lettered is committed before anything after it runs (a later
 * rollback then cannot send it twice). Returns how many of in[0..n) to
 * process now; the rest go back to their buffers. */
static int isolate(tide_worker_t *w, tide_buffered_t *in, int n) {
    int k = 0;
    tide_blame_t b = TIDE_BLAME_NONE;
    const char *why;
    for (; k < n && b == TIDE_BLAME_NONE; k++)
        b = tide_committer_blame(w->committer, rd_kafka_topic_name(in[k].m->rkt), in[k].m->partition,
                                 in[k].offset, &why);
    if (b == TIDE_BLAME_NONE) return n;
    k--; /* in[k] is the blamed record: it goes alone, between two commits */
    int keep = k > 0 ? k : tide_committer_dirty(w->committer) ? 0 : 1;
    tide_group_unshift(w->group, in + keep, n - keep);
    tide_committer_request(w->committer, b == TIDE_BLAME_GUILTY ? "after a dead letter"
                                                                : "trying a record alone");
    return keep;
}

/* Dispatch the batch laid out in the status block; returns the records
 * done (all, or those before one that stopped the detector or that must
 * wait, *st says which). */
static int dispatch(tide_worker_t *w, tide_batch_t *b, tide_status_t *st) {
    int64_t t = tide_mono_ms();
    if (!w->first_record_ms) w->first_record_ms = t;
    w->last_record_ms = t;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    tide_status_batch_begin(w->st, t);
    tide_status_t s = tide_runtime_dispatch(w->rt, b, tide_wall_ms(), tide_records_on_failure,
                                            w->records);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    tide_status_batch_end(w->st, (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    *st = s;
    return s == TIDE_STOPPED || s == TIDE_RETRY ? b->cursor : b->n;
}

/* The records from `done` on must wait (TIDE_RETRY: the schema registry is
 * unreachable): they go back to their buffers, so nothing past them is
 * committed, the lag shows the wait, and the next try comes a little later. */
static void retry_later(tide_worker_t *w, int done, int n) {
    tide_group_unshift(w->group, tide_records_in(w->records) + done, n - done);
    w->held = done;
    w->wait_until_ms = tide_mono_ms() + 100;
}

/* The next batch: take it in record-time order, run it, produce it. */
static tide_step_t process_batch(tide_worker_t *w) {
    tide_buffered_t *in = tide_records_in(w->records);
    int n = tide_group_take(w->group, in, w->max_batch);
    if (n) n = isolate(w, in, n);
    if (!n) return TIDE_STEP_OK;
    w->held = n;
    w->trimmed = 0;
    tide_batch_t *b = tide_records_lay_out(w->records, n, tide_group_offsets(w->group), w->rt);
    tide_status_t how = TIDE_OK;
    int done = b->n ? dispatch(w, b, &how) : 0;
    w->batch = b;
    if (how == TIDE_RETRY) retry_later(w, tide_records_taken_index(w->records, done), n);
    tide_records_processed(w->records, done);
    w->records_in += (uint64_t)done;
    w->batches += b->n > 0;
    tide_step_t s = tide_worker_sent_or_roll_back(w, tide_worker_send_sink(w, 100));
    if (s != TIDE_STEP_OK || done == b->n || how == TIDE_RETRY) return s;
    const tide_rec_t *r = &b->recs[done];
    tide_log(TIDE_LOG_ERROR, (tide_log_at_t){r->topic, r->partition, r->offset},
             "detector stopped on a failed record (on_error = \"stop\"); "
             "offsets are committed up to the record before it");
    return TIDE_STEP_STOPPED;
}

/* ---------------------------------------------------------------- the loop */

/* Fetch, waiting only when there is nothing to do: nothing buffered, or
 * only what must wait for a partition that has nothing yet (spinning then
 * would take the core the fetch needs). */
static void fetch(tide_worker_t *w, int restoring) {
    int idle = !restoring && !w->sending && !tide_committer_busy(w->committer) &&
               (!tide_offsets_buffered(tide_group_offsets(w->group)) || tide_group_starved(w->group));
    tide_group_fill(w->group, idle ? 100 : 0);
}

/* One pass of the loop: a restore step, a fetch, then one of: the sink
 * still being produced, the commit under way, a reload, or the next batch;
 * then the jobs. Returns what ends the worker, or TIDE_STEP_OK. */
static tide_step_t pass(tide_worker_t *w) {
    if (w->o->reload && *w->o->reload) {
        *w->o->reload = 0;
        w->reload_wanted = 1;
    }
    int restoring = tide_tasks_restoring(w->tasks);
    if (restoring) {
        if (tide_tasks_poll(w->tasks, 10)) return TIDE_STEP_FAILED;
        w->last_record_ms = tide_mono_ms(); /* restoring is not idle */
        tide_worker_settle(w);
    }
    char *err = NULL;
    if (w->globals && tide_globals_poll(w->globals, &err) != TIDE_GLOBAL_OK) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "global tables: %s", err ? err : "failed");
        free(err);
        return TIDE_STEP_FAILED;
    }
    fetch(w, restoring);
    if (tide_group_fatal(w->group)) return TIDE_STEP_FENCED;
    tide_step_t s = TIDE_STEP_OK;
    if (w->sending) s = tide_worker_sent_or_roll_back(w, tide_worker_send_sink(w, 100));
    else if (tide_committer_busy(w->committer))
        s = tide_worker_after(w, tide_committer_step(w->committer, 100));
    else if (w->reload_wanted) {
        w->reload_wanted = 0;
        s = tide_worker_reload(w);
    } else if (!w->missing[0] && tide_mono_ms() >= w->wait_until_ms) {
        s = process_batch(w);
    }
    tide_producer_poll(w->producer);
    if (s == TIDE_STEP_OK) s = tide_worker_run_jobs(w);
    return s;
}

/* Is the run over as asked (a record count or an idle time reached)? */
static int run_done(const tide_worker_t *w) {
    const tide_worker_opts_t *o = w->o;
    if (o->max_records && w->records_in >= o->max_records) return 1;
    return o->idle_timeout_ms && tide_group_assigned_once(w->group) &&
           tide_mono_ms() - w->last_record_ms >= o->idle_timeout_ms;
}

static void loop(tide_worker_t *w) {
    while (w->end == TIDE_WORKER_RUNNING && !*w->o->stop) {
        tide_worker_end_for(w, pass(w));
        if (run_done(w)) tide_worker_end(w, TIDE_WORKER_DONE);
    }
    tide_worker_end(w, TIDE_WORKER_DONE); /* stopped by a signal */
}

/* ---------------------------------------------------------------- stop */

static void on_shutdown_timeout(int sig) {
    static const char msg[] =
        "{\"level\":\"error\",\"msg\":\"shutdown took too long: exiting without leaving the group\"}\n";
    (void)sig;
    ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    _exit(TIDE_WORKER_FAILED);
}

static void log_stopped(tide_worker_t *w, int64_t end_ms) {
    char in[32], out[32], dlq[32], errs[32], drop[32], el[32], rate[32], rss[32], heap[32];
    int64_t elapsed = w->first_record_ms ? end_ms - w->first_record_ms : 0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    snprintf(in, sizeof(in), "%" PRIu64, w->records_in);
    snprintf(out, sizeof(out), "%" PRIu64, tide_producer_sent(w->producer));
    snprintf(dlq, sizeof(dlq), "%" PRIu64, tide_producer_dead_lettered(w->producer));
    snprintf(errs, sizeof(errs), "%" PRIu64, tide_records_errors(w->records));
    snprintf(drop, sizeof(drop), "%" PRIu64, tide_records_dropped(w->records) + tide_group_dropped(w->group));
    snprintf(el, sizeof(el), "%" PRId64, elapsed);
    snprintf(rate, sizeof(rate), "%.0f", elapsed > 0 ? w->records_in * 1000.0 / elapsed : 0.0);
    snprintf(rss, sizeof(rss), "%ld", ru.ru_maxrss);
    snprintf(heap, sizeof(heap), "%zu", w->rt ? tide_runtime_heap_peak(w->rt) : (size_t)0);
    char late[32], commits[32], rollbacks[32];
    snprintf(late, sizeof(late), "%" PRIu64, tide_runtime_dropped_late(w->rt));
    snprintf(commits, sizeof(commits), "%" PRIu64, tide_committer_commits(w->committer));
    snprintf(rollbacks, sizeof(rollbacks), "%" PRIu64, tide_committer_rollbacks(w->committer));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "stopped", "records_in", in, "records_out", out,
               "dlq", dlq, "errors", errs, "dropped", drop, "dropped_late", late,
               "commits", commits, "rollbacks", rollbacks, "elapsed_ms", el, "rate", rate,
               "max_rss_kb", rss, "lua_heap_peak_bytes", heap, (char *)NULL);
}

/* Did the worker end as asked (not on an error)? */
static int exit_ok(tide_worker_exit_t e) {
    return e == TIDE_WORKER_DONE || e == TIDE_WORKER_RENAMED;
}

/* Shutdown: close(ctx) may still emit; produce that, commit (the
 * transaction ends, committed or aborted: never left open) and leave the
 * group (the revoke that follows finds nothing to commit). A fenced worker
 * commits nothing. Never hang on the way out: a group that does not let go
 * is left to its session timeout. */
static void shut_down(tide_worker_t *w) {
    tide_worker_set_state(w, exit_ok(w->end) ? STATE_PENDING_SHUTDOWN : STATE_PENDING_ERROR);
    w->st->state = TIDE_WS_STOPPING;
    signal(SIGALRM, on_shutdown_timeout);
    alarm((unsigned)(w->shutdown_timeout_ms / 1000) * 2 + 5);
    if (w->end != TIDE_WORKER_FENCED) {
        if (w->end != TIDE_WORKER_FAILED) tide_runtime_stop(w->rt);
        tide_progress_t p = tide_worker_drain(w) == TIDE_FLUSH_DONE && w->end != TIDE_WORKER_FAILED
                                ? tide_committer_finish(w->committer, "shutdown", NULL)
                                : tide_committer_abandon(w->committer, NULL);
        if (p == TIDE_PROGRESS_FATAL) w->end = TIDE_WORKER_FAILED; /* the one revision of an end */
    }
    tide_worker_publish(w);
    log_stopped(w, tide_mono_ms());
    /* A static member leaves only when asked to stop, never on a failure:
     * its restart takes its partitions back (leave.group.on.close). */
    int leave = exit_ok(w->end) &&
                !strcmp(tide_config_str(w->o->config, TIDE_CFG_LEAVE_GROUP_ON_CLOSE), "true");
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "leaving consumer group");
    if (tide_group_close(w->group, leave))
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "left consumer group");
    else
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "closed without leaving the consumer group: a static "
                 "member's partitions wait for it until session.timeout.ms");
}

static void worker_free(tide_worker_t *w) {
    if (w->held) tide_records_release(w->records, w->held);
    tide_committer_free(w->committer);
    /* before the consumer goes: arenas not produced still hold its messages */
    tide_producer_free(w->producer);
    tide_group_free(w->group);
    tide_runtime_close(w->rt);
    tide_globals_free(w->globals);
    tide_tasks_free(w->tasks);
    tide_records_free(w->records);
    tide_query_free(w->queries);
    tide_standby_free(w->standby);
    if (!w->o->status) tide_status_unmap(w->st);
}

tide_worker_exit_t tide_worker_run(const tide_worker_opts_t *o) {
    tide_worker_t wk = {.o = o, .end = TIDE_WORKER_RUNNING}, *w = &wk;
    /* Blocks of 256 KiB and more (a fetch's buffers: up to 10 MB on the
     * development broker) are mapped and unmapped each time. glibc's moving
     * threshold would instead keep them in the fetching thread's heap, whose
     * free top malloc_trim cannot give back: idle workers kept 17 MB more,
     * for about 1% of the read rate. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    w->st = o->status ? o->status : tide_status_private();
    if (!w->st) return TIDE_WORKER_FAILED;
    w->st->pid = (int32_t)getpid();
    w->st->state = TIDE_WS_STARTING;
    w->eos = tide_config_eos(o->config);
    w->max_batch = (int)tide_config_int(o->config, TIDE_CFG_MAX_POLL_RECORDS);
    w->shutdown_timeout_ms = (int)tide_config_int(o->config, TIDE_CFG_SHUTDOWN_TIMEOUT_MS);
    tide_records_opts_t ro = {.max = w->max_batch, .st = w->st, .unrun = unrun, .ud = w};
    w->records = tide_records_new(&ro);
    if (!w->records) tide_worker_end(w, TIDE_WORKER_FAILED);
    else tide_worker_end(w, tide_worker_open_detector(w));
    if (w->end == TIDE_WORKER_RUNNING) tide_worker_end_for(w, tide_worker_connect(w));
    if (w->group && w->committer) {
        if (o->query_fd > 0) w->queries = tide_query_new(o->query_fd);
        w->st->state = TIDE_WS_RUNNING;
        tide_worker_init_jobs(w);
        loop(w);
        shut_down(w);
    }
    tide_worker_set_state(w, exit_ok(w->end) ? STATE_NOT_RUNNING : STATE_ERROR);
    tide_worker_exit_t end = w->end;
    worker_free(w);
    alarm(0);
    return end;
}

