/*
 * devbroker.c: the development broker (see devbroker.h) and `tide broker`.
 * It owns an rd_kafka_t that exists only to host the mock cluster; it never
 * produces or consumes anything itself. `tide broker --control FIFO` hands
 * the cluster to the control channel (brokerctl.c), which injects faults;
 * this file only waits for its commands and for the signal to stop.
 */
#include "devbroker.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "brokerctl.h"
#include "log.h"

#define MAX_BROKERS 16

struct tide_devbroker {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    int partitions;
    int brokers;
    char *bootstraps;
};

tide_devbroker_t *tide_devbroker_start(int partitions, char **errp) {
    return tide_devbroker_new(1, partitions, errp);
}

tide_devbroker_t *tide_devbroker_new(int brokers, int partitions, char **errp) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* The host handle must not try to reach a real cluster. */
    rd_kafka_conf_set(conf, "bootstrap.servers", "", err, sizeof(err));
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_conf_set_log_cb(conf, tide_log_rdkafka);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        if (asprintf(errp, "development broker: %s", err) < 0) *errp = NULL;
        return NULL;
    }
    /* The mock's thread inherits our signal mask, and a signal it catches
     * ends its poll loop for good (the cluster stops answering): it must
     * never get one. librdkafka's own threads are started the same way. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!mc) {
        rd_kafka_destroy(rk);
        *errp = strdup("development broker: cannot create the mock cluster");
        return NULL;
    }
    /* Groups settle at once instead of after Kafka's 3 s initial delay. */
    rd_kafka_mock_group_initial_rebalance_delay_ms(mc, 0);
    /* The mock names no controller (id 0, not a broker): admin requests
     * would wait for one until they time out. Its broker 1 is. */
    rd_kafka_mock_set_controller_id(mc, 1);
    tide_devbroker_t *b = calloc(1, sizeof(*b));
    b->rk = rk;
    b->mc = mc;
    b->partitions = partitions;
    b->brokers = brokers;
    b->bootstraps = strdup(rd_kafka_mock_cluster_bootstraps(mc));
    return b;
}

const char *tide_devbroker_bootstraps(const tide_devbroker_t *b) { return b->bootstraps; }

struct rd_kafka_mock_cluster_s *tide_devbroker_mock(tide_devbroker_t *b) { return b->mc; }

int tide_devbroker_count(const tide_devbroker_t *b) { return b->brokers; }

int tide_devbroker_create_topic(tide_devbroker_t *b, const char *topic, int partitions,
                                char **errp) {
    /* As the mock's own auto-creation does: up to three replicas. */
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(
        b->mc, topic, partitions > 0 ? partitions : b->partitions, b->brokers < 3 ? b->brokers : 3);
    if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        if (asprintf(errp, "cannot create topic %s: %s", topic, rd_kafka_err2str(e)) < 0)
            *errp = NULL;
        return -1;
    }
    return 0;
}

void tide_devbroker_stop(tide_devbroker_t *b) {
    if (!b) return;
    rd_kafka_mock_cluster_destroy(b->mc);
    rd_kafka_destroy(b->rk);
    free(b->bootstraps);
    free(b);
}

static volatile sig_atomic_t broker_stop;
static void on_signal(int sig) { (void)sig; broker_stop = 1; }

static int usage(void) {
    fprintf(stderr,
            "usage: tide broker [--topic NAME[:PARTITIONS]]... [--partitions N] [--brokers N]\n"
            "                   [--down] [--control FIFO]\n"
            "Runs a development broker on 127.0.0.1 until interrupted; prints its\n"
            "bootstrap address on the first line of standard output.\n"
            "--partitions N is for each --topic given without a count (default 4).\n"
            "A topic not given is created on first use with 4 partitions (the\n"
            "mock cluster's own default, which it does not let us change), whenever\n"
            "a client's Metadata request allows it (allow.auto.create.topics).\n"
            "--brokers N   N brokers, ids 1..N (default 1); partition leaders are\n"
            "              spread over them and do not move when one is down.\n"
            "--down        every broker starts down (refusing connections).\n"
            "--control FIFO  read fault-injection commands from FIFO (made if\n"
            "              missing), one per line; each is answered on standard output\n"
            "              with \"ok COMMAND[: RESULT]\" or \"error COMMAND: REASON\":\n%s",
            tide_brokerctl_help);
    return 2;
}

