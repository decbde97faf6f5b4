/*
 * plain.h: what the two plain librdkafka baselines (plain_consume.c,
 * plain_transform.c) share: the clock, peak RSS, and the consumer with the
 * settings tide's worker uses, so that tide is measured against the same
 * client configuration written by hand.
 *
 * Header-only (static inline) because the Makefile builds each bench program
 * from its single .c file. It must never hold policy that one baseline needs
 * and the other does not: the baselines differ only in their loops.
 */
#ifndef TIDE_BENCH_PLAIN_H
#define TIDE_BENCH_PLAIN_H

#include <librdkafka/rdkafka.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Records per rd_kafka_consume_batch_queue() call, as tide's worker polls. */
#define PLAIN_BATCH 1000
/* Give up after this long: a stuck bench must not hang `make bench`. */
#define PLAIN_DEADLINE_MS 120000.0

static inline double plain_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Peak resident set of this process; Linux reports ru_maxrss in KiB. */
static inline long plain_max_rss_kb(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
}

static inline void plain_die(const char *prog, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static inline void plain_set(const char *prog, rd_kafka_conf_t *conf, const char *key,
                             const char *value)
{
    char err[512];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof err) != RD_KAFKA_CONF_OK)
        plain_die(prog, "%s=%s: %s", key, value, err);
}

/*
 * A subscribed group consumer whose events (rebalances included) all arrive
 * on the consumer queue, returned in *queuep for the batch API.
 *
 * The group.id is unique per run so that no committed offsets from an
 * earlier run exist and auto.offset.reset=earliest reads the whole topic.
 * fetch.queue.backoff.ms=10 is the setting that matters: with librdkafka's
 * default (1000 ms) the fetcher pauses a whole second each time its queue
 * passes the threshold and throughput drops about twentyfold.
 */
static inline rd_kafka_t *plain_consumer_new(const char *prog, const char *bootstrap,
                                             const char *topic, rd_kafka_queue_t **queuep)
{
    char err[512], group[128];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    snprintf(group, sizeof group, "bench-%s-%ld-%ld", prog, (long)getpid(), (long)time(NULL));
    plain_set(prog, conf, "bootstrap.servers", bootstrap);
    plain_set(prog, conf, "group.id", group);
    plain_set(prog, conf, "auto.offset.reset", "earliest");
    plain_set(prog, conf, "enable.auto.commit", "false");
    plain_set(prog, conf, "fetch.queue.backoff.ms", "10");
    plain_set(prog, conf, "partition.assignment.strategy", "cooperative-sticky");

    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk)
        plain_die(prog, "consumer: %s", err);
    rd_kafka_poll_set_consumer(rk);

    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e)
        plain_die(prog, "subscribe %s: %s", topic, rd_kafka_err2str(e));

    *queuep = rd_kafka_queue_get_consumer(rk);
    return rk;
}

/* Leave the group cleanly; not timed, the measurement has ended. */
static inline void plain_consumer_destroy(rd_kafka_t *rk, rd_kafka_queue_t *queue)
{
    rd_kafka_queue_destroy(queue);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

/*
 * A consumer-side error event. A partition EOF is not one (it is off by
 * default anyway); anything else is reported but not fatal, since librdkafka
 * retries transport errors itself.
 */
static inline void plain_consumer_error(const char *prog, const rd_kafka_message_t *m)
{
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
        return;
    fprintf(stderr, "%s: consumer: %s\n", prog, rd_kafka_message_errstr(m));
}

#endif
