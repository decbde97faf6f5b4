/*
 * status.c: the shared status block of a worker (see status.h).
 *
 * Owns the block's layout and every write a worker makes to it, so that the
 * record path calls one function at each batch boundary and never asks
 * whether a supervisor is watching. Writes only plain values: never a
 * pointer the supervisor would follow.
 */
#include "status.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

const double tide_status_hist_bounds[TIDE_STATUS_HIST - 1] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 10,
};

tide_status_block_t *tide_status_create(int *fd) {
    int f = memfd_create("tide-status", MFD_CLOEXEC);
    if (f < 0) return NULL;
    if (ftruncate(f, sizeof(tide_status_block_t)) != 0) {
        close(f);
        return NULL;
    }
    tide_status_block_t *s = tide_status_map(f);
    if (!s) {
        close(f);
        return NULL;
    }
    memset(s, 0, sizeof(*s));
    s->magic = TIDE_STATUS_MAGIC;
    s->lag = -1;
    *fd = f;
    return s;
}

tide_status_block_t *tide_status_map(int fd) {
    void *p = mmap(NULL, sizeof(tide_status_block_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

void tide_status_unmap(tide_status_block_t *s) {
    if (s) munmap(s, sizeof(*s));
}

int tide_status_bucket(double seconds) {
    int i = 0;
    while (i < TIDE_STATUS_HIST - 1 && seconds > tide_status_hist_bounds[i]) i++;
    return i;
}

tide_status_block_t *tide_status_private(void) {
    void *p = mmap(NULL, sizeof(tide_status_block_t), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    tide_status_block_t *s = p;
    s->magic = TIDE_STATUS_MAGIC;
    s->lag = -1;
    return s;
}

void tide_status_publish(tide_status_block_t *st, const tide_status_sample_t *s) {
    st->records_in = s->records_in;
    st->records_out = s->records_out;
    st->dlq = s->dlq;
    st->errors = s->errors;
    st->dropped = s->dropped;
    st->batches = s->batches;
    st->rollbacks = s->rollbacks;
    st->lua_heap_bytes = s->lua_heap_bytes;
    st->assigned_partitions = s->assigned_partitions;
    st->restoring_tasks = s->restoring_tasks;
    st->restored_records = s->restored_records;
    st->store_memory_bytes = s->store_memory_bytes;
    st->lag = s->lag;
}

/* The index of topic in the block's topic table. */
static uint16_t topic_index(tide_status_block_t *st, const char *topic) {
    int i;
    for (i = 0; i < TIDE_STATUS_TOPICS && st->topics[i][0]; i++)
        if (!strcmp(st->topics[i], topic)) return (uint16_t)i;
    if (i == TIDE_STATUS_TOPICS) return 0;
    snprintf(st->topics[i], sizeof(st->topics[i]), "%s", topic);
    return (uint16_t)i;
}

void tide_status_record(tide_status_block_t *st, int i, const char *topic, int32_t partition,
                        int64_t offset) {
    st->rec_topic[i] = topic_index(st, topic);
    st->rec_partition[i] = partition;
    st->rec_offset[i] = offset;
}

void tide_status_batch_begin(tide_status_block_t *st, int64_t mono_ms) {
    st->batch_started_ms = mono_ms;
}

void tide_status_batch_end(tide_status_block_t *st, double seconds) {
    st->batch_started_ms = 0;
    st->hist[tide_status_bucket(seconds)]++;
    st->hist_sum += seconds;
}

void tide_status_failure(tide_status_block_t *st, const char *cls, const char *topic,
                         int32_t partition, int64_t offset, const char *message,
                         const char *traceback) {
    snprintf(st->last_error_class, sizeof(st->last_error_class), "%s", cls);
    snprintf(st->last_error_topic, sizeof(st->last_error_topic), "%s", topic ? topic : "");
    st->last_error_partition = partition;
    st->last_error_offset = offset;
    snprintf(st->last_error, sizeof(st->last_error), "%s", message);
    snprintf(st->last_traceback, sizeof(st->last_traceback), "%s", traceback);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    st->last_error_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tide_status_detector(tide_status_block_t *st, const char *name, const char *version,
                          const char *description) {
    snprintf(st->detector, sizeof(st->detector), "%s", name);
    snprintf(st->version, sizeof(st->version), "%s", version);
    snprintf(st->description, sizeof(st->description), "%s", description);
}

void tide_status_topology(tide_status_block_t *st, const char *json) {
    /* a cut JSON text is no topology: better none */
    if (!json || strlen(json) >= sizeof(st->topology)) json = "";
    snprintf(st->topology, sizeof(st->topology), "%s", json);
}

void tide_status_reload(tide_status_block_t *st, const char *version, const char *error) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    st->last_reload_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (error) {
        st->reload_failures++;
        st->last_reload_ok = 0;
        st->last_reload_version[0] = '\0';
        snprintf(st->last_reload_error, sizeof(st->last_reload_error), "%s", error);
        return;
    }
    st->reloads++;
    st->last_reload_ok = 1;
    snprintf(st->last_reload_version, sizeof(st->last_reload_version), "%s", version);
    st->last_reload_error[0] = '\0';
}
