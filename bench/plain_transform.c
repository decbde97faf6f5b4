/*
 * plain_transform: the hand-written baseline for tide's text transformer
 * (examples/text_transformer.lua). It consumes with the batch API and the
 * same consumer settings as plain_consume, keeps the values that contain the
 * byte 'a', upper-cases them (ASCII, as Lua's string.upper does in the C
 * locale), produces each under its input key to the output topic, then waits
 * for every delivery report. Prints one JSON line on stdout:
 *   {"name":"plain_transform","records":N,"produced":M,"elapsed_ms":..,"rate":..,"max_rss_kb":..,..}
 * timed from the first record received until the last delivery is confirmed;
 * rate is input records per second.
 *
 * It must never report a figure for work it did not finish: a delivery error,
 * an unconfirmed record or a missed deadline (120 s to consume, 60 s to flush)
 * exits 1 without the JSON line. It does not commit offsets; tide's commit
 * happens after its own clock stops too.
 *
 * Usage: plain_transform BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC EXPECTED_RECORDS
 */
#include "plain.h"

#include <string.h>

#define PROG "plain_transform"

/* Delivery report tallies, written by on_delivery on the polling thread. */
static long delivered, failed;
static rd_kafka_resp_err_t first_failure;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err) {
        if (!failed++)
            first_failure = m->err;
    } else {
        delivered++;
    }
}

/*
 * The producer tide's worker would use for this job: idempotent, acks=all,
 * and a short linger so batches fill without holding records back long.
 */
static rd_kafka_t *producer_new(const char *bootstrap)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    plain_set(PROG, conf, "bootstrap.servers", bootstrap);
    plain_set(PROG, conf, "linger.ms", "5");
    plain_set(PROG, conf, "enable.idempotence", "true");
    plain_set(PROG, conf, "acks", "all");
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);

    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk)
        plain_die(PROG, "producer: %s", err);
    return rk;
}

/*
 * Produce one copy of value; when librdkafka's queue is full, serve delivery
 * reports (which frees room) and retry, rather than drop or block forever.
 */
static void produce(rd_kafka_t *rk, const char *topic, const void *key, size_t key_len,
                    void *value, size_t len, double deadline)
{
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
            RD_KAFKA_V_VALUE(value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            return;
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            plain_die(PROG, "produce to %s: %s", topic, rd_kafka_err2str(e));
        if (plain_now_ms() > deadline)
            plain_die(PROG, "producer queue stayed full until the deadline");
        rd_kafka_poll(rk, 10);
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC EXPECTED_RECORDS\n", PROG);
        return 2;
    }
    const char *output = argv[3];
    long expected = atol(argv[4]);
    if (expected <= 0)
        plain_die(PROG, "EXPECTED_RECORDS must be positive");

    rd_kafka_t *producer = producer_new(argv[1]);
    rd_kafka_queue_t *queue;
    rd_kafka_t *consumer = plain_consumer_new(PROG, argv[1], argv[2], &queue);
    rd_kafka_message_t *batch[PLAIN_BATCH];
    long records = 0, produced = 0;
    size_t upper_cap = 0;
    char *upper = NULL;
    double start = plain_now_ms(), deadline = start + PLAIN_DEADLINE_MS, first = 0;

    while (records < expected) {
        if (plain_now_ms() > deadline)
            plain_die(PROG, "timed out after %.0f s with %ld of %ld records",
                      PLAIN_DEADLINE_MS / 1e3, records, expected);
        ssize_t n = rd_kafka_consume_batch_queue(queue, 100, batch, PLAIN_BATCH);
        if (n < 0)
            plain_die(PROG, "consume: %s", rd_kafka_err2str(rd_kafka_last_error()));
        if (n > 0 && records == 0)
            first = plain_now_ms();
        for (ssize_t i = 0; i < n; i++) {
            const rd_kafka_message_t *m = batch[i];
            if (m->err) {
                plain_consumer_error(PROG, m);
                rd_kafka_message_destroy(batch[i]);
                continue;
            }
            records++;
            if (m->payload && memchr(m->payload, 'a', m->len)) {
                if (m->len > upper_cap) {
                    upper_cap = m->len * 2;
                    upper = realloc(upper, upper_cap);
                    if (!upper)
                        plain_die(PROG, "out of memory");
                }
                const unsigned char *v = m->payload;
                for (size_t j = 0; j < m->len; j++)
                    upper[j] = (char)(v[j] >= 'a' && v[j] <= 'z' ? v[j] - ('a' - 'A') : v[j]);
                produce(producer, output, m->key, m->key_len, upper, m->len, deadline);
                produced++;
            }
            rd_kafka_message_destroy(batch[i]);
        }
        /* Serve delivery reports as we go so they never pile up to the end. */
        rd_kafka_poll(producer, 0);
    }

    rd_kafka_resp_err_t e = rd_kafka_flush(producer, 60000);
    double last = plain_now_ms();
    if (e)
        plain_die(PROG, "flush: %s (%d records unconfirmed)", rd_kafka_err2str(e),
                  rd_kafka_outq_len(producer));
    if (failed)
        plain_die(PROG, "%ld deliveries failed, the first with: %s", failed,
                  rd_kafka_err2str(first_failure));
    if (delivered != produced)
        plain_die(PROG, "%ld records produced but %ld delivered", produced, delivered);

    double elapsed = last - first;
    printf("{\"name\":\"%s\",\"records\":%ld,\"produced\":%ld,\"elapsed_ms\":%.1f,"
           "\"rate\":%.0f,\"max_rss_kb\":%ld,\"librdkafka\":\"%s\"}\n",
           PROG, records, produced, elapsed, elapsed > 0 ? records / (elapsed / 1e3) : 0.0,
           plain_max_rss_kb(), rd_kafka_version_str());
    fflush(stdout);

    free(upper);
    plain_consumer_destroy(consumer, queue);
    rd_kafka_destroy(producer);
    return 0;
}
