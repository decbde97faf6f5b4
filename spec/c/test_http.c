/* C tests of the admin HTTP server: routes, formats, limits and timeouts,
 * against a fake detector table (fake_supervisor.h) that fills the server's
 * snapshots as the supervisor does, over real sockets on
 * 127.0.0.1. It owns the table it builds and a server on an ephemeral port;
 * it never binds a fixed port and never reaches past loopback. The JSON is
 * checked by lua-cjson through `luajit`, a build dependency. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "check.h"
#include "fake_supervisor.h"
#include "sink.h"

#define WEIRD_NAME "we\"ird\\name\n"

#include "http_client.h"

/* The value of the sample whose name and labels are exactly `series`;
 * -1 when there is no such line. */
/* How many times needle stands in body. */
static int occurrences(const char *body, const char *needle) {
    int n = 0;
    for (const char *p = strstr(body, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static double sample(const char *body, const char *series) {
    size_t n = strlen(series);
    for (const char *line = body; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL)
        if (!strncmp(line, series, n) && line[n] == ' ') return strtod(line + n + 1, NULL);
    return -1;
}

/* Every line is a comment or `name{label="value",...} number`, and every
 * sample's family was declared with # TYPE before it. */
static int exposition_valid(const char *body, char *why, size_t cap) {
    char typed[64][64];
    int n_typed = 0;
    for (const char *line = body; *line;) {
        const char *eol = strchr(line, '\n');
        if (!eol) {
            snprintf(why, cap, "no final newline");
            return 0;
        }
        char l[1024];
        size_t len = (size_t)(eol - line) < sizeof(l) - 1 ? (size_t)(eol - line) : sizeof(l) - 1;
        memcpy(l, line, len);
        l[len] = '\0';
        line = eol + 1;
        if (!strncmp(l, "# TYPE ", 7)) {
            if (n_typed < 64) sscanf(l + 7, "%63s", typed[n_typed++]);
            continue;
        }
        if (l[0] == '#') continue;
        const char *p = l;
        char name[128];
        size_t k = 0;
        while ((*p == '_' || *p == ':' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                (k && *p >= '0' && *p <= '9')) && k < sizeof(name) - 1)
            name[k++] = *p++;
        name[k] = '\0';
        if (!k) goto bad;
        if (*p == '{') {
            p++;
            while (*p != '}') {
                while ((*p >= 'a' && *p <= 'z') || *p == '_') p++;
                if (*p++ != '=' || *p++ != '"') goto bad;
                while (*p && *p != '"') {
                    if (*p == '\\') {
                        p++;
                        if (*p != '\\' && *p != '"' && *p != 'n') goto bad;
                    }
                    p++;
                }
                if (*p++ != '"') goto bad;
                if (*p == ',') p++;
                else if (*p != '}') goto bad;
            }
            p++;
        }
        if (*p++ != ' ') goto bad;
        char *end;
        if (strcmp(p, "+Inf") && strcmp(p, "-Inf") && strcmp(p, "NaN")) {
            strtod(p, &end);
            if (end == p || *end) goto bad;
        }
        /* histogram series belong to the family without the suffix */
        int declared = 0;
        for (int i = 0; i < n_typed && !declared; i++) {
            size_t tl = strlen(typed[i]);
            declared = !strncmp(name, typed[i], tl) &&
                       (!name[tl] || !strcmp(name + tl, "_bucket") || !strcmp(name + tl, "_sum") ||
                        !strcmp(name + tl, "_count"));
        }
        if (!declared) {
            snprintf(why, cap, "no # TYPE before: %s", l);
            return 0;
        }
        continue;
    bad:
        snprintf(why, cap, "bad line: %s", l);
        return 0;
    }
    return 1;
}

static void hex(const char *s, char *out) {
    for (; *s; s++, out += 2) sprintf(out, "%02x", (unsigned char)*s);
    *out = '\0';
}

/* Decode body with lua-cjson (a strict decoder) and return what the script
 * prints, malloc'd; NULL when luajit or the decoding failed. */
static char *lua_json_summary(const char *body, size_t len) {
    static const char script[] =
        "local cjson = require 'cjson'\n"
        "local t = cjson.decode(io.read('*a'))\n"
        "local function hex(s) return (s:gsub('.', function(c) return ('%02x'):format(c:byte()) end)) end\n"
        "local function v(x) if x == cjson.null then return 'null' end return tostring(x) end\n"
        "print(type(t.now_ms), type(t.started_ms), v(t.ready), #t.detectors)\n"
        "for _, d in ipairs(t.detectors) do\n"
        "  local e = d.last_error\n"
        "  print(hex(d.name), d.state, v(d.pid), v(d.lag), v(d.lua_heap_bytes), d.counters.records_in,\n"
        "        d.counters.errors, #d.reloads, e == cjson.null and 'noerr'\n"
        "        or (e.topic .. ':' .. e.partition .. ':' .. e.offset .. ':' .. hex(e.message)),\n"
        "        d.reloads[2] and hex(v(d.reloads[2].message)) or '-', v(d.problem))\n"
        "end\n";
    char body_path[] = "/tmp/tide-test-http-XXXXXX";
    char script_path[] = "/tmp/tide-test-http-XXXXXX";
    int bf = mkstemp(body_path), sf = mkstemp(script_path);
    ssize_t w = write(bf, body, len);
    w = write(sf, script, sizeof(script) - 1);
    (void)w;
    close(bf);
    close(sf);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "luajit %s < %s 2>&1", script_path, body_path);
    FILE *p = popen(cmd, "r");
    char *out = calloc(1, 1 << 16);
    size_t n = p ? fread(out, 1, (1 << 16) - 1, p) : 0;
    out[n] = '\0';
    int rc = p ? pclose(p) : -1;
    unlink(body_path);
    unlink(script_path);
    if (rc != 0) {
        printf("# luajit: %s\n", out);
        free(out);
        return NULL;
    }
    return out;
}

typedef struct ctx {
    fake_sv_t sv;
    volatile sig_atomic_t *stop;
    tide_admin_t *h;
    int port;
    tide_admin_detector_t *alpha, *weird, *cold;
} ctx_t;

/* The table every case starts from: alpha, a restarted worker (earlier
 * workers' counters), batches in several buckets, a last error whose
 * message has a quote and a byte that is not UTF-8; weird, a name to escape,
 * running on while a newer version was refused; cold, starting. */
static void build_table(ctx_t *x, volatile sig_atomic_t *stop) {
    fake_init(&x->sv, stop);
    x->stop = stop;
    x->sv.started_ms = tide_wall_ms() - 60000;
    tide_admin_detector_t *alpha = x->alpha = fake_detector("alpha", TIDE_DS_RUNNING, 100);
    alpha->totals.records_in = 1000;
    alpha->totals.hist[0] = 3;
    alpha->totals.hist_sum = 0.0003;
    alpha->restarts = 2;
    alpha->gauges.lag = 42;
    snprintf(alpha->gauges.guarantee, sizeof(alpha->gauges.guarantee), "exactly_once_v2");
    alpha->totals.dropped_late = 7;
    alpha->totals.rollbacks = 2;
    alpha->totals.txn_committed = 40;
    alpha->totals.txn_aborted = 1;
    alpha->totals.commit_hist[tide_status_bucket(0.008)] = 40;
    alpha->totals.commit_hist[tide_status_bucket(2.0)] = 1;
    alpha->totals.commit_hist_sum = 40 * 0.008 + 2.0;
    const double durations[] = {0.0001, 0.003, 0.003, 0.02, 0.5, 20};
    for (size_t i = 0; i < sizeof(durations) / sizeof(durations[0]); i++)
        fake_batch(alpha, 100, durations[i]);
    fake_error(alpha, "payments", 3, 17, "bad \"amount\" \xff here");
    fake_reload(alpha, 1, "v2", NULL);
    fake_reload(alpha, 0, "v3", "alpha.lua:9: unexpected symbol near 'end'");
    x->weird = fake_detector(WEIRD_NAME, TIDE_DS_RUNNING, 101);
    x->cold = fake_detector("cold", TIDE_DS_STARTING, 0);
    x->weird->refused = (tide_reload_event_t){tide_wall_ms(), 0, "9c0d1e2f3a4b5c6d",
                                              "w.lua:4: \"}\" expected\n<near> 'x'"};
    fake_add(&x->sv, alpha);
    fake_add(&x->sv, x->weird);
    fake_add(&x->sv, x->cold);
}

/* Starting: a free port, refusals with their reason. 0 when it did not start. */
static int cases_start(ctx_t *x) {
    char *err = NULL;
    CASE("the server starts on an ephemeral port");
    x->h = tide_admin_start("127.0.0.1", 0, fake_fill, &x->sv, &err);
    CHECK(x->h != NULL);
    if (!x->h) {
        printf("# %s\n", err);
        return 0;
    }
    int port = x->port = tide_admin_port(x->h);
    CHECK(port > 0 && port < 65536);

    CASE("a port in use, or an address that is not IPv4, is refused with the reason");
    CHECK(tide_admin_start("127.0.0.1", port, fake_fill, &x->sv, &err) == NULL);
    CHECK(err && strstr(err, "admin http 127.0.0.1:") && strstr(err, "in use"));
    free(err);
    err = NULL;
    CHECK(tide_admin_start("::1", 0, fake_fill, &x->sv, &err) == NULL);
    CHECK(err && strstr(err, "not an IPv4 address"));
    free(err);
    err = NULL;
    return 1;
}

/* The default address is loopback. */
static void cases_loopback(ctx_t *x) {
    int port = x->port;
    char *err = NULL;
    CASE("with no address it listens on loopback only");
    {
        tide_admin_t *lo = tide_admin_start(NULL, 0, fake_fill, &x->sv, &err);
        CHECK(lo != NULL);
        int lport = lo ? tide_admin_port(lo) : 0;
        CHECK(lo && lport != port);
        int fd = connect_to(lport);
        CHECK(fd >= 0);
        if (fd >= 0) close(fd);
        /* every other address of this machine is refused */
        struct ifaddrs *ifs = NULL, *i;
        int others = 0, refused = 0;
        if (getifaddrs(&ifs) == 0)
            for (i = ifs; i; i = i->ifa_next) {
                if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
                struct sockaddr_in a = *(struct sockaddr_in *)i->ifa_addr;
                if ((ntohl(a.sin_addr.s_addr) >> 24) == 127) continue;
                a.sin_port = htons((uint16_t)lport);
                int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                others++;
                if (connect(c, (struct sockaddr *)&a, sizeof(a)) != 0) refused++;
                close(c);
            }
        freeifaddrs(ifs);
        CHECK(refused == others);
        printf("# %d other address(es) refused\n", refused);
        tide_admin_stop(lo);
    }
}

/* /healthz and /readyz. */
static void cases_probes(ctx_t *x) {
    int port = x->port;
    tide_admin_detector_t *weird = x->weird, *cold = x->cold;
    reply_t r;
    CASE("/healthz answers ok");
    CHECK(http_get(port, "/healthz", &r) == 200);
    CHECK(r.body_len == 3 && !memcmp(r.body, "ok\n", 3));
    CHECK(has_header(&r, "Connection: close\r\n"));
    CHECK(has_header(&r, "Content-Length: 3\r\n"));
    reply_free(&r);

    CASE("/readyz is 503 naming the detectors still starting, 200 once all run");
    CHECK(http_get(port, "/readyz", &r) == 503);
    CHECK(!strcmp(r.body, "not ready\ncold starting\n"));
    reply_free(&r);
    pthread_mutex_lock(&x->sv.lock);
    cold->state = TIDE_DS_RUNNING;
    weird->state = TIDE_DS_RELOADING; /* a hot swap: the old version runs meanwhile */
    pthread_mutex_unlock(&x->sv.lock);
    CHECK(http_get(port, "/readyz", &r) == 200);
    CHECK(!strcmp(r.body, "ready\n"));
    reply_free(&r);

    CASE("/readyz is 503 while a detector is failed or quarantined, with why; /healthz stays 200");
    {
        tide_admin_detector_t *broken = fake_detector("broken", TIDE_DS_FAILED, 0);
        snprintf(broken->problem, sizeof(broken->problem),
                 "/srv/detectors/broken.lua:3: '}' expected\nnear 'x'");
        tide_admin_detector_t *loops = fake_detector("loops", TIDE_DS_QUARANTINED, 0);
        snprintf(loops->problem, sizeof(loops->problem), "quarantined after 5 crashes");
        tide_admin_detector_t *gone = fake_detector("gone", TIDE_DS_STOPPING, 0);
        pthread_mutex_lock(&x->sv.lock);
        fake_add(&x->sv, broken);
        fake_add(&x->sv, loops);
        fake_add(&x->sv, gone); /* a removed file's worker leaving: not waited for */
        pthread_mutex_unlock(&x->sv.lock);
        CHECK(http_get(port, "/readyz", &r) == 503);
        CHECK(!strcmp(r.body, "not ready\n"
                              "broken failed: /srv/detectors/broken.lua:3: '}' expected near 'x'\n"
                              "loops quarantined: quarantined after 5 crashes\n"));
        if (strncmp(r.body, "not ready\nbroken", 16)) printf("# %s", r.body);
        reply_free(&r);
        CHECK(http_get(port, "/metrics", &r) == 200 && sample(r.body, "tide_ready") == 0);
        reply_free(&r);
        CHECK(http_get(port, "/healthz", &r) == 200);
        reply_free(&r);
        /* fixed: the file loads and runs again */
        pthread_mutex_lock(&x->sv.lock);
        broken->state = loops->state = TIDE_DS_RUNNING;
        pthread_mutex_unlock(&x->sv.lock);
        CHECK(http_get(port, "/readyz", &r) == 200);
        reply_free(&r);
        CHECK(http_get(port, "/metrics", &r) == 200 && sample(r.body, "tide_ready") == 1);
        reply_free(&r);
        pthread_mutex_lock(&x->sv.lock);
        x->sv.n_dets -= 3; /* back to the three of the other cases */
        free(broken);
        free(loops);
        free(gone);
        cold->state = TIDE_DS_STARTING;
        weird->state = TIDE_DS_RUNNING;
        pthread_mutex_unlock(&x->sv.lock);
    }
}

/* The histogram of alpha in a /metrics body. */
static void case_histogram(const char *body) {
    CASE("/metrics histogram buckets are cumulative, ordered, and end at +Inf = _count");
    {
        double prev_le = -1, prev_v = -1, v = 0;
        int buckets = 0, ordered = 1;
        const char *prefix = "tide_batch_duration_seconds_bucket{detector=\"alpha\",le=\"";
        for (const char *p = strstr(body, prefix); p; p = strstr(p + 1, prefix)) {
            const char *le = p + strlen(prefix);
            double bound = !strncmp(le, "+Inf", 4) ? 1e300 : strtod(le, NULL);
            v = strtod(strchr(le, ' ') + 1, NULL);
            if (bound <= prev_le || v < prev_v) ordered = 0;
            prev_le = bound;
            prev_v = v;
            buckets++;
        }
        CHECK(buckets == TIDE_STATUS_HIST);
        CHECK(ordered);
        CHECK(prev_le == 1e300);
        CHECK(v == 9); /* 3 from the earlier worker, 6 from this one */
        CHECK(sample(body, "tide_batch_duration_seconds_count{detector=\"alpha\"}") == v);
        CHECK(sample(body, "tide_batch_duration_seconds_bucket{detector=\"alpha\",le=\"0.0005\"}") == 4);
        CHECK(sample(body, "tide_batch_duration_seconds_bucket{detector=\"alpha\",le=\"0.005\"}") == 6);
        CHECK(sample(body, "tide_batch_duration_seconds_bucket{detector=\"alpha\",le=\"10\"}") == 8);
        double sum = sample(body, "tide_batch_duration_seconds_sum{detector=\"alpha\"}");
        CHECK(sum > 20.5263 && sum < 20.5265);
    }
}

/* A running detector that waits at the broker is not ready either. */
static void cases_waiting(ctx_t *x) {
    int port = x->port;
    tide_admin_detector_t *weird = x->weird, *alpha = x->alpha;
    reply_t r;
    CASE("/readyz is 503 while a commit waits for the broker or an output topic is missing");
    pthread_mutex_lock(&x->sv.lock);
    x->cold->state = TIDE_DS_RUNNING;
    alpha->gauges.broker_waiting_since_ms = tide_wall_ms() - 12500;
    snprintf(weird->gauges.missing_topic, sizeof(weird->gauges.missing_topic), "alerts\nx");
    weird->gauges.missing_topic_since_ms = tide_wall_ms() - 3000;
    pthread_mutex_unlock(&x->sv.lock);
    CHECK(http_get(port, "/readyz", &r) == 503);
    CHECK(strstr(r.body, "\nalpha running: broker unreachable for 12 s\n") ||
          strstr(r.body, "\nalpha running: broker unreachable for 13 s\n"));
    CHECK(strstr(r.body, "running: waiting for output topic alerts x to exist\n"));
    reply_free(&r);
    CHECK(http_get(port, "/metrics", &r) == 200);
    CHECK(sample(r.body, "tide_broker_waiting{detector=\"alpha\"}") == 1);
    CHECK(sample(r.body, "tide_output_topic_missing{detector=\"alpha\"}") == 0);
    CHECK(sample(r.body, "tide_ready") == 0);
    reply_free(&r);
    CHECK(http_get(port, "/api/detectors", &r) == 200);
    CHECK(strstr(r.body, "\"missing_topic\":{\"topic\":\"alerts\\nx\",\"since_ms\":"));
    CHECK(strstr(r.body, "\"broker_waiting_since_ms\":1"));
    reply_free(&r);
    pthread_mutex_lock(&x->sv.lock);
    alpha->gauges.broker_waiting_since_ms = 0;
    weird->gauges.missing_topic[0] = '\0';
    pthread_mutex_unlock(&x->sv.lock);
    CHECK(http_get(port, "/readyz", &r) == 200);
    reply_free(&r);
    pthread_mutex_lock(&x->sv.lock);
    x->cold->state = TIDE_DS_STARTING;
    pthread_mutex_unlock(&x->sv.lock);
}

/* /metrics: the format, the counters, the gauges. */
static void cases_metrics(ctx_t *x) {
    int port = x->port;
    tide_admin_detector_t *alpha = x->alpha;
    reply_t r;
    CASE("/metrics is valid Prometheus text with HELP and TYPE for every family");
    CHECK(http_get(port, "/metrics", &r) == 200);
    CHECK(has_header(&r, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    char why[1200] = "";
    CHECK(exposition_valid(r.body, why, sizeof(why)));
    if (why[0]) printf("# %s\n", why);
    CHECK(strstr(r.body, "# HELP tide_records_in_total "));
    CHECK(strstr(r.body, "# TYPE tide_records_in_total counter\n"));
    CHECK(strstr(r.body, "# TYPE tide_batch_duration_seconds histogram\n"));
    CHECK(strstr(r.body, "# TYPE tide_consumer_lag_records gauge\n"));

    CASE("/metrics counters are the detector's totals, over all its workers");
    tide_det_totals_t t = alpha->totals;
    CHECK(t.records_in == 1600);
    CHECK(sample(r.body, "tide_records_in_total{detector=\"alpha\"}") == (double)t.records_in);
    CHECK(sample(r.body, "tide_records_out_total{detector=\"alpha\"}") == (double)t.records_out);
    CHECK(sample(r.body, "tide_errors_total{detector=\"alpha\"}") == 1);
    CHECK(sample(r.body, "tide_dlq_records_total{detector=\"alpha\"}") == 1);
    CHECK(sample(r.body, "tide_worker_restarts_total{detector=\"alpha\"}") == 2);
    CHECK(sample(r.body, "tide_reload_failures_total{detector=\"alpha\"}") == (double)t.reload_failures);
    CHECK(sample(r.body, "tide_worker_rss_bytes{detector=\"alpha\"}") == (double)(48u << 20));
    CHECK(sample(r.body, "tide_worker_cpu_seconds_total{detector=\"alpha\"}") == 1.25);
    CHECK(sample(r.body, "tide_late_records_total{detector=\"alpha\"}") == 7);
    CHECK(sample(r.body, "tide_dropped_records_total{detector=\"alpha\",reason=\"late\"}") == 7);
    CHECK(sample(r.body, "tide_dropped_records_total{detector=\"alpha\",reason=\"skipped\"}") ==
          (double)t.dropped);
    CHECK(occurrences(r.body, "# TYPE tide_dropped_records_total counter\n") == 1);
    CHECK(sample(r.body, "tide_rollbacks_total{detector=\"alpha\"}") == 2);
    CHECK(sample(r.body, "tide_transactions_committed_total{detector=\"alpha\"}") == 40);
    CHECK(sample(r.body, "tide_transactions_aborted_total{detector=\"alpha\"}") == 1);
    CHECK(sample(r.body, "tide_commit_duration_seconds_count{detector=\"alpha\"}") == 41);
    CHECK(sample(r.body, "tide_commit_duration_seconds_bucket{detector=\"alpha\",le=\"0.01\"}") == 40);

    CASE("/metrics lag is shown only when known");
    CHECK(sample(r.body, "tide_consumer_lag_records{detector=\"alpha\"}") == 42);
    CHECK(!strstr(r.body, "tide_consumer_lag_records{detector=\"we"));
    CHECK(!strstr(r.body, "tide_consumer_lag_records{detector=\"cold\"}"));
    CHECK(!strstr(r.body, "tide_lua_heap_bytes{detector=\"cold\"}"));
    case_histogram(r.body);

    CASE("/metrics state gauge is 1 for the current state only");
    CHECK(sample(r.body, "tide_detector_state{detector=\"alpha\",state=\"running\"}") == 1);
    CHECK(sample(r.body, "tide_detector_state{detector=\"alpha\",state=\"failed\"}") == 0);
    CHECK(sample(r.body, "tide_detector_state{detector=\"cold\",state=\"starting\"}") == 1);
    CHECK(sample(r.body, "tide_detector_state{detector=\"cold\",state=\"running\"}") == 0);
    {
        int ones = 0;
        for (const char *p = strstr(r.body, "tide_detector_state{"); p; p = strstr(p + 1, "tide_detector_state{"))
            if (!strncmp(strchr(p, '}'), "} 1\n", 4)) ones++;
        CHECK(ones == 3);
    }

    CASE("/metrics label values are escaped");
    CHECK(sample(r.body, "tide_records_in_total{detector=\"we\\\"ird\\\\name\\n\"}") == 0);
    CHECK(!strstr(r.body, "we\"ird"));
    reply_free(&r);
}

/* /api/detectors. */
static void cases_api(ctx_t *x) {
    int port = x->port;
    reply_t r;
    CASE("/api/detectors is valid UTF-8 JSON with every detector's fields");
    CHECK(http_get(port, "/api/detectors", &r) == 200);
    CHECK(has_header(&r, "Content-Type: application/json\r\n"));
    CHECK(tide_utf8_valid(r.body, (int32_t)r.body_len));
    char *summary = lua_json_summary(r.body, r.body_len);
    CHECK(summary != NULL);
    if (summary) {
        char want[2048], name_hex[64], msg_hex[128], reload_hex[128];
        /* cjson turns the escaped stray byte \u00ff into U+00FF (c3 bf) */
        hex("bad \"amount\" \xc3\xbf here", msg_hex);
        hex("alpha.lua:9: unexpected symbol near 'end'", reload_hex);
        hex(WEIRD_NAME, name_hex);
        snprintf(want, sizeof(want),
                 "number\tnumber\tfalse\t3\n"
                 "%s\trunning\t100\t42\t3145728\t1600\t1\t2\tpayments:3:17:%s\t%s\tnull\n"
                 "%s\trunning\t101\tnull\t3145728\t0\t0\t0\tnoerr\t-\tnull\n"
                 "%s\tstarting\t0\tnull\tnull\t0\t0\t0\tnoerr\t-\tnull\n",
                 "616c706861", msg_hex, reload_hex, name_hex, "636f6c64");
        CHECK(!strcmp(summary, want));
        if (strcmp(summary, want)) printf("# got:\n%s# want:\n%s", summary, want);
        free(summary);
    }
    CHECK(strstr(r.body, "\"traceback\":\"stack traceback:\\n\\t"));
    CHECK(strstr(r.body, "\"last_exit\":null"));
    CHECK(strstr(r.body, "\"guarantee\":\"exactly_once_v2\""));
    CHECK(strstr(r.body, "\"dropped_late\":7,\"rollbacks\":2,\"transactions_committed\":40,"));

    CASE("/api/detectors shows a refused newer version beside the running one");
    CHECK(strstr(r.body, "\"refused\":{\"ms\":") &&
          strstr(r.body, ",\"version\":\"9c0d1e2f3a4b5c6d\",\"message\":"
                         "\"w.lua:4: \\\"}\\\" expected\\n<near> 'x'\"}"));
    {
        int nulls = 0;
        for (const char *p = strstr(r.body, "\"refused\":null"); p; p = strstr(p + 1, "\"refused\":null"))
            nulls++;
        CHECK(nulls == 2); /* alpha and cold */
    }
    reply_free(&r);
}

/* The page, paths, methods, hosts and limits. */
static void cases_routes(ctx_t *x) {
    int port = x->port;
    reply_t r;
    CASE("/ serves the embedded status page with a strict content policy");
    CHECK(http_get(port, "/", &r) == 200);
    CHECK(has_header(&r, "Content-Type: text/html; charset=utf-8\r\n"));
    CHECK(has_header(&r, "Content-Security-Policy: default-src 'none'"));
    CHECK(r.body_len == strlen(tide_status_page_html));
    CHECK(strstr(r.body, "<title>tide</title>") && strstr(r.body, "api/detectors"));
    CHECK(!strstr(r.body, "http://") && !strstr(r.body, "https://")); /* nothing external */
    reply_free(&r);

    CASE("unknown paths are 404; query strings are ignored");
    CHECK(http_get(port, "/nope", &r) == 404);
    reply_free(&r);
    CHECK(http_get(port, "/api/detectors/alpha", &r) == 404);
    reply_free(&r);
    CHECK(http_get(port, "/healthz?verbose=1", &r) == 200);
    reply_free(&r);

    CASE("HEAD has the headers of GET and no body");
    CHECK(http_raw(port, "HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 200);
    CHECK(has_header(&r, "Content-Length: 3\r\n") && r.body_len == 0);
    reply_free(&r);

    CASE("other methods are 405 with Allow; a request without Host is 400, one that is not HTTP is dropped");
    CHECK(http_raw(port, "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n", &r) == 405);
    CHECK(has_header(&r, "Allow: GET, HEAD\r\n"));
    reply_free(&r);
    {
        /* a request line without a target is not HTTP: dropped unanswered, at once */
        int64_t t0 = mono_now();
        CHECK(http_raw(port, "GET\r\n\r\n", &r) == 0 && r.raw[0] == '\0');
        CHECK(mono_now() - t0 < 1000);
        reply_free(&r);
    }
    CHECK(http_raw(port, "GET /metrics HTTP/1.1\r\n\r\n", &r) == 400); /* 1.1 needs Host */
    reply_free(&r);
    CHECK(http_raw(port, "GET /healthz HTTP/1.0\r\n\r\n", &r) == 200);
    reply_free(&r);
    CHECK(http_raw(port, "GET /healthz HTTP/2.0\r\nHost: localhost\r\n\r\n", &r) == 505);
    reply_free(&r);

    CASE("on loopback, a Host that is not a loopback name is refused (DNS rebinding)");
    CHECK(http_raw(port, "GET /api/detectors HTTP/1.1\r\nHost: evil.example:80\r\n\r\n", &r) == 403);
    CHECK(!strstr(r.body, "alpha"));
    reply_free(&r);
    CHECK(http_raw(port, "GET /healthz HTTP/1.1\r\nHost: localhost:1234\r\n\r\n", &r) == 200);
    reply_free(&r);

    CASE("request headers past 8 KiB are refused with 431");
    {
        size_t big = 9000;
        char *req = malloc(big + 64);
        int o = snprintf(req, big + 64, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Pad: ");
        memset(req + o, 'a', big);
        strcpy(req + o + big, "\r\n\r\n");
        CHECK(http_raw(port, req, &r) == 431);
        reply_free(&r);
        free(req);
    }
}

/* Clients that send slowly or not at all. */
static void cases_slow_senders(ctx_t *x) {
    int port = x->port;
    reply_t r;
    CASE("a silent client delays nobody, holds no lock, and is cut off by the read deadline");
    {
        int slow = connect_to(port);
        ssize_t w = send(slow, "GET /healthz HTTP/1.1\r\n", 23, MSG_NOSIGNAL);
        (void)w;
        int64_t t0 = mono_now();
        pthread_mutex_lock(&x->sv.lock);
        int64_t locked_in = mono_now() - t0;
        pthread_mutex_unlock(&x->sv.lock);
        CHECK(locked_in < 50);
        CHECK(http_get(port, "/api/detectors", &r) == 200); /* served meanwhile */
        CHECK(mono_now() - t0 < 1000);
        reply_free(&r);
        reply_t s;
        memset(&s, 0, sizeof(s));
        CHECK(read_reply(slow, &s) == 0 && s.raw[0] == '\0'); /* closed, unanswered */
        int64_t cut_after = mono_now() - t0;
        CHECK(cut_after >= 2500 && cut_after < 5000);
        reply_free(&s);
        close(slow);
    }

    CASE("a client that trickles its request a byte at a time is cut off by the same deadline");
    {
        /* each byte resets an inactivity timer, never this deadline */
        const char *req = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        int slow = connect_to(port);
        int64_t t0 = mono_now(), cut_after = -1;
        for (size_t i = 0; req[i] && cut_after < 0; i++) {
            if (send(slow, req + i, 1, MSG_NOSIGNAL) != 1) break;
            struct pollfd pf = {slow, POLLIN, 0};
            if (poll(&pf, 1, 100) == 1) cut_after = mono_now() - t0; /* EOF or an answer */
        }
        if (cut_after < 0) cut_after = mono_now() - t0;
        char got[64];
        ssize_t n = recv(slow, got, sizeof(got), MSG_DONTWAIT);
        CHECK(n <= 0); /* never answered */
        CHECK(cut_after >= 2500 && cut_after < 5000);
        close(slow);
    }
}

/* A client that does not read. */
static void case_deaf_client(ctx_t *x) {
    int port = x->port;
    reply_t r;
    CASE("a client that does not read its answer holds no lock and delays nobody");
    {
        /* an answer far larger than the socket buffers (tcp_wmem max is 4 MiB
         * by default): the server blocks in send. Control bytes take 6 bytes
         * each in JSON: 600 problems of 2 KiB make about 7 MiB. */
        pthread_mutex_lock(&x->sv.lock);
        for (int i = 0; i < 600; i++) {
            char name[32];
            snprintf(name, sizeof(name), "bulk-%03d", i);
            tide_admin_detector_t *d = fake_detector(name, TIDE_DS_FAILED, 0);
            memset(d->problem, 1, sizeof(d->problem) - 1);
            fake_add(&x->sv, d);
        }
        pthread_mutex_unlock(&x->sv.lock);
        int deaf = connect_with(port, 2048);
        const char *req = "GET /api/detectors HTTP/1.1\r\nHost: localhost\r\n\r\n";
        ssize_t w = send(deaf, req, strlen(req), MSG_NOSIGNAL);
        (void)w;
        /* the first bytes: the server has rendered and is writing */
        struct pollfd pf = {deaf, POLLIN, 0};
        CHECK(poll(&pf, 1, 10000) == 1);
        usleep(100 * 1000); /* and by now its send blocks on our full window */
        int64_t t0 = mono_now();
        pthread_mutex_lock(&x->sv.lock);
        int64_t locked_in = mono_now() - t0;
        pthread_mutex_unlock(&x->sv.lock);
        CHECK(locked_in < 50);
        t0 = mono_now();
        CHECK(http_get(port, "/healthz", &r) == 200); /* others are served meanwhile */
        CHECK(mono_now() - t0 < 1000);
        reply_free(&r);

        /* Now read, slowly (8 KiB every 50 ms, under 0.2 MiB/s), until the
         * write deadline has passed, then as fast as we can: the server has
         * cut the answer short, so the end comes before its Content-Length. */
        size_t got = 0, want = 0;
        char *buf = malloc(1 << 16);
        int64_t start = mono_now(), end_at = -1;
        int ended = 0;
        while (!ended && mono_now() - start < 20000) {
            int fast = mono_now() - start > 6000;
            if (!fast) usleep(50 * 1000);
            struct pollfd p = {deaf, POLLIN, 0};
            if (poll(&p, 1, 1000) != 1) continue;
            ssize_t n = recv(deaf, buf, fast ? (1 << 16) : 8192, 0);
            if (n <= 0) {
                ended = 1;
                end_at = mono_now() - start;
                break;
            }
            if (!want && got == 0) {
                buf[n < 4096 ? n : 4095] = '\0';
                char *cl = strstr(buf, "Content-Length: ");
                if (cl) want = strtoull(cl + 16, NULL, 10);
            }
            got += (size_t)n;
        }
        free(buf);
        CHECK(want > (size_t)6 << 20);
        CHECK(ended && got < want);
        if (!ended || got >= want)
            printf("# read %zu of %zu bytes, ended after %lld ms\n", got, want, (long long)end_at);
        close(deaf);
    }
}

/* Stopping. */
static void cases_stop(ctx_t *x) {
    int port = x->port;
    reply_t r;
    CASE("/healthz turns 503 once the supervisor is stopping");
    *x->stop = 1;
    CHECK(http_get(port, "/healthz", &r) == 503);
    reply_free(&r);
    *x->stop = 0;

    CASE("stop returns promptly with a request in flight");
    {
        int mid = connect_to(port);
        ssize_t w = send(mid, "GET /met", 8, MSG_NOSIGNAL);
        (void)w;
        usleep(100 * 1000);
        int64_t t0 = mono_now();
        tide_admin_stop(x->h);
        CHECK(mono_now() - t0 < 1000);
        close(mid);
        CHECK(connect_to(port) < 0); /* nothing listens any more */
    }
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    volatile sig_atomic_t stop = 0;
    ctx_t x;
    memset(&x, 0, sizeof(x));
    build_table(&x, &stop);
    if (cases_start(&x)) {
        cases_loopback(&x);
        cases_probes(&x);
        cases_waiting(&x);
        cases_metrics(&x);
        cases_api(&x);
        cases_routes(&x);
        cases_slow_senders(&x);
        case_deaf_client(&x);
        cases_stop(&x);
    }
    fake_free(&x.sv);
    return check_report(argc > 1 ? argv[1] : NULL);
}
