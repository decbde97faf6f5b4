/* C tests of a detector runtime as the host opens it (bindings/runtime.c):
 * what the host learns of a detector (tide_detector_info_t), read by name
 * from the table scripts/tide/host.lua builds from tide.fields' info list. A
 * name that one side has and the other lacks makes the open fail here. */
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "runtime.h"
#include "store.h"

static char root[] = "/tmp/tide-test-runtime-XXXXXX";

static const char *path_of(const char *name) {
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, name);
    return path;
}

static const char *write_file(const char *name, const char *text) {
    const char *p = path_of(name);
    FILE *f = fopen(p, "w");
    if (!f) return p;
    fputs(text, f);
    fclose(f);
    return p;
}

static int dbs_opened;
static tide_store_db_t *db; /* the host owns the database, not the runtime */

static void *open_db(void *ud, const char *name, char **errp) {
    (void)ud;
    tide_store_opts_t o = {.path = path_of(name)};
    dbs_opened++;
    db = tide_store_open(&o, errp);
    return db;
}

static const char DETECTOR[] =
    "return {\n"
    "  name = 'info-check', description = 'what the host reads',\n"
    "  inputs = { 'a', 'b' }, outputs = { 'x' }, on_error = 'skip',\n"
    "  stores = { seen = tide.kv{ memory = true }, counts = tide.kv(),\n"
    "             recent = tide.window{ size = '1m', memory = true } },\n"
    "  punctuate = { { every = '1s', fn = function() end }, { every = '5s', on = 'wall', fn = function() end } },\n"
    "  process = function(rec, ctx) ctx:emit('x', rec.key, rec.value) end,\n"
    "}\n";

int main(int argc, char **argv) {
    if (!mkdtemp(root)) return 2;
    tide_runtime_opts_t o = {.open_db = open_db};
    tide_runtime_t *rt = NULL;
    char *err = NULL;

    CASE("a detector's declared shape reaches the host");
    tide_status_t st = tide_runtime_open(&o, write_file("info.lua", DETECTOR), &rt, &err);
    CHECK(st == TIDE_OK);
    if (st != TIDE_OK) printf("# %s\n", err ? err : "?");
    const tide_detector_info_t *d = rt ? tide_runtime_info(rt) : NULL;
    CHECK(d != NULL);
    if (d) {
        CHECK(!strcmp(d->name, "info-check"));
        CHECK(!strcmp(d->description, "what the host reads"));
        CHECK(strlen(d->version) == 16);
        CHECK(d->n_inputs == 2 && !strcmp(d->inputs[0], "a") && !strcmp(d->inputs[1], "b"));
        CHECK(d->n_outputs == 1 && !strcmp(d->outputs[0], "x"));
        CHECK(d->on_error == TIDE_ON_ERROR_SKIP);
        CHECK(d->n_punctuators == 2);

        CASE("stores come in id order (by name), with where each lives");
        CHECK(d->n_stores == 3);
        if (d->n_stores == 3) {
            CHECK(!strcmp(d->store_names[0], "counts") && !d->store_memory[0]);
            CHECK(!strcmp(d->store_names[1], "recent") && d->store_memory[1]);
            CHECK(!strcmp(d->store_names[2], "seen") && d->store_memory[2]);
        }
        CHECK(dbs_opened == 1); /* one RocksDB store: the database, once */
    }
    tide_runtime_close(rt);
    tide_store_close(db);
    rt = NULL;

    CASE("defaults: the file's name, no description, dead letters, nothing declared");
    st = tide_runtime_open(&o, write_file("plain-one.lua",
                                          "return { inputs = { 'in' }, process = function() end }\n"),
                           &rt, &err);
    CHECK(st == TIDE_OK);
    d = rt ? tide_runtime_info(rt) : NULL;
    if (d) {
        CHECK(!strcmp(d->name, "plain-one"));
        CHECK(!strcmp(d->description, ""));
        CHECK(d->n_outputs == 0 && d->n_stores == 0 && d->n_punctuators == 0);
        CHECK(d->on_error == TIDE_ON_ERROR_DLQ);
    }
    tide_runtime_close(rt);
    rt = NULL;

    CASE("a DSL script's compiled table reaches the host, described by its graph");
    st = tide_runtime_open(&o, write_file("dsl.lua",
                                          "tide.stream('in'):filter(function() return true end):to('out')\n"
                                          "return tide.topology{ name = 'dsl-info', on_error = 'stop' }\n"),
                           &rt, &err);
    CHECK(st == TIDE_OK);
    if (st != TIDE_OK) printf("# %s\n", err ? err : "?");
    d = rt ? tide_runtime_info(rt) : NULL;
    if (d) {
        CHECK(!strcmp(d->name, "dsl-info"));
        CHECK(!strcmp(d->description, "in > filter > to out"));
        CHECK(d->on_error == TIDE_ON_ERROR_STOP);
        CHECK(d->n_inputs == 1 && d->n_outputs == 1 && !strcmp(d->outputs[0], "out"));
    }
    tide_runtime_close(rt);
    rt = NULL;

    CASE("a bad detector is refused with file, line and reason");
    free(err);
    err = NULL;
    const char *bad = write_file("bad.lua", "local x = 1\nreturn { inputs = { 'in' } }\n");
    st = tide_runtime_open(&o, bad, &rt, &err);
    CHECK(st == TIDE_ERROR && rt == NULL);
    CHECK(err && strstr(err, "bad.lua:2: detector has no 'process' function"));
    free(err);

    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    if (system(cmd) != 0) printf("# could not remove %s\n", root);
    return check_report(argc > 1 ? argv[1] : NULL);
}
