/*
 * main.c: the tide command. Reads the command line, builds the configuration
 * from its sources, and hands over: `run` to the worker, `broker` to the
 * development broker, `produce` and `consume` to the tools, `reset` to
 * reset.c, `test` and `replay` to the CLI's Lua (tide_runtime_cli). Owns the
 * signal handlers; owns nothing on the record path.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "devbroker.h"
#include "log.h"
#include "reset.h"
#include "runtime.h"
#include "status.h"
#include "supervisor.h"
#include "tools.h"
#include "worker.h"

static volatile sig_atomic_t stop_requested, reload_requested;

static void on_signal(int sig) {
    if (sig == SIGHUP) reload_requested = 1;
    else stop_requested = 1;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: tide <command> [options]\n\n"
            "commands:\n"
            "  run FILE.lua        run one detector in the foreground (SIGHUP reloads it)\n"
            "  run DIR             run every detector in DIR, each in its own worker process;\n"
            "                      files dropped in start, changed ones hot swap, removed ones stop;\n"
            "                      admin server on 127.0.0.1:8642 (/, /metrics, /api/detectors)\n"
            "  broker              run a development broker (mock cluster) on 127.0.0.1\n"
            "  produce TOPIC       write records read from standard input\n"
            "  consume TOPIC       print the records of a topic\n"
            "  test DETECTOR --input IN.jsonl [--expect OUT.jsonl]\n"
            "                      run a detector on records from a file, without a broker;\n"
            "                      print its outputs, or their differences from OUT.jsonl\n"
            "  replay DETECTOR [--against RUNNING.lua] (--from TOPIC [--offsets P:FROM-TO,...]\n"
            "                      | --file REC.jsonl)\n"
            "                      run a detector over recorded traffic, producing nothing;\n"
            "                      with --against, print how its outputs differ from RUNNING's\n"
            "                      (test and replay: -c FILE and -D detector.memory.limit.bytes=N,\n"
            "                      -D detector.batch.timeout.ms=MS, the limits detectors run within)\n"
            "  describe DETECTOR [--json]\n"
            "                      print the detector's topology (sub-topologies, sources,\n"
            "                      processors, stores, internal topics), as Kafka Streams'\n"
            "                      Topology#describe()\n"
            "  reset DETECTOR_OR_FILE [--to-earliest | --to-latest | --to-datetime T |\n"
            "                      --by-duration D | --to-offsets T:P:O,...] [--dry-run]\n"
            "                      reprocess a stopped detector from that point with empty\n"
            "                      state: input offsets, internal topics, local state\n"
            "                      (`tide reset` alone lists its options)\n"
            "  help config         list every setting\n"
            "  version             print versions\n\n"
            "run options:\n"
            "  -c FILE             a properties file (Kafka style)\n"
            "  -D key=value        set one property (repeatable; wins over file and env)\n"
            "  -b, --bootstrap-server HOST:PORT   same as -D bootstrap.servers=...\n"
            "  --count N           (one detector) stop after N input records\n"
            "  --idle-timeout-ms MS  (one detector) stop after MS without input records\n\n"
            "Environment: TIDE_BOOTSTRAP_SERVERS, TIDE_APPLICATION_ID, ... (any key,\n"
            "upper-cased, '.' as '_'). With no bootstrap.servers, `tide run` starts a\n"
            "development broker in-process.\n");
}

/* `run` and `worker` refuse to start: one log line, JSON like every other
 * line they write on stderr. */
static int refuse(char *err) {
    tide_log(TIDE_LOG_ERROR, TIDE_AT_NONE, "%s", err ? err : "configuration error");
    free(err);
    return 2;
}

/* What `run` and `worker` share: the configuration sources and options. */
typedef struct run_args {
    const char *path;
    tide_config_t config;
    tide_worker_opts_t o;
    int status_fd; /* worker only */
    const char *source_copy; /* worker only: read the detector from this copy */
    char **skip;
    int n_skip;
} run_args_t;

