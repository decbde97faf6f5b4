/*
 * http_fixture.c: the admin server over a fake, changing detector table, for
 * the browser test (spec/05-browser) and for looking at the status page by
 * hand. Test code only: it never runs a worker or touches Kafka.
 *
 *   http_fixture [--port N] [--add-after S] [--fail-after S] [--exit-after S]
 *
 * It prints "http://127.0.0.1:PORT/" on stdout once it listens, then, counted
 * from that moment: records flow through alpha and beta (10 batches a
 * second); after --add-after seconds (2) the detector "gamma" appears,
 * waiting for its output topic to exist; after
 * --fail-after seconds (3) beta's reload fails and beta is failed with the
 * reason as its problem. "zeta" runs on while a newer version of its file
 * is refused. It exits on SIGINT/SIGTERM, when its parent dies,
 * or after --exit-after seconds (0: never).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "admin.h"
#include "fake_supervisor.h"

#define BETA_FAILURE                                                               \
    "/srv/detectors/beta.lua:12: attempt to call a nil value (global 'frobnicate')"

#define ZETA_FAILURE "/srv/detectors/zeta.lua:4: unexpected symbol near '}'"

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static double arg_seconds(int argc, char **argv, const char *name, double def) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return atof(argv[i + 1]);
    return def;
}

/* The table at the start: alpha and beta run, odd is quarantined, zeta runs
 * on while a newer version of its file is refused. */
static void build_table(fake_sv_t *sv, tide_admin_detector_t **alphap,
                        tide_admin_detector_t **betap) {
    tide_admin_detector_t *alpha = fake_detector("alpha", TIDE_DS_RUNNING, 4101);
    alpha->gauges.lag = 1234;
    alpha->restarts = 1;
    snprintf(alpha->last_exit, sizeof(alpha->last_exit), "killed by signal 9 (watchdog)");
    alpha->watchdog_kills = 1;
    fake_reload(alpha, 1, "1a2b3c4d5e6f7081", NULL);
    fake_reload(alpha, 1, "3f9a2c71d0e4b5a6", NULL);
    fake_error(alpha, "payments", 3, 981723, "/srv/detectors/alpha.lua:7: amount is not a number");
    /* its topology (as `tide describe --json` prints it): a repartition, a
     * store, a global table, and a node name that must stay text */
    snprintf(alpha->topology, sizeof(alpha->topology), "%s",
             "{\"detector\":\"alpha\",\"subtopologies\":[{\"id\":0,\"nodes\":[{\"name\":\"payments-"
             "source\",\"type\":\"source\",\"topics\":[\"payments\"],\"next\":[\"by-card\"],\"prev\":"
             "[]},{\"name\":\"by-card\",\"type\":\"processor\",\"stores\":[],\"next\":[\"by-card-re"
             "partition\"],\"prev\":[\"payments-source\"]},{\"name\":\"by-card-repartition\",\"t"
             "ype\":\"sink\",\"topic\":\"tide.alpha-by-card-repartition\",\"next\":[],\"prev\":[\""
             "by-card\"]}]},{\"id\":1,\"nodes\":[{\"name\":\"by-card-source\",\"type\":\"source\",\""
             "topics\":[\"tide.alpha-by-card-repartition\"],\"next\":[\"spent\"],\"prev\":[]},{"
             "\"name\":\"spent\",\"type\":\"processor\",\"stores\":[\"spent\"],\"next\":[\"<b>alerts<"
             "/b>\"],\"prev\":[\"by-card-source\"]},{\"name\":\"<b>alerts</b>\",\"type\":\"sink\",\""
             "topic\":\"alerts\",\"next\":[],\"prev\":[\"spent\"]}]},{\"id\":2,\"global\":true,\"nod"
             "es\":[{\"name\":\"rates-source\",\"type\":\"source\",\"topics\":[\"rates\"],\"next\":[\""
             "rates\"],\"prev\":[]},{\"name\":\"rates\",\"type\":\"processor\",\"stores\":[\"rates\"]"
             ",\"next\":[],\"prev\":[\"rates-source\"]}]}]}");
    tide_admin_detector_t *beta = fake_detector("beta", TIDE_DS_RUNNING, 4102);
    beta->gauges.lag = 0;
    /* a name a detector may declare: it must reach the page as text */
    tide_admin_detector_t *odd = fake_detector("odd \"name\" <b>bold</b>", TIDE_DS_QUARANTINED, 0);
    snprintf(odd->problem, sizeof(odd->problem),
             "crashed 5 times in 60 s; waiting for the file to change\n<script>alert(1)</script>");
    /* a newer file refused while the last version that validated runs on */
    tide_admin_detector_t *zeta = fake_detector("zeta", TIDE_DS_RUNNING, 4104);
    snprintf(zeta->version, sizeof(zeta->version), "1a2b3c4d5e6f7081");
    fake_reload(zeta, 0, "9c0d1e2f3a4b5c6d", ZETA_FAILURE);
    zeta->refused = zeta->reloads[zeta->n_reloads - 1];
    fake_add(sv, alpha);
    fake_add(sv, beta);
    fake_add(sv, odd);
    fake_add(sv, zeta);
    *alphap = alpha;
    *betap = beta;
}

