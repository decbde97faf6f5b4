/*
 * group.h: a worker's place in its consumer group.
 *
 * The group owns the consumer (group <application.id>.<detector>), the
 * assignment, and for every assigned input partition the two offsets that
 * decide what is safe: the last one processed and the next one committed. It
 * builds the commit from them and performs it. It knows nothing of Lua,
 * stores or outputs: the worker tells it what was processed and when the
 * outputs of those records are durable, and decides on rebalances through
 * the callbacks below (the group only assigns and unassigns).
 *
 * The offset rules live in tide_offsets_t, plain data with no consumer, so
 * that they can be tested without a broker (spec/c/test_group.c).
 */
#ifndef TIDE_GROUP_H
#define TIDE_GROUP_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <librdkafka/rdkafka.h>

#include "config.h"

/* ---------------------------------------------------------------- offsets */

/* What tide knows of one assigned input partition. */
typedef struct tide_offset {
    char *topic;       /* owned */
    int32_t partition;
    int64_t processed; /* last offset processed, -1: none in this assignment */
    int64_t committed; /* next offset committed, -1: none known */
} tide_offset_t;

typedef struct tide_offsets {
    tide_offset_t *p;
    int n, cap, last_hit;
} tide_offsets_t;

tide_offset_t *tide_offsets_find(tide_offsets_t *o, const char *topic, int32_t partition);
/* The partition's entry, created (nothing processed, nothing committed) if
 * new. NULL only when memory is exhausted. */
tide_offset_t *tide_offsets_add(tide_offsets_t *o, const char *topic, int32_t partition);
void tide_offsets_remove(tide_offsets_t *o, const char *topic, int32_t partition);
/* Is any input topic's partition `partition` still held? */
int tide_offsets_holds(const tide_offsets_t *o, int32_t partition);
/* A record at `offset` of a held partition: its entry when the record is
 * new, NULL when it must be dropped (not held, or not past the last one
 * processed: a redelivery within this assignment). */
tide_offset_t *tide_offsets_accept(tide_offsets_t *o, const char *topic, int32_t partition,
                                   int64_t offset);
/* The offsets a commit would write, for every partition or only those in
 * `only`: processed + 1 where that is past what is committed. A new list
 * (the caller destroys it), empty when there is nothing to commit. */
rd_kafka_topic_partition_list_t *tide_offsets_pending(const tide_offsets_t *o,
                                                      const rd_kafka_topic_partition_list_t *only);
/* These offsets are committed (entries with an error are not). */
void tide_offsets_committed(tide_offsets_t *o, const rd_kafka_topic_partition_list_t *l);
void tide_offsets_free(tide_offsets_t *o);

/* ---------------------------------------------------------------- the group */

typedef struct tide_group tide_group_t;

/* How librdkafka changed the assignment. `parts` is borrowed for the call. */
typedef struct tide_group_cb {
    /* After the partitions were assigned (the group holds them). */
    void (*on_assigned)(void *ud, const rd_kafka_topic_partition_list_t *parts);
    /* Before they are given up; lost: they already belong to another
     * member (committing them would fail). */
    void (*on_revoking)(void *ud, const rd_kafka_topic_partition_list_t *parts, int lost);
    /* After they were given up. */
    void (*on_revoked)(void *ud, const rd_kafka_topic_partition_list_t *parts, int lost);
    void *ud;
} tide_group_cb_t;

/* The commit's metadata for `partition` (its stream time, say) into
 * buf[0..cap); returns its length, 0 for none. */
typedef size_t (*tide_group_meta_fn)(void *ud, int32_t partition, char *buf, size_t cap);

typedef struct tide_group_opts {
    const tide_config_t *config;
    const char *bootstraps;
    const char *group_id;   /* copied */
    int co_partitioned;     /* partition i of every input to one member (range, eager) */
    tide_group_cb_t cb;
    tide_group_meta_fn meta;
    void *meta_ud;
} tide_group_opts_t;

typedef enum tide_commit {
    TIDE_COMMIT_DONE,     /* committed (or sent, when asynchronous), or nothing to do */
    TIDE_COMMIT_DEFERRED, /* a rebalance is under way: the offsets stay pending */
    TIDE_COMMIT_FAILED,   /* the broker refused (logged); the offsets stay pending */
} tide_commit_t;

tide_group_t *tide_group_new(const tide_group_opts_t *o, char **errp);
/* Subscribe to topics[0..n) (again, after a reload changed them). */
int tide_group_subscribe(tide_group_t *g, char *const *topics, int n, char **errp);
/* Up to `max` messages, waiting at most timeout_ms; they are the caller's
 * to destroy. Rebalance callbacks run inside. */
ssize_t tide_group_poll(tide_group_t *g, rd_kafka_message_t **msgs, size_t max, int timeout_ms);
tide_offsets_t *tide_group_offsets(tide_group_t *g);
/* Pause or resume partition `partition` of every input topic held. */
void tide_group_flow(tide_group_t *g, int32_t partition, int resume);
/* The committed metadata of `partition` (each input topic's; the largest
 * number that follows `prefix` in any of them), one broker round trip;
 * -1 when there is none. */
int64_t tide_group_committed_number(tide_group_t *g, int32_t partition, const char *prefix);
/* Commit what was processed (all partitions, or only those in `only`). The
 * caller has made sure that every output of those records is durable.
 * Asynchronous commits report through the log; synchronous ones wait. */
tide_commit_t tide_group_commit(tide_group_t *g, const rd_kafka_topic_partition_list_t *only,
                                const char *why, int async);
/* Records behind the log end over the held partitions (cached watermarks,
 * no broker round trip), -1 when unknown. */
int64_t tide_group_lag(tide_group_t *g);
/* Assigned at least once since the start. */
int tide_group_assigned_once(const tide_group_t *g);
/* Leave the group (revoke callbacks run); then free. */
void tide_group_close(tide_group_t *g);
void tide_group_free(tide_group_t *g);

/* "topic[0,1,2] other[3]" for logs. */
void tide_group_describe(const rd_kafka_topic_partition_list_t *l, char *buf, size_t cap);

#endif
