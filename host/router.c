/*
 * router.c: interactive queries on the supervisor's side (see router.h).
 *
 * Owns the supervisor's ends of the workers' query channels, the table of
 * queries waiting for an answer (each with its deferred HTTP request and a
 * deadline), a thread that reads the workers' answers and ends waits that
 * ran out, and a thread that asks other instances. Every deferred request is
 * finished exactly once: by an answer, a timeout, a worker gone, or the
 * stop. It never reads a store itself and never talks to Kafka (the
 * directory does); it only routes, on the admin server's thread without
 * blocking it.
 */
#include "router.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "httpc.h"
#include "log.h"
#include "query.h"

#define MAX_CHANNELS 256
#define MAX_PROXIED 64       /* queries waiting for another instance */
#define PROXY_TIMEOUT_MS 5000
#define RETRY_AFTER "1"

/* ---------------------------------------------------------------- murmur2 */

int32_t tide_router_murmur2(const void *key, size_t len) {
    const uint32_t m = 0x5bd1e995;
    const unsigned char *d = key;
    uint32_t h = 0x9747b28c ^ (uint32_t)len;
    while (len >= 4) {
        uint32_t k = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
        k *= m;
        k ^= k >> 24;
        k *= m;
        h = h * m ^ k;
        d += 4;
        len -= 4;
    }
    switch (len) {
    case 3: h ^= (uint32_t)d[2] << 16; /* fall through */
    case 2: h ^= (uint32_t)d[1] << 8;  /* fall through */
    case 1: h ^= d[0]; h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

int32_t tide_router_partition(const char *key, size_t len, int32_t n) {
    return n > 0 ? (int32_t)(((uint32_t)tide_router_murmur2(key, len) & 0x7fffffff) % (uint32_t)n) : 0;
}

/* ---------------------------------------------------------------- state */

typedef struct channel {
    int id, fd; /* fd -1: free */
    unsigned char *in;
    size_t in_len, in_cap;
    tide_buf_t out;
    size_t out_sent;
} channel_t;

/* A query waiting for a worker's answer. */
typedef struct waiting {
    uint32_t qid;
    int channel;
    tide_http_deferred_t *d;
    int64_t deadline;
    char *fields; /* the router's own fields, spliced into a 200 answer */
} waiting_t;

/* A query waiting for another instance's answer. */
typedef struct proxied {
    char *url;
    tide_http_deferred_t *d;
    char server[256];
} proxied_t;

struct tide_router {
    tide_router_opts_t o;
    char server[256], instance[64];
    pthread_mutex_t mu;
    pthread_cond_t proxy_cv;
    pthread_t reader, proxy;
    int wake[2];
    volatile int stop;
    channel_t ch[MAX_CHANNELS];
    int next_id;
    uint32_t next_qid;
    waiting_t *w;
    int n_w, cap_w;
    proxied_t px[MAX_PROXIED];
    int n_px;
    tide_httpc_t *http;
};

static void wake(tide_router_t *r) {
    ssize_t n = write(r->wake[1], "x", 1);
    (void)n;
}

static channel_t *channel_of(tide_router_t *r, int id) {
    for (int i = 0; i < MAX_CHANNELS; i++)
        if (r->ch[i].fd >= 0 && r->ch[i].id == id) return &r->ch[i];
    return NULL;
}

/* ---------------------------------------------------------------- replies */

static void reply_json(tide_http_reply_t *rep, int status, tide_buf_t *b) {
    rep->status = status;
    rep->type = "application/json";
    rep->buf = *b;
    *b = TIDE_BUF_INIT;
    if (status == 503) {
        rep->header_name = "Retry-After";
        rep->header_value = RETRY_AFTER;
    }
}

/* {"error": msg} with `status`; 503s carry Retry-After. */
static void reply_error(tide_http_reply_t *rep, int status, const char *msg) {
    tide_buf_t b = TIDE_BUF_INIT;
    tide_buf_puts(&b, "{\"error\":");
    tide_buf_json_str(&b, msg);
    tide_buf_puts(&b, "}\n");
    reply_json(rep, status, &b);
}

static void finish_error(tide_http_deferred_t *d, int status, const char *msg) {
    tide_http_reply_t rep = {0};
    reply_error(&rep, status, msg);
    tide_http_finish(d, &rep);
}

/* A worker's answer: a 200 gets the router's fields spliced in first. */
static void finish_answer(waiting_t *w, int status, const char *body, size_t len) {
    tide_buf_t b = TIDE_BUF_INIT;
    if (status == 200 && w->fields && len >= 2 && body[0] == '{') {
        tide_buf_puts(&b, "{");
        tide_buf_puts(&b, w->fields);
        if (len > 2) tide_buf_puts(&b, ",");
        tide_buf_append(&b, body + 1, len - 1);
    } else {
        tide_buf_append(&b, body, len);
    }
    tide_buf_puts(&b, "\n");
    tide_http_reply_t rep = {0};
    reply_json(&rep, status, &b);
    tide_http_finish(w->d, &rep);
}

static void forget_waiting(tide_router_t *r, int i) {
    free(r->w[i].fields);
    r->w[i] = r->w[--r->n_w];
}

/* ---------------------------------------------------------------- channels */

int tide_router_attach(tide_router_t *r, int fd) {
    pthread_mutex_lock(&r->mu);
    int id = 0;
    for (int i = 0; i < MAX_CHANNELS && !id; i++)
        if (r->ch[i].fd < 0) {
            id = ++r->next_id;
            r->ch[i] = (channel_t){.id = id, .fd = fd, .out = TIDE_BUF_INIT};
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            fcntl(fd, F_SETFD, FD_CLOEXEC);
        }
    pthread_mutex_unlock(&r->mu);
    if (!id) close(fd);
    wake(r);
    return id;
}

/* Close channel c; its waiting queries answer 503. Under the lock. */
static void close_channel(tide_router_t *r, channel_t *c, const char *why) {
    for (int i = 0; i < r->n_w; i++)
        if (r->w[i].channel == c->id) {
            finish_error(r->w[i].d, 503, why);
            forget_waiting(r, i--);
        }
    close(c->fd);
    free(c->in);
    tide_buf_free(&c->out);
    *c = (channel_t){.fd = -1};
}

void tide_router_detach(tide_router_t *r, int channel) {
    if (!r || channel <= 0) return;
    pthread_mutex_lock(&r->mu);
    channel_t *c = channel_of(r, channel);
    if (c) close_channel(r, c, "the detector's worker stopped: ask again");
    pthread_mutex_unlock(&r->mu);
    wake(r);
}

static void flush(tide_router_t *r, channel_t *c) {
    while (c->out_sent < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_sent, c->out.len - c->out_sent,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) c->out_sent += (size_t)n;
        else if (n < 0 && errno == EINTR) continue;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        else {
            close_channel(r, c, "the detector's worker stopped: ask again");
            return;
        }
    }
    c->out.len = c->out_sent = 0;
}

/* A request frame (query.h) on channel c; under the lock. */
static void send_query(tide_router_t *r, channel_t *c, uint32_t qid, int32_t partition, int flags,
                       const char *json, size_t len) {
    unsigned char h[TIDE_QUERY_HEADER];
    tide_query_put32(h, (uint32_t)(len + TIDE_QUERY_HEADER - 4));
    tide_query_put32(h + 4, qid);
    tide_query_put32(h + 8, (uint32_t)partition);
    h[12] = (unsigned char)flags;
    tide_buf_append(&c->out, (const char *)h, sizeof(h));
    tide_buf_append(&c->out, json, len);
    flush(r, c);
}

/* An answer frame: the query it answers is finished. */
static void on_answer(tide_router_t *r, const unsigned char *b, size_t len) {
    if (len < TIDE_QUERY_ANSWER_HEADER - 4) return;
    uint32_t qid = tide_query_get32(b);
    int status = b[4] << 8 | b[5];
    for (int i = 0; i < r->n_w; i++)
        if (r->w[i].qid == qid) {
            finish_answer(&r->w[i], status, (const char *)b + 6, len - 6);
            forget_waiting(r, i);
            return;
        }
}

static void read_channel(tide_router_t *r, channel_t *c) {
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 131072;
            unsigned char *nb = realloc(c->in, cap);
            if (!nb) return;
            c->in = nb;
            c->in_cap = cap;
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
        if (n > 0) {
            c->in_len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            close_channel(r, c, "the detector's worker stopped: ask again");
            return;
        }
        break;
    }
    size_t at = 0;
    while (c->in_len - at >= 4) {
        uint32_t len = tide_query_get32(c->in + at);
        if (c->in_len - at - 4 < len) break;
        on_answer(r, c->in + at + 4, len);
        at += 4 + (size_t)len;
    }
    memmove(c->in, c->in + at, c->in_len - at);
    c->in_len -= at;
}

