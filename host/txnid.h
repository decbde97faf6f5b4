/*
 * txnid.h: the transactional.id of a worker under exactly-once.
 *
 * <application.id>.<detector>-<process id>, where the process id is a random
 * id kept in <state.dir>/<application.id>/tide.process.id (made on first use),
 * as Kafka Streams keeps its processId in the state directory. So a worker
 * restarted on the same host (same state.dir) gets the same id, and fences
 * its dead predecessor's open transaction at once; two instances (each with
 * its own state directory, as two members of a group must have) never share
 * one. With KIP-447 one producer covers all of a worker's tasks, so the id
 * names the worker, not a partition.
 */
#ifndef TIDE_TXNID_H
#define TIDE_TXNID_H
#include <stddef.h>

#include "config.h"

/* 0, or -1 with *errp (the state directory cannot be written). */
int tide_txnid_make(const tide_config_t *c, const char *detector, char *out, size_t cap,
                    char **errp);

#endif
