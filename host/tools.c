/*
 * tools.c: `tide produce` (records from standard input) and `tide consume`
 * (records to standard output). Plain librdkafka clients; the consumer reads
 * every partition by assignment, without a consumer group, so reading a
 * topic never disturbs a detector's group.
 */
#include "tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "jsonl.h"
#include "log.h"

static const char *env_bootstrap(void) {
    const char *b = getenv("TIDE_BOOTSTRAP_SERVERS");
    return b && *b ? b : NULL;
}

static rd_kafka_t *client(rd_kafka_type_t type, const char *bootstrap, const char **extra) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    for (int i = 0; extra && extra[i]; i += 2)
        if (rd_kafka_conf_set(conf, extra[i], extra[i + 1], err, sizeof(err))) {
            fprintf(stderr, "tide: %s\n", err);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (!rk) fprintf(stderr, "tide: %s\n", err);
    return rk;
}

/* ---------------------------------------------------------------- produce */

static int delivery_failures;
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->err && !delivery_failures++)
        fprintf(stderr, "tide: delivery failed: %s\n", rd_kafka_err2str(m->err));
}

static int produce_usage(void) {
    fprintf(stderr,
            "usage: tide produce TOPIC [-b HOST:PORT] [--key-separator SEP] [--json]\n"
            "Each line of standard input is one record: its value, or key SEP value,\n"
            "or with --json {\"key\":..., \"value\":..., \"headers\":{...}, \"partition\":n,\n"
            "\"timestamp\":ms}.\n");
    return 2;
}

int tide_tool_produce(int argc, char **argv, volatile sig_atomic_t *stop) {
    const char *topic = NULL, *bootstrap = env_bootstrap(), *sep = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-b") || !strcmp(argv[i], "--bootstrap-server")) && i + 1 < argc)
            bootstrap = argv[++i];
        else if (!strcmp(argv[i], "--key-separator") && i + 1 < argc) sep = argv[++i];
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] != '-' && !topic) topic = argv[i];
        else return produce_usage();
    }
    if (!topic) return produce_usage();
    if (!bootstrap) {
        fprintf(stderr, "tide: no broker: pass -b HOST:PORT (the address `tide broker` or "
                        "`tide run` printed) or set TIDE_BOOTSTRAP_SERVERS\n");
        return 2;
    }
    const char *extra[] = {"linger.ms", "20", "enable.idempotence", "true",
                           "queue.buffering.max.messages", "1000000", NULL};
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err));
    for (int i = 0; extra[i]; i += 2) rd_kafka_conf_set(conf, extra[i], extra[i + 1], err, sizeof(err));
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "tide: %s\n", err);
        return 1;
    }
    tide_jsonl_t *jl = NULL;
    if (json) {
        char *e = NULL;
        if (!(jl = tide_jsonl_new(&e))) {
            fprintf(stderr, "tide: %s\n", e);
            free(e);
            rd_kafka_destroy(rk);
            return 1;
        }
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0, sent = 0;
    int rc = 0;
    while (!*stop && (len = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        const char *key = NULL, *val = line;
        size_t klen = 0, vlen = (size_t)len;
        int32_t partition = RD_KAFKA_PARTITION_UA;
        int64_t timestamp = 0;
        rd_kafka_headers_t *hdrs = NULL;
        if (jl) {
            if (len == 0) continue;
            tide_jsonl_rec_t r;
            char *e = NULL;
            if (tide_jsonl_parse(jl, line, (size_t)len, &r, &e)) {
                fprintf(stderr, "tide: stdin:%ld: %s\n", lineno, e);
                free(e);
                rc = 1;
                break;
            }
            key = r.key;
            klen = r.key_len < 0 ? 0 : (size_t)r.key_len;
            val = r.value;
            vlen = r.value_len < 0 ? 0 : (size_t)r.value_len;
            if (r.partition >= 0) partition = r.partition;
            timestamp = r.timestamp;
            if (r.n_headers) {
                hdrs = rd_kafka_headers_new((size_t)r.n_headers);
                for (int h = 0; h < r.n_headers; h++)
                    rd_kafka_header_add(hdrs, r.header_names[h], -1, r.header_values[h],
                                        (ssize_t)r.header_lens[h]);
            }
        } else if (sep) {
            char *s = strstr(line, sep);
            if (s) {
                key = line;
                klen = (size_t)(s - line);
                val = s + strlen(sep);
                vlen = (size_t)len - klen - strlen(sep);
            }
        }
        rd_kafka_resp_err_t e;
        while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                      RD_KAFKA_V_KEY(key, klen),
                                      RD_KAFKA_V_VALUE((void *)val, val ? vlen : 0),
                                      RD_KAFKA_V_TIMESTAMP(timestamp),
                                      RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END)) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        if (e) {
            if (hdrs) rd_kafka_headers_destroy(hdrs);
            fprintf(stderr, "tide: stdin:%ld: %s\n", lineno, rd_kafka_err2str(e));
            rc = 1;
            break;
        }
        sent++;
        rd_kafka_poll(rk, 0);
    }
    free(line);
    tide_jsonl_free(jl);
    if (rd_kafka_flush(rk, 60000)) {
        fprintf(stderr, "tide: %d record(s) not acknowledged in 60 s\n", rd_kafka_outq_len(rk));
        rc = 1;
    }
    if (delivery_failures) rc = 1;
    rd_kafka_destroy(rk);
    if (!rc) fprintf(stderr, "tide: produced %ld record(s) to %s\n", sent, topic);
    return rc;
}

