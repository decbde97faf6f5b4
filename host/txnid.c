/*
 * txnid.c: the worker's transactional.id (see txnid.h). Owns the process id
 * file; never changes an id once written (a new one would leave the old
 * one's transaction to time out instead of being fenced at once).
 */
#include "txnid.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(char **errp, const char *path) {
    if (asprintf(errp, "%s: %s", path, strerror(errno)) < 0) *errp = NULL;
    return -1;
}

/* mkdir -p */
static int make_dirs(const char *dir, char **errp) {
    char mk[4096];
    snprintf(mk, sizeof(mk), "%s", dir);
    for (char *q = mk + 1; *q; q++)
        if (*q == '/') {
            *q = '\0';
            mkdir(mk, 0755);
            *q = '/';
        }
    return mkdir(mk, 0755) && errno != EEXIST ? fail(errp, mk) : 0;
}

/* The process id in `path`, made if absent (atomically: two workers of one
 * instance racing keep the first). */
static int process_id(const char *path, char id[33], char **errp) {
    FILE *f = fopen(path, "r");
    if (f) {
        int ok = fscanf(f, "%32[0-9a-f]", id) == 1 && strlen(id) == 32;
        fclose(f);
        if (ok) return 0;
    }
    unsigned char r[16];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) return fail(errp, "getrandom");
    for (int i = 0; i < 16; i++) snprintf(id + 2 * i, 3, "%02x", r[i]);
    char tmp[4300];
    snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return fail(errp, tmp);
    int bad = write(fd, id, 32) != 32 || fsync(fd) != 0;
    close(fd);
    if (bad) return fail(errp, tmp);
    /* link() fails if another worker won the race: read theirs. */
    if (link(tmp, path) && errno != EEXIST) {
        unlink(tmp);
        return fail(errp, path);
    }
    unlink(tmp);
    f = fopen(path, "r");
    if (!f) return fail(errp, path);
    int ok = fscanf(f, "%32[0-9a-f]", id) == 1;
    fclose(f);
    return ok ? 0 : fail(errp, path);
}

int tide_txnid_make(const tide_config_t *c, const char *detector, char *out, size_t cap,
                    char **errp) {
    const char *app = tide_config_str(c, TIDE_CFG_APPLICATION_ID);
    char dir[4096], path[4200], id[33];
    snprintf(dir, sizeof(dir), "%s/%s", tide_config_str(c, TIDE_CFG_STATE_DIR), app);
    snprintf(path, sizeof(path), "%s/tide.process.id", dir);
    if (make_dirs(dir, errp) || process_id(path, id, errp)) return -1;
    snprintf(out, cap, "%s.%s-%s", app, detector, id);
    return 0;
}
