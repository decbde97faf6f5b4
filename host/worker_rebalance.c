/*
 * worker_rebalance.c: the worker as the go-between on rebalances
 * (worker_int.h). The group tells it of partitions assigned and revoked;
 * it starts and stops the tasks, pauses inputs while their stores restore,
 * and commits before partitions go. So the group and the tasks never call
 * each other.
 *
 * Never commits partitions that are lost: they belong to another member.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "log.h"
#include "worker_int.h"

/* Each commit carries its partition's stream time (STREAM_TIME_META). */
static size_t stream_time_meta(void *ud, int32_t partition, char *buf, size_t cap) {
    tide_worker_t *w = ud;
    int64_t st = tide_runtime_stream_time(w->rt, partition);
    int n = st >= 0 ? snprintf(buf, cap, STREAM_TIME_META "%lld", (long long)st) : 0;
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static void on_task_ready(void *ud, int32_t partition, int64_t stream_time) {
    tide_worker_t *w = ud;
    tide_runtime_task(w->rt, partition, 1, stream_time);
    tide_group_pause(w->group, partition, TIDE_PAUSE_RESTORE, 0);
}

/* New partitions: a task per new partition number, restoring its stores
 * first (its input paused meanwhile). Called once per rebalance round, even
 * with nothing new. */
static void on_assigned(void *ud, const rd_kafka_topic_partition_list_t *parts) {
    tide_worker_t *w = ud;
    int before = tide_tasks_count(w->tasks);
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (!tide_tasks_has(w->tasks, p)) tide_worker_begin_rebalance(w);
        int64_t st = tide_group_committed_number(w->group, p, STREAM_TIME_META);
        tide_standby_promote(w->standby, p); /* its restore reads only the tail */
        tide_task_start_t r = tide_tasks_start(w->tasks, p, st);
        if (r == TIDE_TASK_RESTORING) tide_group_pause(w->group, p, TIDE_PAUSE_RESTORE, 1);
        if (r == TIDE_TASK_FAILED) tide_worker_end(w, TIDE_WORKER_FAILED);
    }
    if (w->missing[0]) tide_group_pause_all(w->group, TIDE_PAUSE_HOLD, 1);
    if (!w->last_record_ms) w->last_record_ms = tide_mono_ms();
    char desc[2048], field[2100];
    tide_group_describe(parts, desc, sizeof(desc));
    tide_json_str(field, sizeof(field), desc, strlen(desc));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "partitions assigned", "partitions", field,
               (char *)NULL);
    tide_tasks_log_assignment(w->tasks, tide_tasks_count(w->tasks) - before, NULL, 0);
    tide_worker_settle(w);
}

/* Partitions about to be taken away: commit (unless lost: they belong to
 * someone else already, and the new owner reprocesses from the last
 * commit; a transaction with their outputs must then be aborted). */
static void on_revoking(void *ud, const rd_kafka_topic_partition_list_t *parts, int lost) {
    tide_worker_t *w = ud;
    tide_worker_begin_rebalance(w);
    if (lost && !w->eos) return; /* their tasks' uncommitted writes go with them */
    tide_flush_t d = tide_worker_drain(w);
    tide_progress_t p = lost || d != TIDE_FLUSH_DONE
                            ? tide_committer_abandon(w->committer, parts)
                            : tide_committer_finish(w->committer, "revoke", parts);
    tide_worker_end_for(w, tide_worker_after(w, p));
}

/* Partitions given up: stop the tasks no input topic holds any more. */
static void on_revoked(void *ud, const rd_kafka_topic_partition_list_t *parts, int lost) {
    tide_worker_t *w = ud;
    int32_t *revoked = calloc((size_t)parts->cnt + 1, sizeof(*revoked));
    int n_revoked = 0;
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (tide_offsets_holds(tide_group_offsets(w->group), p) || !tide_tasks_has(w->tasks, p))
            continue;
        if (tide_tasks_stop(w->tasks, p)) tide_runtime_task(w->rt, p, 0, -1);
        if (revoked) revoked[n_revoked++] = p;
    }
    char desc[2048], field[2100];
    tide_group_describe(parts, desc, sizeof(desc));
    tide_json_str(field, sizeof(field), desc, strlen(desc));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, lost ? "partitions lost" : "partitions revoked",
               "partitions", field, (char *)NULL);
    tide_tasks_log_assignment(w->tasks, 0, revoked, n_revoked);
    free(revoked);
}

/* The worker's hooks into the group: its rebalances, and the stream time
 * that rides with each commit. */
void tide_worker_group_hooks(tide_worker_t *w, tide_group_opts_t *go) {
    go->cb = (tide_group_cb_t){.on_assigned = on_assigned, .on_revoking = on_revoking,
                               .on_revoked = on_revoked, .ud = w};
    go->meta = stream_time_meta;
    go->meta_ud = w;
}

static void on_restore_memory(void *ud, int store, int32_t partition, const char *key, size_t klen,
                              const char *val, size_t vlen) {
    tide_runtime_restore(((tide_worker_t *)ud)->rt, store, partition, key, klen, val, vlen);
}

static int64_t on_acked(void *ud, int store, int32_t partition) {
    return tide_producer_changelog_offset(((tide_worker_t *)ud)->producer, store, partition);
}

/* The worker's hooks into the tasks: a task restored runs; an in-memory
 * store restores into the runtime. */
tide_tasks_cb_t tide_worker_tasks_hooks(tide_worker_t *w) {
    return (tide_tasks_cb_t){.on_ready = on_task_ready, .restore_memory = on_restore_memory,
                             .acked = on_acked, .ud = w};
}

