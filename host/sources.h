/*
 * sources.h: the supervisor's copies of a detector's source files.
 *
 * Workers under a supervisor never read a detector's own files: they read a
 * copy (`tide worker FILE --source-copy DIR`, the runtime option source_copy),
 * which the supervisor replaces only when a change has settled. So the
 * supervisor knows exactly which source a worker validated, and can put the
 * last version that validated back after a refused one: a worker restarted
 * after a refused hot swap (kill -9, the watchdog, a crash) then runs that
 * version, not the broken file, until a newer file validates.
 *
 * Per detector, under ROOT/<name>-<hash of its path>/:
 *   current/   what its workers load: the files as they were when staged
 *   good/      the last version that validated
 * A file detector's copy holds the file under its own name; a folder
 * detector's holds the folder's .lua files (subfolders included). Each copy
 * is replaced whole (built aside, then swapped in with one rename).
 */
#ifndef TIDE_SOURCES_H
#define TIDE_SOURCES_H

typedef enum tide_sources_result {
    TIDE_SOURCES_OK = 0,
    TIDE_SOURCES_NONE,  /* nothing to put back: no version has validated yet */
    TIDE_SOURCES_ERROR, /* see *errp */
} tide_sources_result_t;

typedef struct tide_sources tide_sources_t;

/* The copies of the detector at `path` (a .lua file, or a folder holding
 * init.lua), under `root` (created if missing). NULL with *errp (malloc'd). */
tide_sources_t *tide_sources_new(const char *root, const char *path, char **errp);
/* Free s; with `remove`, delete its copies too (the detector is gone). */
void tide_sources_free(tide_sources_t *s, int remove);

/* The folder its workers read (for --source-copy). */
const char *tide_sources_current(const tide_sources_t *s);
/* Copy the detector's files as they are now into current/. version gets the
 * version the worker will report for a file detector (the hash of its
 * source), "" for a folder (its version depends on the order of its
 * requires). */
tide_sources_result_t tide_sources_stage(tide_sources_t *s, char version[32], char **errp);
/* current/ validated: keep it as the last good version. */
tide_sources_result_t tide_sources_accept(tide_sources_t *s, char **errp);
/* current/ was refused: put the last good version back (NONE: there is none). */
tide_sources_result_t tide_sources_revert(tide_sources_t *s, char **errp);

#endif
