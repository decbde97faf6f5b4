/*
 * plain_consume: the hand-written baseline for tide's read path. A group
 * consumer on the batch API (rd_kafka_consume_batch_queue, 1000 at a time)
 * that reads every byte of every value, until it has seen the expected
 * number of records. Prints one JSON line on stdout:
 *   {"name":"plain_consume","records":N,"elapsed_ms":..,"rate":..,"max_rss_kb":..,..}
 * timed from the first record received to the last.
 *
 * It is what `tide run` with a detector that reads rec.value is compared to,
 * so it must never do less than that detector does (skip the bytes, read
 * fewer records) nor more (commit, copy). It exits 1 after 120 s without
 * reaching the count.
 *
 * "Reads every byte" is done as cheaply as C allows, so that the baseline is
 * not handicapped: one load and one xor per 8 bytes. A byte-at-a-time sum
 * (not vectorised at -O2) cost about 7% of this process's CPU.
 *
 * Usage: plain_consume BOOTSTRAP TOPIC EXPECTED_RECORDS
 */
#include "plain.h"

#include <stdint.h>
#include <string.h>

#define PROG "plain_consume"

/* Written once at the end so the reads cannot be optimised away. */
static volatile uint64_t value_fold_sink;

/* Every byte of v folded into 64 bits. memcpy is the portable unaligned
 * load; it compiles to a single mov. */
static uint64_t fold_bytes(const unsigned char *v, size_t len)
{
    uint64_t fold = 0, w;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, v + i, 8);
        fold ^= w;
    }
    for (; i < len; i++)
        fold ^= (uint64_t)v[i] << (8 * (i & 7));
    return fold;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s BOOTSTRAP TOPIC EXPECTED_RECORDS\n", PROG);
        return 2;
    }
    long expected = atol(argv[3]);
    if (expected <= 0)
        plain_die(PROG, "EXPECTED_RECORDS must be positive");

    rd_kafka_queue_t *queue;
    rd_kafka_t *rk = plain_consumer_new(PROG, argv[1], argv[2], &queue);
    rd_kafka_message_t *batch[PLAIN_BATCH];
    long records = 0;
    uint64_t bytes = 0, fold = 0;
    double start = plain_now_ms(), first = 0, last = 0;

    while (records < expected) {
        if (plain_now_ms() - start > PLAIN_DEADLINE_MS)
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
            } else {
                fold ^= fold_bytes(m->payload, m->len);
                bytes += m->len;
                records++;
            }
            rd_kafka_message_destroy(batch[i]);
        }
    }
    last = plain_now_ms();
    value_fold_sink = fold;

    double elapsed = last - first;
    printf("{\"name\":\"%s\",\"records\":%ld,\"elapsed_ms\":%.1f,\"rate\":%.0f,"
           "\"max_rss_kb\":%ld,\"value_bytes\":%llu,\"librdkafka\":\"%s\"}\n",
           PROG, records, elapsed, elapsed > 0 ? records / (elapsed / 1e3) : 0.0,
           plain_max_rss_kb(), (unsigned long long)bytes, rd_kafka_version_str());
    fflush(stdout);

    plain_consumer_destroy(rk, queue);
    return 0;
}