/* Queries past their deadline: 504, and the worker is told to forget them. */
static void expire(tide_router_t *r) {
    int64_t now = tide_mono_ms();
    for (int i = 0; i < r->n_w; i++) {
        if (now < r->w[i].deadline) continue;
        channel_t *c = channel_of(r, r->w[i].channel);
        if (c) send_query(r, c, r->w[i].qid, -1, TIDE_QUERY_CANCEL, "", 0);
        finish_error(r->w[i].d, 504, "the detector's worker did not answer in time (a long "
                     "scan? narrow it with limit, prefix or from/to)");
        forget_waiting(r, i--);
    }
}

static void *read_answers(void *arg) {
    tide_router_t *r = arg;
    struct pollfd pf[MAX_CHANNELS + 1];
    int ids[MAX_CHANNELS + 1];
    while (!r->stop) {
        int n = 0;
        pf[n++] = (struct pollfd){r->wake[0], POLLIN, 0};
        pthread_mutex_lock(&r->mu);
        for (int i = 0; i < MAX_CHANNELS; i++)
            if (r->ch[i].fd >= 0) {
                ids[n] = r->ch[i].id;
                pf[n++] = (struct pollfd){r->ch[i].fd,
                                          (short)(POLLIN | (r->ch[i].out.len ? POLLOUT : 0)), 0};
            }
        pthread_mutex_unlock(&r->mu);
        poll(pf, (nfds_t)n, 100);
        if (pf[0].revents) {
            char junk[64];
            while (read(r->wake[0], junk, sizeof(junk)) > 0) {
            }
        }
        pthread_mutex_lock(&r->mu);
        for (int i = 1; i < n; i++) {
            channel_t *c = channel_of(r, ids[i]);
            if (c && (pf[i].revents & POLLOUT)) flush(r, c);
            if ((c = channel_of(r, ids[i])) && (pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                read_channel(r, c);
        }
        expire(r);
        pthread_mutex_unlock(&r->mu);
    }
    return NULL;
}

/* ---------------------------------------------------------------- proxying */

static void proxy_one(tide_router_t *r, proxied_t *p) {
    long status = 0;
    char *body = NULL, *err = NULL;
    size_t len = 0;
    tide_httpc_result_t res = tide_httpc_request(r->http, "GET", p->url, NULL, 0, NULL,
                                                 PROXY_TIMEOUT_MS, &status, &body, &len, &err);
    if (res != TIDE_HTTPC_OK) {
        char msg[600];
        snprintf(msg, sizeof(msg), "the instance holding it (%s) does not answer: ask again",
                 p->server);
        finish_error(p->d, 503, msg);
    } else {
        tide_buf_t b = TIDE_BUF_INIT;
        tide_buf_append(&b, body, len);
        tide_http_reply_t rep = {0};
        reply_json(&rep, (int)status, &b);
        tide_http_finish(p->d, &rep);
    }
    free(body);
    free(err);
    free(p->url);
}

static void *proxy_loop(void *arg) {
    tide_router_t *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        if (!r->n_px) {
            pthread_cond_wait(&r->proxy_cv, &r->mu);
            continue;
        }
        proxied_t p = r->px[0];
        memmove(&r->px[0], &r->px[1], (size_t)(r->n_px - 1) * sizeof(p));
        r->n_px--;
        pthread_mutex_unlock(&r->mu);
        proxy_one(r, &p);
        pthread_mutex_lock(&r->mu);
    }
    for (int i = 0; i < r->n_px; i++) {
        finish_error(r->px[i].d, 503, "stopping");
        free(r->px[i].url);
    }
    r->n_px = 0;
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---------------------------------------------------------------- start, stop */

tide_router_t *tide_router_start(const tide_router_opts_t *o, char **errp) {
    tide_router_t *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    r->o = *o;
    if (!r->o.timeout_ms) r->o.timeout_ms = 10000;
    snprintf(r->server, sizeof(r->server), "%s", o->server ? o->server : "");
    snprintf(r->instance, sizeof(r->instance), "%s", o->instance ? o->instance : "");
    for (int i = 0; i < MAX_CHANNELS; i++) r->ch[i].fd = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->proxy_cv, NULL);
    r->http = tide_httpc_new();
    if (!r->http || pipe2(r->wake, O_CLOEXEC | O_NONBLOCK) ||
        pthread_create(&r->reader, NULL, read_answers, r)) {
        if (asprintf(errp, "query router: cannot start") < 0) *errp = NULL;
        tide_httpc_free(r->http);
        free(r);
        return NULL;
    }
    if (pthread_create(&r->proxy, NULL, proxy_loop, r)) {
        r->stop = 1;
        pthread_join(r->reader, NULL);
        if (asprintf(errp, "query router: cannot start") < 0) *errp = NULL;
        tide_httpc_free(r->http);
        free(r);
        return NULL;
    }
    return r;
}

void tide_router_stop(tide_router_t *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->proxy_cv);
    pthread_mutex_unlock(&r->mu);
    wake(r);
    pthread_join(r->reader, NULL);
    pthread_join(r->proxy, NULL);
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < MAX_CHANNELS; i++)
        if (r->ch[i].fd >= 0) close_channel(r, &r->ch[i], "stopping");
    pthread_mutex_unlock(&r->mu);
    close(r->wake[0]);
    close(r->wake[1]);
    tide_httpc_free(r->http);
    free(r->w);
    pthread_cond_destroy(&r->proxy_cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* ---------------------------------------------------------------- routes */

typedef enum route_kind { ROUTE_STORES, ROUTE_STORE, ROUTE_METADATA, ROUTE_INSTANCES } route_kind_t;

typedef struct route {
    route_kind_t kind;
    char detector[256];
    char store[256];
    const tide_http_request_t *rq;
    const char *key;  /* the key, NULL for a scan */
    int forwarded;    /* asked by another instance: never asked onwards */
    tide_router_local_t local;
    int has_local;    /* this host runs the detector */
} route_t;

/* /api/detectors/NAME/(stores[/STORE[/metadata]] | instances); 0 or -1. */
static int parse_path(const char *path, route_t *rt) {
    const char *p = path + strlen("/api/detectors/");
    const char *slash = strchr(p, '/');
    if (!slash || slash == p || (size_t)(slash - p) >= sizeof(rt->detector)) return -1;
    snprintf(rt->detector, sizeof(rt->detector), "%.*s", (int)(slash - p), p);
    p = slash + 1;
    if (!strcmp(p, "instances")) return rt->kind = ROUTE_INSTANCES, 0;
    if (!strcmp(p, "stores")) return rt->kind = ROUTE_STORES, 0;
    if (strncmp(p, "stores/", 7)) return -1;
    p += 7;
    slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (!n || n >= sizeof(rt->store)) return -1;
    snprintf(rt->store, sizeof(rt->store), "%.*s", (int)n, p);
    if (!slash) return rt->kind = ROUTE_STORE, 0;
    return strcmp(slash, "/metadata") ? -1 : (rt->kind = ROUTE_METADATA, 0);
}

static const char *const query_args[] = {"key", "from", "to", "prefix", "after", "after_start",
                                         "time_from", "time_to", "limit", "count", NULL};

static int known_arg(const char *name) {
    for (int i = 0; query_args[i]; i++)
        if (!strcmp(name, query_args[i])) return 1;
    return !strcmp(name, "partition") || !strcmp(name, "forwarded");
}

typedef struct arg_check {
    char bad[128];
} arg_check_t;

static int check_arg(void *ud, const char *name, const char *value) {
    (void)value;
    arg_check_t *c = ud;
    if (known_arg(name)) return 0;
    snprintf(c->bad, sizeof(c->bad), "%s", name);
    return 1;
}

/* The worker's query: {"store": ..., and each query argument given}. */
static void query_json(const route_t *rt, tide_buf_t *b) {
    tide_buf_puts(b, "{\"store\":");
    tide_buf_json_str(b, rt->store);
    for (int i = 0; query_args[i]; i++) {
        const char *v = tide_http_arg(rt->rq, query_args[i]);
        if (!v) continue;
        tide_buf_printf(b, ",\"%s\":", query_args[i]);
        tide_buf_json_str(b, v);
    }
    tide_buf_puts(b, "}");
}

static int has_store(const tide_router_local_t *l, const char *store) {
    for (int i = 0; i < l->n_stores; i++)
        if (!strcmp(l->stores[i], store)) return 1;
    return 0;
}

static void store_list(tide_buf_t *b, const tide_router_local_t *l) {
    tide_buf_puts(b, "[");
    for (int i = 0; i < l->n_stores; i++) {
        tide_buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        tide_buf_json_str(b, l->stores[i]);
        tide_buf_printf(b, ",\"memory\":%s}", l->store_memory[i] ? "true" : "false");
    }
    tide_buf_puts(b, "]");
}

/* The partitions of a task map in state s, as a JSON array. */
static void partitions_in(tide_buf_t *b, const uint8_t *state, int32_t n, int s) {
    tide_buf_puts(b, "[");
    int first = 1;
    for (int32_t p = 0; p < n; p++)
        if (state[p] == s) {
            tide_buf_printf(b, first ? "%d" : ",%d", (int)p);
            first = 0;
        }
    tide_buf_puts(b, "]");
}

static void url_escape(tide_buf_t *b, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~')
            tide_buf_append(b, s, 1);
        else
            tide_buf_printf(b, "%%%02X", c);
    }
}

