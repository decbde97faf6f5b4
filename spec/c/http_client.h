/*
 * http_client.h: the smallest HTTP/1.1 client the C tests need, over real
 * sockets on 127.0.0.1 (test code only): one request per connection, the
 * whole answer read until the server closes (10 s at most).
 */
#ifndef TIDE_TEST_HTTP_CLIENT_H
#define TIDE_TEST_HTTP_CLIENT_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct reply {
    int status;
    char *raw;  /* the whole answer, NUL-terminated */
    char *body; /* into raw */
    size_t body_len;
} reply_t;

static inline int64_t mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* rcvbuf > 0: a small receive buffer, for a client that reads nothing */
static inline int connect_with(int port, int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static inline int connect_to(int port) { return connect_with(port, 0); }

/* Read until the server closes (10 s at most) and split the answer. */
static inline int read_reply(int fd, reply_t *r) {
    size_t cap = 1 << 16, n = 0;
    r->raw = malloc(cap);
    int64_t deadline = mono_now() + 10000;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        int64_t left = deadline - mono_now();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0) break;
        if (n + 4096 > cap) r->raw = realloc(r->raw, cap *= 2);
        ssize_t got = recv(fd, r->raw + n, cap - n - 1, 0);
        if (got <= 0) break;
        n += (size_t)got;
    }
    r->raw[n] = '\0';
    r->status = 0;
    sscanf(r->raw, "HTTP/1.1 %d", &r->status);
    char *end = strstr(r->raw, "\r\n\r\n");
    r->body = end ? end + 4 : r->raw + n;
    r->body_len = (size_t)(r->raw + n - r->body);
    return r->status;
}

static inline int http_raw(int port, const char *request, reply_t *r) {
    memset(r, 0, sizeof(*r));
    int fd = connect_to(port);
    if (fd < 0) return -1;
    ssize_t w = send(fd, request, strlen(request), MSG_NOSIGNAL);
    (void)w;
    read_reply(fd, r);
    close(fd);
    return r->status;
}

static inline int http_get(int port, const char *path, reply_t *r) {
    char req[512];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: test\r\n\r\n",
             path, port);
    return http_raw(port, req, r);
}

static inline void reply_free(reply_t *r) {
    free(r->raw);
    memset(r, 0, sizeof(*r));
}

static inline int has_header(const reply_t *r, const char *line) {
    const char *end = strstr(r->raw, "\r\n\r\n");
    const char *at = strstr(r->raw, line);
    return at && end && at < end;
}

#endif