static int parse_run(int argc, char **argv, int worker, run_args_t *a) {
    const char *file = NULL;
    memset(a, 0, sizeof(*a));
    a->status_fd = -1;
    tide_config_init(&a->config);
    tide_config_t *c = &a->config;
    char *err = NULL;
    /* The file first, then the environment, then flags in order. */
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "-c") && i + 1 < argc) file = argv[++i];
    if (file && tide_config_load_file(c, file, &err)) return refuse(err);
    if (tide_config_load_env(c, &err)) return refuse(err);
    a->skip = calloc((size_t)argc, sizeof(char *));
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-c") && i + 1 < argc) {
            i++;
        } else if (!strcmp(s, "-D") && i + 1 < argc) {
            char kv[4096];
            snprintf(kv, sizeof(kv), "%s", argv[++i]);
            char *eq = strchr(kv, '=');
            if (!eq) return refuse(strdup("-D wants key=value"));
            *eq = '\0';
            if (tide_config_set(c, kv, eq + 1, "flag -D", &err)) return refuse(err);
        } else if ((!strcmp(s, "-b") || !strcmp(s, "--bootstrap-server")) && i + 1 < argc) {
            if (tide_config_set(c, "bootstrap.servers", argv[++i], "flag -b", &err))
                return refuse(err);
        } else if (!strcmp(s, "--count") && i + 1 < argc) {
            a->o.max_records = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(s, "--idle-timeout-ms") && i + 1 < argc) {
            a->o.idle_timeout_ms = atoi(argv[++i]);
        } else if (worker && !strcmp(s, "--status-fd") && i + 1 < argc) {
            a->status_fd = atoi(argv[++i]);
        } else if (worker && !strcmp(s, "--source-copy") && i + 1 < argc) {
            a->source_copy = argv[++i];
        } else if (worker && !strcmp(s, "--await-topics")) {
            a->o.await_topics = 1;
        } else if (worker && !strcmp(s, "--query-fd") && i + 1 < argc) {
            a->o.query_fd = atoi(argv[++i]);
        } else if (worker && !strcmp(s, "--skip") && i + 1 < argc) {
            a->skip[a->n_skip++] = argv[++i];
        } else if (s[0] == '-' || a->path) {
            usage(stderr);
            return 2;
        } else {
            a->path = s;
        }
    }
    /* A worker's supervisor validated the same configuration already. */
    if ((worker ? tide_config_settle(c, &err) : tide_config_validate(c, &err))) return refuse(err);
    if (!a->path) {
        usage(stderr);
        return 2;
    }
    tide_log_level_t lvl;
    if (!tide_log_parse_level(tide_config_str(c, TIDE_CFG_LOG_LEVEL), &lvl)) tide_log_set_level(lvl);
    return 0;
}