static void holder_json(tide_buf_t *b, const tide_holder_t *h) {
    static const char *const names[] = {"none", "active", "restoring", "standby"};
    tide_buf_puts(b, "{\"instance\":");
    tide_buf_json_str(b, h->instance);
    tide_buf_puts(b, ",\"server\":");
    tide_buf_json_str(b, h->server);
    tide_buf_printf(b, ",\"state\":\"%s\",\"local\":%s}", names[h->state & 3],
                    h->local ? "true" : "false");
}

/* ---------------------------------------------------------------- asking */

/* Ask instance `server` the same question (never onwards: forwarded=1). */
static void ask_instance(tide_router_t *r, const route_t *rt, const char *server,
                         tide_http_reply_t *rep) {
    tide_buf_t url = TIDE_BUF_INIT;
    tide_buf_printf(&url, "http://%s/api/detectors/", server);
    url_escape(&url, rt->detector);
    tide_buf_puts(&url, rt->kind == ROUTE_INSTANCES ? "/instances" : "/stores/");
    if (rt->kind != ROUTE_INSTANCES) url_escape(&url, rt->store);
    tide_buf_puts(&url, "?forwarded=1");
    for (int i = 0; query_args[i]; i++) {
        const char *v = tide_http_arg(rt->rq, query_args[i]);
        if (!v) continue;
        tide_buf_printf(&url, "&%s=", query_args[i]);
        url_escape(&url, v);
    }
    const char *p = tide_http_arg(rt->rq, "partition");
    if (p) {
        tide_buf_puts(&url, "&partition=");
        url_escape(&url, p);
    }
    pthread_mutex_lock(&r->mu);
    int room = r->n_px < MAX_PROXIED && !url.oom;
    tide_http_deferred_t *d = room ? tide_http_defer(rt->rq) : NULL;
    if (d) {
        proxied_t *x = &r->px[r->n_px++];
        x->url = url.data;
        x->d = d;
        snprintf(x->server, sizeof(x->server), "%s", server);
        url = TIDE_BUF_INIT;
        pthread_cond_signal(&r->proxy_cv);
    }
    pthread_mutex_unlock(&r->mu);
    tide_buf_free(&url);
    if (!d) reply_error(rep, 503, "too many queries waiting for other instances: ask again");
}

