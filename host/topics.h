/*
 * topics.h: a detector's internal topics on a real Kafka.
 *
 * Kafka Streams creates the topics an application owns (store changelogs,
 * repartition topics) before it consumes; so does a worker, through the Admin
 * API, before its producer first looks them up. Best effort: a broker that
 * cannot or may not create topics gets a warning naming each one, and the
 * worker goes on. Settings: internal.topics.create,
 * internal.topics.replication.factor.
 */
#ifndef TIDE_TOPICS_H
#define TIDE_TOPICS_H

#include "config.h"

typedef enum tide_topic_kind {
    TIDE_TOPIC_SOURCE,      /* an input tide does not own: sizes the others */
    TIDE_TOPIC_CHANGELOG,   /* <application.id>.<detector>-<store>-changelog: compacted */
    TIDE_TOPIC_REPARTITION, /* <application.id>.<detector>-...-repartition: deleted by time */
} tide_topic_kind_t;

/* One topic to look at; `name` is borrowed for the call. */
typedef struct tide_topic_req {
    const char *name;
    tide_topic_kind_t kind;
} tide_topic_req_t;

/* Unless internal.topics.create is false: describe topics[0..n) (each
 * appears once), then create the internal ones missing, with as many
 * partitions as the largest source, internal.topics.replication.factor
 * replicas and the cleanup policy of their kind. Logs what it created, and a
 * warning for each topic it could not create or whose partition count
 * differs from the sources'. Waits at most about 2 * timeout_ms. */
void tide_topics_ensure(const tide_config_t *c, const char *bootstraps,
                        const tide_topic_req_t *topics, int n, int timeout_ms);

#endif
