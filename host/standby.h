/*
 * standby.h: a worker's standby replicas and the task map it publishes.
 *
 * With num.standby.replicas = N > 0 (Kafka Streams' setting), every stateful
 * task has N warm copies on other instances: each keeps the task's RocksDB
 * stores by tailing their changelogs, so that when the task moves to it (its
 * owner died or left) it restores only the changelog's tail past what it
 * holds. Which instance keeps which copy is the directory's decision
 * (directory.h), passed by the supervisor in the status block; a worker never
 * keeps a standby of a task it runs itself.
 *
 * A standby never joins the consumer group, never commits input offsets and
 * never produces: it reads the changelogs (read_committed, by assignment)
 * and writes the store database only from them, as committed writes of
 * partitions no task runs here (outside any transaction, as a restore
 * does), noting in the checkpoint what it holds. In-memory stores have no
 * standby: they restore whole from their changelog.
 *
 * The same unit publishes the worker's task map (active, restoring,
 * standby) and its stores in the status block, for the directory and the
 * query router.
 */
#ifndef TIDE_STANDBY_H
#define TIDE_STANDBY_H
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "runtime.h"
#include "status.h"
#include "task.h"

typedef struct tide_standby tide_standby_t;

typedef struct tide_standby_opts {
    const tide_config_t *config;
    const char *bootstraps;
    tide_tasks_t *tasks;
    rd_kafka_t *consumer;      /* the group's consumer: the inputs' partition count */
    const char *input_topic;   /* the first input (copied) */
    tide_status_block_t *st;
} tide_standby_opts_t;

tide_standby_t *tide_standby_new(const tide_standby_opts_t *o);
/* Publish the task map and the stores (info: the detector running); take
 * the supervisor's wishes (standby_wanted). Cheap: call often. */
void tide_standby_sync(tide_standby_t *sb, const tide_detector_info_t *info);
/* Start and stop standby tasks as wished, and apply what their changelogs
 * hold, for up to budget_ms. */
void tide_standby_step(tide_standby_t *sb, int budget_ms);
/* Partition p becomes an active task here: its standby stops; what it
 * applied stays in the database and the checkpoint (the restore reads the
 * changelog's tail past it). */
void tide_standby_promote(tide_standby_t *sb, int32_t p);
/* Standby tasks (store partitions) kept now. */
int tide_standby_count(const tide_standby_t *sb);
void tide_standby_free(tide_standby_t *sb);

#endif
