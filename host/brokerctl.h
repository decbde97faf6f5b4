/*
 * brokerctl.h: the control channel of `tide broker`, which injects faults
 * into the running mock cluster from another process (tests, `make chaos`).
 *
 * Commands are lines written to a FIFO; each gets one reply line on the
 * broker's standard output, after its address line:
 *
 *   ok <command>[: <result>]      the mock applied it
 *   error <command>: <reason>     it did not (bad argument, unknown broker)
 *
 * <command> is the line as read, with its words joined by single spaces, so
 * a writer finds its answer by matching it. `help` lists the commands.
 */
#ifndef TIDE_BROKERCTL_H
#define TIDE_BROKERCTL_H

#include <stddef.h>
#include <stdio.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

struct tide_brokerctl;
typedef struct tide_brokerctl tide_brokerctl_t;

typedef enum tide_brokerctl_result {
    TIDE_BROKERCTL_OK = 0, /* applied; reply starts with "ok " */
    TIDE_BROKERCTL_FAILED, /* not applied; reply starts with "error " */
} tide_brokerctl_result_t;

/* A control channel on the mock cluster mc of `brokers` brokers, reached at
 * bootstraps (both borrowed: they must outlive the channel). fifo_path may
 * be NULL: then only tide_brokerctl_exec is usable. With a
 * path, the FIFO is made there (an existing FIFO is reused, anything else is
 * refused) and opened for reading. Returns NULL with *errp set on failure. */
tide_brokerctl_t *tide_brokerctl_new(rd_kafka_mock_cluster_t *mc, int brokers, const char *bootstraps,
                                     const char *fifo_path, char **errp);
/* The FIFO's descriptor to poll for POLLIN, or -1 without one. */
int tide_brokerctl_fd(const tide_brokerctl_t *ctl);
/* Read what the FIFO holds and run every complete line, writing each reply
 * line to out (flushed). Never blocks. */
void tide_brokerctl_read(tide_brokerctl_t *ctl, FILE *out);
/* Run one command line; the reply (without newline) goes to reply[cap]. */
tide_brokerctl_result_t tide_brokerctl_exec(tide_brokerctl_t *ctl, const char *line, char *reply,
                                            size_t cap);
/* Close and remove the FIFO; free the channel. NULL is a no-op. */
void tide_brokerctl_free(tide_brokerctl_t *ctl);

/* The command summary `help` prints, one command per line. */
extern const char tide_brokerctl_help[];

#endif
