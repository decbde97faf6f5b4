/* C tests of configuration: the properties file, env, flags, validation. */
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "config.h"

static char *write_file(const char *text) {
    static char path[] = "/tmp/tide-test-config-XXXXXX";
    strcpy(path, "/tmp/tide-test-config-XXXXXX");
    int fd = mkstemp(path);
    ssize_t w = write(fd, text, strlen(text));
    (void)w;
    close(fd);
    return path;
}

/* A fresh configuration with key=value set from `origin`; the result of
 * tide_config_set, then of tide_config_validate; *errp the message. */
static int set_and_validate(const char *key, const char *value, const char *key2,
                            const char *value2, char **errp) {
    tide_config_t c;
    tide_config_init(&c);
    *errp = NULL;
    int rc = tide_config_set(&c, key, value, "test", errp);
    if (!rc && key2) rc = tide_config_set(&c, key2, value2, "test", errp);
    if (!rc) rc = tide_config_validate(&c, errp);
    tide_config_free(&c);
    return rc;
}

static void test_guarantees(void) {
    char *err = NULL;
    CASE("exactly_once_v2 is accepted, with a 100 ms commit interval unless one is set");
    tide_config_t c;
    tide_config_init(&c);
    CHECK(tide_config_set(&c, "processing.guarantee", "exactly_once_v2", "test", &err) == 0);
    CHECK(tide_config_validate(&c, &err) == 0);
    CHECK(tide_config_eos(&c));
    CHECK(tide_config_int(&c, TIDE_CFG_COMMIT_INTERVAL_MS) == 100);
    tide_config_free(&c);
    tide_config_init(&c);
    CHECK(tide_config_set(&c, "commit.interval.ms", "700", "test", &err) == 0);
    CHECK(tide_config_set(&c, "processing.guarantee", "exactly_once_v2", "test", &err) == 0);
    CHECK(tide_config_validate(&c, &err) == 0 && tide_config_int(&c, TIDE_CFG_COMMIT_INTERVAL_MS) == 700);
    tide_config_free(&c);

    CASE("exactly_once (v1) is refused, naming exactly_once_v2");
    CHECK(set_and_validate("processing.guarantee", "exactly_once", NULL, NULL, &err) == -1);
    CHECK(err && strstr(err, "exactly_once_v2"));
    free(err);

    CASE("transactional.id, with or without a prefix, is tide's");
    CHECK(set_and_validate("transactional.id", "x", NULL, NULL, &err) == -1 && strstr(err, "transactional.id"));
    free(err);
    CHECK(set_and_validate("producer.transactional.id", "x", NULL, NULL, &err) == -1 &&
          strstr(err, "transactional.id"));
    free(err);

    CASE("isolation.level is tide's under exactly_once_v2 only");
    CHECK(set_and_validate("consumer.isolation.level", "read_uncommitted", NULL, NULL, &err) == 0);
    free(err);
    CHECK(set_and_validate("processing.guarantee", "exactly_once_v2", "consumer.isolation.level",
                           "read_uncommitted", &err) == -1 && strstr(err, "isolation.level"));
    free(err);

    CASE("enable.idempotence=false is refused");
    CHECK(set_and_validate("enable.idempotence", "false", NULL, NULL, &err) == -1 &&
          strstr(err, "enable.idempotence"));
    free(err);

    CASE("properties that librdkafka refuses together are refused at start");
    CHECK(set_and_validate("producer.acks", "1", NULL, NULL, &err) == -1 && strstr(err, "producer"));
    free(err);
    CHECK(set_and_validate("processing.guarantee", "exactly_once_v2", "producer.message.timeout.ms",
                           "900000", &err) == -1);
    free(err);
}

