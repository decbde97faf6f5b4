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

/* A fetched record not yet handed to the detector. */
typedef struct tide_buffered {
    rd_kafka_message_t *m; /* owned until handed out */
    int64_t timestamp;     /* ms, as the detector will see it */
    int64_t offset;
    struct tide_offset *part; /* set when handed out: its partition's entry, a hint
                               * valid until the offsets change (a rebalance) */
} tide_buffered_t;

/* Why a partition is paused (several may hold at once). */
enum {
    TIDE_PAUSE_RESTORE = 1, /* its task is restoring */
    TIDE_PAUSE_HOLD = 2,    /* the worker holds every input (a topic is missing) */
};

/* What tide knows of one assigned input partition. */
typedef struct tide_offset {
    char *topic;       /* owned */
    int32_t partition;
    int64_t processed; /* last offset processed, -1: none in this assignment */
    int64_t committed; /* next offset committed, -1: none known */
    int64_t durable;   /* next offset whose records' outputs are all durable (a commit
                        * went through, its offset commit maybe still in flight), -1 */
    int64_t start;     /* where this assignment's consumption began, -1: not yet known */
    int64_t high;      /* the broker's end of the partition (cached), -1: unknown */
    int64_t fetched;   /* next offset to fetch: after the last one buffered, -1: unknown */
    int64_t empty_since; /* ms its buffer has been empty, -1: not empty */
    unsigned paused;   /* TIDE_PAUSE_* */
    char meta[64];     /* the committed offset's metadata, NUL-terminated */
    tide_buffered_t *buf; /* a ring: buf[(head + i) % cap], i < n */
    int head, n, cap;
    rd_kafka_queue_t *queue; /* the partition's own queue in the consumer, which the
                              * group fills the ring from (the group's; NULL: none) */
} tide_offset_t;

typedef struct tide_offsets {
    tide_offset_t *p;
    int n, cap, last_hit;
} tide_offsets_t;

/* How records are handed out across partitions (as Kafka Streams picks the
 * next record of a task): the lowest head timestamp first. A partition that
 * ran empty while the broker has more of it (or whose end is unknown) is
 * waited for up to lag_wait_ms, and any empty one up to idle_ms (Kafka
 * Streams' max.task.idle.ms; -1: never wait). */
typedef struct tide_order {
    int64_t idle_ms;
    int64_t lag_wait_ms;
} tide_order_t;

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
/* The same for a record handed out by tide_offsets_take (b->part spares the
 * lookup while it is still an entry of o). */
tide_offset_t *tide_offsets_accept_taken(tide_offsets_t *o, const tide_buffered_t *b,
                                         const char *topic, int32_t partition);
/* The offsets a commit would write, for every partition or only those in
 * `only`: processed + 1 where that is past what is committed. A new list
 * (the caller destroys it), empty when there is nothing to commit. */
rd_kafka_topic_partition_list_t *tide_offsets_pending(const tide_offsets_t *o,
                                                      const rd_kafka_topic_partition_list_t *only);
/* These offsets are committed (entries with an error are not). */
void tide_offsets_committed(tide_offsets_t *o, const rd_kafka_topic_partition_list_t *l);
/* The records before these offsets have all their outputs durable: a
 * rollback never goes back past them. */
void tide_offsets_durable(tide_offsets_t *o, const rd_kafka_topic_partition_list_t *l);
/* Buffer a fetched record of partition p (NULL when p is not held: the
 * caller destroys it). Returns the buffered count of p, -1 when dropped. */
int tide_offsets_push(tide_offset_t *p, rd_kafka_message_t *m, int64_t timestamp, int64_t offset);
/* Hand out up to `max` buffered records in timestamp order (see
 * tide_order_t) into out[]; returns how many. Fewer, even none, while a
 * partition must be waited for. Paused-for-restore partitions are skipped. */
int tide_offsets_take(tide_offsets_t *o, tide_buffered_t *out, int max, int64_t now_ms,
                      const tide_order_t *order);
/* Drop what p has buffered (destroying the messages). */
void tide_offsets_drop_buffered(tide_offset_t *p);
/* Buffered records over all partitions. */
int tide_offsets_buffered(const tide_offsets_t *o);
/* Give the memory of empty buffers back (an idle worker). */
void tide_offsets_trim(tide_offsets_t *o);
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
    int transactional;      /* inputs read_committed; offsets go through transactions */
    int buffered_max;       /* records buffered per partition (on average) before fetching waits */
    tide_order_t order;
    tide_group_cb_t cb;
    tide_group_meta_fn meta;
    void *meta_ud;
    const char *instance_id; /* group.instance.id (static membership), NULL: dynamic */
} tide_group_opts_t;

