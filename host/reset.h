/*
 * reset.h: `tide reset DETECTOR_OR_FILE`, a detector's reprocessing from a
 * chosen point with empty state, as Kafka's kafka-streams-application-reset
 * does for a Kafka Streams application.
 *
 * It resets the committed offsets of the detector's input topics (to the
 * earliest, the latest, a date and time, a duration ago, or given offsets),
 * deletes its internal topics (store changelogs and DSL repartition topics),
 * removes its local state directory, and prints what it did. It refuses while
 * the detector's consumer group has active members. The dead-letter topic is
 * not internal state: it is kept unless --delete-dead-letters is given.
 */
#ifndef TIDE_RESET_H
#define TIDE_RESET_H
#include <signal.h>

/* argv[0] is "reset". Returns the exit code: 0 done (or a dry run), 1
 * refused or failed, 2 usage. */
int tide_reset_main(int argc, char **argv, volatile sig_atomic_t *stop);

#endif
