/*
 * produce.h: tide's producer. Owns the rd_kafka_t that writes outputs,
 * changelog records and dead letters, turns a runtime's sink into Kafka
 * records, and keeps what the worker must know before it commits: whether
 * every record was acknowledged, and for each one that failed, the input
 * record it came from and whether the failure was that record's own.
 *
 * Under exactly-once it is the worker's one transactional producer: a
 * transaction begins with the first record after a commit and ends with the
 * input offsets in it (tide_producer_commit_txn), or is aborted.
 *
 * The records are produced by a thread of the producer's own, from arenas
 * the worker hands over (tide_producer_send), so that producing one batch
 * overlaps running the detector on the next. Everything here is called
 * from the worker's thread; the producer's thread only calls librdkafka's
 * produce and poll, and shares the delivery state under a lock.
 */
#ifndef TIDE_PRODUCE_H
#define TIDE_PRODUCE_H
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "sink.h"

typedef struct tide_producer tide_producer_t;

typedef struct tide_producer_opts {
    const tide_config_t *config;
    const char *bootstraps;
    char **outputs; /* output i's topic */
    int n_outputs;
    const char *dlq;
    const char *transactional_id; /* NULL: at-least-once */
} tide_producer_opts_t;

/* What became of the records produced since the last commit. */
typedef enum tide_flush {
    TIDE_FLUSH_DONE,    /* every one acknowledged */
    TIDE_FLUSH_PENDING, /* some not yet: the broker is slow or away; librdkafka retries */
    TIDE_FLUSH_FAILED,  /* some failed: roll back and process again (see failures) */
    TIDE_FLUSH_FATAL,   /* the producer cannot go on (fenced; a fatal idempotence error) */
} tide_flush_t;

/* How a transaction's end went. */
typedef enum tide_txn {
    TIDE_TXN_DONE,  /* committed (or aborted, for tide_producer_abort_txn) */
    TIDE_TXN_RETRY, /* not yet (a timeout): call again; nothing is lost */
    TIDE_TXN_ABORT, /* abortable: abort, roll back, process again */
    TIDE_TXN_FATAL, /* fenced or fatal: this worker must stop producing and exit */
} tide_txn_t;

/* The input record an output was emitted for. */
typedef struct tide_source {
    const char *topic; /* owned by the producer, valid until it is freed */
    int32_t partition;
    int64_t offset;
} tide_source_t;

/* A record whose outputs failed for a reason of its own (too large, invalid,
 * a topic it may not write): `guilty` when that is certain, else it was in a
 * batch that failed as a whole, and must be tried alone to tell. */
typedef struct tide_record_failure {
    tide_source_t source;
    int guilty;
    char topic[256]; /* the output topic that refused it */
    char reason[256];
} tide_record_failure_t;

tide_producer_t *tide_producer_new(const tide_producer_opts_t *o, char **errp);
/* Point output indexes at new topics (after a hot swap). 0 or -1. */
int tide_producer_set_outputs(tide_producer_t *p, char **topics, int n_topics);
/* The changelog topic of each store (index = store id). 0 or -1. */
int tide_producer_set_changelogs(tide_producer_t *p, char *const *topics, int n_topics);
/* The last acknowledged offset of store's changelog partition, or -1. */
int64_t tide_producer_changelog_offset(tide_producer_t *p, int store, int32_t partition);

/* Hand every entry of the sink, each tagged with its source record
 * (batch->recs[entry->source], or none outside a batch), to the producer's
 * thread, which produces them in order while the caller goes on (into the
 * next batch); the sink is left empty (its arena is swapped with a free
 * one, nothing is copied) and *sent set to the entries handed. msgs[0..n_msgs)
 * are the consumer messages of the batch: the producer owns them from here
 * and destroys them once every entry is handed to librdkafka (or dropped by
 * a rollback). TIDE_FLUSH_PENDING when every arena is still being produced
 * (librdkafka's queue is full: the broker is slow or away), after waiting
 * up to `block_ms`: nothing was taken, call again. FAILED or FATAL when an
 * entry handed earlier was refused at once (a reason of its own, or a fenced
 * producer): nothing was taken, roll back. */
tide_flush_t tide_producer_send(tide_producer_t *p, tide_sink_t *s, const tide_batch_t *batch,
                                size_t *sent, int block_ms, rd_kafka_message_t **msgs, int n_msgs);
/* The client, for what only it can ask the broker (the cluster id). */
rd_kafka_t *tide_producer_handle(tide_producer_t *p);
/* Serve delivery reports without blocking. */
void tide_producer_poll(tide_producer_t *p);
/* Idle: give the arenas' memory back (they grow again when used). */
void tide_producer_trim(tide_producer_t *p);
/* Wait up to timeout_ms for the records handed since the last commit: the
 * thread produces what it holds, then librdkafka delivers them. */
tide_flush_t tide_producer_flush(tide_producer_t *p, int timeout_ms);
/* Records handed and not acknowledged yet (nor dropped). */
int64_t tide_producer_in_flight(tide_producer_t *p);
/* Failures since the last reset: the records to blame, and a failure tied
 * to no record (a timeout, the broker away) described in *other (or NULL). */
const tide_record_failure_t *tide_producer_failures(tide_producer_t *p, int *n,
                                                    const char **other);
/* The output topic a delivery found missing (unknown topic), or NULL. */
const char *tide_producer_missing_topic(tide_producer_t *p);
/* Under at-least-once, after a commit or a rollback (nothing in flight):
 * forget the sources and the failures. (A transaction's end does it.) */
void tide_producer_reset(tide_producer_t *p);

/* --- exactly-once --- */

/* Fence older instances and get ready (blocks up to timeout_ms). */
tide_txn_t tide_producer_init_txn(tide_producer_t *p, int timeout_ms, char **errp);
int tide_producer_in_txn(const tide_producer_t *p);
/* Begin one now if none is open (the input offsets alone must be committed
 * in a transaction too). 0, or -1 with *errp. */
int tide_producer_begin_txn(tide_producer_t *p, char **errp);
/* Put `offsets` into the open transaction with the consumer's group
 * metadata, and commit it, waiting up to timeout_ms. */
tide_txn_t tide_producer_commit_txn(tide_producer_t *p, const rd_kafka_topic_partition_list_t *offsets,
                                    rd_kafka_t *consumer, int timeout_ms, char **errp);
tide_txn_t tide_producer_abort_txn(tide_producer_t *p, int timeout_ms, char **errp);

uint64_t tide_producer_sent(tide_producer_t *p);
uint64_t tide_producer_dead_lettered(tide_producer_t *p);
void tide_producer_free(tide_producer_t *p);

#endif