typedef enum tide_group_commit {
    TIDE_GROUP_COMMIT_DONE,     /* committed (or sent, when asynchronous), or nothing to do */
    TIDE_GROUP_COMMIT_DEFERRED, /* a rebalance is under way: the offsets stay pending */
    TIDE_GROUP_COMMIT_FAILED,   /* the broker refused (logged); the offsets stay pending */
} tide_group_commit_t;

tide_group_t *tide_group_new(const tide_group_opts_t *o, char **errp);
/* Subscribe to topics[0..n) (again, after a reload changed them). */
int tide_group_subscribe(tide_group_t *g, char *const *topics, int n, char **errp);
/* Fetch what the consumer has (waiting at most timeout_ms when there is
 * nothing) into the partitions' buffers, buffered_max records a partition
 * at most (each partition's queue in librdkafka holds the rest, and
 * librdkafka fetches a partition again only when its queue runs low).
 * Rebalance callbacks run inside. */
void tide_group_fill(tide_group_t *g, int timeout_ms);
/* Records are buffered, but the order waits for a partition that has none
 * (the worker may wait in tide_group_fill rather than spin). */
int tide_group_starved(const tide_group_t *g);
/* The next batch, in record-time order across partitions (tide_order_t):
 * up to `max` records into out[]; the messages are the caller's to destroy. */
int tide_group_take(tide_group_t *g, tide_buffered_t *out, int max);
/* Give b[0..n) back (taken last, not run): each goes to the front of its
 * partition's buffer, in order. */
void tide_group_unshift(tide_group_t *g, const tide_buffered_t *b, int n);
tide_offsets_t *tide_group_offsets(tide_group_t *g);
rd_kafka_t *tide_group_consumer(tide_group_t *g);
/* Records dropped as they came: redeliveries, and records of partitions
 * no longer held. */
uint64_t tide_group_dropped(const tide_group_t *g);
/* Pause (on) or resume partition `partition` of every input topic held, for
 * `reason` (TIDE_PAUSE_*): it fetches again once no reason holds. */
void tide_group_pause(tide_group_t *g, int32_t partition, unsigned reason, int on);
/* The same for every held partition. */
void tide_group_pause_all(tide_group_t *g, unsigned reason, int on);
/* The largest number that follows `prefix` in the committed metadata of
 * partition `partition` of any input topic (read at assignment); -1: none. */
int64_t tide_group_committed_number(tide_group_t *g, int32_t partition, const char *prefix);
/* Back to the last commit: every partition seeks to where its outputs are
 * durable (the last commit, or where this assignment began), buffers
 * emptied, nothing processed since. 0, or -1 (logged). */
int tide_group_rewind(tide_group_t *g, const rd_kafka_topic_partition_list_t *except);
/* The offsets a commit would write (all, or only those in `only`), each with
 * the worker's metadata; the caller destroys the list. */
rd_kafka_topic_partition_list_t *tide_group_pending(tide_group_t *g,
                                                    const rd_kafka_topic_partition_list_t *only);
/* Commit what was processed (all partitions, or only those in `only`). The
 * caller has made sure that every output of those records is durable.
 * Asynchronous commits report through the log; synchronous ones wait. */
tide_group_commit_t tide_group_commit(tide_group_t *g, const rd_kafka_topic_partition_list_t *only,
                                const char *why, int async);
/* Records behind the log end over the held partitions: the broker's end
 * minus the next offset to process (after the last one processed, else the
 * committed one), from cached watermarks, no broker round trip; -1 when
 * unknown. */
int64_t tide_group_lag(tide_group_t *g);
/* Since when (wall ms) librdkafka has found no broker up, 0: it has one
 * (asked again with one short metadata request while marked down). */
int64_t tide_group_unreachable_since(tide_group_t *g);
/* Assigned at least once since the start. */
int tide_group_assigned_once(const tide_group_t *g);
/* The consumer hit a fatal error (another member took its
 * group.instance.id): it fetches nothing more; the worker must end. */
int tide_group_fatal(const tide_group_t *g);
/* Close the consumer (revoke callbacks run). A dynamic member leaves the
 * group; a static one (instance_id) leaves only when `leave` is set: else it
 * stays in the group until session.timeout.ms, as librdkafka's close keeps
 * it (KIP-345), so that a restart gets its partitions back. Returns 1 when
 * it left the group. */
int tide_group_close(tide_group_t *g, int leave);
void tide_group_free(tide_group_t *g);

/* "topic[0,1,2] other[3]" for logs. */
void tide_group_describe(const rd_kafka_topic_partition_list_t *l, char *buf, size_t cap);

#endif
