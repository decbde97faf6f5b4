/*
 * tools.c: `tide produce` (records from standard input), `tide consume`
 * (records to standard output) and the topic reader of `tide replay --from`.
 * Plain librdkafka clients; the consumers read partitions by assignment,
 * without a consumer group, so reading a topic never disturbs a detector's
 * group.
 */
#include "tools.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "avro_tool.h"
#include "jsonl.h"
#include "log.h"

static const char *env_bootstrap(void) {
    const char *b = getenv("TIDE_BOOTSTRAP_SERVERS");
    return b && *b ? b : NULL;
}

/* The registry of --avro: -r URL, else TIDE_SCHEMA_REGISTRY_URL (without
 * one, schemas come from ./schemas); basic auth from the environment only
 * (TIDE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO), never from the command line. */
static tide_registry_opts_t tool_registry(const char *url) {
    tide_registry_opts_t r = {0};
    r.url = url ? url : getenv("TIDE_SCHEMA_REGISTRY_URL");
    r.user_info = getenv("TIDE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO");
    r.timeout_ms = 5000;
    const char *ar = getenv("TIDE_AUTO_REGISTER_SCHEMAS");
    r.auto_register = !ar || strcmp(ar, "false");
    const char *ul = getenv("TIDE_USE_LATEST_VERSION");
    r.use_latest = ul && !strcmp(ul, "true");
    return r;
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
    /* librdkafka's threads inherit this mask: SIGALRM and SIGPROF are for
     * the thread that runs Lua in `tide replay --from` (bindings/guard.c). */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    sigaddset(&block, SIGPROF);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!rk) fprintf(stderr, "tide: %s\n", err);
    return rk;
}

/* ---------------------------------------------------------------- produce */

/* What became of the records sent: every one is acknowledged or failed, and
 * a failure names its input line (the record's opaque). The first failure
 * stops the reading of the input; those already sent finish. */
typedef struct produce_run {
    long sent, acked, failed;
    long first_failed_line; /* 0: none */
    int shown;              /* failures printed so far */
} produce_run_t;

#define PRODUCE_SHOWN_MAX 10

static void produce_failed(produce_run_t *pr, long line, const char *reason) {
    pr->failed++;
    if (!pr->first_failed_line || line < pr->first_failed_line) pr->first_failed_line = line;
    if (pr->shown++ < PRODUCE_SHOWN_MAX)
        fprintf(stderr, "tide: stdin:%ld: not sent: %s\n", line, reason);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    produce_run_t *pr = opaque;
    if (m->err) produce_failed(pr, (long)(intptr_t)m->_private, rd_kafka_err2str(m->err));
    else pr->acked++;
}

static int produce_usage(void) {
    fprintf(stderr,
            "usage: tide produce TOPIC [-b HOST:PORT] [--key-separator SEP] [--json]\n"
            "                    [--avro SCHEMA.avsc [-r REGISTRY_URL]] [-D librdkafka.property=value]...\n"
            "Each line of standard input is one record: its value, or key SEP value,\n"
            "or with --json {\"key\":..., \"value\":..., \"headers\":{...}, \"partition\":n,\n"
            "\"timestamp\":ms}. With --avro, each value is JSON, written as Avro with\n"
            "SCHEMA in the schema registry's wire format (subject TOPIC-value; the\n"
            "registry: -r, or TIDE_SCHEMA_REGISTRY_URL, else the folder ./schemas).\n"
            "Stops at the first record that cannot be sent (a broker refusal, a bad\n"
            "line), says which line and how many were sent, and exits 1.\n");
    return 2;
}

typedef struct produce_args {
    const char *topic, *bootstrap, *sep;
    const char *avro_schema, *registry;
    int json;
    const char **props; /* key, value pairs from -D, NULL-terminated */
} produce_args_t;

