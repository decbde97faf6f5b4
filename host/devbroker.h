/*
 * devbroker.h: the development broker, librdkafka's mock cluster.
 *
 * It speaks the real Kafka protocol on 127.0.0.1 (a random port), keeps about
 * 5 MiB per partition in memory, does not compact and cannot create topics
 * through the Admin API: good for a laptop and for tests, never production.
 */
#ifndef TIDE_DEVBROKER_H
#define TIDE_DEVBROKER_H

struct tide_devbroker;
typedef struct tide_devbroker tide_devbroker_t;

/* Start a one-broker cluster; topics unknown to it auto-create with
 * `partitions` partitions. Returns NULL with *errp set on failure. */
tide_devbroker_t *tide_devbroker_start(int partitions, char **errp);
/* The same with `brokers` brokers (ids 1..brokers). */
tide_devbroker_t *tide_devbroker_new(int brokers, int partitions, char **errp);
/* "127.0.0.1:port[,127.0.0.1:port...]" (owned by the broker). */
const char *tide_devbroker_bootstraps(const tide_devbroker_t *b);
/* The mock cluster itself, for fault injection (owned by the broker). */
struct rd_kafka_mock_cluster_s;
struct rd_kafka_mock_cluster_s *tide_devbroker_mock(tide_devbroker_t *b);
int tide_devbroker_count(const tide_devbroker_t *b);
int tide_devbroker_create_topic(tide_devbroker_t *b, const char *topic, int partitions,
                                char **errp);
void tide_devbroker_stop(tide_devbroker_t *b);

/* `tide broker [--topic name:partitions]... [--partitions N] [--brokers N]
 *  [--down] [--control FIFO]` */
int tide_devbroker_main(int argc, char **argv);

#endif
