/*
 * records.h: the batch in flight, as the runtime sees it.
 *
 * Consumer messages are laid out as an array of tide_rec_t (the FFI's record,
 * borrowed from the messages) in the status block, where the supervisor's
 * watchdog sees the dispatcher's cursor. Records that must not run (the
 * worker says which) are dead-lettered here; redeliveries are dropped. The
 * records also answer the runtime's questions about a record (its headers)
 * and log the records that failed.
 */
#ifndef TIDE_RECORDS_H
#define TIDE_RECORDS_H
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "group.h"
#include "runtime.h"
#include "status.h"

typedef struct tide_records tide_records_t;

/* Must this record be dead-lettered without running? 1 with its error class
 * and message (borrowed until the batch is released), else 0. */
typedef int (*tide_unrun_fn)(void *ud, const char *topic, int32_t partition, int64_t offset,
                             const char **cls, const char **message);

typedef struct tide_records_opts {
    int max;                 /* records in a batch, at most TIDE_STATUS_MAX_BATCH */
    tide_status_block_t *st; /* where the batch is laid out */
    tide_unrun_fn unrun;
    void *ud;
} tide_records_opts_t;

tide_records_t *tide_records_new(const tide_records_opts_t *o);
/* Room for the next batch as the group hands it out (max records). */
tide_buffered_t *tide_records_in(tide_records_t *r);
/* Lay in[0..n) out as the batch in the status block: records not past the
 * last one processed of their partition are dropped and counted, those
 * that must not run dead-lettered through rt. Returns the batch. */
tide_batch_t *tide_records_lay_out(tide_records_t *r, int n, tide_offsets_t *offsets,
                                   tide_runtime_t *rt);
/* Where record i of the laid-out batch was in `in`. */
int tide_records_taken_index(const tide_records_t *r, int i);
/* Records 0..done of the batch were processed: advance their offsets. */
void tide_records_processed(tide_records_t *r, int done);
/* Destroy the batch's first n messages (0: none, they went elsewhere);
 * the batch is over. */
void tide_records_release(tide_records_t *r, int n);
/* The batch's first n messages as taken (for whoever releases them
 * instead); borrowed until the next batch. */
rd_kafka_message_t **tide_records_messages(tide_records_t *r, int n);
/* Records dropped, and records failed or quarantined, since the start. */
uint64_t tide_records_dropped(const tide_records_t *r);
uint64_t tide_records_errors(const tide_records_t *r);
/* The runtime's tide_failure_fn (ud: the records, with on_error named by
 * tide_records_policy): counts it, shows it in the status block, logs it
 * (at most 20 lines a second). */
void tide_records_on_failure(void *ud, const tide_rec_t *rec, const tide_failure_t *f);
void tide_records_policy(tide_records_t *r, tide_on_error_t on_error);
/* One more failure outside a batch (a punctuator). */
void tide_records_count_error(tide_records_t *r);
void tide_records_free(tide_records_t *r);

/* The FFI calls of a worker: emits into the sink, headers from the consumed
 * message (rec->msg), stores through core/state.c. */
extern const tide_api_t tide_records_api;

#endif