/* Ask this host's worker; `fields` (owned) go into its answer. */
static void ask_worker(tide_router_t *r, const route_t *rt, int32_t partition, char *fields,
                       tide_http_reply_t *rep) {
    tide_buf_t q = TIDE_BUF_INIT;
    query_json(rt, &q);
    pthread_mutex_lock(&r->mu);
    channel_t *c = channel_of(r, rt->local.channel);
    int ok = c && !q.oom;
    if (ok && r->n_w == r->cap_w) {
        int cap = r->cap_w ? r->cap_w * 2 : 16;
        waiting_t *nw = realloc(r->w, (size_t)cap * sizeof(*nw));
        if (nw) r->w = nw, r->cap_w = cap;
        ok = nw != NULL;
    }
    tide_http_deferred_t *d = ok ? tide_http_defer(rt->rq) : NULL;
    if (d) {
        uint32_t qid = ++r->next_qid;
        r->w[r->n_w++] = (waiting_t){qid, c->id, d, tide_mono_ms() + r->o.timeout_ms, fields};
        fields = NULL;
        send_query(r, c, qid, partition, 0, q.data, q.len);
    }
    pthread_mutex_unlock(&r->mu);
    tide_buf_free(&q);
    free(fields);
    if (!d) reply_error(rep, 503, "the detector's worker is not taking queries now: ask again");
    else wake(r);
}