static int produce_parse(int argc, char **argv, produce_args_t *a) {
    memset(a, 0, sizeof(*a));
    a->bootstrap = env_bootstrap();
    a->props = calloc((size_t)argc * 2 + 1, sizeof(char *));
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-b") || !strcmp(argv[i], "--bootstrap-server")) && i + 1 < argc)
            a->bootstrap = argv[++i];
        else if (!strcmp(argv[i], "--key-separator") && i + 1 < argc) a->sep = argv[++i];
        else if (!strcmp(argv[i], "--json")) a->json = 1;
        else if (!strcmp(argv[i], "--avro") && i + 1 < argc) a->avro_schema = argv[++i];
        else if ((!strcmp(argv[i], "-r") || !strcmp(argv[i], "--registry")) && i + 1 < argc)
            a->registry = argv[++i];
        else if (!strcmp(argv[i], "-D") && i + 1 < argc && strchr(argv[i + 1], '=') && a->props) {
            char *kv = argv[++i], *eq = strchr(kv, '=');
            *eq = '\0';
            a->props[n++] = kv;
            a->props[n++] = eq + 1;
        } else if (argv[i][0] != '-' && !a->topic) a->topic = argv[i];
        else return produce_usage();
    }
    if (!a->topic || !a->props) return produce_usage();
    if (!a->bootstrap) {
        fprintf(stderr, "tide: no broker: pass -b HOST:PORT (the address `tide broker` or "
                        "`tide run` printed) or set TIDE_BOOTSTRAP_SERVERS\n");
        return 2;
    }
    return 0;
}

static rd_kafka_t *make_producer(const produce_args_t *a, produce_run_t *pr) {
    /* murmur2, as the worker's producer and the Java client: a key lands on
     * the partition a repartition topic or a foreign-key join would send it
     * to, so that records tide writes meet the records written here, and
     * where interactive queries look for it. */
    const char *defaults[] = {"linger.ms", "20", "enable.idempotence", "true",
                              "queue.buffering.max.messages", "1000000",
                              "partitioner", "murmur2_random", NULL};
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", a->bootstrap, err, sizeof(err));
    for (int i = 0; defaults[i]; i += 2) rd_kafka_conf_set(conf, defaults[i], defaults[i + 1], err, sizeof(err));
    for (int i = 0; a->props[i]; i += 2)
        if (rd_kafka_conf_set(conf, a->props[i], a->props[i + 1], err, sizeof(err))) {
            fprintf(stderr, "tide: -D %s: %s\n", a->props[i], err);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, pr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) fprintf(stderr, "tide: %s\n", err);
    return rk;
}

/* One record to send, made from one input line. */
typedef struct produce_rec {
    const char *key, *val;
    size_t klen, vlen;
    int32_t partition;
    int64_t timestamp;
    rd_kafka_headers_t *hdrs;
} produce_rec_t;

/* Parse a --json line; 0, or -1 with the reason printed. */
static int json_record(tide_jsonl_t *jl, char *line, size_t len, long lineno, int *warned_zero,
                       produce_rec_t *r) {
    tide_jsonl_rec_t j;
    char *e = NULL;
    if (tide_jsonl_parse(jl, line, len, &j, &e)) {
        fprintf(stderr, "tide: stdin:%ld: %s\n", lineno, e);
        free(e);
        return -1;
    }
    r->key = j.key;
    r->klen = j.key_len < 0 ? 0 : (size_t)j.key_len;
    r->val = j.value;
    r->vlen = j.value_len < 0 ? 0 : (size_t)j.value_len;
    if (j.partition >= 0) r->partition = j.partition;
    /* librdkafka stamps a record with timestamp 0 with the time it is
     * produced: it cannot send 0 itself. Say so, once. */
    if (j.timestamp == 0 && !*warned_zero) {
        fprintf(stderr,
                "tide: stdin:%ld: timestamp 0 means \"now\" to the Kafka client: the "
                "record gets the current time (use 1 or more)\n",
                lineno);
        *warned_zero = 1;
    }
    r->timestamp = j.timestamp < 0 ? 0 : j.timestamp;
    if (j.n_headers) {
        r->hdrs = rd_kafka_headers_new((size_t)j.n_headers);
        for (int h = 0; h < j.n_headers; h++)
            rd_kafka_header_add(r->hdrs, j.header_names[h], -1, j.header_values[h],
                                (ssize_t)j.header_lens[h]);
    }
    return 0;
}

static void plain_record(char *line, size_t len, const char *sep, produce_rec_t *r) {
    r->val = line;
    r->vlen = len;
    char *s = sep ? strstr(line, sep) : NULL;
    if (s) {
        r->key = line;
        r->klen = (size_t)(s - line);
        r->val = s + strlen(sep);
        r->vlen = len - r->klen - strlen(sep);
    }
}

