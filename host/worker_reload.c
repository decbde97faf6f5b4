/*
 * worker_reload.c: the hot swap of a worker's detector (worker_int.h). The
 * new version is compiled and validated in a fresh runtime while the old
 * one runs; the swap happens between two transactions, and only if the new
 * version keeps the same stores.
 *
 * A version that does not validate changes nothing: the running one stays.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "worker_int.h"

/* Do two detector versions declare the same stores? (Store ids are their
 * positions, so the database layout depends on it.) */
static int same_stores(const tide_detector_info_t *a, const tide_detector_info_t *b) {
    if (a->n_stores != b->n_stores) return 0;
    for (int i = 0; i < a->n_stores; i++)
        if (strcmp(a->store_names[i], b->store_names[i]) || a->store_memory[i] != b->store_memory[i] ||
            !a->store_global[i] != !b->store_global[i] ||
            (a->store_global[i] && strcmp(a->store_global[i], b->store_global[i])))
            return 0;
    return 1;
}

static int same_list(char **a, int na, char **b, int nb) {
    if (na != nb) return 0;
    for (int i = 0; i < na; i++)
        if (strcmp(a[i], b[i])) return 0;
    return 1;
}

/* A new version that does not validate changes nothing; say why, where the
 * supervisor and the status page see it. */
static tide_step_t reload_refused(tide_worker_t *w, tide_runtime_t *nrt, const char *why) {
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "reload refused, the running version stays: %s", why);
    tide_status_reload(w->st, NULL, why);
    w->st->state = TIDE_WS_RUNNING;
    tide_runtime_close(nrt);
    return TIDE_STEP_OK;
}

static int64_t old_stream_time(void *ud, int32_t p) {
    return tide_runtime_stream_time(((tide_worker_t *)ud)->rt, p);
}

/* Swap to the validated runtime nrt between two transactions: what the old
 * version did is committed, then its close(ctx) runs and what that emits is
 * committed too; the tasks restart on the new version. */
static tide_step_t swap(tide_worker_t *w, tide_runtime_t *nrt, int topics_changed) {
    tide_step_t s = tide_worker_after(w, tide_committer_finish(w->committer, "swap", NULL));
    tide_runtime_stop(w->rt);
    if (s == TIDE_STEP_OK && tide_worker_drain(w) == TIDE_FLUSH_DONE)
        s = tide_worker_after(w, tide_committer_finish(w->committer, "swap", NULL));
    tide_sink_clear(tide_runtime_sink(w->rt));
    tide_tasks_restart(w->tasks, old_stream_time, w); /* reads the old runtime's times */
    tide_runtime_close(w->rt);
    w->rt = nrt;
    w->info = tide_runtime_info(nrt);
    tide_tasks_set_info(w->tasks, w->info);
    if (topics_changed) tide_worker_ensure_topics(w);
    tide_producer_set_outputs(w->producer, w->info->outputs, w->info->n_outputs);
    return s;
}

/* Hot swap at a batch boundary, between transactions: compile and validate
 * the file in a fresh runtime while the old one stays; swap only if it is
 * sound. Offsets, group membership and the producer stay. */
tide_step_t tide_worker_reload(tide_worker_t *w) {
    w->st->state = TIDE_WS_RELOADING;
    char *err = NULL;
    tide_runtime_t *nrt = tide_worker_open_runtime(w, &err);
    if (!nrt) {
        tide_step_t s = reload_refused(w, NULL, err);
        free(err);
        return s;
    }
    const tide_detector_info_t *ni = tide_runtime_info(nrt);
    if (!same_stores(ni, w->info)) {
        char msg[4400];
        snprintf(msg, sizeof(msg), "%s: the new version declares different stores; a hot swap "
                 "keeps the same stores (rename the detector to start it anew with new ones)",
                 w->o->path);
        return reload_refused(w, nrt, msg);
    }
    if (strcmp(ni->name, w->info->name)) {
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "the new version renames the detector to %s: "
                 "stopping this one", ni->name);
        tide_runtime_close(nrt);
        return TIDE_STEP_RENAMED;
    }
    int inputs_changed = !same_list(ni->inputs, ni->n_inputs, w->info->inputs, w->info->n_inputs);
    int topics_changed = inputs_changed ||
        !same_list(ni->outputs, ni->n_outputs, w->info->outputs, w->info->n_outputs);
    tide_step_t s = swap(w, nrt, topics_changed);
    char v[64];
    tide_json_str(v, sizeof(v), ni->version, strlen(ni->version));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "detector reloaded", "version", v, (char *)NULL);
    if (s == TIDE_STEP_OK && inputs_changed) {
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "inputs changed: re-subscribing");
        if (tide_worker_subscribe(w)) s = TIDE_STEP_FAILED;
    }
    tide_records_policy(w->records, ni->on_error);
    tide_status_reload(w->st, ni->version, NULL);
    tide_status_detector(w->st, ni->name, ni->version, ni->description);
    tide_status_topology(w->st, ni->topology);
    w->st->state = TIDE_WS_RUNNING;
    return s;
}

