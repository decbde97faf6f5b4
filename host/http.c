/*
 * http.c: the admin HTTP server (see http.h), on libmicrohttpd.
 *
 * HTTP itself is libmicrohttpd's: parsing, limits, HEAD, the connections.
 * This file owns the listening socket (bound here, so a refusal says why),
 * one server thread that runs libmicrohttpd in its own poll loop, a wake-up
 * pipe, and a deadline per connection phase: a request must arrive whole
 * within READ_TIMEOUT_MS of the accept and its answer leave within
 * WRITE_TIMEOUT_MS, or the connection is cut. The handler renders the whole
 * answer into memory as soon as the request is complete, so a slow or silent
 * client delays neither the others nor tide_http_stop, which returns at once.
 *
 * It never logs (its owner logs what tide_http_start returns) and never
 * looks inside what it serves.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEADER_MAX 8192        /* libmicrohttpd's memory per connection: request line and
                                  headers must fit, else 431 */
#define READ_TIMEOUT_MS 3000   /* for the whole request, against slow senders */
#define WRITE_TIMEOUT_MS 5000  /* for the whole response, against slow readers */
#define IDLE_TIMEOUT_S 10      /* libmicrohttpd's own, a backstop behind the two above */
#define MAX_CONNS 32           /* at once; more wait in the listen backlog */

/* Every connection, from accept to close, with the deadline of its phase:
 * reading the request, then writing the answer. libmicrohttpd's own timeout
 * is for inactivity only, so a client that trickles a byte at a time would
 * never meet it; this one counts from the start of the phase. */
struct conn {
    int fd;           /* -1: a free slot */
    int64_t deadline; /* monotonic ms */
    int cut;          /* past its deadline: shut down, libmicrohttpd closes it */
};

struct tide_http {
    struct MHD_Daemon *d;
    tide_http_handler_fn handler;
    void *ud;
    int wake[2];   /* tide_http_stop writes; the server thread polls wake[0] */
    int port;
    int loopback;  /* bound to 127.0.0.0/8: check Host (DNS rebinding) */
    pthread_t thread;
    struct conn conns[MAX_CONNS]; /* touched by the server thread only */
};

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tide_http_reply_text(tide_http_reply_t *r, int status, const char *text) {
    r->status = status;
    r->type = "text/plain; charset=utf-8";
    r->body = text;
    r->body_len = strlen(text);
}

/* A browser page elsewhere could resolve its own name to 127.0.0.1 and read
 * us (DNS rebinding): on loopback, only loopback names are served. */
static int host_allowed(const char *host) {
    char name[256];
    size_t len;
    if (host[0] == '[') len = strcspn(host, "]") + 1; /* [::1]:port */
    else len = strcspn(host, ":");
    if (len >= sizeof(name)) return 0;
    memcpy(name, host, len);
    name[len] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, name, &a) == 1) return (ntohl(a.s_addr) >> 24) == 127;
    return !strcasecmp(name, "localhost") || !strcasecmp(name, "localhost.") ||
           !strcmp(name, "[::1]");
}

/* What to answer to a request that libmicrohttpd has parsed. */
static void answer(tide_http_t *h, struct MHD_Connection *mc, const char *url,
                   const char *method, const char *version, tide_http_reply_t *r) {
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD)) {
        tide_http_reply_text(r, 405, "only GET and HEAD\n");
        r->header_name = "Allow";
        r->header_value = "GET, HEAD";
        return;
    }
    const char *host = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if ((!host || !host[0]) && !strcmp(version, MHD_HTTP_VERSION_1_1)) {
        tide_http_reply_text(r, 400, "missing Host header\n");
        return;
    }
    if (h->loopback && host && host[0] && !host_allowed(host)) {
        tide_http_reply_text(r, 403, "this server answers to loopback names only\n");
        return;
    }
    if (url[0] != '/') {
        tide_http_reply_text(r, 400, "bad request target\n");
        return;
    }
    char path[1024];
    size_t plen = strcspn(url, "?#");
    if (plen >= sizeof(path)) {
        tide_http_reply_text(r, 404, "not found\n");
        return;
    }
    memcpy(path, url, plen);
    path[plen] = '\0';
    h->handler(h->ud, path, r);
    if (r->buf.oom) {
        tide_buf_free(&r->buf);
        tide_http_reply_text(r, 500, "out of memory\n");
    }
}

