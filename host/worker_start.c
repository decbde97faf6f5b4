/*
 * worker_start.c: how a worker starts (worker_int.h): it loads the
 * detector, makes its topics exist (or names the one missing), opens the
 * producer (transactional under exactly-once, fencing older instances),
 * the restorer, the global tables, the consumer group and the committer.
 *
 * Never subscribes before the topics it needs are declared; a broker that
 * is away only makes it wait.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "devbroker.h"
#include "log.h"
#include "topics.h"
#include "txnid.h"
#include "worker_int.h"

static void on_lua_log(void *ud, tide_log_level_t level, const char *msg, const tide_rec_t *r) {
    (void)ud;
    tide_log(level, r ? (tide_log_at_t){r->topic, r->partition, r->offset} : TIDE_AT_NONE,
             "%s", msg);
}

/* ---------------------------------------------------------------- topics */

static int detector_topics(const tide_worker_t *w, tide_topic_req_t *out, int max) {
    int n_all, n = 0;
    char *const *all = tide_tasks_changelogs(w->tasks, &n_all);
    char *changelogs[TIDE_TOPICS_MAX]; /* (a global table's store has none: NULL) */
    for (int i = 0; i < n_all && n < TIDE_TOPICS_MAX; i++)
        if (all[i]) changelogs[n++] = all[i];
    return tide_topics_of(w->o->config, w->info, w->dlq, changelogs, n, out, max);
}

/* The same, and the topics of the global tables: what a development broker
 * must hold (on any other, a global table's topic is the user's to make). */
static int dev_topics(const tide_worker_t *w, tide_topic_req_t *out, int max) {
    int n = detector_topics(w, out, max);
    for (int s = 0; s < w->info->n_stores && n < max; s++)
        if (w->info->store_global[s])
            out[n++] = (tide_topic_req_t){.name = w->info->store_global[s], .kind = TIDE_TOPIC_SOURCE};
    return n;
}

/* On a broker that does not create our topics itself (a real Kafka, or a
 * `tide broker`), make the ones tide owns exist before the producer or the
 * consumer looks them up; note an output or dead-letter topic missing. */
void tide_worker_ensure_topics(tide_worker_t *w) {
    if (w->o->dev || w->o->await_topics) return;
    tide_topic_req_t t[TIDE_TOPICS_MAX];
    int n = detector_topics(w, t, TIDE_TOPICS_MAX);
    tide_topics_ensure(w->o->config, w->o->bootstraps, t, n, w->shutdown_timeout_ms);
    for (int i = 0; i < n && !w->missing[0]; i++) {
        if (t[i].partitions != 0 || t[i].kind == TIDE_TOPIC_SOURCE) continue;
        snprintf(w->missing, sizeof(w->missing), "%s", t[i].name);
        tide_log(TIDE_LOG_ERROR, (tide_log_at_t){t[i].name, -1, -1},
                 "topic %s of detector %s does not exist: holding its inputs until it does "
                 "(create it%s)", t[i].name, w->info->name,
                 t[i].kind == TIDE_TOPIC_OUTPUT ? ", or set output.topics.create=true" : "");
    }
}

/* Under a supervisor that runs the development broker, the topics must exist
 * before we subscribe: declare them and wait (bounded) until it says so. */