/* "detector", "store", "served_by", "instance" for an answer. */
static void base_fields(tide_router_t *r, const route_t *rt, tide_buf_t *b) {
    tide_buf_puts(b, "\"detector\":");
    tide_buf_json_str(b, rt->detector);
    tide_buf_puts(b, ",\"store\":");
    tide_buf_json_str(b, rt->store);
    tide_buf_puts(b, ",\"served_by\":");
    tide_buf_json_str(b, r->server);
    tide_buf_puts(b, ",\"instance\":");
    tide_buf_json_str(b, r->instance);
}

static int32_t partitions_of(tide_router_t *r, const route_t *rt) {
    if (rt->has_local && rt->local.partitions > 0) return rt->local.partitions;
    return tide_directory_partitions(r->o.directory, rt->detector);
}

/* The key's partition, or -1 with the reply set. */
static int32_t key_partition(tide_router_t *r, const route_t *rt, tide_http_reply_t *rep) {
    int32_t n = partitions_of(r, rt);
    const char *given = tide_http_arg(rt->rq, "partition");
    if (n <= 0) {
        reply_error(rep, 503, "the detector's partition count is not known yet: ask again");
        return -1;
    }
    if (!given) return tide_router_partition(rt->key, strlen(rt->key), n);
    char *end;
    long p = strtol(given, &end, 10);
    if (end == given || *end || p < 0 || p >= n) {
        char msg[128];
        snprintf(msg, sizeof(msg), "partition must be from 0 to %d", (int)n - 1);
        reply_error(rep, 400, msg);
        return -1;
    }
    return (int32_t)p;
}

