/*
 * records.c: the batch in flight (see records.h).
 *
 * Owns the array of consumer messages of one batch and the records laid out
 * from them; a record's bytes are the message's, borrowed until the batch is
 * released. Never produces and never commits: it marks records processed in
 * the group's offsets, and what the dispatcher emits goes to the runtime's
 * sink.
 */
#include "records.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sink.h"
#include "state.h"

struct tide_records {
    tide_records_opts_t o;
    tide_buffered_t *in; /* the batch's records as the group handed them out */
    rd_kafka_message_t **msgs; /* their messages, for tide_records_messages */
    tide_rec_t *recs;
    tide_offset_t **offset; /* the offsets entry of each laid-out record */
    int *taken;             /* its index in `in` */
    int n;                  /* records laid out */
    tide_on_error_t on_error;
    uint64_t dropped, errors;
    /* error-log rate limit */
    int64_t err_window_ms;
    int err_in_window;
    uint64_t err_suppressed;
};

tide_records_t *tide_records_new(const tide_records_opts_t *o) {
    tide_records_t *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    r->o = *o;
    if (r->o.max > TIDE_STATUS_MAX_BATCH) r->o.max = TIDE_STATUS_MAX_BATCH;
    r->in = calloc((size_t)r->o.max, sizeof(*r->in));
    r->recs = calloc((size_t)r->o.max, sizeof(*r->recs));
    r->offset = calloc((size_t)r->o.max, sizeof(*r->offset));
    r->taken = calloc((size_t)r->o.max, sizeof(*r->taken));
    r->msgs = calloc((size_t)r->o.max, sizeof(*r->msgs));
    if (!r->in || !r->recs || !r->offset || !r->taken || !r->msgs) {
        tide_records_free(r);
        return NULL;
    }
    return r;
}

void tide_records_free(tide_records_t *r) {
    if (!r) return;
    free(r->in);
    free(r->recs);
    free(r->offset);
    free(r->taken);
    free(r->msgs);
    free(r);
}

tide_buffered_t *tide_records_in(tide_records_t *r) { return r->in; }
uint64_t tide_records_dropped(const tide_records_t *r) { return r->dropped; }
uint64_t tide_records_errors(const tide_records_t *r) { return r->errors; }
void tide_records_policy(tide_records_t *r, tide_on_error_t on_error) { r->on_error = on_error; }
void tide_records_count_error(tide_records_t *r) { r->errors++; }

/* Dead-letter a record that must not run, and count it. */
static void dead_letter(tide_records_t *r, tide_runtime_t *rt, const tide_rec_t *rec,
                        tide_offset_t *p, const char *cls, const char *message) {
    tide_log(TIDE_LOG_WARN, (tide_log_at_t){rec->topic, rec->partition, rec->offset},
             "dead-lettering a record without running it (%s): %s", cls, message);
    tide_runtime_dead_letter(rt, rec, cls, message);
    p->processed = rec->offset;
    r->errors++;
}

tide_batch_t *tide_records_lay_out(tide_records_t *r, int n, tide_offsets_t *offsets,
                                   tide_runtime_t *rt) {
    int nr = 0;
    for (int i = 0; i < n; i++) {
        rd_kafka_message_t *m = r->in[i].m;
        const char *topic = rd_kafka_topic_name(m->rkt);
        tide_offset_t *p = tide_offsets_accept_taken(offsets, &r->in[i], topic, m->partition);
        if (!p) { /* a redelivery within this assignment: drop and count it */
            r->dropped++;
            continue;
        }
        tide_rec_t *rec = &r->recs[nr];
        *rec = (tide_rec_t){
            .key = m->key, .key_len = m->key ? (int32_t)m->key_len : -1,
            .val = m->payload, .val_len = m->payload ? (int32_t)m->len : -1,
            .topic = topic, .partition = m->partition, .index = nr, .offset = m->offset,
            .timestamp = r->in[i].timestamp, .msg = m,
        };
        const char *cls, *message;
        if (r->o.unrun && r->o.unrun(r->o.ud, topic, m->partition, m->offset, &cls, &message)) {
            dead_letter(r, rt, rec, p, cls, message);
            continue;
        }
        r->offset[nr] = p;
        r->taken[nr] = i;
        tide_status_record(r->o.st, nr, topic, m->partition, m->offset);
        nr++;
    }
    r->n = nr;
    r->o.st->batch = (tide_batch_t){r->recs, nr, 0};
    return &r->o.st->batch;
}