static void declare_topics(tide_worker_t *w) {
    tide_status_block_t *st = w->st;
    if (!w->o->await_topics) return;
    st->topics_ready = 0;
    tide_topic_req_t t[TIDE_STATUS_TOPICS];
    int n = dev_topics(w, t, TIDE_STATUS_TOPICS);
    for (int i = 0; i < n; i++) snprintf(st->declared[i], sizeof(st->declared[0]), "%s", t[i].name);
    __atomic_store_n(&st->n_declared, n, __ATOMIC_RELEASE);
    for (int i = 0; i < 300 && !__atomic_load_n(&st->topics_ready, __ATOMIC_ACQUIRE); i++) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Our own in-process broker starts empty: give the detector its topics. */
static void create_dev_topics(tide_worker_t *w) {
    if (!w->o->dev) return;
    tide_topic_req_t t[TIDE_TOPICS_MAX];
    int n = dev_topics(w, t, TIDE_TOPICS_MAX);
    char *err = NULL;
    for (int i = 0; i < n; i++) {
        if (!tide_devbroker_create_topic(w->o->dev, t[i].name, 0, &err)) continue;
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        return;
    }
}

/* Subscribe to the detector's inputs (again, after a swap changed them). */
int tide_worker_subscribe(tide_worker_t *w) {
    declare_topics(w);
    tide_worker_begin_rebalance(w);
    char *err = NULL;
    if (!tide_group_subscribe(w->group, w->info->inputs, w->info->n_inputs, &err)) return 0;
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
    free(err);
    return -1;
}

/* ---------------------------------------------------------------- reload */

tide_runtime_t *tide_worker_open_runtime(tide_worker_t *w, char **errp) {
    tide_runtime_opts_t ro = {
        .memory_limit = (size_t)tide_config_int(w->o->config, TIDE_CFG_DETECTOR_MEMORY_LIMIT_BYTES),
        .log = on_lua_log,
        .api = &tide_records_api,
        .open_db = tide_tasks_open_db,
        .open_db_ud = w->tasks,
        .application_id = tide_config_str(w->o->config, TIDE_CFG_APPLICATION_ID),
        .source_copy = w->o->source_copy,
    };
    tide_config_registry(w->o->config, &ro.registry);
    tide_runtime_t *rt = NULL;
    if (tide_runtime_open(&ro, w->o->path, &rt, errp) != TIDE_OK) return NULL;
    return rt;
}

/* Load the detector; the tasks exist first, as the runtime opens their
 * database. TIDE_WORKER_LOAD_FAILED when the detector does not load. */
tide_worker_exit_t tide_worker_open_detector(tide_worker_t *w) {
    char *err = NULL;
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "loading %s", w->o->path);
    tide_tasks_opts_t to = {
        .config = w->o->config, .bootstraps = w->o->bootstraps,
        .cb = tide_worker_tasks_hooks(w),
    };
    w->tasks = tide_tasks_new(&to, &err);
    if (w->tasks) w->rt = tide_worker_open_runtime(w, &err);
    if (!w->rt) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "detector %s refused: %s", w->o->path, err);
        w->st->last_reload_ok = 0;
        snprintf(w->st->last_reload_error, sizeof(w->st->last_reload_error), "%s", err);
        w->st->last_reload_ms = tide_wall_ms();
        free(err);
        return TIDE_WORKER_LOAD_FAILED;
    }
    w->info = tide_runtime_info(w->rt);
    if (tide_tasks_set_info(w->tasks, w->info)) return TIDE_WORKER_FAILED;
    tide_log_set_detector(w->info->name);
    char v[64];
    tide_json_str(v, sizeof(v), w->info->version, strlen(w->info->version));
    tide_logkv(TIDE_LOG_INFO, TIDE_AT_NONE, "detector loaded", "version", v, (char *)NULL);
    tide_status_detector(w->st, w->info->name, w->info->version, w->info->description);
    tide_status_topology(w->st, w->info->topology);
    tide_records_policy(w->records, w->info->on_error);
    return TIDE_WORKER_RUNNING;
}

/* A detector with state and more than one input needs each partition
 * number of all its inputs in one place: a join reads the table's store of
 * the stream record's partition, and a repartitioned aggregation's task is
 * that of its input partition. Kafka Streams has its own assignor for this;
 * librdkafka's range assignor gives the same (partition i of every topic to
 * one member, when the topics have as many partitions), at the price of
 * eager rebalances. Everything else stays cooperative. */
static int co_partitioned(const tide_worker_t *w) {
    return w->info->n_inputs > 1 && w->info->n_stores > 0;
}

/* The worker's group.instance.id into buf, or NULL for dynamic membership:
 * auto is <application.id>.<detector>-<process id>, the process id kept in
 * state.dir (txnid.h), so a restart on this host is the same member. */