static void route_key(tide_router_t *r, const route_t *rt, tide_http_reply_t *rep) {
    int32_t p = key_partition(r, rt, rep);
    if (p < 0) return;
    int here = rt->has_local && p < rt->local.partitions ? rt->local.state[p] : TIDE_TASKMAP_NONE;
    if (here == TIDE_TASKMAP_RESTORING)
        return reply_error(rep, 503, "the task holding the key is restoring its state: ask again");
    if (here == TIDE_TASKMAP_ACTIVE && rt->local.channel) {
        tide_buf_t f = TIDE_BUF_INIT;
        base_fields(r, rt, &f);
        ask_worker(r, rt, p, f.data, rep);
        return;
    }
    tide_holder_t h;
    if (!tide_directory_lookup(r->o.directory, rt->detector, p, &h, NULL, 0, NULL) || h.local)
        return reply_error(rep, 503, "no instance runs the task holding the key now (it is "
                                     "moving): ask again");
    if (h.state == TIDE_TASKMAP_RESTORING)
        return reply_error(rep, 503, "the task holding the key is restoring its state on another "
                                     "instance: ask again");
    if (rt->forwarded)
        return reply_error(rep, 503, "the task holding the key has moved: ask again");
    ask_instance(r, rt, h.server, rep);
}

