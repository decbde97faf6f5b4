/*
 * first_record: times a detector dropped into a `tide run DIR` folder, from
 * the file landing to its first output record being readable, for
 * bench/run.sh.
 *
 * Usage: first_record BOOTSTRAP TOPIC MARKERS SRC DST TIMEOUT_MS
 *
 * Reads TOPIC (every partition, by assignment, no consumer group) from the
 * beginning until it has seen MARKERS records: bench/run.sh writes one marker
 * to each partition of the fresh output topic beforehand, so having seen
 * them all means every partition is being fetched. Then it renames SRC to
 * DST (the detector lands in the watched folder) and waits for the next
 * record of the topic: the detector's first output. Prints one line,
 *   {"name":"first_record","ms":..,"partition":..,"offset":..}
 * with the milliseconds from just before the rename to that record's
 * arrival here, and exits 0; exits 1 when TIMEOUT_MS passes first.
 *
 * fetch.wait.max.ms is 5: librdkafka's mock broker answers a fetch that
 * finds no data only after the whole fetch.wait.max.ms (default 500), even
 * if records arrive meanwhile, so the default would add up to half a second
 * to every reading, in 500 ms steps. The detector's own consumer reads a
 * topic that already holds records and is not slowed this way.
 */
#include <librdkafka/rdkafka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROG "first_record"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void die(const char *msg, const char *detail)
{
    fprintf(stderr, "%s: %s%s%s\n", PROG, msg, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static void set(rd_kafka_conf_t *conf, const char *key, const char *value)
{
    char err[512];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof err) != RD_KAFKA_CONF_OK) die(key, err);
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s BOOTSTRAP TOPIC MARKERS SRC DST TIMEOUT_MS\n", PROG);
        return 2;
    }
    const char *bootstrap = argv[1], *topic = argv[2], *src = argv[4], *dst = argv[5];
    long markers = atol(argv[3]);
    double deadline = now_ms() + atof(argv[6]);

    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", bootstrap);
    /* Required by the consumer API; never joined (assign), nothing committed. */
    set(conf, "group.id", "bench-first-record");
    set(conf, "enable.auto.commit", "false");
    set(conf, "enable.partition.eof", "false");
    set(conf, "fetch.wait.max.ms", "5");
    set(conf, "fetch.queue.backoff.ms", "1");
    set(conf, "fetch.error.backoff.ms", "5");
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) die("cannot create a consumer", err);

    /* The partitions of TOPIC, which bench/run.sh created with the broker. */
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    int nparts = 0;
    while (nparts == 0 && now_ms() < deadline) {
        if (rd_kafka_metadata(rk, 0, rkt, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (md->topic_cnt == 1 && !md->topics[0].err) nparts = md->topics[0].partition_cnt;
            rd_kafka_metadata_destroy(md);
        }
    }
    rd_kafka_topic_destroy(rkt);
    if (nparts == 0) die("topic not found", topic);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) die("assign", rd_kafka_err2str(e));

    long seen = 0;
    double t0 = 0;
    int rc = 1;
    while (now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 5);
        if (m && m->err) {
            fprintf(stderr, "%s: %s\n", PROG, rd_kafka_message_errstr(m));
        } else if (m && seen < markers) {
            if (++seen == markers) {
                t0 = now_ms();
                if (rename(src, dst)) die("rename", strerror(errno));
            }
        } else if (m) {
            double t1 = now_ms();
            printf("{\"name\":\"%s\",\"ms\":%.3f,\"partition\":%d,\"offset\":%lld}\n", PROG, t1 - t0,
                   (int)m->partition, (long long)m->offset);
            rc = 0;
            rd_kafka_message_destroy(m);
            break;
        }
        if (m) rd_kafka_message_destroy(m);
    }
    if (rc)
        fprintf(stderr, "%s: %s after %s ms (%ld of %ld markers seen)\n", PROG,
                seen < markers ? "no markers" : "no output record", argv[6], seen, markers);
    fflush(stdout);
    rd_kafka_destroy(rk);
    return rc;
}
