/*
 * status.c: the shared status block of a worker (see status.h).
 */
#include "status.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

const double tide_status_hist_bounds[TIDE_STATUS_HIST - 1] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 10,
};

tide_status_block_t *tide_status_create(int *fd) {
    int f = memfd_create("tide-status", MFD_CLOEXEC);
    if (f < 0) return NULL;
    if (ftruncate(f, sizeof(tide_status_block_t)) != 0) {
        close(f);
        return NULL;
    }
    tide_status_block_t *s = tide_status_map(f);
    if (!s) {
        close(f);
        return NULL;
    }
    memset(s, 0, sizeof(*s));
    s->magic = TIDE_STATUS_MAGIC;
    s->lag = -1;
    *fd = f;
    return s;
}

tide_status_block_t *tide_status_map(int fd) {
    void *p = mmap(NULL, sizeof(tide_status_block_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

void tide_status_unmap(tide_status_block_t *s) {
    if (s) munmap(s, sizeof(*s));
}

int tide_status_bucket(double seconds) {
    int i = 0;
    while (i < TIDE_STATUS_HIST - 1 && seconds > tide_status_hist_bounds[i]) i++;
    return i;
}
