/*
 * devbroker.c: the development broker (see devbroker.h) and `tide broker`.
 * It owns an rd_kafka_t that exists only to host the mock cluster; it never
 * produces or consumes anything itself.
 */
#include "devbroker.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "log.h"

struct tide_devbroker {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    int partitions;
    char *bootstraps;
};

tide_devbroker_t *tide_devbroker_start(int partitions, char **errp) {
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
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, 1);
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
    b->bootstraps = strdup(rd_kafka_mock_cluster_bootstraps(mc));
    return b;
}

const char *tide_devbroker_bootstraps(const tide_devbroker_t *b) { return b->bootstraps; }

int tide_devbroker_create_topic(tide_devbroker_t *b, const char *topic, int partitions,
                                char **errp) {
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(
        b->mc, topic, partitions > 0 ? partitions : b->partitions, 1);
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
    fprintf(stderr, "usage: tide broker [--topic NAME[:PARTITIONS]]... [--partitions N]\n"
                    "Runs a development broker on 127.0.0.1 until interrupted; prints its\n"
                    "bootstrap address on the first line of standard output.\n"
                    "--partitions N is for each --topic given without a count (default 4).\n"
                    "A topic not given is created on first use with 4 partitions (the\n"
                    "mock cluster's own default, which it does not let us change).\n");
    return 2;
}

int tide_devbroker_main(int argc, char **argv) {
    int partitions = 4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--partitions") && i + 1 < argc) {
            partitions = atoi(argv[++i]);
            if (partitions < 1) return usage();
        } else if (!strcmp(argv[i], "--topic") && i + 1 < argc) {
            i++;
        } else {
            return usage();
        }
    }
    char *err = NULL;
    tide_devbroker_t *b = tide_devbroker_start(partitions, &err);
    if (!b) {
        tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
        free(err);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--topic")) continue;
        char name[256];
        snprintf(name, sizeof(name), "%s", argv[++i]);
        char *colon = strrchr(name, ':');
        int parts = partitions;
        if (colon) {
            *colon = '\0';
            parts = atoi(colon + 1);
        }
        if (!*name || parts < 1) {
            tide_devbroker_stop(b);
            return usage();
        }
        if (tide_devbroker_create_topic(b, name, parts, &err)) {
            tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err);
            free(err);
            tide_devbroker_stop(b);
            return 1;
        }
        tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "created topic %s with %d partitions", name, parts);
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* Block the signals and wait for them atomically: no lost wake-up. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    printf("%s\n", tide_devbroker_bootstraps(b));
    fflush(stdout);
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE,
             "development broker listening on %s (librdkafka %s mock cluster, in memory)",
             tide_devbroker_bootstraps(b), rd_kafka_version_str());
    while (!broker_stop) sigsuspend(&old);
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "development broker stopping");
    tide_devbroker_stop(b);
    return 0;
}
