/*
 * httpc.h: a small HTTP client on libcurl, for the schema registry. One
 * connection kept alive per client; every call is bounded by its timeout.
 */
#ifndef TIDE_HTTPC_H
#define TIDE_HTTPC_H
#include <stddef.h>

typedef struct tide_httpc tide_httpc_t;

typedef enum tide_httpc_result {
    TIDE_HTTPC_OK = 0,      /* an HTTP response came: see *status */
    TIDE_HTTPC_UNREACHABLE, /* no response: refused, timed out, DNS, TLS ... (*errp) */
} tide_httpc_result_t;

tide_httpc_t *tide_httpc_new(void);
void tide_httpc_free(tide_httpc_t *h);
/* method "GET" or "POST" (body NULL for none, sent as the registry's JSON
 * type); user_info "user:password" for basic auth, NULL for none. On OK,
 * *status is the HTTP status and *resp (malloc'd, NUL-terminated, caller
 * frees) the body. */
tide_httpc_result_t tide_httpc_request(tide_httpc_t *h, const char *method, const char *url,
                                       const char *body, size_t body_len,
                                       const char *user_info, long timeout_ms, long *status,
                                       char **resp, size_t *resp_len, char **errp);

#endif
