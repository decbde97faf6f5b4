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

static void test_taken_names_its_partition(void) {
    CASE("a record handed out names its partition's entry, which accepts it without a lookup");
    tide_offsets_t o = {0};
    tide_offsets_add(&o, "in", 0);
    tide_offsets_add(&o, "in", 1);
    tide_offset_t *p0 = tide_offsets_find(&o, "in", 0), *p1 = tide_offsets_find(&o, "in", 1);
    tide_offsets_push(p0, NULL, 100, 5); /* the messages are not looked at here */
    tide_offsets_push(p1, NULL, 200, 7);
    tide_order_t order = {.idle_ms = -1, .lag_wait_ms = 0};
    tide_buffered_t out[4];
    CHECK(tide_offsets_take(&o, out, 4, 0, &order) == 2);
    CHECK(out[0].part == p0 && out[0].offset == 5 && out[1].part == p1 && out[1].offset == 7);
    CHECK(tide_offsets_accept_taken(&o, &out[0], "in", 0) == p0);
    p0->processed = 5; /* a redelivery is dropped through the hint too */
    CHECK(tide_offsets_accept_taken(&o, &out[0], "in", 0) == NULL);
    tide_buffered_t stale = out[1];
    stale.part = (tide_offset_t *)&o; /* not an entry: looked up by name instead */
    CHECK(tide_offsets_accept_taken(&o, &stale, "in", 1) == p1);
    stale.part = p0; /* an entry, but another partition's */
    CHECK(tide_offsets_accept_taken(&o, &stale, "in", 1) == p1);
    tide_offsets_free(&o);
}

static void test_trim_frees_empty_buffers(void) {
    CASE("an idle worker's empty buffers give their memory back and fill again");
    tide_offsets_t o = {0};
    tide_offsets_add(&o, "in", 0);
    tide_offsets_add(&o, "in", 1);
    tide_offset_t *p0 = tide_offsets_find(&o, "in", 0), *p1 = tide_offsets_find(&o, "in", 1);
    for (int i = 0; i < 3; i++) tide_offsets_push(p0, NULL, 10 + i, i);
    tide_offsets_push(p1, NULL, 50, 0);
    tide_order_t order = {.idle_ms = -1, .lag_wait_ms = 0};
    tide_buffered_t out[3];
    CHECK(tide_offsets_take(&o, out, 3, 0, &order) == 3); /* p0's three, the oldest */
    tide_offsets_trim(&o);
    CHECK(p0->buf == NULL && p0->cap == 0 && p0->n == 0);
    CHECK(p1->buf != NULL && p1->n == 1); /* still holding a record: kept */
    CHECK(tide_offsets_push(p0, NULL, 60, 3) == 1);
    CHECK(tide_offsets_take(&o, out, 3, 0, &order) == 2);
    CHECK(out[0].offset == 0 && out[0].part == p1 && out[1].offset == 3 && out[1].part == p0);
    tide_offsets_free(&o);
}

int main(int argc, char **argv) {
    test_taken_names_its_partition();
    test_trim_frees_empty_buffers();
    test_nothing_processed();
    test_commit_after_processed();
    test_failed_commit_stays();
    test_revoke_commits_only_revoked();
    test_redelivery_dropped();
    test_reassigned_starts_fresh();
    test_holds_any_topic();
    return check_report(argc > 1 ? argv[1] : NULL);
}
