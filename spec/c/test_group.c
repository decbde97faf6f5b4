/* C tests of the offset rules (host/group.c), without a broker: what is
 * committed after what was processed, on revoke, and which records are
 * dropped as redeliveries. */
#include <stdlib.h>

#include "check.h"
#include "group.h"

static int64_t pending_offset(const tide_offsets_t *o, const char *topic, int32_t p,
                              const rd_kafka_topic_partition_list_t *only) {
    rd_kafka_topic_partition_list_t *l = tide_offsets_pending(o, only);
    rd_kafka_topic_partition_t *e = rd_kafka_topic_partition_list_find(l, topic, p);
    int64_t off = e ? e->offset : -1;
    rd_kafka_topic_partition_list_destroy(l);
    return off;
}

static int pending_count(const tide_offsets_t *o) {
    rd_kafka_topic_partition_list_t *l = tide_offsets_pending(o, NULL);
    int n = l->cnt;
    rd_kafka_topic_partition_list_destroy(l);
    return n;
}

static void test_nothing_processed(void) {
    CASE("a partition with nothing processed commits nothing");
    tide_offsets_t o = {0};
    tide_offsets_add(&o, "in", 0);
    tide_offsets_add(&o, "in", 1);
    CHECK(pending_count(&o) == 0);
    tide_offsets_free(&o);
}

static void test_commit_after_processed(void) {
    CASE("the commit is the offset after the last record processed, and only once");
    tide_offsets_t o = {0};
    tide_offsets_add(&o, "in", 0);
    tide_offset_t *p = tide_offsets_accept(&o, "in", 0, 41);
    CHECK(p != NULL);
    p->processed = 41;
    CHECK(pending_offset(&o, "in", 0, NULL) == 42);
    rd_kafka_topic_partition_list_t *l = tide_offsets_pending(&o, NULL);
    tide_offsets_committed(&o, l);
    rd_kafka_topic_partition_list_destroy(l);
    CHECK(pending_count(&o) == 0); /* committed: nothing left to commit */
    p = tide_offsets_accept(&o, "in", 0, 42);
    p->processed = 42;
    CHECK(pending_offset(&o, "in", 0, NULL) == 43);
    tide_offsets_free(&o);
}

static void test_failed_commit_stays(void) {
    CASE("an offset the broker refused stays pending");
    tide_offsets_t o = {0};
    tide_offsets_add(&o, "in", 3)->processed = 9;
    rd_kafka_topic_partition_list_t *l = tide_offsets_pending(&o, NULL);
    l->elems[0].err = RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT;
    tide_offsets_committed(&o, l);
    rd_kafka_topic_partition_list_destroy(l);
    CHECK(pending_offset(&o, "in", 3, NULL) == 10);
    tide_offsets_free(&o);
}

static void test_revoke_commits_only_revoked(void) {
    CASE("a revoke commits the revoked partitions only");
    tide_offsets_t o = {0};
    tide_offsets_add(&o, "in", 0)->processed = 5;
    tide_offsets_add(&o, "in", 1)->processed = 7;
    rd_kafka_topic_partition_list_t *only = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(only, "in", 1);
    rd_kafka_topic_partition_list_t *l = tide_offsets_pending(&o, only);
    CHECK(l->cnt == 1 && l->elems[0].partition == 1 && l->elems[0].offset == 8);
    tide_offsets_committed(&o, l);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_topic_partition_list_destroy(only);
    CHECK(pending_offset(&o, "in", 0, NULL) == 6); /* kept, still pending */
    CHECK(pending_offset(&o, "in", 1, NULL) == -1);
    tide_offsets_free(&o);
}

static void test_redelivery_dropped(void) {
    CASE("a record at or before the last one processed is dropped; unheld partitions too");
    tide_offsets_t o = {0};
    tide_offsets_add(&o, "in", 0)->processed = 10;
    CHECK(tide_offsets_accept(&o, "in", 0, 10) == NULL);
    CHECK(tide_offsets_accept(&o, "in", 0, 3) == NULL);
    CHECK(tide_offsets_accept(&o, "in", 0, 11) != NULL);
    CHECK(tide_offsets_accept(&o, "in", 1, 11) == NULL); /* not assigned */
    CHECK(tide_offsets_accept(&o, "other", 0, 11) == NULL);
    tide_offsets_free(&o);
}

static void test_reassigned_starts_fresh(void) {
    CASE("a partition revoked and assigned again accepts its records again");
    tide_offsets_t o = {0};
    tide_offsets_add(&o, "in", 2)->processed = 100;
    tide_offsets_remove(&o, "in", 2);
    CHECK(!tide_offsets_holds(&o, 2));
    tide_offsets_add(&o, "in", 2);
    CHECK(tide_offsets_accept(&o, "in", 2, 50) != NULL); /* the new owner's from the commit */
    tide_offsets_free(&o);
}

static void test_holds_any_topic(void) {
    CASE("a task is held while any input topic holds its partition");
    tide_offsets_t o = {0};
    tide_offsets_add(&o, "a", 4);
    tide_offsets_add(&o, "b", 4);
    tide_offsets_remove(&o, "a", 4);
    CHECK(tide_offsets_holds(&o, 4));
    tide_offsets_remove(&o, "b", 4);
    CHECK(!tide_offsets_holds(&o, 4));
    tide_offsets_free(&o);
}

int main(int argc, char **argv) {
    test_nothing_processed();
    test_commit_after_processed();
    test_failed_commit_stays();
    test_revoke_commits_only_revoked();
    test_redelivery_dropped();
    test_reassigned_starts_fresh();
    test_holds_any_topic();
    return check_report(argc > 1 ? argv[1] : NULL);
}
