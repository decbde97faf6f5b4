/*
 * failover_probe: times a failover for bench/failover.sh, from a kill -9 to
 * the first output record processed after it.
 *
 * Usage: failover_probe BOOTSTRAP IN OUT PARTITIONS PID TIMEOUT_MS GROUP
 *
 * PARTITIONS: the input partitions the victim runs (comma-separated); PID: the
 * process to kill with SIGKILL (a negative number: a process group, a whole
 * `tide run` instance). The detector under test (bench/failover_count.lua)
 * copies to OUT every input record whose value starts with "probe"; each run
 * marks its probes with a number of its own.
 *
 * It reads OUT (every partition, by assignment, from its end), and writes a
 * record "probe-pre-N" to each of PARTITIONS every 50 ms until one comes
 * back out: the victim is running them. It waits until GROUP (the victim's
 * consumer group) has committed every one of PARTITIONS to its end, so that
 * the figure is the failover's, not a replay of what the victim had not
 * committed (the development broker defers commits for as long as a
 * rebalance lasts). Then it kills the victim, and writes
 * "probe-post-N" every 50 ms until the first of those comes out: another
 * process (the survivor, or the victim's restart) runs those partitions
 * again. Prints one line,
 *   {"name":"failover","ms":..,"partition":..,"kill_wall_ms":..,"out_wall_ms":..}
 * with the milliseconds from the kill to that record's arrival here (and
 * both on the wall clock, to line them up with the survivor's log), and
 * exits 0; exits 1 when TIMEOUT_MS passes first.
 */
#include <librdkafka/rdkafka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define PROG "failover_probe"
#define MAX_PARTS 1024

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The wall clock, to line the kill up with the survivor's log. */
static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

static rd_kafka_t *client(rd_kafka_type_t type, const char *bootstrap)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", bootstrap);
    if (type == RD_KAFKA_CONSUMER) {
        /* never joined (assign), nothing committed; a short fetch wait, as the
         * mock answers an empty fetch only after all of it */
        set(conf, "group.id", "bench-failover-probe");
        set(conf, "enable.auto.commit", "false");
        set(conf, "enable.partition.eof", "false");
        set(conf, "fetch.wait.max.ms", "5");
        set(conf, "fetch.queue.backoff.ms", "1");
    } else {
        set(conf, "linger.ms", "0");
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof err);
    if (!rk) die("cannot create a client", err);
    return rk;
}

/* Read OUT from its end, every partition. */
static void read_from_end(rd_kafka_t *c, const char *topic, double deadline)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(c, topic, NULL);
    int n = 0;
    while (!n && now_ms() < deadline) {
        if (!rd_kafka_metadata(c, 0, rkt, &md, 2000) && md->topic_cnt == 1 && !md->topics[0].err)
            n = md->topics[0].partition_cnt;
        if (md) rd_kafka_metadata_destroy(md);
        md = NULL;
    }
    rd_kafka_topic_destroy(rkt);
    if (!n) die("no partitions in", topic);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++) rd_kafka_topic_partition_list_add(l, topic, i)->offset = RD_KAFKA_OFFSET_END;
    rd_kafka_assign(c, l);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_poll_set_consumer(c);
}

/* This run's mark on its probes: outputs of earlier runs' probes, which a
 * new application.id processes again from the start of IN, are not ours. */
static long nonce;

/* One probe record to each partition. */
static void probe(rd_kafka_t *p, const char *topic, const int *parts, int n, const char *tag, long seq)
{
    char value[80];
    int len = snprintf(value, sizeof value, "probe-%s-%ld-%ld", tag, nonce, seq);
    for (int i = 0; i < n; i++)
        rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(parts[i]),
                          RD_KAFKA_V_KEY("probe", 5), RD_KAFKA_V_VALUE(value, (size_t)len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    rd_kafka_poll(p, 0);
}

/* Probe until a record tagged `tag` comes out; its partition, or -1. */
static int until_out(rd_kafka_t *p, rd_kafka_t *c, const char *in, const int *parts, int n,
                     const char *tag, double deadline)
{
    char want[64];
    snprintf(want, sizeof want, "probe-%s-%ld-", tag, nonce);
    double next = 0;
    long seq = 0;
    while (now_ms() < deadline) {
        if (now_ms() >= next) {
            probe(p, in, parts, n, tag, seq++);
            next = now_ms() + 50;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 5);
        if (!m) continue;
        int hit = !m->err && m->len >= strlen(want) && !memcmp(m->payload, want, strlen(want));
        int partition = m->partition;
        rd_kafka_message_destroy(m);
        if (hit) return partition;
    }
    return -1;
}

/* Wait until `group` has committed each of parts[0..n) of `topic` up to
 * its end. */
static void until_committed(const char *bootstrap, const char *group, const char *topic,
                            const int *parts, int n, double deadline)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", bootstrap);
    set(conf, "group.id", group); /* never joins: it only asks for the group's offsets */
    set(conf, "enable.auto.commit", "false");
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!c) die("cannot create a client", err);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++) rd_kafka_topic_partition_list_add(l, topic, parts[i]);
    int behind = n;
    while (behind && now_ms() < deadline) {
        behind = 0;
        if (rd_kafka_committed(c, l, 5000)) behind = n;
        for (int i = 0; i < l->cnt && !behind; i++) {
            int64_t lo, hi;
            if (rd_kafka_query_watermark_offsets(c, topic, l->elems[i].partition, &lo, &hi, 5000) ||
                l->elems[i].offset < hi)
                behind++;
        }
        if (behind) usleep(100 * 1000);
    }
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(c);
    if (behind) die("the victim never committed its partitions", group);
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: %s BOOTSTRAP IN OUT PARTITIONS PID TIMEOUT_MS GROUP\n", PROG);
        return 2;
    }
    const char *bootstrap = argv[1], *in = argv[2], *out = argv[3];
    int parts[MAX_PARTS], n = 0;
    for (char *s = argv[4], *tok; n < MAX_PARTS && (tok = strtok(s, ",")); s = NULL) parts[n++] = atoi(tok);
    pid_t victim = (pid_t)atol(argv[5]);
    double deadline = now_ms() + atof(argv[6]);
    nonce = (long)getpid() * 100000 + (long)now_ms() % 100000;
    if (!n || !victim) die("nothing to probe or kill", NULL);

    rd_kafka_t *p = client(RD_KAFKA_PRODUCER, bootstrap), *c = client(RD_KAFKA_CONSUMER, bootstrap);
    read_from_end(c, out, deadline);
    if (until_out(p, c, in, parts, n, "pre", deadline) < 0) die("the victim never ran a probe", NULL);
    until_committed(bootstrap, argv[7], in, parts, n, deadline);
    if (kill(victim, SIGKILL)) die("cannot kill the victim", NULL);
    double t0 = now_ms();
    long long kill_wall = wall_ms();
    int partition = until_out(p, c, in, parts, n, "post", deadline);
    if (partition < 0) die("no probe came out after the kill", NULL);
    printf("{\"name\":\"failover\",\"ms\":%.0f,\"partition\":%d,\"kill_wall_ms\":%lld,"
           "\"out_wall_ms\":%lld}\n", now_ms() - t0, partition, kill_wall, wall_ms());
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    rd_kafka_flush(p, 1000);
    rd_kafka_destroy(p);
    return 0;
}
