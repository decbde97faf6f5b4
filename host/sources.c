/*
 * sources.c: the supervisor's copies of a detector's source files (see
 * sources.h).
 *
 * It owns the folder ROOT/<key>/ of one detector and everything in it. It
 * reads the detector's own files only in tide_sources_stage, and never
 * writes to them. A copy is built in a temporary folder beside the others
 * and swapped in with one renameat2(RENAME_EXCHANGE), so a worker starting
 * at any moment reads one whole version. Copies left by an earlier
 * supervisor are wiped when it starts: a fresh start reads the files.
 */
#include "sources.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files.h"
#include "hash.h"

#define MAX_FILE_BYTES (16 << 20) /* a detector's module; more is not a script */
#define MAX_FILES 4096            /* in a folder detector */
#define MAX_DEPTH 16              /* of subfolders */

struct tide_sources {
    char *path;     /* the detector's file or folder */
    int is_dir;
    char *base;     /* ROOT/<key> */
    char *current;  /* base/current */
    char *good;     /* base/good */
    int has_good;
    unsigned seq;   /* names temporary folders */
};

static int fail(char **errp, const char *what, const char *path) {
    if (errp && asprintf(errp, "%s %s: %s", what, path, strerror(errno)) < 0) *errp = NULL;
    return -1;
}

static void remove_tree(const char *path) { tide_files_remove_tree(path); }

/* Read a whole file (at most MAX_FILE_BYTES) into *out (malloc'd). */
static int read_file(const char *path, char **out, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size > MAX_FILE_BYTES) {
        if (sb.st_size > MAX_FILE_BYTES) errno = EFBIG;
        close(fd);
        return -1;
    }
    char *buf = malloc((size_t)sb.st_size + 1);
    size_t n = 0;
    while (buf && n < (size_t)sb.st_size) {
        ssize_t got = read(fd, buf + n, (size_t)sb.st_size - n);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        n += (size_t)got;
    }
    close(fd);
    if (!buf) return -1;
    *out = buf;
    *len = n; /* a file that shrank while read: what was there */
    return 0;
}

static int write_file(const char *path, const char *buf, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    size_t n = 0;
    while (n < len) {
        ssize_t w = write(fd, buf + n, len - n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        n += (size_t)w;
    }
    int rc = n == len ? 0 : -1;
    if (close(fd) != 0) rc = -1;
    return rc;
}

/* Copy one file; with version, also the hash a worker reports as its
 * version (a file detector's). */
static int copy_file(const char *from, const char *to, char *version, char **errp) {
    char *buf = NULL;
    size_t len = 0;
    if (read_file(from, &buf, &len) != 0) return fail(errp, "cannot read", from);
    if (version) snprintf(version, 32, "%016llx", (unsigned long long)tide_fnv1a64(buf, len));
    int rc = write_file(to, buf, len);
    free(buf);
    return rc == 0 ? 0 : fail(errp, "cannot write", to);
}

/* Editors' temporary and backup files, and hidden ones, are not a
 * detector's modules (as the supervisor's folder watch judges them). */
static int skipped(const char *name) {
    size_t n = strlen(name);
    return name[0] == '.' || name[0] == '#' || (n && name[n - 1] == '~');
}

static int is_lua(const char *name) {
    size_t n = strlen(name);
    return n > 4 && !strcmp(name + n - 4, ".lua");
}

/* Copy the .lua files of folder `from` (and its subfolders) into `to`,
 * which exists. *files counts what was copied, against MAX_FILES. */
static int copy_tree(const char *from, const char *to, int depth, int *files, char **errp) {
    DIR *dir = opendir(from);
    if (!dir) return fail(errp, "cannot read", from);
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(dir))) {
        if (skipped(e->d_name)) continue;
        char src[PATH_MAX], dst[PATH_MAX];
        snprintf(src, sizeof(src), "%s/%s", from, e->d_name);
        snprintf(dst, sizeof(dst), "%s/%s", to, e->d_name);
        struct stat sb;
        if (stat(src, &sb) != 0) continue; /* gone meanwhile, or a dangling link */
        if (S_ISDIR(sb.st_mode) && depth < MAX_DEPTH) {
            if (mkdir(dst, 0755) != 0) rc = fail(errp, "cannot create", dst);
            else rc = copy_tree(src, dst, depth + 1, files, errp);
        } else if (S_ISREG(sb.st_mode) && is_lua(e->d_name)) {
            if (++*files > MAX_FILES) {
                errno = EFBIG;
                rc = fail(errp, "too many files in", from);
            } else {
                rc = copy_file(src, dst, NULL, errp);
            }
        }
    }
    closedir(dir);
    return rc;
}

