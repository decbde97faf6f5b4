/*
 * tools.c: `tide produce` (records from standard input), `tide consume`
 * (records to standard output) and the topic reader of `tide replay --from`.
 * Plain librdkafka clients; the consumers read partitions by assignment,
 * without a consumer group, so reading a topic never disturbs a detector's
 * group.
 */
#include "tools.h"

#include <stdarg.h>
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
            "                    [--avro SCHEMA.avsc [-r REGISTRY_URL]]\n"
            "Each line of standard input is one record: its value, or key SEP value,\n"
            "or with --json {\"key\":..., \"value\":..., \"headers\":{...}, \"partition\":n,\n"
            "\"timestamp\":ms}. With --avro, each value is JSON, written as Avro with\n"
            "SCHEMA in the schema registry's wire format (subject TOPIC-value; the\n"
            "registry: -r, or TIDE_SCHEMA_REGISTRY_URL, else the folder ./schemas).\n");
    return 2;
}

int tide_tool_produce(int argc, char **argv, volatile sig_atomic_t *stop) {
    const char *topic = NULL, *bootstrap = env_bootstrap(), *sep = NULL;
    const char *avro_schema = NULL, *registry = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-b") || !strcmp(argv[i], "--bootstrap-server")) && i + 1 < argc)
            bootstrap = argv[++i];
        else if (!strcmp(argv[i], "--key-separator") && i + 1 < argc) sep = argv[++i];
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--avro") && i + 1 < argc) avro_schema = argv[++i];
        else if ((!strcmp(argv[i], "-r") || !strcmp(argv[i], "--registry")) && i + 1 < argc)
            registry = argv[++i];
        else if (argv[i][0] != '-' && !topic) topic = argv[i];
        else return produce_usage();
    }
    if (!topic) return produce_usage();
    if (!bootstrap) {
        fprintf(stderr, "tide: no broker: pass -b HOST:PORT (the address `tide broker` or "
                        "`tide run` printed) or set TIDE_BOOTSTRAP_SERVERS\n");
        return 2;
    }
    /* murmur2, as the worker's producer and the Java client: a key lands on
     * the partition a repartition topic or a foreign-key join would send it
     * to, so that records tide writes meet the records written here, and
     * where interactive queries look for it. */
    const char *extra[] = {"linger.ms", "20", "enable.idempotence", "true",
                           "queue.buffering.max.messages", "1000000",
                           "partitioner", "murmur2_random", NULL};
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
    tide_avro_tool_t *avro = NULL;
    if (avro_schema) {
        char *e = NULL;
        tide_registry_opts_t ro = tool_registry(registry);
        if (!(avro = tide_avro_tool_new(&ro, topic, avro_schema, &e))) {
            fprintf(stderr, "tide: --avro %s: %s\n", avro_schema, e);
            free(e);
            rd_kafka_destroy(rk);
            return 2;
        }
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
    int rc = 0, warned_zero = 0;
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
            /* librdkafka stamps a record with timestamp 0 with the time it is
             * produced: it cannot send 0 itself. Say so, once. */
            if (r.timestamp == 0 && !warned_zero) {
                fprintf(stderr,
                        "tide: stdin:%ld: timestamp 0 means \"now\" to the Kafka client: the "
                        "record gets the current time (use 1 or more)\n",
                        lineno);
                warned_zero = 1;
            }
            timestamp = r.timestamp < 0 ? 0 : r.timestamp;
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
        if (avro && val) {
            char *ae = NULL;
            if (tide_avro_tool_encode(avro, val, vlen, &val, &vlen, &ae)) {
                fprintf(stderr, "tide: stdin:%ld: %s\n", lineno, ae);
                free(ae);
                if (hdrs) rd_kafka_headers_destroy(hdrs);
                rc = 1;
                break;
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
    tide_avro_tool_free(avro);
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
