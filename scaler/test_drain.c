/* test_drain.c - unit tests of drain.c: pool versions, in-flight counts, stale proxies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "drain.h"

/* One proxy report: sender, seq, started, pool version, and up to 3 (name, in_flight). */
typedef struct {
    const char *sender;
    uint64_t seq, started, version;
    const char *names[3];
    uint32_t in_flight[3];
} report_t;

static void s_feed(drain_t *d, const report_t *r, uint64_t now_ms)
{
    Tide__V1__Header h = TIDE__V1__HEADER__INIT;
    h.sender = (char *)r->sender;
    h.seq = r->seq;
    Tide__V1__ProxyStats s = TIDE__V1__PROXY_STATS__INIT;
    s.header = &h;
    s.started_ms = r->started;
    s.pool_version = r->version;
    Tide__V1__InstanceStats in[3], *ptrs[3];
    size_t n = 0;
    for (int i = 0; i < 3 && r->names[i]; i++) {
        tide__v1__instance_stats__init(&in[i]);
        in[i].name = (char *)r->names[i];
        in[i].in_flight = r->in_flight[i];
        ptrs[n++] = &in[i];
    }
    s.instances = ptrs;
    s.n_instances = n;
    drain_on_stats(d, &s, now_ms);
}

static const char *const s_victim[] = {"production2"};

typedef struct {
    const char *what;
    report_t reports[3];
    size_t n;
    uint64_t version;
    bool want;
} drain_case_t;

static const drain_case_t s_cases[] = {
    {"no proxy at all", {{0}}, 0, 5, true},
    {"one proxy on the new version, idle",
     {{"proxy/a", 1, 100, 5, {"production0", "production1"}, {3, 0}}},
     1,
     5,
     true},
    {"one proxy still on the old version",
     {{"proxy/a", 1, 100, 4, {"production0"}, {0}}},
     1,
     5,
     false},
    {"newer version counts", {{"proxy/a", 1, 100, 9, {NULL}, {0}}}, 1, 5, true},
    {"in flight to the victim", {{"proxy/a", 1, 100, 5, {"production2"}, {1}}}, 1, 5, false},
    {"in flight to others only",
     {{"proxy/a", 1, 100, 5, {"production0", "production2"}, {7, 0}}},
     1,
     5,
     true},
    {"one of two proxies lags",
     {{"proxy/a", 1, 100, 5, {NULL}, {0}}, {"proxy/b", 1, 100, 4, {NULL}, {0}}},
     2,
     5,
     false},
    {"both proxies done",
     {{"proxy/a", 1, 100, 5, {NULL}, {0}}, {"proxy/b", 3, 100, 6, {NULL}, {0}}},
     2,
     5,
     true},
    {"an older report does not undo a newer one",
     {{"proxy/a", 7, 100, 5, {NULL}, {0}}, {"proxy/a", 6, 100, 4, {"production2"}, {2}}},
     2,
     5,
     true},
    {"a restarted proxy (new started_ms) replaces its old report",
     {{"proxy/a", 7, 100, 5, {NULL}, {0}}, {"proxy/a", 1, 200, 3, {NULL}, {0}}},
     2,
     5,
     false},
};

static void test_drain_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++) {
        const drain_case_t *c = &s_cases[i];
        drain_t *d = drain_new(2000);
        assert_non_null(d);
        for (size_t k = 0; k < c->n; k++)
            s_feed(d, &c->reports[k], 1000 + k);
        bool got = drain_drained(d, s_victim, 1, c->version, 1500);
        if (got != c->want)
            fail_msg("case '%s': drained=%d, want %d", c->what, got, c->want);
        drain_destroy(&d);
        assert_null(d);
    }
}

static void test_stale_proxy_is_forgotten(void **state)
{
    (void)state;
    drain_t *d = drain_new(2000);
    report_t dead = {"proxy/dead", 1, 100, 1, {"production2"}, {4}};
    report_t live = {"proxy/live", 1, 100, 5, {NULL}, {0}};
    s_feed(d, &dead, 1000);
    s_feed(d, &live, 1000);
    assert_int_equal(drain_live(d, 1000), 2);
    assert_false(drain_drained(d, s_victim, 1, 5, 2500));
    /* the dead proxy has been silent longer than 2 s; the live one reports again */
    report_t live2 = {"proxy/live", 2, 100, 5, {NULL}, {0}};
    s_feed(d, &live2, 3100);
    assert_true(drain_drained(d, s_victim, 1, 5, 3100));
    assert_int_equal(drain_live(d, 3100), 1);
    /* and everything goes quiet: nobody can route to the victim */
    assert_true(drain_drained(d, s_victim, 1, 5, 60000));
    assert_int_equal(drain_live(d, 60000), 0);
    drain_destroy(&d);
    drain_destroy(&d); /* NULL is fine */
}

static void test_several_names(void **state)
{
    (void)state;
    drain_t *d = drain_new(2000);
    const char *names[] = {"production3", "production4"};
    report_t r = {"proxy/a", 1, 100, 8, {"production4", "production0"}, {1, 9}};
    s_feed(d, &r, 10);
    assert_false(drain_drained(d, names, 2, 8, 20));
    report_t r2 = {"proxy/a", 2, 100, 8, {"production4", "production0"}, {0, 9}};
    s_feed(d, &r2, 30);
    assert_true(drain_drained(d, names, 2, 8, 40));
    drain_destroy(&d);
}

static void test_table_full_is_counted(void **state)
{
    (void)state;
    drain_t *d = drain_new(100000);
    char sender[32];
    for (int i = 0; i < 300; i++) {
        snprintf(sender, sizeof sender, "proxy/%d", i);
        report_t r = {sender, 1, 1, 1, {NULL}, {0}};
        s_feed(d, &r, 10);
    }
    assert_int_equal(drain_live(d, 10), 256);
    assert_int_equal(drain_ignored(d), 44);
    drain_destroy(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drain_table),
        cmocka_unit_test(test_stale_proxy_is_forgotten),
        cmocka_unit_test(test_several_names),
        cmocka_unit_test(test_table_full_is_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
