/*
 * produce.h: tide's producer. Owns the rd_kafka_t that writes outputs and
 * dead letters, turns a runtime's sink into Kafka records, and remembers any
 * delivery that failed: a commit must never pass a record whose outputs were
 * not acknowledged.
 */
#ifndef TIDE_PRODUCE_H
#define TIDE_PRODUCE_H
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "sink.h"

typedef struct tide_producer tide_producer_t;

/* topics[i] is output i; dlq is the dead-letter topic. */
tide_producer_t *tide_producer_new(const tide_config_t *c, const char *bootstraps,
                                   char **topics, int n_topics, const char *dlq,
                                   char **errp);
/* Point output indexes at new topics (after a hot swap). 0 or -1. */
int tide_producer_set_outputs(tide_producer_t *p, char **topics, int n_topics);
/* The changelog topic of each store (index = store id). 0 or -1. */
int tide_producer_set_changelogs(tide_producer_t *p, char **topics, int n_topics);
/* The last acknowledged offset of store's changelog partition, or -1. */
int64_t tide_producer_changelog_offset(const tide_producer_t *p, int store, int32_t partition);
/* Produce every entry of the sink (each entry carries its timestamp).
 * Blocks while librdkafka's queue is full. Returns 0, or -1 with *errp. */
int tide_producer_send(tide_producer_t *p, const tide_sink_t *s,
                       char **errp);
/* Serve delivery reports without blocking. */
void tide_producer_poll(tide_producer_t *p);
/* Wait until every produced record is acknowledged. Returns 0 when all were
 * delivered, -1 with *errp on a timeout or a failed delivery (sticky). */
int tide_producer_flush(tide_producer_t *p, int timeout_ms, char **errp);
uint64_t tide_producer_sent(const tide_producer_t *p);
uint64_t tide_producer_dead_lettered(const tide_producer_t *p);
void tide_producer_free(tide_producer_t *p);

#endif