/* ---------------------------------------------------------------- consume */

static void print_json_record(FILE *out, const rd_kafka_message_t *m) {
    static char buf[1 << 20];
    size_t o = 0;
    fputs("{\"topic\":", out);
    tide_json_str(buf, sizeof(buf), rd_kafka_topic_name(m->rkt), strlen(rd_kafka_topic_name(m->rkt)));
    fputs(buf, out);
    fprintf(out, ",\"partition\":%d,\"offset\":%lld,\"timestamp\":%lld,\"key\":", (int)m->partition,
            (long long)m->offset, (long long)rd_kafka_message_timestamp(m, NULL));
    if (m->key) {
        o = tide_json_str(buf, sizeof(buf), m->key, m->key_len);
        fwrite(buf, 1, o, out);
    } else fputs("null", out);
    fputs(",\"value\":", out);
    if (m->payload) {
        o = tide_json_str(buf, sizeof(buf), m->payload, m->len);
        fwrite(buf, 1, o, out);
    } else fputs("null", out);
    fputs(",\"headers\":{", out);
    rd_kafka_headers_t *h = NULL;
    if (!rd_kafka_message_headers(m, &h) && h) {
        const char *name;
        const void *val;
        size_t vlen;
        for (size_t i = 0; !rd_kafka_header_get_all(h, i, &name, &val, &vlen); i++) {
            if (i) fputc(',', out);
            tide_json_str(buf, sizeof(buf), name, strlen(name));
            fputs(buf, out);
            fputc(':', out);
            if (val) {
                o = tide_json_str(buf, sizeof(buf), val, vlen);
                fwrite(buf, 1, o, out);
            } else fputs("null", out);
        }
    }
    fputs("}}\n", out);
}

static int consume_usage(void) {
    fprintf(stderr,
            "usage: tide consume TOPIC [-b HOST:PORT] [--from-beginning] [--max-messages N]\n"
            "                    [--idle-timeout-ms MS] [--json]\n"
            "Prints the topic's records (values, or JSON lines with --json) from every\n"
            "partition, without joining a consumer group.\n");
    return 2;
}

int tide_tool_consume(int argc, char **argv, volatile sig_atomic_t *stop,
                      void (*on_signal)(int)) {
    const char *topic = NULL, *bootstrap = env_bootstrap();
    int from_beginning = 0, json = 0, idle_ms = 0;
    long max = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-b") || !strcmp(argv[i], "--bootstrap-server")) && i + 1 < argc)
            bootstrap = argv[++i];
        else if (!strcmp(argv[i], "--from-beginning")) from_beginning = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--max-messages") && i + 1 < argc) max = atol(argv[++i]);
        else if (!strcmp(argv[i], "--idle-timeout-ms") && i + 1 < argc) idle_ms = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !topic) topic = argv[i];
        else return consume_usage();
    }
    if (!topic) return consume_usage();
    if (!bootstrap) {
        fprintf(stderr, "tide: no broker: pass -b HOST:PORT or set TIDE_BOOTSTRAP_SERVERS\n");
        return 2;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* librdkafka wants a group.id even for assign(); it is never joined and
     * nothing is committed to it. */
    const char *extra[] = {"fetch.queue.backoff.ms", "10", "enable.partition.eof", "false",
                           "group.id", "tide-consume", "enable.auto.commit", "false",
                           "allow.auto.create.topics", "true", NULL};
    rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, bootstrap, extra);
    if (!rk) return 1;
    /* Find the partitions; a topic that does not exist yet is waited for. */
    int64_t start = tide_mono_ms();
    int64_t deadline = start + (idle_ms ? idle_ms : 10000);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int nparts = 0;
    while (!*stop) {
        if (rd_kafka_metadata(rk, 0, rkt, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (md->topic_cnt == 1 && !md->topics[0].err) nparts = md->topics[0].partition_cnt;
            rd_kafka_metadata_destroy(md);
        }
        if (nparts > 0 || tide_mono_ms() >= deadline) break;
        struct timespec ts = {0, 100 * 1000000};
        nanosleep(&ts, NULL); /* the topic may be auto-created any moment */
    }
    rd_kafka_topic_destroy(rkt);
    if (nparts == 0) {
        rd_kafka_destroy(rk);
        if (!*stop) fprintf(stderr, "tide: topic %s not found\n", topic);
        return *stop ? 0 : 1;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset =
            from_beginning ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    long count = 0;
    int64_t last = tide_mono_ms();
    while (!*stop && (!max || count < max)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m || m->err) {
            if (idle_ms && tide_mono_ms() - last >= idle_ms) {
                if (m) rd_kafka_message_destroy(m);
                break;
            }
            if (!m) continue;
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fprintf(stderr, "tide: %s\n", rd_kafka_message_errstr(m));
        } else {
            last = tide_mono_ms();
            count++;
            if (json) print_json_record(stdout, m);
            else {
                if (m->payload) fwrite(m->payload, 1, m->len, stdout);
                fputc('\n', stdout);
            }
        }
        rd_kafka_message_destroy(m);
    }
    fflush(stdout);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return 0;
}
