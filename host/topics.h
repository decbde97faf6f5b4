/*
 * topics.h: the topics a detector uses, and the ones tide creates.
 *
 * Kafka Streams creates the topics an application owns (store changelogs,
 * repartition topics) before it consumes; so does a worker, through the Admin
 * API, before its producer first looks them up, and its dead-letter topic
 * too (production brokers often have auto-create off). Outputs are the
 * user's: created only when asked (output.topics.create). A topic that
 * cannot be created is named in a warning; the worker learns which are
 * missing and holds its inputs until they exist. Settings:
 * internal.topics.create, output.topics.create,
 * internal.topics.replication.factor.
 */
#ifndef TIDE_TOPICS_H
#define TIDE_TOPICS_H

#include "config.h"
#include "runtime.h"

typedef enum tide_topic_kind {
    TIDE_TOPIC_SOURCE,      /* an input tide does not own: sizes the others */
    TIDE_TOPIC_OUTPUT,      /* an output: created only with output.topics.create */
    TIDE_TOPIC_DEAD_LETTER, /* <application.id>.<detector>-dlq */
    TIDE_TOPIC_CHANGELOG,   /* <application.id>.<detector>-<store>-changelog: compacted */
    TIDE_TOPIC_REPARTITION, /* <application.id>.<detector>-...-repartition: deleted by time */
} tide_topic_kind_t;

/* One topic to look at; `name` is borrowed for the call. */
typedef struct tide_topic_req {
    const char *name;
    tide_topic_kind_t kind;
    int partitions; /* set by tide_topics_ensure: > 0 found or created, 0 missing, -1 unknown */
} tide_topic_req_t;

enum { TIDE_TOPICS_MAX = 64 };

/* The topics detector `info` reads and writes, each once: inputs, outputs,
 * its dead-letter topic, its changelogs; DSL repartition topics
 * (<application.id>.<detector>-...-repartition) among inputs and outputs are
 * recognised by name. Returns how many went into out[0..max). */
int tide_topics_of(const tide_config_t *c, const tide_detector_info_t *info, const char *dlq,
                   char *const *changelogs, int n_changelogs, tide_topic_req_t *out, int max);

/* Describe topics[0..n), then create what is missing of those tide owns
 * (dead letters, changelogs, repartition topics: unless
 * internal.topics.create is false) and of the outputs (only with
 * output.topics.create), with as many partitions as the largest source,
 * internal.topics.replication.factor replicas and the cleanup policy of
 * their kind. Logs what it created, and a warning for each topic it could
 * not create or whose partition count differs from the sources'. Sets each
 * topic's `partitions`. Waits at most about 2 * timeout_ms. */
void tide_topics_ensure(const tide_config_t *c, const char *bootstraps, tide_topic_req_t *topics,
                        int n, int timeout_ms);

/* Does `topic` exist now? 1, 0, or -1 when the broker did not answer. */
int tide_topics_exists(const tide_config_t *c, const char *bootstraps, const char *topic,
                       int timeout_ms);

#endif
