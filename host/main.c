/*
 * main.c: the tide command. Reads the command line, builds the configuration
 * from its sources, and hands over: `run` to the worker, `broker` to the
 * development broker, `produce` and `consume` to the tools. Owns the signal
 * handlers; owns nothing on the record path.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "devbroker.h"
#include "log.h"
#include "tools.h"
#include "worker.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: tide <command> [options]\n\n"
            "commands:\n"
            "  run FILE.lua        run one detector in the foreground\n"
            "  broker              run a development broker (mock cluster) on 127.0.0.1\n"
            "  produce TOPIC       write records read from standard input\n"
            "  consume TOPIC       print the records of a topic\n"
            "  help config         list every setting\n"
            "  version             print versions\n\n"
            "run options:\n"
            "  -c FILE             a properties file (Kafka style)\n"
            "  -D key=value        set one property (repeatable; wins over file and env)\n"
            "  -b, --bootstrap-server HOST:PORT   same as -D bootstrap.servers=...\n"
            "  --count N           stop after N input records\n"
            "  --idle-timeout-ms MS  stop after MS without input records\n\n"
            "Environment: TIDE_BOOTSTRAP_SERVERS, TIDE_APPLICATION_ID, ... (any key,\n"
            "upper-cased, '.' as '_'). With no bootstrap.servers, `tide run` starts a\n"
            "development broker in-process.\n");
}

static int refuse(char *err) {
    fprintf(stderr, "tide: %s\n", err ? err : "configuration error");
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err ? err : "configuration error");
    free(err);
    return 2;
}

static int cmd_run(int argc, char **argv) {
    const char *path = NULL, *file = NULL;
    tide_worker_opts_t o = {0};
    o.stop = &stop_requested;
    tide_config_t c;
    tide_config_init(&c);
    char *err = NULL;
    /* First pass: the file; then env; then flags in order. */
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "-c") && i + 1 < argc) file = argv[++i];
    if (file && tide_config_load_file(&c, file, &err)) return refuse(err);
    if (tide_config_load_env(&c, &err)) return refuse(err);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-c") && i + 1 < argc) {
            i++;
        } else if (!strcmp(a, "-D") && i + 1 < argc) {
            char kv[4096];
            snprintf(kv, sizeof(kv), "%s", argv[++i]);
            char *eq = strchr(kv, '=');
            if (!eq) return refuse(strdup("-D wants key=value"));
            *eq = '\0';
            if (tide_config_set(&c, kv, eq + 1, "flag -D", &err)) return refuse(err);
        } else if ((!strcmp(a, "-b") || !strcmp(a, "--bootstrap-server")) && i + 1 < argc) {
            if (tide_config_set(&c, "bootstrap.servers", argv[++i], "flag -b", &err))
                return refuse(err);
        } else if (!strcmp(a, "--count") && i + 1 < argc) {
            o.max_records = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--idle-timeout-ms") && i + 1 < argc) {
            o.idle_timeout_ms = atoi(argv[++i]);
        } else if (a[0] == '-') {
            usage(stderr);
            return 2;
        } else if (!path) {
            path = a;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    tide_log_level_t lvl;
    if (!tide_log_parse_level(tide_config_str(&c, "log.level"), &lvl)) tide_log_set_level(lvl);
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "tide starting (librdkafka %s)", rd_kafka_version_str());
    tide_config_log(&c);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    tide_devbroker_t *dev = NULL;
    const char *bootstraps = tide_config_str(&c, "bootstrap.servers");
    if (!*bootstraps) {
        dev = tide_devbroker_start((int)tide_config_int(&c, "dev.broker.partitions"), &err);
        if (!dev) return refuse(err);
        bootstraps = tide_devbroker_bootstraps(dev);
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE,
                 "no bootstrap.servers configured: started a development broker at %s "
                 "(in memory, for development only; feed it with "
                 "`tide produce TOPIC -b %s`)",
                 bootstraps, bootstraps);
    }
    o.path = path;
    o.config = &c;
    o.bootstraps = bootstraps;
    o.dev = dev;
    tide_worker_exit_t rc = tide_worker_run(&o);
    tide_devbroker_stop(dev);
    tide_config_free(&c);
    return (int)rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "run")) return cmd_run(argc, argv);
    if (!strcmp(cmd, "broker")) return tide_devbroker_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "produce")) return tide_tool_produce(argc - 1, argv + 1, &stop_requested);
    if (!strcmp(cmd, "consume")) return tide_tool_consume(argc - 1, argv + 1, &stop_requested, on_signal);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("tide 0.1.0 (librdkafka %s)\n", rd_kafka_version_str());
        return 0;
    }
    if (!strcmp(cmd, "help") && argc > 2 && !strcmp(argv[2], "config")) {
        tide_config_help(stdout);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "tide: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