int main(int argc, char **argv) {
    int port = (int)arg_seconds(argc, argv, "--port", 0);
    double add_after = arg_seconds(argc, argv, "--add-after", 2);
    double fail_after = arg_seconds(argc, argv, "--fail-after", 3);
    double exit_after = arg_seconds(argc, argv, "--exit-after", 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    fake_sv_t sv;
    fake_init(&sv, &stop);
    sv.started_ms = tide_wall_ms() - 3 * 3600 * 1000 - 125 * 1000;

    tide_admin_detector_t *alpha, *beta;
    build_table(&sv, &alpha, &beta);

    char *err = NULL;
    tide_admin_t *h = tide_admin_start("127.0.0.1", port, fake_fill, &sv, &err);
    if (!h) {
        fprintf(stderr, "http_fixture: %s\n", err);
        free(err);
        return 1;
    }
    printf("http://127.0.0.1:%d/\n", tide_admin_port(h));
    fflush(stdout);

    int64_t t0 = tide_wall_ms();
    int added = 0, failed = 0;
    tide_admin_detector_t *gamma = NULL;
    while (!stop) {
        usleep(100 * 1000);
        double t = (double)(tide_wall_ms() - t0) / 1000.0;
        pthread_mutex_lock(&sv.lock);
        for (int i = 0; i < sv.n_dets; i++) {
            tide_admin_detector_t *d = sv.dets[i];
            if (!d->has_worker || d->state != TIDE_DS_RUNNING) continue;
            fake_batch(d, d == alpha ? 500 : 120, d == alpha ? 0.004 : 0.0008);
            d->cpu_seconds += d == alpha ? 0.03 : 0.005;
            d->gauges.lua_heap_bytes += 4096;
        }
        if (alpha->gauges.lag > 0) alpha->gauges.lag -= 7;
        if (!added && t >= add_after) {
            gamma = fake_detector("gamma", TIDE_DS_RUNNING, 4103);
            gamma->started_ms = tide_wall_ms();
            gamma->gauges.lag = 50;
            /* its output topic does not exist yet: it waits */
            snprintf(gamma->gauges.missing_topic, sizeof(gamma->gauges.missing_topic), "alerts");
            gamma->gauges.missing_topic_since_ms = tide_wall_ms();
            fake_add(&sv, gamma);
            added = 1;
        }
        if (!failed && t >= fail_after) {
            fake_reload(beta, 0, "b2c3d4e5f6a7b8c9", BETA_FAILURE);
            fake_worker_gone(beta, "exited with status 1");
            beta->state = TIDE_DS_FAILED;
            snprintf(beta->problem, sizeof(beta->problem), "%s", BETA_FAILURE);
            failed = 1;
        }
        pthread_mutex_unlock(&sv.lock);
        if (exit_after > 0 && t >= exit_after) break;
    }
    tide_admin_stop(h);
    fake_free(&sv);
    return 0;
}
