/*
 * query.c: the worker's end of the query channel (see query.h).
 *
 * Owns the socket, the queue of queries read from it and the answers not yet
 * sent. It reads stores only through the runtime (tide_runtime_query, which
 * never writes), and only when the worker calls tide_query_serve. It never
 * blocks the record loop: reads and writes are non-blocking, and answering
 * stops when its slice of time is spent. A supervisor that goes away closes
 * the channel; the worker goes on without it.
 */
#include "query.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

typedef struct pending {
    uint32_t id;
    int32_t partition;
    char *json; /* owned */
    size_t len;
    int started;   /* the runtime has begun it (cancel it if refused) */
    int cancelled; /* its asker gave up: forget it, unanswered */
} pending_t;

struct tide_query {
    int fd; /* -1: closed */
    unsigned char *in;
    size_t in_len, in_cap;
    tide_buf_t out;  /* answers not sent yet */
    size_t out_sent; /* of out */
    pending_t *q;
    int n, cap;
    uint64_t answered;
    const tide_runtime_t *rt; /* the runtime queries started in (a swap replaces it) */
};

tide_query_t *tide_query_new(int fd) {
    tide_query_t *q = calloc(1, sizeof(*q));
    if (!q) return NULL;
    q->fd = fd;
    q->out = TIDE_BUF_INIT;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return q;
}

static void drop(pending_t *p) { free(p->json); }

static void channel_closed(tide_query_t *q) {
    if (q->fd < 0) return;
    close(q->fd);
    q->fd = -1;
    for (int i = 0; i < q->n; i++) drop(&q->q[i]);
    q->n = 0;
}

/* Queue an answer; it leaves with the next flush. */
static void answer(tide_query_t *q, uint32_t id, int status, const char *body, size_t len) {
    unsigned char h[TIDE_QUERY_ANSWER_HEADER];
    tide_query_put32(h, (uint32_t)(len + 6));
    tide_query_put32(h + 4, id);
    h[8] = (unsigned char)(status >> 8);
    h[9] = (unsigned char)status;
    tide_buf_append(&q->out, (const char *)h, sizeof(h));
    tide_buf_append(&q->out, body, len);
    q->answered++;
}

static void answer_text(tide_query_t *q, uint32_t id, int status, const char *msg) {
    tide_buf_t b = TIDE_BUF_INIT;
    tide_buf_puts(&b, "{\"error\":");
    tide_buf_json_str(&b, msg);
    tide_buf_puts(&b, "}");
    answer(q, id, status, b.data ? b.data : "{}", b.data ? b.len : 2);
    tide_buf_free(&b);
}

static void flush(tide_query_t *q) {
    while (q->fd >= 0 && q->out_sent < q->out.len) {
        ssize_t n = send(q->fd, q->out.data + q->out_sent, q->out.len - q->out_sent,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            q->out_sent += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            channel_closed(q);
        }
    }
    q->out.len = q->out_sent = 0;
}

/* Its asker gave up: forgotten at the next serve (where the runtime that
 * began it, if any, hears of it too). */
static void cancel(tide_query_t *q, uint32_t id) {
    for (int i = 0; i < q->n; i++)
        if (q->q[i].id == id) q->q[i].cancelled = 1;
}

/* One whole request frame at b[0..len) (after its length): queue it. */
static void take(tide_query_t *q, const unsigned char *b, size_t len) {
    if (len < TIDE_QUERY_HEADER - 4) return;
    uint32_t id = tide_query_get32(b);
    int32_t partition = (int32_t)tide_query_get32(b + 4);
    if (b[8] & TIDE_QUERY_CANCEL) {
        cancel(q, id);
        return;
    }
    if (q->n == q->cap) {
        int cap = q->cap ? q->cap * 2 : 8;
        pending_t *np = realloc(q->q, (size_t)cap * sizeof(*np));
        if (!np) {
            answer_text(q, id, 503, "the worker is out of memory");
            return;
        }
        q->q = np;
        q->cap = cap;
    }
    size_t jl = len - (TIDE_QUERY_HEADER - 4);
    char *json = malloc(jl + 1);
    if (!json) {
        answer_text(q, id, 503, "the worker is out of memory");
        return;
    }
    memcpy(json, b + TIDE_QUERY_HEADER - 4, jl);
    json[jl] = '\0';
    q->q[q->n++] = (pending_t){id, partition, json, jl, 0, 0};
}

/* Whole frames out of the input buffer. */
static void parse(tide_query_t *q) {
    size_t at = 0;
    while (q->in_len - at >= 4) {
        uint32_t len = tide_query_get32(q->in + at);
        if (len > TIDE_QUERY_MAX_REQUEST) { /* not our router: stop listening */
            tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "query channel: a frame of %u bytes; closing it",
                     len);
            channel_closed(q);
            return;
        }
        if (q->in_len - at - 4 < len) break;
        take(q, q->in + at + 4, len);
        at += 4 + (size_t)len;
    }
    memmove(q->in, q->in + at, q->in_len - at);
    q->in_len -= at;
}