/* Write a record's value (JSON) as Avro; 0, or -1 with the reason printed. */
static int avro_value(tide_avro_tool_t *avro, produce_rec_t *r, long lineno) {
    char *e = NULL;
    if (!tide_avro_tool_encode(avro, r->val, r->vlen, &r->val, &r->vlen, &e)) return 0;
    fprintf(stderr, "tide: stdin:%ld: %s\n", lineno, e);
    free(e);
    if (r->hdrs) rd_kafka_headers_destroy(r->hdrs);
    return -1;
}

/* Hand one record to librdkafka (waiting while its queue is full); 0, or
 * the error of a record refused at once (too large, unknown partition). */
static rd_kafka_resp_err_t send_record(rd_kafka_t *rk, const char *topic, produce_rec_t *r,
                                       long lineno) {
    rd_kafka_resp_err_t e;
    while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(r->partition),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_KEY(r->key, r->klen),
                                  RD_KAFKA_V_VALUE((void *)r->val, r->val ? r->vlen : 0),
                                  RD_KAFKA_V_TIMESTAMP(r->timestamp),
                                  RD_KAFKA_V_OPAQUE((void *)(intptr_t)lineno),
                                  RD_KAFKA_V_HEADERS(r->hdrs), RD_KAFKA_V_END)) ==
           RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(rk, 10);
    if (e && r->hdrs) rd_kafka_headers_destroy(r->hdrs); /* not taken over */
    return e;
}

/* Read and send lines until the input ends, a line fails, or a delivery
 * failed. Returns the last line read; *more: input was left unread. */
static long produce_lines(rd_kafka_t *rk, const produce_args_t *a, tide_jsonl_t *jl,
                          tide_avro_tool_t *avro, produce_run_t *pr, volatile sig_atomic_t *stop,
                          int *bad_line) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int warned_zero = 0;
    while (!*stop && !pr->failed && (len = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        produce_rec_t r = {NULL, NULL, 0, 0, RD_KAFKA_PARTITION_UA, 0, NULL};
        if (jl) {
            if (len == 0) continue;
            if (json_record(jl, line, (size_t)len, lineno, &warned_zero, &r)) {
                *bad_line = 1;
                break;
            }
        } else {
            plain_record(line, (size_t)len, a->sep, &r);
        }
        if (avro && r.val && avro_value(avro, &r, lineno)) {
            *bad_line = 1;
            break;
        }
        rd_kafka_resp_err_t e = send_record(rk, a->topic, &r, lineno);
        if (e) {
            produce_failed(pr, lineno, rd_kafka_err2str(e));
            break;
        }
        pr->sent++;
        rd_kafka_poll(rk, 0);
    }
    free(line);
    return lineno;
}

/* Is there input left after the line that stopped the reading? */
static int input_left(void) {
    int c = getc(stdin);
    if (c == EOF) return 0;
    ungetc(c, stdin);
    return 1;
}

/* The last words of `tide produce`: how many records made it, and where it
 * stopped. Returns the exit code. */
static int produce_report(const produce_args_t *a, produce_run_t *pr, long lastline, int bad_line,
                          int unacked, int left) {
    if (pr->shown > PRODUCE_SHOWN_MAX)
        fprintf(stderr, "tide: ... and %d more line(s) not sent\n", pr->shown - PRODUCE_SHOWN_MAX);
    if (!pr->failed && !bad_line && !unacked) {
        fprintf(stderr, "tide: produced %ld record(s) to %s\n", pr->acked, a->topic);
        return 0;
    }
    if (unacked) fprintf(stderr, "tide: %d record(s) not acknowledged in 60 s\n", unacked);
    fprintf(stderr, "tide: %ld of %ld record(s) sent to %s were acknowledged", pr->acked,
            pr->sent, a->topic);
    if (pr->failed) fprintf(stderr, "; the first that failed is on stdin:%ld", pr->first_failed_line);
    if (left) fprintf(stderr, "; stopped after stdin:%ld: the rest of the input was not sent", lastline);
    fputc('\n', stderr);
    return 1;
}

/* The encoders a run needs: the JSON-lines parser, the Avro writer. 0, or
 * -1 (with the reason printed) and the exit code in *rc. */
