/*
 * tools.h: `tide produce` and `tide consume`, so a newcomer can feed a
 * detector and read its output without other Kafka tools.
 */
#ifndef TIDE_TOOLS_H
#define TIDE_TOOLS_H
#include <signal.h>

int tide_tool_produce(int argc, char **argv, volatile sig_atomic_t *stop);
int tide_tool_consume(int argc, char **argv, volatile sig_atomic_t *stop,
                      void (*on_signal)(int));

#endif