static void read_some(tide_query_t *q) {
    for (;;) {
        if (q->in_cap - q->in_len < 4096) {
            size_t cap = q->in_cap ? q->in_cap * 2 : 16384;
            unsigned char *nb = realloc(q->in, cap);
            if (!nb) return;
            q->in = nb;
            q->in_cap = cap;
        }
        ssize_t n = recv(q->fd, q->in + q->in_len, q->in_cap - q->in_len, MSG_DONTWAIT);
        if (n > 0) {
            q->in_len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) channel_closed(q);
        return;
    }
}

int tide_query_poll(tide_query_t *q) {
    if (!q || q->fd < 0) return 0;
    flush(q);
    if (q->fd < 0) return 0;
    read_some(q);
    if (q->fd >= 0) parse(q);
    flush(q);
    return q->n;
}

/* The tasks query p reads, into parts (room for every task); 0 with the
 * count, or the HTTP status of a refusal and its reason. */
static int parts_of(const pending_t *p, tide_tasks_t *tasks, int32_t *parts, int *n,
                    const char **why) {
    *n = 0;
    if (p->partition >= 0) {
        if (!tide_tasks_has(tasks, p->partition)) {
            *why = "the task is not held here (it is moving): ask again";
            return 503;
        }
        if (!tide_tasks_ready(tasks, p->partition)) {
            *why = "the task is restoring its state: ask again";
            return 503;
        }
        parts[(*n)++] = p->partition;
        return 0;
    }
    int all = tide_tasks_count(tasks);
    for (int i = 0; i < all; i++) {
        int32_t part = tide_tasks_partition(tasks, i);
        if (tide_tasks_ready(tasks, part)) parts[(*n)++] = part;
    }
    return 0;
}

/* The first waiting query, for up to budget_ms; 1 when it is done. */
static int serve_one(tide_query_t *q, tide_runtime_t *rt, tide_tasks_t *tasks, int budget_ms) {
    pending_t *p = &q->q[0];
    if (p->cancelled) {
        if (p->started) tide_runtime_query_cancel(rt, p->id);
        return 1;
    }
    int32_t *parts = malloc(((size_t)tide_tasks_count(tasks) + 1) * sizeof(*parts));
    int n = 0, status = 0;
    const char *why = "out of memory";
    int refused = parts ? parts_of(p, tasks, parts, &n, &why) : 503;
    if (refused) {
        if (p->started) tide_runtime_query_cancel(rt, p->id);
        answer_text(q, p->id, refused, why);
        free(parts);
        return 1;
    }
    char *body = NULL;
    size_t len = 0;
    p->started = 1;
    tide_query_step_t r = tide_runtime_query(rt, p->id, p->json, p->len, parts, n, budget_ms,
                                             &status, &body, &len);
    free(parts);
    if (r == TIDE_QUERY_MORE) return 0;
    if (body) answer(q, p->id, status, body, len);
    else answer_text(q, p->id, 500, "out of memory");
    free(body);
    return 1;
}

void tide_query_serve(tide_query_t *q, tide_runtime_t *rt, tide_tasks_t *tasks, int budget_ms) {
    if (!q || q->fd < 0) return;
    if (q->rt != rt) { /* a new version runs: what the old one began starts over */
        for (int i = 0; i < q->n; i++) q->q[i].started = 0;
        q->rt = rt;
    }
    int64_t end = tide_mono_ms() + budget_ms;
    while (q->n) {
        int64_t left = end - tide_mono_ms();
        if (left <= 0) break;
        if (!serve_one(q, rt, tasks, (int)left)) break;
        drop(&q->q[0]);
        memmove(&q->q[0], &q->q[1], (size_t)(q->n - 1) * sizeof(*q->q));
        q->n--;
    }
    flush(q);
}

void tide_query_refuse_all(tide_query_t *q, tide_runtime_t *rt, const char *why) {
    if (!q) return;
    for (int i = 0; i < q->n; i++) {
        if (q->q[i].started && rt) tide_runtime_query_cancel(rt, q->q[i].id);
        answer_text(q, q->q[i].id, 503, why);
        drop(&q->q[i]);
    }
    q->n = 0;
    flush(q);
}

uint64_t tide_query_answered(const tide_query_t *q) { return q ? q->answered : 0; }

void tide_query_free(tide_query_t *q) {
    if (!q) return;
    channel_closed(q);
    free(q->in);
    free(q->q);
    tide_buf_free(&q->out);
    free(q);
}
