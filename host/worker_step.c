/*
 * worker_step.c: what a step of a worker means (worker_int.h): the one
 * place its end is decided, the state it logs (as Kafka Streams names its
 * own), and the sink handed to the producer, with what a send or a commit
 * step means for the loop (a rollback, a topic missing, an end).
 *
 * Calls nothing else of the worker: the loop, the rebalances, the jobs and
 * the hot swap are built on it.
 */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "worker_int.h"

/* The one place a worker's end is decided: the first reason wins. */
void tide_worker_end(tide_worker_t *w, tide_worker_exit_t why) {
    if (w->end == TIDE_WORKER_RUNNING) w->end = why;
}

void tide_worker_end_for(tide_worker_t *w, tide_step_t s) {
    switch (s) {
    case TIDE_STEP_OK: break;
    case TIDE_STEP_STOPPED: tide_worker_end(w, TIDE_WORKER_STOPPED_ON_ERROR); break;
    case TIDE_STEP_RENAMED: tide_worker_end(w, TIDE_WORKER_RENAMED); break;
    case TIDE_STEP_FENCED: tide_worker_end(w, TIDE_WORKER_FENCED); break;
    case TIDE_STEP_FAILED: tide_worker_end(w, TIDE_WORKER_FAILED); break;
    case TIDE_STEP_STOPPED_EARLY: tide_worker_end(w, TIDE_WORKER_DONE); break;
    }
}

/* ---------------------------------------------------------------- states */

static const char *const state_names[] = {
    "CREATED", "REBALANCING", "RUNNING", "PENDING_SHUTDOWN", "NOT_RUNNING", "PENDING_ERROR",
    "ERROR",
};

void tide_worker_set_state(tide_worker_t *w, tide_app_state_t to) {
    if (w->state == to) return;
    char msg[128], from_s[32], to_s[32];
    const char *a = state_names[w->state], *b = state_names[to];
    snprintf(msg, sizeof(msg), "State transition from %s to %s", a, b);
    tide_json_str(from_s, sizeof(from_s), a, strlen(a));
    tide_json_str(to_s, sizeof(to_s), b, strlen(b));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, msg, "old_state", from_s, "new_state", to_s,
               (char *)NULL);
    w->state = to;
}

/* The assignment changes: RUNNING (or CREATED) until every task is back. */
void tide_worker_begin_rebalance(tide_worker_t *w) {
    if (w->state == STATE_CREATED || w->state == STATE_RUNNING)
        tide_worker_set_state(w, STATE_REBALANCING);
}

/* After an assignment or a restore step: once every task is restored, run. */
void tide_worker_settle(tide_worker_t *w) {
    if (tide_tasks_settled(w->tasks) && w->state == STATE_REBALANCING)
        tide_worker_set_state(w, STATE_RUNNING);
}

/* ---------------------------------------------------------------- producing */

/* Hand the sink to the producer, waiting at most block_ms for a free arena
 * (its thread produces the last ones meanwhile). The batch's records go
 * with it: the producer releases them once its entries are produced. On a
 * failure nothing was taken: the sink is dropped (a rollback follows) and
 * the records released here. */
tide_flush_t tide_worker_send_sink(tide_worker_t *w, int block_ms) {
    tide_sink_t *s = tide_runtime_sink(w->rt);
    tide_flush_t r = tide_producer_send(w->producer, s, w->batch, &w->sent, block_ms,
                                        tide_records_messages(w->records, w->held), w->held);
    w->sending = r == TIDE_FLUSH_PENDING;
    if (w->sending) return r;
    tide_sink_clear(s);
    w->sent = 0;
    w->batch = NULL;
    if (r != TIDE_FLUSH_DONE) tide_records_release(w->records, w->held);
    else tide_records_release(w->records, 0); /* the producer has them */
    w->held = 0;
    return r;
}

/* The outcome of a send or a commit step, for the loop. */
tide_step_t tide_worker_after(tide_worker_t *w, tide_progress_t p) {
    switch (p) {
    case TIDE_PROGRESS_FATAL: return w->eos ? TIDE_STEP_FENCED : TIDE_STEP_FAILED;
    case TIDE_PROGRESS_ROLLED_BACK: {
        const char *missing = tide_producer_missing_topic(w->producer);
        if (missing && !w->missing[0]) {
            snprintf(w->missing, sizeof(w->missing), "%s", missing);
            tide_log(TIDE_LOG_ERROR, (tide_log_at_t){missing, -1, -1},
                     "output topic %s does not exist: holding the inputs of detector %s until "
                     "it does (create it, or set output.topics.create=true)",
                     missing, w->info->name);
            tide_group_pause_all(w->group, TIDE_PAUSE_HOLD, 1);
        }
        return TIDE_STEP_OK;
    }
    default: return TIDE_STEP_OK;
    }
}

/* A send that failed at once rolls back through the committer. */
tide_step_t tide_worker_sent_or_roll_back(tide_worker_t *w, tide_flush_t r) {
    if (r == TIDE_FLUSH_FATAL) return w->eos ? TIDE_STEP_FENCED : TIDE_STEP_FAILED;
    if (r != TIDE_FLUSH_FAILED) return TIDE_STEP_OK;
    tide_committer_request(w->committer, "failed send");
    return tide_worker_after(w, tide_committer_step(w->committer, 100));
}

/* Send what the sink holds, however long the queue makes us wait (up to
 * the shutdown timeout): a revoke or a shutdown commits after it. */
tide_flush_t tide_worker_drain(tide_worker_t *w) {
    tide_flush_t r = TIDE_FLUSH_DONE;
    int64_t deadline = tide_mono_ms() + w->shutdown_timeout_ms;
    while (w->sending && (r = tide_worker_send_sink(w, 100)) == TIDE_FLUSH_PENDING &&
           tide_mono_ms() < deadline) {
    }
    return r;
}