/* Hand the answer to libmicrohttpd, which sends it (HEAD without the body). */
static enum MHD_Result queue(struct MHD_Connection *mc, tide_http_reply_t *r) {
    struct MHD_Response *resp;
    if (r->body) {
        resp = MHD_create_response_from_buffer(r->body_len, (void *)r->body,
                                               MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer(r->buf.len, r->buf.data, MHD_RESPMEM_MUST_FREE);
        if (resp) r->buf = TIDE_BUF_INIT; /* the response frees it */
    }
    tide_buf_free(&r->buf);
    if (!resp) return MHD_NO; /* out of memory: libmicrohttpd drops the connection */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (r->header_name) MHD_add_response_header(resp, r->header_name, r->header_value);
    enum MHD_Result ok = MHD_queue_response(mc, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ok;
}


static struct conn *conn_of(struct MHD_Connection *mc) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    tide_http_t *h = cls;
    struct conn *c = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (c) c->fd = -1;
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    for (int i = 0; ci && i < MAX_CONNS; i++)
        if (h->conns[i].fd < 0) {
            h->conns[i] = (struct conn){ci->connect_fd, mono_ms() + READ_TIMEOUT_MS, 0};
            *socket_context = &h->conns[i];
            return;
        }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_context) {
    (void)upload_data;
    (void)upload_data_size;
    (void)req_context;
    tide_http_t *h = cls;
    tide_http_reply_t r;
    memset(&r, 0, sizeof(r));
    answer(h, mc, url, method, version, &r);
    struct conn *c = conn_of(mc);
    if (c) c->deadline = mono_ms() + WRITE_TIMEOUT_MS;
    return queue(mc, &r);
}

/* Shut down the sockets of connections past their deadline; libmicrohttpd
 * sees them end and closes them (it owns the descriptors). Returns the next
 * deadline, or -1. */
static int64_t cut_overdue(tide_http_t *h, int64_t now) {
    int64_t next = -1;
    for (int i = 0; i < MAX_CONNS; i++) {
        struct conn *c = &h->conns[i];
        if (c->fd < 0 || c->cut) continue;
        if (now >= c->deadline) {
            shutdown(c->fd, SHUT_RDWR);
            c->cut = 1;
        } else if (next < 0 || c->deadline < next) {
            next = c->deadline;
        }
    }
    return next;
}

/* The server thread: libmicrohttpd's epoll descriptor, the wake-up pipe and
 * the deadlines, in one poll; libmicrohttpd runs only here. */
static void *serve(void *arg) {
    tide_http_t *h = arg;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    int efd = di ? di->epoll_fd : -1;
    for (;;) {
        int64_t now = mono_ms();
        int64_t next = cut_overdue(h, now);
        MHD_UNSIGNED_LONG_LONG mt;
        int timeout = next < 0 ? -1 : (int)(next - now);
        if (MHD_get_timeout(h->d, &mt) == MHD_YES && (timeout < 0 || mt < (unsigned)timeout))
            timeout = (int)mt;
        struct pollfd p[2] = {{h->wake[0], POLLIN, 0}, {efd, POLLIN, 0}};
        if (poll(p, 2, timeout) < 0 && errno != EINTR) usleep(10 * 1000); /* ENOMEM */
        if (p[0].revents) break;
        MHD_run(h->d);
    }
    return NULL;
}

static tide_http_t *start_failed(tide_http_t *h, int fd, char **errp, const char *addr, int port,
                                 const char *what) {
    if (errp) {
        if (asprintf(errp, "admin http %s:%d: %s", addr, port, what) < 0) *errp = NULL;
    }
    if (fd >= 0) close(fd);
    if (h) {
        if (h->d) MHD_stop_daemon(h->d);
        if (h->wake[0] >= 0) close(h->wake[0]);
        if (h->wake[1] >= 0) close(h->wake[1]);
        free(h);
    }
    return NULL;
}

/* Our own listening socket, so that a refusal says why (libmicrohttpd's
 * start only fails) and port 0 tells us the port it picked. */
static int listen_on(const struct sockaddr_in *sa, int *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in bound;
    socklen_t sl = sizeof(bound);
    if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &sl) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    *port = ntohs(bound.sin_port);
    return fd;
}

static struct MHD_Daemon *start_daemon(tide_http_t *h, int fd) {
    return MHD_start_daemon(
        MHD_USE_EPOLL, 0, NULL, NULL, on_request, h,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNS,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HEADER_MAX,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_SIGPIPE_HANDLED_BY_APP, 0,
        MHD_OPTION_END);
}

tide_http_t *tide_http_start(const char *addr, int port, tide_http_handler_fn handler, void *ud,
                             char **errp) {
    if (!addr || !addr[0] || !strcmp(addr, "localhost")) addr = "127.0.0.1";
    if (port < 0 || port > 65535)
        return start_failed(NULL, -1, errp, addr, port, "port out of range");
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        return start_failed(NULL, -1, errp, addr, port, "not an IPv4 address");
    int fd = listen_on(&sa, &port);
    if (fd < 0) return start_failed(NULL, -1, errp, addr, port, strerror(errno));

    tide_http_t *h = calloc(1, sizeof(*h));
    if (!h) return start_failed(NULL, fd, errp, addr, port, strerror(ENOMEM));
    h->handler = handler;
    h->ud = ud;
    h->port = port;
    h->wake[0] = h->wake[1] = -1;
    h->loopback = (ntohl(sa.sin_addr.s_addr) >> 24) == 127;
    for (int i = 0; i < MAX_CONNS; i++) h->conns[i].fd = -1;
    if (pipe2(h->wake, O_CLOEXEC | O_NONBLOCK) != 0)
        return start_failed(h, fd, errp, addr, port, strerror(errno));
    h->d = start_daemon(h, fd);
    if (!h->d) return start_failed(h, fd, errp, addr, port, "libmicrohttpd did not start");
    /* from here on the daemon owns fd */

    /* Signals belong to the owner's threads: the server thread blocks
     * them all (it inherits the mask it is created with). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&h->thread, NULL, serve, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) return start_failed(h, -1, errp, addr, port, strerror(rc));
    return h;
}

int tide_http_port(const tide_http_t *h) { return h->port; }

void tide_http_stop(tide_http_t *h) {
    if (!h) return;
    ssize_t w = write(h->wake[1], "x", 1);
    (void)w;
    pthread_join(h->thread, NULL);
    MHD_stop_daemon(h->d); /* closes the connections and the listening socket */
    close(h->wake[0]);
    close(h->wake[1]);
    free(h);
}