int tide_records_taken_index(const tide_records_t *r, int i) { return r->taken[i]; }

void tide_records_processed(tide_records_t *r, int done) {
    for (int i = 0; i < done && i < r->n; i++) r->offset[i]->processed = r->recs[i].offset;
}

void tide_records_release(tide_records_t *r, int n) {
    for (int i = 0; i < n; i++) rd_kafka_message_destroy(r->in[i].m);
    r->n = 0;
}

rd_kafka_message_t **tide_records_messages(tide_records_t *r, int n) {
    for (int i = 0; i < n; i++) r->msgs[i] = r->in[i].m;
    return r->msgs;
}

/* At most 20 error lines a second: a detector failing every record must not
 * drown the logs (the dead letters and the metrics have every one). */
static int may_log(tide_records_t *r) {
    int64_t t = tide_mono_ms();
    if (t - r->err_window_ms >= 1000) {
        if (r->err_suppressed)
            tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "%" PRIu64 " more record error(s) not logged",
                     r->err_suppressed);
        r->err_window_ms = t;
        r->err_in_window = 0;
        r->err_suppressed = 0;
    }
    if (r->err_in_window++ < 20) return 1;
    r->err_suppressed++;
    return 0;
}

void tide_records_on_failure(void *ud, const tide_rec_t *rec, const tide_failure_t *f) {
    tide_records_t *r = ud;
    r->errors++;
    tide_status_failure(r->o.st, f->cls, rec->topic, rec->partition, rec->offset, f->message,
                        f->traceback);
    if (!may_log(r)) return;
    char cls[64], trace[4096], act[32];
    const char *action = tide_on_error_name(r->on_error);
    tide_json_str(cls, sizeof(cls), f->cls, strlen(f->cls));
    tide_json_str(trace, sizeof(trace), f->traceback, strlen(f->traceback));
    tide_json_str(act, sizeof(act), action, strlen(action));
    tide_logkv(TIDE_LOG_WARN, (tide_log_at_t){rec->topic, rec->partition, rec->offset},
               f->message, "error_class", cls, "on_error", act, "traceback", trace, (char *)NULL);
}

/* ---------------------------------------------------------------- the api */

static int header_count(const tide_rec_t *r) {
    rd_kafka_headers_t *h = NULL;
    if (!r->msg || rd_kafka_message_headers(r->msg, &h) || !h) return 0;
    return (int)rd_kafka_header_cnt(h);
}

static int header_get(const tide_rec_t *r, int32_t i, const char **name, const void **val,
                      size_t *len) {
    rd_kafka_headers_t *h = NULL;
    if (!r->msg || rd_kafka_message_headers(r->msg, &h) || !h) return -1;
    return rd_kafka_header_get_all(h, (size_t)i, name, val, len) ? -1 : 0;
}

const tide_api_t tide_records_api = {
    .emit = tide_sink_emit,
    .emit_header = tide_sink_emit_header,
    .utf8_valid = tide_utf8_valid,
    .json_may_overflow = tide_json_may_overflow,
    .header_count = header_count,
    .header_get = header_get,
    .emit_partition = tide_sink_emit_partition,
    .store_get = tide_state_get,
    .store_put = tide_state_put,
    .store_iter = tide_state_iter,
    .store_iter_next = tide_state_iter_next,
    .store_iter_free = tide_state_iter_free,
    .sink_timestamp = tide_sink_set_timestamp,
};