static int produce_encoders(const produce_args_t *a, tide_jsonl_t **jl, tide_avro_tool_t **avro,
                            int *rc) {
    char *e = NULL;
    if (a->avro_schema) {
        tide_registry_opts_t ro = tool_registry(a->registry);
        if (!(*avro = tide_avro_tool_new(&ro, a->topic, a->avro_schema, &e))) {
            fprintf(stderr, "tide: --avro %s: %s\n", a->avro_schema, e);
            free(e);
            *rc = 2;
            return -1;
        }
    }
    if (a->json && !(*jl = tide_jsonl_new(&e))) {
        fprintf(stderr, "tide: %s\n", e);
        free(e);
        *rc = 1;
        return -1;
    }
    return 0;
}

int tide_tool_produce(int argc, char **argv, volatile sig_atomic_t *stop) {
    produce_args_t a;
    int rc = produce_parse(argc, argv, &a);
    if (rc) {
        free(a.props);
        return rc;
    }
    produce_run_t pr = {0};
    tide_jsonl_t *jl = NULL;
    tide_avro_tool_t *avro = NULL;
    rd_kafka_t *rk = make_producer(&a, &pr);
    if (!rk || produce_encoders(&a, &jl, &avro, &rc)) {
        if (rk) rd_kafka_destroy(rk);
        tide_jsonl_free(jl);
        tide_avro_tool_free(avro);
        free(a.props);
        return rk ? rc : 1;
    }
    int bad_line = 0;
    long last = produce_lines(rk, &a, jl, avro, &pr, stop, &bad_line);
    int left = (bad_line || pr.failed) && input_left();
    tide_jsonl_free(jl);
    tide_avro_tool_free(avro);
    rd_kafka_flush(rk, 60000);
    int unacked = rd_kafka_outq_len(rk);
    rd_kafka_destroy(rk);
    free(a.props);
    return produce_report(&a, &pr, last, bad_line, unacked, left);
}

/* ---------------------------------------------------------------- consume */

/* value_json: the value as JSON text (--avro), written as it is; NULL:
 * the value's bytes as a JSON string. */