/* A new, empty temporary folder under base; its path into out. */
static int make_temp(tide_sources_t *s, char *out, size_t cap, char **errp) {
    snprintf(out, cap, "%s/.tmp-%u", s->base, s->seq++);
    remove_tree(out);
    return mkdir(out, 0755) == 0 ? 0 : fail(errp, "cannot create", out);
}

/* Put the folder tmp in place of dst in one step; the old dst goes. */
static int swap_in(const char *tmp, const char *dst, char **errp) {
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RENAME_EXCHANGE) == 0) {
        remove_tree(tmp); /* now the old copy */
        return 0;
    }
    if (errno == ENOENT && rename(tmp, dst) == 0) return 0;
    int rc = fail(errp, "cannot replace", dst);
    remove_tree(tmp);
    return rc;
}

tide_sources_t *tide_sources_new(const char *root, const char *path, char **errp) {
    if (!root) {
        if (errp) *errp = strdup("not enough memory");
        return NULL;
    }
    char real[PATH_MAX];
    const char *abs = realpath(path, real) ? real : path;
    const char *base = strrchr(path, '/');
    base = base && base[1] ? base + 1 : path;
    char key[160];
    size_t k = 0;
    for (const char *p = base; *p && k < 100; p++)
        key[k++] = (char)((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                                  (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'
                              ? *p
                              : '_');
    snprintf(key + k, sizeof(key) - k, "-%08llx",
             (unsigned long long)(tide_fnv1a64(abs, strlen(abs)) & 0xffffffffu));
    tide_sources_t *s = calloc(1, sizeof(*s));
    if (!s || asprintf(&s->base, "%s/%s", root, key) < 0 ||
        asprintf(&s->current, "%s/current", s->base) < 0 ||
        asprintf(&s->good, "%s/good", s->base) < 0 || !(s->path = strdup(path))) {
        if (errp) *errp = strdup("not enough memory");
        tide_sources_free(s, 0);
        return NULL;
    }
    struct stat sb;
    s->is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    remove_tree(s->base);
    if (tide_files_mkdir_p(s->base) != 0) {
        fail(errp, "cannot create", s->base);
        tide_sources_free(s, 0);
        return NULL;
    }
    return s;
}

void tide_sources_free(tide_sources_t *s, int remove) {
    if (!s) return;
    if (remove && s->base) remove_tree(s->base);
    free(s->path);
    free(s->base);
    free(s->current);
    free(s->good);
    free(s);
}

const char *tide_sources_current(const tide_sources_t *s) { return s->current; }

tide_sources_result_t tide_sources_stage(tide_sources_t *s, char version[32], char **errp) {
    char tmp[PATH_MAX], dst[2 * PATH_MAX];
    version[0] = '\0';
    if (make_temp(s, tmp, sizeof(tmp), errp) != 0) return TIDE_SOURCES_ERROR;
    int files = 0, rc;
    if (s->is_dir) {
        rc = copy_tree(s->path, tmp, 0, &files, errp);
    } else {
        const char *name = strrchr(s->path, '/');
        snprintf(dst, sizeof(dst), "%s/%s", tmp, name ? name + 1 : s->path);
        rc = copy_file(s->path, dst, version, errp);
    }
    if (rc != 0) {
        remove_tree(tmp);
        return TIDE_SOURCES_ERROR;
    }
    return swap_in(tmp, s->current, errp) == 0 ? TIDE_SOURCES_OK : TIDE_SOURCES_ERROR;
}

/* Replace `to` with a copy of `from` (both our own copies). */
static tide_sources_result_t recopy(tide_sources_t *s, const char *from, const char *to,
                                    char **errp) {
    char tmp[PATH_MAX];
    int files = 0;
    if (make_temp(s, tmp, sizeof(tmp), errp) != 0) return TIDE_SOURCES_ERROR;
    if (copy_tree(from, tmp, 0, &files, errp) != 0) {
        remove_tree(tmp);
        return TIDE_SOURCES_ERROR;
    }
    return swap_in(tmp, to, errp) == 0 ? TIDE_SOURCES_OK : TIDE_SOURCES_ERROR;
}

tide_sources_result_t tide_sources_accept(tide_sources_t *s, char **errp) {
    tide_sources_result_t r = recopy(s, s->current, s->good, errp);
    if (r == TIDE_SOURCES_OK) s->has_good = 1;
    return r;
}

tide_sources_result_t tide_sources_revert(tide_sources_t *s, char **errp) {
    if (!s->has_good) return TIDE_SOURCES_NONE;
    return recopy(s, s->good, s->current, errp);
}
