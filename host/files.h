/*
 * files.h: the filesystem chores more than one part of the host does.
 */
#ifndef TIDE_FILES_H
#define TIDE_FILES_H

/* mkdir -p: 0, or -1 with errno. path is changed during the call only. */
int tide_files_mkdir_p(char *path);
/* rm -rf, without following symbolic links: 0, or -1 with errno (what could
 * be removed is gone). A path that does not exist is removed already. */
int tide_files_remove_tree(const char *path);

#endif