static const char *instance_id(tide_worker_t *w, char *buf, size_t cap) {
    const char *v = tide_config_str(w->o->config, TIDE_CFG_GROUP_INSTANCE_ID);
    if (!*v || !strcmp(v, "none")) return NULL;
    if (strcmp(v, "auto")) return v;
    char *err = NULL;
    if (!tide_txnid_make(w->o->config, w->info->name, buf, cap, &err)) return buf;
    tide_log(TIDE_LOG_WARN, TIDE_AT_NONE, "no group.instance.id (%s): dynamic membership", err);
    free(err);
    return NULL;
}

static int open_group(tide_worker_t *w) {
    char id[512], member[600], *err = NULL;
    const tide_config_t *c = w->o->config;
    snprintf(id, sizeof(id), "%s.%s", tide_config_str(c, TIDE_CFG_APPLICATION_ID), w->info->name);
    tide_group_opts_t go = {
        .config = c, .bootstraps = w->o->bootstraps, .group_id = id,
        .co_partitioned = co_partitioned(w), .transactional = w->eos,
        .buffered_max = (int)tide_config_int(c, TIDE_CFG_BUFFERED_RECORDS_PER_PARTITION),
        .order = {.idle_ms = tide_config_int(c, TIDE_CFG_MAX_TASK_IDLE_MS), .lag_wait_ms = 5000},
        .instance_id = instance_id(w, member, sizeof(member)),
    };
    tide_worker_group_hooks(w, &go);
    w->group = tide_group_new(&go, &err);
    if (!w->group) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        return -1;
    }
    if (tide_worker_subscribe(w)) return -1;
    if (go.instance_id)
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "joining consumer group %s as static member %s", id,
                 go.instance_id);
    else
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "joining consumer group %s", id);
    if (co_partitioned(w))
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE,
                 "stateful with %d inputs: co-partitioned range assignment (eager rebalances); "
                 "the inputs must have as many partitions", w->info->n_inputs);
    return 0;
}

/* Under exactly-once: fence any older instance of this worker and get the
 * producer ready, waiting for the broker as long as it takes (or a stop). */
static tide_step_t init_transactions(tide_worker_t *w) {
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE,
             "exactly_once_v2: transactional.id %s; group fencing (KIP-447) needs brokers 2.5 "
             "or later (older ones keep transactions atomic without the generation check)",
             w->st->transactional_id);
    for (;;) {
        char *err = NULL;
        tide_txn_t r = tide_producer_init_txn(w->producer, 5000, &err);
        if (r == TIDE_TXN_DONE) {
            tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "transactions ready: an older instance with this "
                     "transactional.id is fenced, and its open transaction aborted");
            return TIDE_STEP_OK;
        }
        tide_log(r == TIDE_TXN_FATAL ? TIDE_LOG_ERROR : TIDE_LOG_WARN, TIDE_AT_NONE, "%s", err);
        free(err);
        if (r == TIDE_TXN_FATAL) return TIDE_STEP_FENCED;
        if (*w->o->stop) return TIDE_STEP_FAILED;
    }
}

static int open_producer(tide_worker_t *w) {
    char *err = NULL, txn_id[600];
    if (w->eos && tide_txnid_make(w->o->config, w->info->name, txn_id, sizeof(txn_id), &err))
        goto fail;
    if (w->eos) snprintf(w->st->transactional_id, sizeof(w->st->transactional_id), "%s", txn_id);
    tide_producer_opts_t po = {
        .config = w->o->config, .bootstraps = w->o->bootstraps, .outputs = w->info->outputs,
        .n_outputs = w->info->n_outputs, .dlq = w->dlq, .transactional_id = w->eos ? txn_id : NULL,
    };
    w->producer = tide_producer_new(&po, &err);
    int n_changelogs;
    char *const *changelogs = tide_tasks_changelogs(w->tasks, &n_changelogs);
    if (!w->producer || (n_changelogs && tide_producer_set_changelogs(w->producer, changelogs, n_changelogs)))
        goto fail;
    return 0;
fail:
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err ? err : "out of memory");
    free(err);
    return -1;
}

