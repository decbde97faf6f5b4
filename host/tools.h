/*
 * tools.h: `tide produce` and `tide consume`, so a newcomer can feed a
 * detector and read its output without other Kafka tools, and the topic
 * reader behind `tide replay --from`.
 */
#ifndef TIDE_TOOLS_H
#define TIDE_TOOLS_H
#include <signal.h>

#include "runtime.h"

int tide_tool_produce(int argc, char **argv, volatile sig_atomic_t *stop);
int tide_tool_consume(int argc, char **argv, volatile sig_atomic_t *stop,
                      void (*on_signal)(int));
/* The tide_cli_reader_fn of `tide replay --from` (see runtime.h). */
int tide_tool_read_topic(const char *bootstrap, const char *topic, const tide_cli_range_t *ranges,
                         int n, tide_cli_record_fn fn, void *ud, char **errp);

#endif
