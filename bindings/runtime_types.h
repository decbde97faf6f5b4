/*
 * runtime_types.h: the words of the runtime's contract, shared by the host
 * (through runtime.h) and by the Lua side of bindings/ (lua_call.c): how a
 * call ended, a detector's error policy, a failed record, log levels. Types
 * only, no functions, so that neither side has to include the other.
 */
#ifndef TIDE_RUNTIME_TYPES_H
#define TIDE_RUNTIME_TYPES_H
#include <stdint.h>

#include "tide_ffi.h"

/* Defaults of detector.memory.limit.bytes and detector.batch.timeout.ms (in
 * host/config.c's table), which the busted driver applies too. */
#define TIDE_DEFAULT_MEMORY_LIMIT 134217728
#define TIDE_DEFAULT_BATCH_TIMEOUT_MS 10000

typedef enum tide_status {
    TIDE_OK = 0,
    TIDE_ERROR,   /* see the error string out-parameter */
    TIDE_STOPPED, /* a record failed under on_error = "stop" */
    TIDE_RETRY,   /* a record needs what is unavailable now (the schema
                   * registry): it and those after it were not processed;
                   * hand them again later (the batch's cursor is at it) */
} tide_status_t;

/* The error class a serde raises for TIDE_RETRY (tide.errors.RETRY). */
#define TIDE_RETRY_CLASS "RetryLater"

/* The schema registry, for the avro serde (config keys in parentheses).
 * url NULL or "": schemas come from the folder schemas/ beside the
 * detector. Strings are borrowed for the call that takes them. */
typedef struct tide_registry_opts {
    const char *url;        /* schema.registry.url */
    const char *user_info;  /* schema.registry.basic.auth.user.info: "user:password" */
    long timeout_ms;        /* schema.registry.request.timeout.ms */
    long backoff_max_ms;    /* schema.registry.retry.backoff.max.ms */
    int auto_register;      /* auto.register.schemas */
    int use_latest;         /* use.latest.version */
} tide_registry_opts_t;

typedef enum tide_on_error {
    TIDE_ON_ERROR_DLQ = 0,
    TIDE_ON_ERROR_SKIP,
    TIDE_ON_ERROR_STOP,
} tide_on_error_t;

typedef enum tide_log_level {
    TIDE_LOG_DEBUG = 0,
    TIDE_LOG_INFO,
    TIDE_LOG_WARN,
    TIDE_LOG_ERROR,
} tide_log_level_t;

/* A record that failed. Strings are owned by the runtime and valid until the
 * next dispatch or close. */
typedef struct tide_failure {
    int32_t index;         /* in the batch */
    const char *cls;       /* DecodeError, ProcessError, MemoryError */
    const char *message;   /* with the detector's file:line when it has one */
    const char *traceback; /* may be empty */
} tide_failure_t;

typedef void (*tide_log_fn)(void *ud, tide_log_level_t level, const char *msg,
                            const tide_rec_t *rec);
typedef void (*tide_failure_fn)(void *ud, const tide_rec_t *rec,
                                const tide_failure_t *f);

#endif
