/* C tests of interactive queries on the supervisor's side (host/router.c)
 * and of the instances directory's records (host/directory.c), without a
 * broker: the key's partition against librdkafka's own murmur2 partitioner,
 * and the router behind a real HTTP server (host/http.c) in front of a fake
 * worker on the other end of a real query channel (host/query.h frames),
 * over sockets on 127.0.0.1. Test code only. */
#include <pthread.h>
#include <signal.h>

#include <librdkafka/rdkafka.h>

#include "check.h"
#include "directory.h"
#include "http.h"
#include "http_client.h"
#include "query.h"
#include "router.h"

/* ---------------------------------------------------------------- murmur2 */

static void cases_partition(void) {
    CASE("a key's partition is Kafka's murmur2, as librdkafka's murmur2 partitioner places it");
    char key[64];
    const int32_t counts[] = {1, 3, 4, 7, 64, 1000};
    int same = 1;
    for (int i = 0; i < 3000; i++) {
        int len = snprintf(key, sizeof(key), i % 3 ? "card-%d" : "%d", i * 7919);
        for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++)
            same &= tide_router_partition(key, (size_t)len, counts[c]) ==
                    rd_kafka_msg_partitioner_murmur2(NULL, key, (size_t)len, counts[c], NULL, NULL);
    }
    CHECK(same);
    /* Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest) */
    CHECK(tide_router_murmur2("21", 2) == -973932308);
    CHECK(tide_router_murmur2("foobar", 6) == -790332482);
    CHECK(tide_router_murmur2("a-little-bit-long-string", 24) == -985981536);
    CHECK(tide_router_murmur2("a-little-bit-longer-string", 26) == -1486304829);
    CHECK(tide_router_murmur2("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 48) == -58897971);
    CHECK(tide_router_murmur2("abc", 3) == 479470107);
}

/* ---------------------------------------------------------------- directory */

static void cases_directory_records(void) {
    char det[128];
    tide_dir_member_t m;
    CASE("a directory record is read back: strings (escaped), numbers and the task map");
    const char *rec = "{\"detector\":\"fr\\\"aud\",\"instance\":\"ab12\",\"server\":\"10.0.0.5:8642\","
                      "\"ts\":1700000000123,\"partitions\":5,\"tasks\":\"AR.S.\",\"later\":[1,2]}";
    CHECK(tide_directory_parse(rec, strlen(rec), det, sizeof(det), &m) == -1); /* an array: not ours */
    rec = "{\"detector\":\"fr\\\"aud\",\"instance\":\"ab12\",\"server\":\"10.0.0.5:8642\","
          "\"ts\":1700000000123,\"partitions\":5,\"tasks\":\"AR.S.\",\"extra\":\"x\"}";
    CHECK(tide_directory_parse(rec, strlen(rec), det, sizeof(det), &m) == 0);
    CHECK(!strcmp(det, "fr\"aud"));
    CHECK(!strcmp(m.instance, "ab12") && !strcmp(m.server, "10.0.0.5:8642"));
    CHECK(m.ts == 1700000000123LL && m.partitions == 5);
    CHECK(m.state[0] == TIDE_TASKMAP_ACTIVE && m.state[1] == TIDE_TASKMAP_RESTORING &&
          m.state[2] == TIDE_TASKMAP_NONE && m.state[3] == TIDE_TASKMAP_STANDBY);

    CASE("a record missing a field, or not JSON, is not one of ours");
    const char *bad[] = {"{\"detector\":\"a\",\"instance\":\"b\",\"server\":\"c\",\"ts\":1,\"tasks\":\"A\"}",
                         "not json", "{\"detector\":\"a\"", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(tide_directory_parse(bad[i], strlen(bad[i]), det, sizeof(det), &m) == -1);
}

/* ---------------------------------------------------------------- a fake worker */

/* The worker's end of a query channel: answers each request with
 * {"partition": P, "asked": <the query>}; a query whose JSON holds "slow"
 * is answered only after the next one, one holding "never" never. */
typedef struct worker {
    int fd;
    pthread_t thread;
    volatile int cancels; /* cancel frames seen */
    volatile int requests;
} worker_t;

static int read_full(int fd, unsigned char *b, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, b + got, n - got, 0);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

static void answer(int fd, uint32_t id, int status, const char *body) {
    unsigned char h[TIDE_QUERY_ANSWER_HEADER];
    size_t len = strlen(body);
    tide_query_put32(h, (uint32_t)(len + 6));
    tide_query_put32(h + 4, id);
    h[8] = (unsigned char)(status >> 8);
    h[9] = (unsigned char)status;
    ssize_t w = send(fd, h, sizeof(h), MSG_NOSIGNAL);
    w = send(fd, body, len, MSG_NOSIGNAL);
    (void)w;
}

static void *worker_main(void *arg) {
    worker_t *wk = arg;
    unsigned char h[TIDE_QUERY_HEADER];
    uint32_t slow = 0;
    while (read_full(wk->fd, h, sizeof(h)) == 0) {
        uint32_t len = tide_query_get32(h), id = tide_query_get32(h + 4);
        int32_t partition = (int32_t)tide_query_get32(h + 8);
        size_t jl = len - (TIDE_QUERY_HEADER - 4);
        char *json = calloc(1, jl + 1);
        if (read_full(wk->fd, (unsigned char *)json, jl)) break;
        if (h[12] & TIDE_QUERY_CANCEL) {
            wk->cancels++;
        } else if (strstr(json, "slow")) {
            slow = id;
        } else if (!strstr(json, "never")) {
            char body[1024];
            snprintf(body, sizeof(body), "{\"partition\":%d,\"asked\":%s}", (int)partition, json);
            answer(wk->fd, id, 200, body);
            if (slow) answer(wk->fd, slow, 200, "{\"slow\":true}");
            slow = 0;
        }
        wk->requests++;
        free(json);
    }
    return NULL;
}

/* ---------------------------------------------------------------- the router */

typedef struct ctx {
    tide_router_t *r;
    tide_http_t *http;
    int port, channel;
    worker_t wk;
    uint8_t state[TIDE_STATUS_MAX_TASKS];
} ctx_t;

/* The supervisor's view: detector "d" with store "counts" on 4 partitions,
 * partition 2 restoring, 3 held elsewhere (nowhere: no directory). */
static int find(void *ud, const char *name, tide_router_local_t *out) {
    ctx_t *x = ud;
    if (strcmp(name, "d")) return 0;
    memset(out, 0, sizeof(*out));
    out->channel = x->channel;
    out->partitions = 4;
    memcpy(out->state, x->state, sizeof(out->state));
    out->n_stores = 1;
    snprintf(out->stores[0], sizeof(out->stores[0]), "counts");
    return 1;
}

static int start(ctx_t *x, int timeout_ms) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return -1;
    x->state[0] = x->state[1] = TIDE_TASKMAP_ACTIVE;
    x->state[2] = TIDE_TASKMAP_RESTORING;
    char *err = NULL;
    tide_router_opts_t o = {NULL, find, x, "127.0.0.1:1", "inst-1", timeout_ms};
    x->r = tide_router_start(&o, &err);
    x->http = x->r ? tide_http_start("127.0.0.1", 0, tide_router_handle, x->r, &err) : NULL;
    if (!x->http) return -1;
    x->port = tide_http_port(x->http);
    x->channel = tide_router_attach(x->r, sv[0]);
    x->wk.fd = sv[1];
    return pthread_create(&x->wk.thread, NULL, worker_main, &x->wk);
}

/* A key that murmur2 puts in partition p of 4. */
static void key_in(int32_t p, char *key, size_t cap) {
    for (int i = 0;; i++) {
        snprintf(key, cap, "k%d", i);
        if (tide_router_partition(key, strlen(key), 4) == p) return;
    }
}

static void cases_routes(ctx_t *x) {
    reply_t r;
    char key[32], path[256];
    CASE("a key goes to the worker with its partition, the answer with who served it");
    key_in(1, key, sizeof(key));
    snprintf(path, sizeof(path), "/api/detectors/d/stores/counts?key=%s", key);
    CHECK(http_get(x->port, path, &r) == 200);
    CHECK(strstr(r.body, "\"partition\":1,\"asked\":{\"store\":\"counts\",\"key\":\"") != NULL);
    CHECK(strstr(r.body, "\"served_by\":\"127.0.0.1:1\",\"instance\":\"inst-1\"") != NULL);
    CHECK(has_header(&r, "Content-Type: application/json"));
    reply_free(&r);

    CASE("a scan reads every task here (partition -1) and lists them");
    CHECK(http_get(x->port, "/api/detectors/d/stores/counts?prefix=a&limit=5", &r) == 200);
    CHECK(strstr(r.body, "\"partitions\":[0,1],\"restoring\":[2],\"elsewhere\":[]") != NULL);
    CHECK(strstr(r.body, "\"partition\":-1,\"asked\":{\"store\":\"counts\",\"prefix\":\"a\",\"limit\":\"5\"}"));
    reply_free(&r);

    CASE("a key of a restoring task answers 503 with Retry-After, and so does one held nowhere");
    key_in(2, key, sizeof(key));
    snprintf(path, sizeof(path), "/api/detectors/d/stores/counts?key=%s", key);
    CHECK(http_get(x->port, path, &r) == 503);
    CHECK(has_header(&r, "Retry-After: 1") && strstr(r.body, "restoring"));
    reply_free(&r);
    key_in(3, key, sizeof(key));
    snprintf(path, sizeof(path), "/api/detectors/d/stores/counts?key=%s", key);
    CHECK(http_get(x->port, path, &r) == 503);
    CHECK(has_header(&r, "Retry-After: 1") && strstr(r.body, "moving"));
    reply_free(&r);

    CASE("refused: an unknown argument (400), store (404, with the stores) or detector (404)");
    CHECK(http_get(x->port, "/api/detectors/d/stores/counts?ky=a", &r) == 400);
    CHECK(strstr(r.body, "unknown argument ky") != NULL);
    reply_free(&r);
    CHECK(http_get(x->port, "/api/detectors/d/stores/nope?key=a", &r) == 404);
    CHECK(strstr(r.body, "\"stores\":[{\"name\":\"counts\",\"memory\":false}]") != NULL);
    reply_free(&r);
    CHECK(http_get(x->port, "/api/detectors/zz/stores", &r) == 404);
    reply_free(&r);
    CHECK(http_get(x->port, "/api/detectors/d/stores/counts?key=a&partition=9", &r) == 400);
    reply_free(&r);

    CASE("metadata names the key's partition and who holds it");
    key_in(0, key, sizeof(key));
    snprintf(path, sizeof(path), "/api/detectors/d/stores/counts/metadata?key=%s", key);
    CHECK(http_get(x->port, path, &r) == 200);
    CHECK(strstr(r.body, "\"partition\":0,\"partitions\":4,\"active\":{\"instance\":\"inst-1\"") != NULL);
    reply_free(&r);
}

typedef struct slow_get {
    int port;
    reply_t r;
    int64_t took;
} slow_get_t;

static void *get_slow(void *arg) {
    slow_get_t *g = arg;
    int64_t t0 = mono_now();
    http_get(g->port, "/api/detectors/d/stores/counts?prefix=slow", &g->r);
    g->took = mono_now() - t0;
    return NULL;
}

static void cases_waiting(ctx_t *x) {
    reply_t r;
    CASE("a query waiting for its worker delays no other request");
    slow_get_t g = {.port = x->port};
    pthread_t t;
    int before = x->wk.requests;
    pthread_create(&t, NULL, get_slow, &g);
    while (x->wk.requests == before) usleep(1000); /* the slow one reached the worker */
    int64_t t0 = mono_now();
    CHECK(http_get(x->port, "/api/detectors/d/stores/counts?prefix=b", &r) == 200);
    CHECK(mono_now() - t0 < 1000);
    reply_free(&r);
    pthread_join(t, NULL);
    CHECK(g.r.status == 200 && strstr(g.r.body, "\"slow\":true") != NULL);
    reply_free(&g.r);

    CASE("a query its worker never answers gets 504 after the timeout, and is cancelled there");
    t0 = mono_now();
    CHECK(http_get(x->port, "/api/detectors/d/stores/counts?prefix=never", &r) == 504);
    int64_t took = mono_now() - t0;
    CHECK(took >= 400 && took < 3000);
    reply_free(&r);
    for (int i = 0; i < 200 && !x->wk.cancels; i++) usleep(10000);
    CHECK(x->wk.cancels == 1);
}

static void cases_gone(ctx_t *x) {
    reply_t r;
    CASE("queries waiting on a worker that goes away answer 503");
    slow_get_t g = {.port = x->port};
    pthread_t t;
    int before = x->wk.requests;
    pthread_create(&t, NULL, get_slow, &g);
    while (x->wk.requests == before) usleep(1000);
    tide_router_detach(x->r, x->channel);
    pthread_join(t, NULL);
    CHECK(g.r.status == 503 && has_header(&g.r, "Retry-After: 1"));
    CHECK(g.took < 1000);
    reply_free(&g.r);
    CHECK(http_get(x->port, "/api/detectors/d/stores/counts?prefix=x", &r) == 503);
    reply_free(&r);
    pthread_join(x->wk.thread, NULL);
    close(x->wk.fd);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    cases_partition();
    cases_directory_records();
    ctx_t x;
    memset(&x, 0, sizeof(x));
    CASE("the router starts behind an HTTP server");
    CHECK(start(&x, 500) == 0);
    if (x.http) {
        cases_routes(&x);
        cases_waiting(&x);
        cases_gone(&x);
        tide_router_stop(x.r);
        tide_http_stop(x.http);
    }
    return check_report(argc > 1 ? argv[1] : NULL);
}
