/*
 * supervisor.h: `tide run DIR`, one process per host.
 *
 * The supervisor watches a folder of detectors and keeps one worker process
 * per detector (`tide worker FILE`): starts new ones, asks changed ones to hot
 * swap, stops removed ones, restarts crashed or hung ones with backoff, and
 * quarantines those that keep failing. It reads each worker's shared status
 * block (status.h) and serves what it knows through the admin server
 * (admin.h), whose snapshots it fills.
 */
#ifndef TIDE_SUPERVISOR_H
#define TIDE_SUPERVISOR_H
#include <signal.h>

#include "config.h"

/* Run the folder until *stop; returns the exit code. */
struct tide_devbroker;
int tide_supervisor_run(const tide_config_t *c, const char *dir, const char *bootstraps,
                        struct tide_devbroker *dev, volatile sig_atomic_t *stop);

#endif
