/*
 * http.h: a small HTTP/1.1 server on libmicrohttpd, for the admin documents.
 *
 * One thread, loopback by default, GET and HEAD only, one request per
 * connection, several connections at once. For each request it calls one
 * handler, which renders the whole answer into memory; the server then sends
 * it. Each phase has a deadline (the request must arrive whole within 3 s of
 * the connection, its answer leave within 5 s), so a slow or silent client
 * delays neither the others nor tide_http_stop. On a loopback address it
 * answers only requests whose Host is a loopback name (DNS rebinding).
 * It knows nothing of what it serves.
 */
#ifndef TIDE_HTTP_H
#define TIDE_HTTP_H
#include <stddef.h>

#include "buf.h"

typedef struct tide_http tide_http_t;

/* An answer, filled by the handler. */
typedef struct tide_http_reply {
    int status;                 /* 200, 404, 503, ... */
    const char *type;           /* Content-Type, a static string */
    const char *header_name;    /* one more header, or NULL (static strings) */
    const char *header_value;
    const char *body;           /* a static body, or NULL: buf is the body */
    size_t body_len;
    tide_buf_t buf;             /* the server frees it; buf.oom answers 500 */
} tide_http_reply_t;

/* Called on the server thread with the request's path (no query string);
 * must not block. */
typedef void (*tide_http_handler_fn)(void *ud, const char *path, tide_http_reply_t *r);

/* A static text/plain answer. */
void tide_http_reply_text(tide_http_reply_t *r, int status, const char *text);

/* Listen on addr:port and start serving. addr is an IPv4 literal or
 * "localhost"; NULL or "" means 127.0.0.1. port 0 picks a free port (see
 * tide_http_port). ud is borrowed and must outlive the server. Returns NULL
 * with *errp (malloc'd, the caller frees) = "admin http 127.0.0.1:8080: reason". */
tide_http_t *tide_http_start(const char *addr, int port, tide_http_handler_fn handler, void *ud,
                             char **errp);
/* The port actually bound. */
int tide_http_port(const tide_http_t *h);
/* Stop accepting, drop the connections in flight, join the thread, free h.
 * Returns at once. NULL is a no-op. */
void tide_http_stop(tide_http_t *h);

#endif