typedef struct broker_args {
    int partitions, brokers, down;
    const char *control;
} broker_args_t;

static int parse_args(int argc, char **argv, broker_args_t *a) {
    *a = (broker_args_t){.partitions = 4, .brokers = 1};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--partitions") && i + 1 < argc) {
            a->partitions = atoi(argv[++i]);
            if (a->partitions < 1) return 0;
        } else if (!strcmp(argv[i], "--brokers") && i + 1 < argc) {
            a->brokers = atoi(argv[++i]);
            if (a->brokers < 1 || a->brokers > MAX_BROKERS) return 0;
        } else if (!strcmp(argv[i], "--control") && i + 1 < argc) {
            a->control = argv[++i];
        } else if (!strcmp(argv[i], "--down")) {
            a->down = 1;
        } else if (!strcmp(argv[i], "--topic") && i + 1 < argc) {
            i++;
        } else {
            return 0;
        }
    }
    return 1;
}

typedef enum topics_result { TOPICS_CREATED, TOPICS_USAGE, TOPICS_FAILED } topics_result_t;

static topics_result_t create_topics(tide_devbroker_t *b, int argc, char **argv, int partitions) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--topic")) {
            /* skip the value of a flag that takes one */
            if (strcmp(argv[i], "--down")) i++;
            continue;
        }
        char name[256], *err = NULL;
        snprintf(name, sizeof(name), "%s", argv[++i]);
        char *colon = strrchr(name, ':');
        int parts = partitions;
        if (colon) {
            *colon = '\0';
            parts = atoi(colon + 1);
        }
        if (!*name || parts < 1) return TOPICS_USAGE;
        if (tide_devbroker_create_topic(b, name, parts, &err)) {
            tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
            free(err);
            return TOPICS_FAILED;
        }
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "created topic %s with %d partitions", name, parts);
    }
    return TOPICS_CREATED;
}

/* Until SIGINT or SIGTERM: the signals stay blocked except inside ppoll, so
 * none is lost between a check of broker_stop and the wait. */
static void serve(tide_brokerctl_t *ctl, const sigset_t *waiting_mask) {
    struct pollfd pfd = {.fd = tide_brokerctl_fd(ctl), .events = POLLIN};
    while (!broker_stop) {
        int n = ppoll(&pfd, pfd.fd >= 0 ? 1 : 0, NULL, waiting_mask);
        if (n > 0 && (pfd.revents & POLLIN)) tide_brokerctl_read(ctl, stdout);
    }
}

int tide_devbroker_main(int argc, char **argv) {
    broker_args_t a;
    if (!parse_args(argc, argv, &a)) return usage();
    char *err = NULL;
    tide_devbroker_t *b = tide_devbroker_new(a.brokers, a.partitions, &err);
    if (!b) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        return 1;
    }
    topics_result_t tr = create_topics(b, argc, argv, a.partitions);
    tide_brokerctl_t *ctl = NULL;
    if (tr == TOPICS_CREATED && a.control &&
        !(ctl = tide_brokerctl_new(tide_devbroker_mock(b), tide_devbroker_count(b),
                                   tide_devbroker_bootstraps(b), a.control, &err))) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        tr = TOPICS_FAILED;
    }
    if (tr != TOPICS_CREATED) {
        tide_devbroker_stop(b);
        return tr == TOPICS_USAGE ? usage() : 1;
    }
    if (a.down) rd_kafka_mock_broker_set_down(b->mc, -1);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    printf("%s\n", tide_devbroker_bootstraps(b));
    fflush(stdout);
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE,
             "development broker listening on %s (%d broker%s%s, librdkafka %s mock cluster, "
             "in memory)%s%s",
             tide_devbroker_bootstraps(b), a.brokers, a.brokers > 1 ? "s" : "",
             a.down ? ", all down" : "", rd_kafka_version_str(), ctl ? "; control FIFO " : "",
             ctl ? a.control : "");
    serve(ctl, &old);
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "development broker stopping");
    tide_brokerctl_free(ctl);
    tide_devbroker_stop(b);
    return 0;
}