/* Which other instances hold which tasks: for a scan's answer. */
static void elsewhere(tide_router_t *r, const route_t *rt, tide_buf_t *b) {
    enum { MAX = 64 };
    tide_dir_member_t *m = malloc(MAX * sizeof(*m));
    int n = m ? tide_directory_members(r->o.directory, rt->detector, m, MAX) : 0;
    tide_buf_puts(b, ",\"elsewhere\":[");
    int first = 1;
    for (int i = 0; i < n; i++) {
        if (m[i].local) continue;
        tide_buf_puts(b, first ? "{\"server\":" : ",{\"server\":");
        first = 0;
        tide_buf_json_str(b, m[i].server);
        tide_buf_puts(b, ",\"instance\":");
        tide_buf_json_str(b, m[i].instance);
        tide_buf_puts(b, ",\"partitions\":");
        partitions_in(b, m[i].state, m[i].partitions, TIDE_TASKMAP_ACTIVE);
        tide_buf_puts(b, "}");
    }
    tide_buf_puts(b, "]");
    free(m);
}

/* A scan: this host's tasks, and where the others are. */
static void route_scan(tide_router_t *r, const route_t *rt, tide_http_reply_t *rep) {
    if (!rt->has_local || !rt->local.channel) {
        tide_dir_member_t m;
        if (!rt->forwarded && tide_directory_members(r->o.directory, rt->detector, &m, 1) == 1 &&
            !m.local)
            return ask_instance(r, rt, m.server, rep);
        return reply_error(rep, 503, "no worker of this detector runs here now: ask again");
    }
    tide_buf_t f = TIDE_BUF_INIT;
    base_fields(r, rt, &f);
    tide_buf_puts(&f, ",\"partitions\":");
    partitions_in(&f, rt->local.state, rt->local.partitions, TIDE_TASKMAP_ACTIVE);
    tide_buf_puts(&f, ",\"restoring\":");
    partitions_in(&f, rt->local.state, rt->local.partitions, TIDE_TASKMAP_RESTORING);
    elsewhere(r, rt, &f);
    ask_worker(r, rt, -1, f.data, rep);
}

/* ---------------------------------------------------------------- documents */

/* queryMetadataForKey: the key's partition, its active task and standbys. */
static void metadata(tide_router_t *r, const route_t *rt, tide_http_reply_t *rep) {
    if (!rt->key) return reply_error(rep, 400, "metadata wants a key (?key=K)");
    int32_t p = key_partition(r, rt, rep);
    if (p < 0) return;
    enum { MAX = 16 };
    tide_holder_t active, standbys[MAX];
    int n = 0, found = tide_directory_lookup(r->o.directory, rt->detector, p, &active, standbys, MAX, &n);
    if (!r->o.directory && rt->has_local && p < rt->local.partitions &&
        rt->local.state[p] != TIDE_TASKMAP_NONE && rt->local.state[p] != TIDE_TASKMAP_STANDBY) {
        active = (tide_holder_t){.state = rt->local.state[p], .local = 1};
        snprintf(active.instance, sizeof(active.instance), "%s", r->instance);
        snprintf(active.server, sizeof(active.server), "%s", r->server);
        found = 1;
    }
    tide_buf_t b = TIDE_BUF_INIT;
    tide_buf_puts(&b, "{\"detector\":");
    tide_buf_json_str(&b, rt->detector);
    tide_buf_puts(&b, ",\"store\":");
    tide_buf_json_str(&b, rt->store);
    tide_buf_puts(&b, ",\"key\":");
    tide_buf_json_str(&b, rt->key);
    tide_buf_printf(&b, ",\"partition\":%d,\"partitions\":%d,\"active\":", (int)p,
                    (int)partitions_of(r, rt));
    if (found) holder_json(&b, &active);
    else tide_buf_puts(&b, "null");
    tide_buf_puts(&b, ",\"standbys\":[");
    for (int i = 0; i < n; i++) {
        if (i) tide_buf_puts(&b, ",");
        holder_json(&b, &standbys[i]);
    }
    tide_buf_puts(&b, "]}\n");
    reply_json(rep, 200, &b);
}