int main(int argc, char **argv) {
    tide_config_t c;
    char *err = NULL;

    CASE("defaults come from the table");
    tide_config_init(&c);
    CHECK(!strcmp(tide_config_str(&c, TIDE_CFG_APPLICATION_ID), "tide"));
    CHECK(tide_config_int(&c, TIDE_CFG_COMMIT_INTERVAL_MS) == 5000);
    CHECK(!tide_config_is_set(&c, TIDE_CFG_APPLICATION_ID));

    CASE("a properties file with comments, separators and continuations");
    char *p = write_file("# comment\n! also a comment\n\napplication.id = fraud\n"
                         "commit.interval.ms: 250\nclient.id \\\n   my-client\n"
                         "consumer.fetch.min.bytes=1\n");
    CHECK(tide_config_load_file(&c, p, &err) == 0);
    CHECK(!strcmp(tide_config_str(&c, TIDE_CFG_APPLICATION_ID), "fraud"));
    CHECK(tide_config_int(&c, TIDE_CFG_COMMIT_INTERVAL_MS) == 250);
    CHECK(c.n_kafka == 2 && !strcmp(c.kafka[0].key, "client.id") &&
          !strcmp(c.kafka[0].value, "my-client"));
    unlink(p);

    CASE("an unknown key is refused with file and line");
    p = write_file("application.id=x\n\nbogus.setting=1\n");
    CHECK(tide_config_load_file(&c, p, &err) == -1);
    CHECK(err && strstr(err, ":3:") && strstr(err, "unknown configuration key 'bogus.setting'"));
    free(err);
    err = NULL;
    unlink(p);

    CASE("invalid values are refused with the reason");
    CHECK(tide_config_set(&c, "commit.interval.ms", "soon", "flag -D", &err) == -1);
    CHECK(err && strstr(err, "flag -D") && strstr(err, "must be an integer"));
    free(err);
    err = NULL;
    CHECK(tide_config_set(&c, "processing.guarantee", "sometimes", "flag -D", &err) == -1);
    free(err);
    err = NULL;
    CHECK(tide_config_set(&c, "session.timeout.ms", "-5", "flag -D", &err) == -1);
    CHECK(err && strstr(err, "session.timeout.ms"));
    free(err);
    err = NULL;

    CASE("keys tide manages are refused");
    CHECK(tide_config_set(&c, "group.id", "mine", "flag -D", &err) == -1);
    CHECK(err && strstr(err, "managed by tide"));
    free(err);
    err = NULL;

    CASE("environment variables map to keys and win over the file");
    setenv("TIDE_APPLICATION_ID", "from-env", 1);
    CHECK(tide_config_load_env(&c, &err) == 0);
    CHECK(!strcmp(tide_config_str(&c, TIDE_CFG_APPLICATION_ID), "from-env"));
    setenv("TIDE_NOT_A_SETTING", "1", 1);
    CHECK(tide_config_load_env(&c, &err) == -1);
    CHECK(err && strstr(err, "TIDE_NOT_A_SETTING"));
    free(err);
    err = NULL;
    unsetenv("TIDE_NOT_A_SETTING");
    unsetenv("TIDE_APPLICATION_ID");

    CASE("prefixed properties reach only their client; secrets are recognised");
    CHECK(tide_config_set(&c, "producer.linger.ms", "7", "t", &err) == 0);
    CHECK(tide_config_set(&c, "sasl.password", "hunter2", "t", &err) == 0);
    rd_kafka_conf_t *pc = rd_kafka_conf_new(), *cc = rd_kafka_conf_new();
    CHECK(tide_config_apply_kafka(&c, pc, TIDE_CLIENT_PRODUCER, &err) == 0);
    CHECK(tide_config_apply_kafka(&c, cc, TIDE_CLIENT_CONSUMER, &err) == 0);
    char v[64];
    size_t n = sizeof(v);
    CHECK(rd_kafka_conf_get(pc, "linger.ms", v, &n) == RD_KAFKA_CONF_OK && !strcmp(v, "7"));
    n = sizeof(v);
    CHECK(rd_kafka_conf_get(cc, "linger.ms", v, &n) == RD_KAFKA_CONF_OK && strcmp(v, "7"));
    n = sizeof(v);
    CHECK(rd_kafka_conf_get(cc, "fetch.min.bytes", v, &n) == RD_KAFKA_CONF_OK && !strcmp(v, "1"));
    rd_kafka_conf_destroy(pc);
    rd_kafka_conf_destroy(cc);
    CHECK(tide_config_is_secret("sasl.password"));
    CHECK(tide_config_is_secret("ssl.key.password"));
    CHECK(!tide_config_is_secret("client.id"));
    CHECK(tide_config_is_secret("schema.registry.basic.auth.user.info"));
    CHECK(!tide_config_is_secret("schema.registry.url"));
    tide_config_free(&c);

    CASE("schema registry settings reach the runtime's options");
    tide_config_init(&c);
    tide_registry_opts_t r;
    tide_config_registry(&c, &r);
    CHECK(!strcmp(r.url, "") && r.auto_register && !r.use_latest && r.timeout_ms == 5000);
    CHECK(!tide_config_set(&c, "schema.registry.url", "http://127.0.0.1:8081", "test", &err));
    CHECK(!tide_config_set(&c, "auto.register.schemas", "false", "test", &err));
    CHECK(!tide_config_set(&c, "use.latest.version", "true", "test", &err));
    CHECK(tide_config_set(&c, "use.latest.version", "yes", "test", &err) == -1);
    free(err);
    err = NULL;
    tide_config_registry(&c, &r);
    CHECK(!strcmp(r.url, "http://127.0.0.1:8081") && !r.auto_register && r.use_latest);
    tide_config_free(&c);
    test_guarantees();
    return check_report(argc > 1 ? argv[1] : NULL);
}
