/*
 * httpc.c: the HTTP client behind httpc.h, on libcurl. It owns one curl
 * easy handle per client (so a connection is reused) and the response
 * buffer of a call. It knows nothing of the registry's API: the Lua side
 * (scripts/tide/registry.lua) builds URLs and reads the JSON.
 */
#include "httpc.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

struct tide_httpc {
    CURL *curl;
};

typedef struct body {
    char *p;
    size_t len, cap;
} body_t;

/* Registry responses are small; this bounds what a wrong URL can send. */
#define MAX_BODY (16 * 1024 * 1024)

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
    body_t *b = ud;
    size_t add = size * n;
    if (b->len + add + 1 > MAX_BODY) return 0; /* curl fails the transfer */
    if (b->len + add + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + add + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, add);
    b->len += add;
    b->p[b->len] = '\0';
    return add;
}

tide_httpc_t *tide_httpc_new(void) {
    static int inited;
    if (!inited) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        inited = 1;
    }
    tide_httpc_t *h = calloc(1, sizeof(*h));
    if (h && !(h->curl = curl_easy_init())) {
        free(h);
        return NULL;
    }
    return h;
}

void tide_httpc_free(tide_httpc_t *h) {
    if (!h) return;
    curl_easy_cleanup(h->curl);
    free(h);
}

tide_httpc_result_t tide_httpc_request(tide_httpc_t *h, const char *method, const char *url,
                                       const char *body, size_t body_len,
                                       const char *user_info, long timeout_ms, long *status,
                                       char **resp, size_t *resp_len, char **errp) {
    CURL *c = h->curl;
    body_t b = {0};
    char err[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    hdrs = curl_slist_append(hdrs, "Accept: application/vnd.schemaregistry.v1+json, "
                                   "application/vnd.schemaregistry+json, application/json");
    if (body) hdrs = curl_slist_append(hdrs, "Content-Type: application/vnd.schemaregistry.v1+json");
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (user_info && *user_info) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERPWD, user_info);
    }
    if (body) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body_len);
    } else if (strcmp(method, "GET")) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        free(b.p);
        *errp = strdup(*err ? err : curl_easy_strerror(rc));
        return TIDE_HTTPC_UNREACHABLE;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    *resp = b.p ? b.p : strdup("");
    *resp_len = b.len;
    return TIDE_HTTPC_OK;
}