/* Every live instance of the detector with its tasks (allMetadata). */
static void instances(tide_router_t *r, const route_t *rt, tide_http_reply_t *rep) {
    enum { MAX = 64 };
    tide_dir_member_t *m = malloc(MAX * sizeof(*m));
    int n = m ? tide_directory_members(r->o.directory, rt->detector, m, MAX) : 0;
    if (!n && !rt->has_local) {
        free(m);
        return reply_error(rep, 404, "no instance runs this detector");
    }
    tide_buf_t b = TIDE_BUF_INIT;
    tide_buf_puts(&b, "{\"detector\":");
    tide_buf_json_str(&b, rt->detector);
    tide_buf_puts(&b, ",\"instances\":[");
    int64_t now = tide_wall_ms();
    for (int i = 0; i < n; i++) {
        tide_buf_puts(&b, i ? ",{\"instance\":" : "{\"instance\":");
        tide_buf_json_str(&b, m[i].instance);
        tide_buf_puts(&b, ",\"server\":");
        tide_buf_json_str(&b, m[i].server);
        tide_buf_printf(&b, ",\"local\":%s,\"age_ms\":%lld,\"partitions\":%d,\"active\":",
                        m[i].local ? "true" : "false", (long long)(now - m[i].ts), (int)m[i].partitions);
        partitions_in(&b, m[i].state, m[i].partitions, TIDE_TASKMAP_ACTIVE);
        tide_buf_puts(&b, ",\"restoring\":");
        partitions_in(&b, m[i].state, m[i].partitions, TIDE_TASKMAP_RESTORING);
        tide_buf_puts(&b, ",\"standby\":");
        partitions_in(&b, m[i].state, m[i].partitions, TIDE_TASKMAP_STANDBY);
        tide_buf_puts(&b, "}");
    }
    tide_buf_puts(&b, "]}\n");
    free(m);
    reply_json(rep, 200, &b);
}

static void stores(const route_t *rt, tide_http_reply_t *rep) {
    tide_buf_t b = TIDE_BUF_INIT;
    tide_buf_puts(&b, "{\"detector\":");
    tide_buf_json_str(&b, rt->detector);
    tide_buf_puts(&b, ",\"stores\":");
    store_list(&b, &rt->local);
    tide_buf_puts(&b, "}\n");
    reply_json(rep, 200, &b);
}

/* Arguments a route takes: 0, or -1 with a 400 set. */
static int check_args(const route_t *rt, tide_http_reply_t *rep) {
    arg_check_t c = {""};
    tide_http_args(rt->rq, check_arg, &c);
    if (!c.bad[0]) return 0;
    char msg[512];
    snprintf(msg, sizeof(msg), "unknown argument %s (key, from, to, prefix, after, after_start, "
             "time_from, time_to, limit, count, partition)", c.bad);
    reply_error(rep, 400, msg);
    return -1;
}

void tide_router_handle(void *ud, const tide_http_request_t *rq, tide_http_reply_t *rep) {
    tide_router_t *r = ud;
    route_t *rt = calloc(1, sizeof(*rt));
    if (!rt) return reply_error(rep, 503, "out of memory");
    rt->rq = rq;
    if (parse_path(tide_http_path(rq), rt)) {
        reply_error(rep, 404, "not found");
    } else if (!check_args(rt, rep)) {
        rt->key = tide_http_arg(rq, "key");
        rt->forwarded = tide_http_arg(rq, "forwarded") != NULL;
        rt->has_local = r->o.find(r->o.ud, rt->detector, &rt->local);
        if (rt->kind == ROUTE_INSTANCES) instances(r, rt, rep);
        else if (!rt->has_local && rt->kind == ROUTE_STORES)
            reply_error(rep, 404, "this instance does not run that detector");
        else if (rt->kind == ROUTE_STORES) stores(rt, rep);
        else if (rt->has_local && !has_store(&rt->local, rt->store)) {
            tide_buf_t b = TIDE_BUF_INIT;
            char msg[400];
            snprintf(msg, sizeof(msg), "no store named %s", rt->store);
            tide_buf_puts(&b, "{\"error\":");
            tide_buf_json_str(&b, msg);
            tide_buf_puts(&b, ",\"stores\":");
            store_list(&b, &rt->local);
            tide_buf_puts(&b, "}\n");
            reply_json(rep, 404, &b);
        } else if (rt->kind == ROUTE_METADATA) metadata(r, rt, rep);
        else if (rt->key) route_key(r, rt, rep);
        else route_scan(r, rt, rep);
    }
    free(rt);
}
