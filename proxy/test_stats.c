/* test_stats.c - per-worker slots summed into ProxyStats; drained instances linger, then go. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "stats.h"

static void test_sum(void **state)
{
    (void)state;
    stats_t *s = stats_new(2);
    assert_non_null(s);
    stats_worker_t *w0 = stats_worker(s, 0), *w1 = stats_worker(s, 1);
    STAT_ADD(w0->c.requests, 3);
    STAT_ADD(w1->c.requests, 4);
    STAT_ADD(w0->c.status[1], 2);
    STAT_ADD(w1->c.status[4], 1);
    STAT_ADD(w1->c.buckets[5], 7);
    STAT_SET(w0->connections, 2);
    STAT_SET(w1->connections, 5);
    STAT_SET(w0->pool_version, 9);
    STAT_SET(w0->pool_applied, 1);
    STAT_SET(w1->pool_version, 8);
    STAT_SET(w1->pool_applied, 1);

    stats_counters_t *a0 = stats_instance(s, "production0", "127.0.0.1:1", 0);
    stats_counters_t *a1 = stats_instance(s, "production0", "127.0.0.1:1", 1);
    assert_ptr_equal(a0, stats_instance(s, "production0", "127.0.0.1:1", 0));
    STAT_ADD(a0->requests, 1);
    STAT_ADD(a1->requests, 2);
    STAT_SET(a0->in_pool, 1);
    STAT_SET(a1->in_flight, 3);

    Tide__V1__ProxyStats *m = stats_message(s, 1000000);
    assert_non_null(m);
    assert_int_equal(m->totals->requests, 7);
    assert_int_equal(m->totals->status_2xx, 2);
    assert_int_equal(m->totals->status_5xx, 1);
    assert_int_equal(m->n_latency_buckets, HIST_BUCKETS);
    assert_int_equal(m->latency_buckets[5], 7);
    assert_int_equal(m->connections, 7);
    assert_int_equal(m->pool_version, 8); /* the lowest a worker has applied */
    assert_int_equal(m->n_instances, 1);
    assert_string_equal(m->instances[0]->name, "production0");
    assert_int_equal(m->instances[0]->counters->requests, 3);
    assert_int_equal(m->instances[0]->in_flight, 3);
    assert_true(m->instances[0]->in_pool);
    stats_message_free(&m);
    assert_null(m);

    /* Out of the pool and idle: listed for a while so the drain is seen, then dropped. */
    STAT_SET(a0->in_pool, 0);
    STAT_SET(a1->in_flight, 0);
    m = stats_message(s, 1005000);
    assert_int_equal(m->n_instances, 1);
    assert_false(m->instances[0]->in_pool);
    assert_int_equal(m->instances[0]->in_flight, 0);
    stats_message_free(&m);
    m = stats_message(s, 1000000 + 20000);
    assert_int_equal(m->n_instances, 0);
    stats_message_free(&m);
    stats_destroy(&s);
    assert_null(s);
}

static void test_no_pool_yet(void **state)
{
    (void)state;
    stats_t *s = stats_new(1);
    Tide__V1__ProxyStats *m = stats_message(s, 5);
    assert_int_equal(m->pool_version, 0);
    assert_int_equal(m->n_instances, 0);
    stats_message_free(&m);
    stats_destroy(&s);
}

/* Pool churn: instances that come and go free their records, whether or not a publisher
 * runs; one that comes back while its record lingers finds its counters. */
static void test_churn_bounded(void **state)
{
    (void)state;
    for (int publisher = 0; publisher < 2; publisher++) {
        stats_t *s = stats_new(1);
        if (publisher)
            stats_expect_publisher(s);
        uint64_t now = 1000000;
        size_t most = 0;
        for (int i = 0; i < 10000; i++) {
            char name[32], addr[32];
            snprintf(name, sizeof name, "production%d", i);
            snprintf(addr, sizeof addr, "127.0.%d.%d:9000", i / 250, i % 250 + 1);
            stats_counters_t *c = stats_instance(s, name, addr, 0);
            assert_non_null(c);
            STAT_SET(c->in_pool, 1);
            STAT_ADD(c->requests, 1);
            STAT_SET(c->in_pool, 0);
            stats_release(s, name, addr, 0);
            Tide__V1__ProxyStats *m = stats_message(s, now++);
            assert_non_null(m);
            stats_message_free(&m);
            size_t n = stats_record_count(s);
            most = n > most ? n : most;
        }
        assert_true(most <= (publisher ? 1025u : 0u));
        /* Back while its record lingers: the same cumulative counters. */
        stats_counters_t *c = stats_instance(s, "production9999", "127.0.39.250:9000", 0);
        assert_int_equal(c->requests, publisher ? 1 : 0);
        stats_release(s, "production9999", "127.0.39.250:9000", 0);
        /* Past the linger every unused record has gone, each listed once idle before. */
        Tide__V1__ProxyStats *m = stats_message(s, now + 11000);
        stats_message_free(&m);
        m = stats_message(s, now + 22000);
        stats_message_free(&m);
        assert_int_equal(stats_record_count(s), 0);
        stats_destroy(&s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sum),
        cmocka_unit_test(test_no_pool_yet),
        cmocka_unit_test(test_churn_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
