/*
 * directory.h: which instance holds which task, for every instance.
 *
 * Kafka Streams shares each instance's application.server and tasks through
 * its own assignor's metadata. librdkafka lets a consumer publish nothing of
 * its own in the group (its assignors write their own user data, and
 * DescribeGroups does not return it), so tide uses a channel every Kafka and
 * the development broker have: a compacted topic,
 *
 *   <application.id>.instances   key   <detector>/<instance>
 *                                value {"detector", "instance", "server",
 *                                       "ts", "partitions", "tasks"}
 *
 * where instance is the host's process id (txnid.h), server its admin
 * address (application.server), ts the wall clock of the record and tasks one
 * character per partition: '.' none, 'A' active, 'R' restoring, 'S' standby.
 * Each `tide run DIR` publishes its workers' task maps when they change and
 * every few seconds, withdraws a worker that stops (a tombstone), and reads
 * every instance's records. A record older than a few heartbeats is an
 * instance that died without a word; where two instances claim a task the
 * later claim wins (clocks are assumed in step, as NTP keeps them).
 *
 * From it come the answers the query router needs (who holds partition p of
 * a detector, and its address) and the standby replicas this instance keeps.
 * One producer and one consumer per host, on a thread of their own; nothing
 * else here talks to Kafka, and the record path never waits for it.
 */
#ifndef TIDE_DIRECTORY_H
#define TIDE_DIRECTORY_H
#include <stdint.h>

#include "config.h"
#include "status.h"

struct tide_devbroker;

typedef struct tide_directory tide_directory_t;

typedef struct tide_directory_opts {
    const tide_config_t *config;
    const char *bootstraps;
    const char *instance; /* this instance's id (copied) */
    const char *server;   /* host:port of its admin server (copied) */
    struct tide_devbroker *dev; /* the in-process development broker, or NULL */
} tide_directory_opts_t;

/* A task's holder, as the directory knows it. */
typedef struct tide_holder {
    char instance[64];
    char server[256];
    int state;  /* TIDE_TASKMAP_ACTIVE, _RESTORING or _STANDBY */
    int local;  /* this instance */
    int64_t ts; /* wall ms of its last record */
} tide_holder_t;

/* One instance of a detector, for /api/detectors/NAME/instances. */
typedef struct tide_dir_member {
    char instance[64];
    char server[256];
    int local;
    int64_t ts;
    int32_t partitions;
    uint8_t state[TIDE_STATUS_MAX_TASKS];
} tide_dir_member_t;

/* The topic's name for application.id `app` into buf. */
void tide_directory_topic(const char *app, char *buf, size_t cap);

tide_directory_t *tide_directory_start(const tide_directory_opts_t *o, char **errp);
/* This instance's worker of `detector` holds state[0..partitions)
 * (TIDE_TASKMAP_*): published when it changed. */
void tide_directory_local(tide_directory_t *d, const char *detector, int32_t partitions,
                          const uint8_t *state);
/* This instance no longer runs `detector`: a tombstone is published. */
void tide_directory_withdraw(tide_directory_t *d, const char *detector);
/* The partition count of `detector` as its instances see it; 0: unknown. */
int32_t tide_directory_partitions(tide_directory_t *d, const char *detector);
/* Who runs partition p of `detector` (active or restoring): 1 with *active,
 * 0 when no live instance claims it. Its standby holders, up to cap, go to
 * standbys[] (*n_standbys); standbys may be NULL. */
int tide_directory_lookup(tide_directory_t *d, const char *detector, int32_t p,
                          tide_holder_t *active, tide_holder_t *standbys, int cap,
                          int *n_standbys);
/* The live instances of `detector`, up to cap; returns how many. */
int tide_directory_members(tide_directory_t *d, const char *detector, tide_dir_member_t *out,
                           int cap);
/* The partitions of `detector` this instance should keep a standby replica
 * of, for `replicas` copies of each task: for each task held (active) by a
 * live instance, the next `replicas` other live instances in the order of
 * their ids keep one. wanted[0..TIDE_STATUS_MAX_TASKS) is set to 0 or 1,
 * except for a task no live instance runs now (its owner died, and no other
 * has it yet): there wanted[] keeps what it held, so a standby waits to be
 * promoted instead of being dropped. */
void tide_directory_standbys(tide_directory_t *d, const char *detector, int replicas,
                             uint8_t *wanted);
/* Withdraw every local worker (tombstones, flushed) and stop. NULL is a no-op. */
void tide_directory_stop(tide_directory_t *d);

/* For tests: parse one record value into m (the strings copied); 0, or -1
 * when it is not one of ours. */
int tide_directory_parse(const char *json, size_t len, char *detector, size_t dcap,
                         tide_dir_member_t *m);

#endif