static void install_signals(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* `tide worker FILE --status-fd N [--query-fd N] [--source-copy DIR]
 * [--skip topic:partition:offset]...`: one detector under a supervisor,
 * which passed every configuration flag on. */
static int cmd_worker(int argc, char **argv) {
    run_args_t a;
    int rc = parse_run(argc, argv, 1, &a);
    if (rc) return rc;
    install_signals();
    /* The supervisor dies with us never, but we die with it: no orphans. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    long long as = tide_config_int(&a.config, TIDE_CFG_DETECTOR_PROCESS_MEMORY_LIMIT_BYTES);
    struct rlimit rl = {(rlim_t)as, (rlim_t)as};
    setrlimit(RLIMIT_AS, &rl);
    /* The supervisor's copy of the last version that validated: loaded
     * instead of the file, which may hold a newer version it refused. */
    a.o.source_copy = a.source_copy;
    if (a.status_fd >= 0) {
        a.o.status = tide_status_map(a.status_fd);
        if (!a.o.status) return refuse(strdup("cannot map the status block"));
    }
    a.o.path = a.path;
    a.o.config = &a.config;
    a.o.bootstraps = tide_config_str(&a.config, TIDE_CFG_BOOTSTRAP_SERVERS);
    a.o.stop = &stop_requested;
    a.o.reload = &reload_requested;
    a.o.skip = a.skip;
    a.o.n_skip = a.n_skip;
    rc = (int)tide_worker_run(&a.o);
    tide_config_free(&a.config);
    free(a.skip);
    return rc;
}

static int cmd_run(int argc, char **argv) {
    run_args_t a;
    int rc = parse_run(argc, argv, 0, &a);
    if (rc) return rc;
    tide_config_t *c = &a.config;
    tide_log(TIDE_LOG_INFO, TIDE_AT_NONE, "tide starting (librdkafka %s)", rd_kafka_version_str());
    tide_config_log(c);
    install_signals();

    struct stat sb;
    int is_dir = stat(a.path, &sb) == 0 && S_ISDIR(sb.st_mode);
    char init[4096];
    snprintf(init, sizeof(init), "%s/init.lua", a.path);
    /* A folder holding init.lua is one detector, not a folder of them. */
    if (is_dir && access(init, R_OK) == 0) is_dir = 0;

    char *err = NULL;
    tide_devbroker_t *dev = NULL;
    const char *bootstraps = tide_config_str(c, TIDE_CFG_BOOTSTRAP_SERVERS);
    if (!*bootstraps) {
        dev = tide_devbroker_start((int)tide_config_int(c, TIDE_CFG_DEV_BROKER_PARTITIONS), &err);
        if (!dev) return refuse(err);
        bootstraps = tide_devbroker_bootstraps(dev);
        tide_log(TIDE_LOG_WARN, TIDE_AT_NONE,
                 "no bootstrap.servers configured: started a development broker at %s "
                 "(in memory, for development only; feed it with "
                 "`tide produce TOPIC -b %s`)",
                 bootstraps, bootstraps);
    }
    if (is_dir) {
        rc = tide_supervisor_run(c, a.path, bootstraps, dev, &stop_requested);
    } else {
        a.o.path = a.path;
        a.o.config = c;
        a.o.bootstraps = bootstraps;
        a.o.dev = dev;
        a.o.stop = &stop_requested;
        a.o.reload = &reload_requested;
        rc = (int)tide_worker_run(&a.o);
    }
    tide_devbroker_stop(dev);
    tide_config_free(c);
    free(a.skip);
    return rc;
}

/* `tide test` and `tide replay`: the detector limits come from the same
 * sources as for `run` (-c FILE, their TIDE_* variables, -D key=value); the
 * other arguments go to the CLI's Lua. Errors are for a person at a
 * terminal: plain text, as the rest of these commands' reports. */
static int cmd_cli(int argc, char **argv) {
    tide_config_t c;
    tide_config_init(&c);
    char *err = NULL;
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    int n = 0, rc = 2;
    for (int i = 2; i < argc && !err; i++)
        if (!strcmp(argv[i], "-c") && i + 1 < argc) tide_config_load_file(&c, argv[++i], &err);
    /* Of the environment, only the limits: these commands take no other
     * setting, and a TIDE_* variable meant for something else (a test
     * runner's) is no reason to refuse. */
    static const char *const env_limits[][2] = {
        {"TIDE_DETECTOR_MEMORY_LIMIT_BYTES", "detector.memory.limit.bytes"},
        {"TIDE_DETECTOR_BATCH_TIMEOUT_MS", "detector.batch.timeout.ms"}};
    for (size_t k = 0; k < 2 && !err; k++) {
        const char *v = getenv(env_limits[k][0]);
        char origin[64];
        snprintf(origin, sizeof(origin), "environment %s", env_limits[k][0]);
        if (v && *v) tide_config_set(&c, env_limits[k][1], v, origin, &err);
    }
    for (int i = 2; i < argc && !err && rest; i++) {
        if (!strcmp(argv[i], "-c") && i + 1 < argc) {
            i++;
        } else if (!strcmp(argv[i], "-D") && i + 1 < argc) {
            char kv[4096];
            snprintf(kv, sizeof(kv), "%s", argv[++i]);
            char *eq = strchr(kv, '=');
            if (!eq) {
                err = strdup("-D wants key=value");
            } else {
                *eq = '\0';
                tide_config_set(&c, kv, eq + 1, "flag -D", &err);
            }
        } else {
            rest[n++] = argv[i];
        }
    }
    if (err || !rest) {
        fprintf(stderr, "tide %s: %s\n", argv[1], err ? err : "not enough memory");
    } else {
        tide_cli_opts_t o = {(size_t)tide_config_int(&c, TIDE_CFG_DETECTOR_MEMORY_LIMIT_BYTES),
                             tide_config_int(&c, TIDE_CFG_DETECTOR_BATCH_TIMEOUT_MS),
                             tide_tool_read_topic};
        rc = tide_runtime_cli(argv[1], n, rest, &o);
    }
    free(err);
    free(rest);
    tide_config_free(&c);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "run")) return cmd_run(argc, argv);
    if (!strcmp(cmd, "worker")) return cmd_worker(argc, argv);
    if (!strcmp(cmd, "broker")) return tide_devbroker_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "reset")) return tide_reset_main(argc - 1, argv + 1, &stop_requested);
    if (!strcmp(cmd, "produce")) return tide_tool_produce(argc - 1, argv + 1, &stop_requested);
    if (!strcmp(cmd, "consume")) return tide_tool_consume(argc - 1, argv + 1, &stop_requested, on_signal);
    if (!strcmp(cmd, "test") || !strcmp(cmd, "replay") || !strcmp(cmd, "describe"))
        return cmd_cli(argc, argv);
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