/* librdkafka's mock cluster (the development broker, `tide broker`) names
 * itself mockCluster...: say once what exactly-once there cannot do. */
static void warn_if_mock(tide_worker_t *w) {
    char *id = rd_kafka_clusterid(tide_producer_handle(w->producer), 2000);
    if (id && !strncmp(id, "mockCluster", 11))
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE,
                 "exactly_once_v2 on the development broker: transactions run, but its readers "
                 "see aborted records and it stores no transactional offsets (a restart reads "
                 "from the start); only a real Kafka shows exactly-once");
    if (id) rd_kafka_mem_free(NULL, id);
}

/* The detector's global tables, read to their end before it joins its group
 * (see global.h); their store writes commit and roll back with the tasks'.
 * 0, 1 when asked to stop meanwhile, -1 failed. */
static int open_globals(tide_worker_t *w) {
    const tide_detector_info_t *d = w->info;
    tide_global_spec_t specs[64];
    int n = 0;
    for (int s = 0; s < d->n_stores && n < 64; s++)
        if (d->store_global[s]) specs[n++] = (tide_global_spec_t){d->store_global[s], s, d->store_names[s]};
    if (!n) return 0;
    char path[4300], *err = NULL;
    const char *dir = tide_tasks_state_dir(w->tasks); /* (a global table is in RocksDB) */
    if (!dir) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "global tables need the store database");
        return -1;
    }
    snprintf(path, sizeof(path), "%s/global-checkpoint", dir);
    w->globals = tide_globals_open(w->o->config, w->o->bootstraps, tide_tasks_db(w->tasks), path,
                                   specs, n, &err);
    tide_global_result_t r = w->globals ? tide_globals_bootstrap(w->globals, w->o->stop, &err)
                                        : TIDE_GLOBAL_FAILED;
    if (r == TIDE_GLOBAL_OK) {
        tide_tasks_set_globals(w->tasks, w->globals);
        return 0;
    }
    if (r == TIDE_GLOBAL_STOPPED) return 1;
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err ? err : "global tables: out of memory");
    free(err);
    return -1;
}

/* The topics, the producer, the committer, the restorer, the global tables
 * and the group. */
tide_step_t tide_worker_connect(tide_worker_t *w) {
    char *err = NULL;
    snprintf(w->dlq, sizeof(w->dlq), "%s.%s-dlq",
             tide_config_str(w->o->config, TIDE_CFG_APPLICATION_ID), w->info->name);
    snprintf(w->st->guarantee, sizeof(w->st->guarantee), "%s", w->eos ? "exactly_once_v2" : "at_least_once");
    tide_worker_ensure_topics(w);
    create_dev_topics(w);
    if (open_producer(w)) return TIDE_STEP_FAILED;
    if (w->eos) warn_if_mock(w);
    if (tide_tasks_open_restorer(w->tasks, &err)) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        return TIDE_STEP_FAILED;
    }
    tide_step_t s = w->eos ? init_transactions(w) : TIDE_STEP_OK;
    if (s != TIDE_STEP_OK) return s;
    int g = open_globals(w);
    if (g > 0) return TIDE_STEP_STOPPED_EARLY;
    if (g < 0) return TIDE_STEP_FAILED;
    /* (The group calls back into the committer only while it polls.) */
    if (open_group(w)) return TIDE_STEP_FAILED;
    tide_committer_opts_t co = {
        .group = w->group, .producer = w->producer, .tasks = w->tasks, .rt = &w->rt, .st = w->st,
        .eos = w->eos, .shutdown_timeout_ms = w->shutdown_timeout_ms,
    };
    w->committer = tide_committer_new(&co);
    tide_standby_opts_t so = {
        .config = w->o->config, .bootstraps = w->o->bootstraps, .tasks = w->tasks,
        .consumer = tide_group_consumer(w->group), .input_topic = w->info->inputs[0], .st = w->st,
    };
    w->standby = tide_standby_new(&so);
    return w->committer && w->standby ? TIDE_STEP_OK : TIDE_STEP_FAILED;
}