static void print_json_record(FILE *out, const rd_kafka_message_t *m, const char *value_json,
                              size_t value_json_len) {
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
    if (value_json) {
        fwrite(value_json, 1, value_json_len, out);
    } else if (m->payload) {
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

/* The number of partitions of `topic`, waiting up to wait_ms for it to exist
 * (it may be auto-created any moment); 0 when it does not, or on *stop. */
static int topic_partitions(rd_kafka_t *rk, const char *topic, int wait_ms,
                            volatile sig_atomic_t *stop) {
    int64_t deadline = tide_mono_ms() + wait_ms;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int nparts = 0;
    while (!(stop && *stop)) {
        if (rd_kafka_metadata(rk, 0, rkt, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (md->topic_cnt == 1 && !md->topics[0].err) nparts = md->topics[0].partition_cnt;
            rd_kafka_metadata_destroy(md);
        }
        if (nparts > 0 || tide_mono_ms() >= deadline) break;
        struct timespec ts = {0, 100 * 1000000};
        nanosleep(&ts, NULL);
    }
    rd_kafka_topic_destroy(rkt);
    return nparts;
}

static int consume_usage(void) {
    fprintf(stderr,
            "usage: tide consume TOPIC [-b HOST:PORT] [--from-beginning] [--max-messages N]\n"
            "                    [--idle-timeout-ms MS] [--json] [--avro [-r REGISTRY_URL]]\n"
            "Prints the topic's records (values, or JSON lines with --json) from every\n"
            "partition, without joining a consumer group. With --avro, values in the\n"
            "schema registry's wire format are printed as JSON (the registry: -r, or\n"
            "TIDE_SCHEMA_REGISTRY_URL, else the folder ./schemas).\n");
    return 2;
}

int tide_tool_consume(int argc, char **argv, volatile sig_atomic_t *stop,
                      void (*on_signal)(int)) {
    const char *topic = NULL, *bootstrap = env_bootstrap(), *registry = NULL;
    int from_beginning = 0, json = 0, idle_ms = 0, avro_values = 0;
    long max = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-b") || !strcmp(argv[i], "--bootstrap-server")) && i + 1 < argc)
            bootstrap = argv[++i];
        else if (!strcmp(argv[i], "--avro")) avro_values = 1;
        else if ((!strcmp(argv[i], "-r") || !strcmp(argv[i], "--registry")) && i + 1 < argc)
            registry = argv[++i];
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
    tide_avro_tool_t *avro = NULL;
    if (avro_values) {
        char *e = NULL;
        tide_registry_opts_t ro = tool_registry(registry);
        if (!(avro = tide_avro_tool_new(&ro, topic, NULL, &e))) {
            fprintf(stderr, "tide: --avro: %s\n", e);
            free(e);
            return 2;
        }
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
    int nparts = topic_partitions(rk, topic, idle_ms ? idle_ms : 10000, stop);
    if (nparts == 0) {
        rd_kafka_destroy(rk);
        tide_avro_tool_free(avro);
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
            const char *vj = NULL;
            size_t vjlen = 0;
            char *ae = NULL;
            if (avro && m->payload &&
                tide_avro_tool_decode(avro, m->payload, m->len, &vj, &vjlen, &ae)) {
                fprintf(stderr, "tide: %s [%d] offset %lld: %s\n", topic, (int)m->partition,
                        (long long)m->offset, ae);
                free(ae);
                vj = NULL;
            }
            if (json) print_json_record(stdout, m, vj, vjlen);
            else if (vj) {
                fwrite(vj, 1, vjlen, stdout);
                fputc('\n', stdout);
            } else if (!avro || !m->payload) {
                if (m->payload) fwrite(m->payload, 1, m->len, stdout);
                fputc('\n', stdout);
            }
        }
        rd_kafka_message_destroy(m);
    }
    fflush(stdout);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    tide_avro_tool_free(avro);
    return 0;
}

/* ---------------------------------------------------------------- replay */

/* `tide replay --from`: offset ranges of a topic, read once by assignment,
 * handed to the CLI's Lua (bindings/runtime.c). It joins no group and commits
 * nothing, so it holds nothing to clean up: a signal simply ends it. */

#define READ_STALL_MS 30000 /* nothing read for this long: give up */

/* A partition being read: offsets next..end-1 are still wanted. */
typedef struct read_part {
    int32_t partition;
    int64_t next, end;
} read_part_t;

/* A message's headers as the arrays tide_cli_record_t wants, reused. */
typedef struct header_arrays {
    const char **names, **values;
    size_t *lens, cap;
} header_arrays_t;

static int read_fail(char **errp, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    *errp = strdup(buf);
    return -1;
}

/* The partitions to read (ranges, or with n 0 every partition from the
 * start), clamped to the offsets they hold now. Returns how many are left to
 * read, or -1 with *errp. */
static int plan_parts(rd_kafka_t *rk, const char *topic, int nparts,
                      const tide_cli_range_t *ranges, int n, read_part_t *parts, char **errp) {
    int count = 0;
    for (int i = 0; i < (n ? n : nparts); i++) {
        tide_cli_range_t r = n ? ranges[i] : (tide_cli_range_t){i, 0, -1};
        if (r.partition < 0 || r.partition >= nparts)
            return read_fail(errp, "%s has no partition %d (it has %d)", topic, (int)r.partition,
                             nparts);
        int64_t lo, hi;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(rk, topic, r.partition, &lo, &hi, 10000);
        if (e)
            return read_fail(errp, "offsets of %s [%d]: %s", topic, (int)r.partition,
                             rd_kafka_err2str(e));
        int64_t from = r.from > lo ? r.from : lo;
        int64_t end = r.to < 0 || r.to + 1 > hi ? hi : r.to + 1;
        if (from < end) parts[count++] = (read_part_t){r.partition, from, end};
    }
    return count;
}

static void message_headers(const rd_kafka_message_t *m, header_arrays_t *h,
                            tide_cli_record_t *r) {
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(m, &hdrs) || !hdrs) return;
    size_t n = rd_kafka_header_cnt(hdrs);
    if (n > h->cap) {
        const char **names = realloc(h->names, n * sizeof(char *));
        if (names) h->names = names;
        const char **values = realloc(h->values, n * sizeof(char *));
        if (values) h->values = values;
        size_t *lens = realloc(h->lens, n * sizeof(size_t));
        if (lens) h->lens = lens;
        if (!names || !values || !lens) return; /* out of memory: no headers */
        h->cap = n;
    }
    const char *name;
    const void *val;
    size_t len;
    for (size_t i = 0; i < n && !rd_kafka_header_get_all(hdrs, i, &name, &val, &len); i++) {
        h->names[i] = name;
        h->values[i] = val;
        h->lens[i] = len;
        r->n_headers = i + 1;
    }
    r->header_names = h->names;
    r->header_values = h->values;
    r->header_lens = h->lens;
}

static void deliver(const rd_kafka_message_t *m, header_arrays_t *h, tide_cli_record_fn fn,
                    void *ud) {
    tide_cli_record_t r = {0};
    r.topic = rd_kafka_topic_name(m->rkt);
    r.partition = m->partition;
    r.offset = m->offset;
    r.timestamp = rd_kafka_message_timestamp(m, NULL);
    r.key = m->key;
    r.key_len = m->key ? (int32_t)m->key_len : -1;
    r.value = m->payload;
    r.value_len = m->payload ? (int32_t)m->len : -1;
    message_headers(m, h, &r);
    fn(ud, &r);
}

static read_part_t *find_part(read_part_t *parts, int n, int32_t partition) {
    for (int i = 0; i < n; i++)
        if (parts[i].partition == partition) return &parts[i];
    return NULL;
}

/* Assign the parts and poll until each is read to its end. */
static int read_parts(rd_kafka_t *rk, const char *topic, read_part_t *parts, int n,
                      tide_cli_record_fn fn, void *ud, char **errp) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topic, parts[i].partition)->offset = parts[i].next;
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) return read_fail(errp, "cannot assign %s: %s", topic, rd_kafka_err2str(e));
    header_arrays_t h = {0};
    int left = n, rc = 0;
    int64_t last = tide_mono_ms();
    while (left > 0) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) {
            if (tide_mono_ms() - last < READ_STALL_MS) continue;
            rc = read_fail(errp, "nothing came from %s for %d s (%d partition(s) not read to the end)",
                           topic, READ_STALL_MS / 1000, left);
            break;
        }
        last = tide_mono_ms();
        read_part_t *p = find_part(parts, n, m->partition);
        if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            fprintf(stderr, "tide: %s\n", rd_kafka_message_errstr(m));
        } else if (p && p->next < p->end) {
            if (!m->err && m->offset < p->end) deliver(m, &h, fn, ud);
            /* At the end of the partition, all it held at startup was read. */
            p->next = m->err ? p->end : m->offset + 1;
            if (p->next >= p->end) left--;
        }
        rd_kafka_message_destroy(m);
    }
    free(h.names);
    free(h.values);
    free(h.lens);
    return rc;
}

static int read_topic_with(rd_kafka_t *rk, const char *topic, const tide_cli_range_t *ranges,
                           int n, tide_cli_record_fn fn, void *ud, char **errp) {
    int nparts = topic_partitions(rk, topic, 5000, NULL);
    if (nparts == 0) return read_fail(errp, "topic %s not found", topic);
    read_part_t *parts = calloc((size_t)(n ? n : nparts), sizeof(*parts));
    if (!parts) return read_fail(errp, "not enough memory");
    int count = plan_parts(rk, topic, nparts, ranges, n, parts, errp);
    int rc = count > 0 ? read_parts(rk, topic, parts, count, fn, ud, errp) : count;
    free(parts);
    return rc;
}

int tide_tool_read_topic(const char *bootstrap, const char *topic, const tide_cli_range_t *ranges,
                         int n, tide_cli_record_fn fn, void *ud, char **errp) {
    if (!bootstrap) bootstrap = env_bootstrap();
    if (!bootstrap) return read_fail(errp, "no broker: pass -b HOST:PORT or set TIDE_BOOTSTRAP_SERVERS");
    /* librdkafka wants a group.id even for assign(); it is never joined and
     * nothing is committed to it. The end of each partition is reported. */
    const char *extra[] = {"group.id", "tide-replay", "enable.auto.commit", "false",
                           "enable.partition.eof", "true", "auto.offset.reset", "earliest",
                           "fetch.queue.backoff.ms", "10", NULL};
    rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, bootstrap, extra);
    if (!rk) return read_fail(errp, "cannot create a Kafka consumer");
    int rc = read_topic_with(rk, topic, ranges, n, fn, ud, errp);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}
