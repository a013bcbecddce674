/* test_aggregate.c - unit tests of metrics/aggregate.c: restart detection, deltas, rates,
 * window coverage, stale and forgotten proxies. Table-driven where the cases are alike. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "aggregate.h"

#define STALE_MS 2000 /* "recent start" = less than 4000 ms before the message */

/* ---- building ProxyStats on the stack --------------------------------------------------- */

#define MAX_I 4

typedef struct {
    const char *name;
    uint64_t requests; /* each request is a 2xx in latency bucket 4 (<= 1 ms) */
    uint64_t s5xx;
    uint32_t in_flight;
} inst_spec_t;

typedef struct {
    Tide__V1__ProxyStats st;
    Tide__V1__Header h;
    Tide__V1__Counters tot;
    uint64_t lat[HIST_BUCKETS];
    Tide__V1__InstanceStats inst[MAX_I];
    Tide__V1__InstanceStats *pinst[MAX_I];
    Tide__V1__Counters ic[MAX_I];
    uint64_t ilat[MAX_I][HIST_BUCKETS];
} fake_t;

/* A ProxyStats from `sender` whose totals are the sum of its instances plus `extra` requests
 * no instance served (503s). */
static Tide__V1__ProxyStats *s_fake(fake_t *f, const char *sender, uint64_t seq, uint64_t ts_ms,
                                    uint64_t started_ms, uint64_t extra, const inst_spec_t *is,
                                    size_t n)
{
    memset(f, 0, sizeof *f);
    tide__v1__proxy_stats__init(&f->st);
    tide__v1__header__init(&f->h);
    tide__v1__counters__init(&f->tot);
    f->h.sender = (char *)sender;
    f->h.seq = seq;
    f->h.ts_ms = ts_ms;
    f->st.header = &f->h;
    f->st.started_ms = started_ms;
    f->st.totals = &f->tot;
    f->tot.requests = extra;
    f->tot.status_5xx = extra;
    f->lat[4] = extra;
    for (size_t i = 0; i < n; i++) {
        tide__v1__instance_stats__init(&f->inst[i]);
        tide__v1__counters__init(&f->ic[i]);
        f->inst[i].name = (char *)is[i].name;
        f->inst[i].addr = "127.0.0.1:9101";
        f->inst[i].counters = &f->ic[i];
        f->inst[i].in_flight = is[i].in_flight;
        f->ic[i].requests = is[i].requests;
        f->ic[i].status_2xx = is[i].requests - is[i].s5xx;
        f->ic[i].status_5xx = is[i].s5xx;
        f->ilat[i][4] = is[i].requests;
        f->inst[i].latency_buckets = f->ilat[i];
        f->inst[i].n_latency_buckets = HIST_BUCKETS;
        f->pinst[i] = &f->inst[i];
        f->tot.requests += is[i].requests;
        f->tot.status_2xx += is[i].requests - is[i].s5xx;
        f->tot.status_5xx += is[i].s5xx;
        f->lat[4] += is[i].requests;
        f->st.in_flight += is[i].in_flight;
    }
    f->st.instances = f->pinst;
    f->st.n_instances = n;
    f->st.latency_buckets = f->lat;
    f->st.n_latency_buckets = HIST_BUCKETS;
    return &f->st;
}

/* Overrides the proxy totals (requests, 2xx, 5xx; latency bucket 4 = requests). */
static void s_set_totals(fake_t *f, uint64_t req, uint64_t s2xx, uint64_t s5xx)
{
    f->tot.requests = req;
    f->tot.status_2xx = s2xx;
    f->tot.status_5xx = s5xx;
    f->lat[4] = req;
}

static agg_t *s_agg(unsigned stable, unsigned panic)
{
    agg_config_t c = {
        .stable_window_s = stable, .panic_window_s = panic, .stale_after_ms = STALE_MS};
    agg_t *agg = agg_new(&c);
    assert_non_null(agg);
    return agg;
}

static void s_near(double got, double want)
{
    if (fabs(got - want) > 1e-6) {
        fail_msg("got %.9f, want %.9f", got, want);
    }
}

/* ---- restart detection and deltas (table-driven) ---------------------------------------- */

typedef struct {
    const char *sender;
    uint64_t seq, ts_ms, started_ms, requests; /* requests all via one instance "p0" */
    agg_result_t want;
    uint64_t want_total; /* cumulative requests counted after this step */
} step_t;

static const struct {
    const char *name;
    step_t steps[8]; /* ends at the first step without a sender */
} s_delta_cases[] = {
    {"first message of a long-running proxy is only a baseline",
     {{"A", 50, 100000, 10000, 500, AGG_NEW_BASELINE, 0},
      {"A", 51, 100250, 10000, 520, AGG_DELTA, 20},
      {"A", 52, 100500, 10000, 521, AGG_DELTA, 21},
      {.sender = NULL}}},
    {"a proxy that just started counts everything",
     {{"A", 1, 10300, 10000, 7, AGG_NEW_FULL, 7},
      {"A", 2, 10550, 10000, 10, AGG_DELTA, 10},
      {.sender = NULL}}},
    {"exactly two stale periods after start is no longer recent",
     {{"A", 1, 14000, 10000, 7, AGG_NEW_BASELINE, 0}, {.sender = NULL}}},
    {"a restart seen (new started_ms, recent) counts the new counts whole",
     {{"A", 9, 100000, 10000, 500, AGG_NEW_BASELINE, 0},
      {"A", 10, 100250, 10000, 600, AGG_DELTA, 100},
      {"A", 1, 101000, 100500, 3, AGG_RESTART_FULL, 103},
      {"A", 2, 101250, 100500, 5, AGG_DELTA, 105},
      {.sender = NULL}}},
    {"a restart missed (new started_ms, long ago) is a baseline",
     {{"A", 9, 100000, 10000, 500, AGG_NEW_BASELINE, 0},
      {"A", 10, 100250, 10000, 600, AGG_DELTA, 100},
      {"A", 900, 300000, 200000, 4000, AGG_RESTART_BASELINE, 100},
      {"A", 901, 300250, 200000, 4010, AGG_DELTA, 110},
      {.sender = NULL}}},
    {"a counter going backwards under the same started_ms is a baseline",
     {{"A", 1, 10100, 10000, 0, AGG_NEW_FULL, 0},
      {"A", 2, 10350, 10000, 40, AGG_DELTA, 40},
      {"A", 3, 10600, 10000, 10, AGG_RESTART_BASELINE, 40},
      {"A", 4, 10850, 10000, 15, AGG_DELTA, 45},
      {.sender = NULL}}},
    {"an old or repeated seq is ignored",
     {{"A", 1, 10100, 10000, 5, AGG_NEW_FULL, 5},
      {"A", 2, 10350, 10000, 8, AGG_DELTA, 8},
      {"A", 2, 10350, 10000, 50, AGG_OLD_SEQ, 8},
      {"A", 1, 10600, 10000, 60, AGG_OLD_SEQ, 8},
      {"A", 3, 10600, 10000, 9, AGG_DELTA, 9},
      {.sender = NULL}}},
    {"lost messages lose nothing: counters are cumulative",
     {{"A", 1, 10100, 10000, 0, AGG_NEW_FULL, 0},
      {"A", 2, 10350, 10000, 10, AGG_DELTA, 10},
      {"A", 7, 11600, 10000, 90, AGG_DELTA, 90},
      {.sender = NULL}}},
    {"two proxies add up, each against its own previous message",
     {{"A", 1, 10100, 10000, 4, AGG_NEW_FULL, 4},
      {"B", 1, 10200, 10150, 6, AGG_NEW_FULL, 10},
      {"A", 2, 10350, 10000, 14, AGG_DELTA, 20},
      {"B", 2, 10450, 10150, 7, AGG_DELTA, 21},
      {.sender = NULL}}},
    {"a proxy with started_ms 0 (unknown) is a baseline",
     {{"A", 1, 10100, 0, 5, AGG_NEW_BASELINE, 0},
      {"A", 2, 10350, 0, 8, AGG_DELTA, 3},
      {.sender = NULL}}},
};

static void test_deltas_and_restarts(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof s_delta_cases / sizeof s_delta_cases[0]; c++) {
        agg_t *agg = s_agg(60, 6);
        uint64_t now = 50000;
        for (const step_t *s = s_delta_cases[c].steps; s->sender; s++) {
            fake_t f;
            inst_spec_t p0 = {"p0", s->requests, 0, 0};
            agg_result_t r = agg_on_stats(
                agg, s_fake(&f, s->sender, s->seq, s->ts_ms, s->started_ms, 0, &p0, 1), now);
            now += 250;
            if (r != s->want || agg_totals(agg)[AGG_REQ] != s->want_total)
                fail_msg("case '%s', step %zu: result %s (want %s), total %llu (want %llu)",
                         s_delta_cases[c].name, (size_t)(s - s_delta_cases[c].steps),
                         agg_result_name(r), agg_result_name(s->want),
                         (unsigned long long)agg_totals(agg)[AGG_REQ],
                         (unsigned long long)s->want_total);
            /* the only instance counts what the totals count */
            assert_int_equal(agg_instance_count(agg), 1);
            assert_int_equal(agg_instance_totals(agg, 0)[AGG_REQ], s->want_total);
            assert_int_equal(agg_instance_totals(agg, 0)[AGG_LAT0 + 4], s->want_total);
        }
        agg_destroy(&agg);
        assert_null(agg);
    }
}

/* Per instance: sums across proxies, new instances under a known proxy, recreated counters. */
static void test_instance_deltas(void **state)
{
    (void)state;
    agg_t *agg = s_agg(60, 6);
    fake_t f;
    uint64_t now = 50000;
    /* A: long-running, baseline; B: just started, counted whole */
    inst_spec_t a1[] = {{"production0", 100, 0, 0}, {"production1", 200, 0, 0}};
    agg_on_stats(agg, s_fake(&f, "A", 10, 90000, 1000, 0, a1, 2), now);
    inst_spec_t b1[] = {{"production1", 3, 0, 0}};
    agg_on_stats(agg, s_fake(&f, "B", 1, 90000, 89900, 2, b1, 1), now);
    assert_int_equal(agg_totals(agg)[AGG_REQ], 5); /* B's 3 + its 2 unrouted */
    assert_int_equal(agg_totals(agg)[AGG_5XX], 2);
    assert_int_equal(agg_instance_count(agg), 2);
    assert_int_equal(agg_instance_totals(agg, 0)[AGG_REQ], 0);
    assert_int_equal(agg_instance_totals(agg, 1)[AGG_REQ], 3);

    /* A grows, and production10 appears under A (new instance: counted whole) */
    inst_spec_t a2[] = {
        {"production0", 110, 0, 0}, {"production1", 205, 0, 0}, {"production10", 4, 1, 0}};
    assert_int_equal(agg_on_stats(agg, s_fake(&f, "A", 11, 90250, 1000, 0, a2, 3), now + 250),
                     AGG_DELTA);
    /* natural order: production10 after production1 */
    assert_int_equal(agg_instance_count(agg), 3);
    assert_string_equal(agg_instance_name(agg, 0), "production0");
    assert_string_equal(agg_instance_name(agg, 1), "production1");
    assert_string_equal(agg_instance_name(agg, 2), "production10");
    assert_int_equal(agg_instance_totals(agg, 0)[AGG_REQ], 10);
    assert_int_equal(agg_instance_totals(agg, 1)[AGG_REQ], 8);
    assert_int_equal(agg_instance_totals(agg, 2)[AGG_REQ], 4);
    assert_int_equal(agg_instance_totals(agg, 2)[AGG_5XX], 1);
    assert_int_equal(agg_totals(agg)[AGG_REQ], 5 + 19);

    /* production0 drops out of A's list and comes back with counters recreated (lower); the
     * proxy's totals stay cumulative all along */
    inst_spec_t a3[] = {{"production1", 205, 0, 0}, {"production10", 4, 1, 0}};
    s_fake(&f, "A", 12, 90500, 1000, 0, a3, 2);
    s_set_totals(&f, 319, 318, 1);
    assert_int_equal(agg_on_stats(agg, &f.st, now + 500), AGG_DELTA);
    inst_spec_t a4[] = {
        {"production0", 2, 0, 0}, {"production1", 205, 0, 0}, {"production10", 4, 1, 0}};
    s_fake(&f, "A", 13, 90750, 1000, 0, a4, 3);
    s_set_totals(&f, 321, 320, 1);
    assert_int_equal(agg_on_stats(agg, &f.st, now + 750), AGG_DELTA);
    assert_int_equal(agg_totals(agg)[AGG_REQ], 5 + 19 + 2);
    assert_int_equal(agg_instance_totals(agg, 0)[AGG_REQ], 12);

    /* production10's 4 requests built up since A's previous message (50.000), so its data
     * starts there: 4 over the 2 s to 52.000 */
    Tide__V1__MetricsSnapshot *snap = agg_snapshot(agg, 52000);
    assert_int_equal(snap->n_instances, 3);
    assert_string_equal(snap->instances[2]->name, "production10");
    s_near(snap->instances[2]->rps_stable, 2.0);
    s_near(snap->instances[2]->error_rate, 0.25);
    agg_snapshot_destroy(&snap);
    agg_destroy(&agg);
}

/* ---- rates, coverage, whole seconds ----------------------------------------------------- */

/* One proxy, one instance, `rps` requests per second in 4 messages a second (every 250 ms),
 * from time from_ms (inclusive) to to_ms (exclusive). Every message adds rps / 4 requests,
 * the first too: it is a proxy that started 250 ms before (recent: counted whole). */
typedef struct {
    uint64_t seq, requests, started_ms;
} feed_t;

static void s_feed(agg_t *agg, feed_t *fd, uint64_t from_ms, uint64_t to_ms, uint64_t rps)
{
    for (uint64_t t = from_ms; t < to_ms; t += 250) {
        fake_t f;
        fd->requests += rps / 4;
        inst_spec_t i0 = {"production0", fd->requests, 0, 3};
        if (fd->seq == 0)
            fd->started_ms = t - 250;
        agg_result_t r =
            agg_on_stats(agg, s_fake(&f, "P", ++fd->seq, t, fd->started_ms, 0, &i0, 1), t);
        assert_int_equal(r, fd->seq == 1 ? AGG_NEW_FULL : AGG_DELTA);
    }
}

static void test_steady_rate(void **state)
{
    (void)state;
    agg_t *agg = s_agg(60, 6);
    feed_t fd = {0};
    /* starts at 1000.000 s; 70 s of 100 rps: the stable window is full and must read exact
     * (this also checks the slot of the second being filled does not eat the oldest one) */
    s_feed(agg, &fd, 1000000, 1070101, 100); /* the last message lands in second 1070 */
    Tide__V1__MetricsSnapshot *snap = agg_snapshot(agg, 1070100);
    assert_non_null(snap);
    s_near(snap->rps_stable, 100);
    s_near(snap->rps_panic, 100);
    s_near(snap->rps_last, 100);
    s_near(snap->rate_2xx, 100);
    s_near(snap->rate_5xx, 0);
    assert_int_equal(snap->stable_covered_s, 60);
    assert_int_equal(snap->stable_window_s, 60);
    assert_int_equal(snap->panic_window_s, 6);
    assert_int_equal(snap->proxies, 1);
    assert_int_equal(snap->in_flight, 3);
    assert_int_equal(snap->n_instances, 1);
    assert_string_equal(snap->instances[0]->name, "production0");
    assert_string_equal(snap->instances[0]->addr, "127.0.0.1:9101");
    s_near(snap->instances[0]->rps_stable, 100);
    s_near(snap->instances[0]->rps_panic, 100);
    assert_int_equal(snap->instances[0]->in_flight, 3);
    /* every request in (0.75 ms, 1 ms]: median interpolates inside that bucket */
    assert_true(snap->p50_ms > 0.75 && snap->p50_ms <= 1.0);
    assert_true(snap->p99_ms > 0.75 && snap->p99_ms <= 1.0);
    assert_true(snap->instances[0]->p50_ms > 0.75);
    agg_snapshot_destroy(&snap);
    assert_null(snap);
    agg_destroy(&agg);
}

/* The second being filled is left out, so a snapshot late in a second is not diluted. */
static void test_partial_second_ignored(void **state)
{
    (void)state;
    static const uint64_t offsets[] = {0, 1, 250, 500, 999};
    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        agg_t *agg = s_agg(60, 6);
        feed_t fd = {0};
        s_feed(agg, &fd, 1000000, 1020000 + offsets[i] + 1, 200);
        Tide__V1__MetricsSnapshot *snap = agg_snapshot(agg, 1020000 + offsets[i]);
        s_near(snap->rps_panic, 200);
        s_near(snap->rps_last, 200);
        agg_snapshot_destroy(&snap);
        agg_destroy(&agg);
    }
}

/* A fresh start is divided by the time covered, not by the nominal 60 s. The feed's proxy
 * started 250 ms before its first message at 1000.000; deltas land in the second they are
 * received, so until the window is full the last 250 ms of data are still on their way and
 * the rate reads a little low (never diluted by the 60 s nominal window), then exact. */
static void test_coverage_fresh_start(void **state)
{
    (void)state;
    static const struct {
        uint64_t snap_ms;
        unsigned want_covered;
        double want_stable;
    } cases[] = {
        {1001000, 2, 100 / 1.25},    /* 999 (the first 25, spread) and 1000 (75) over 1.25 s */
        {1003500, 4, 300 / 3.25},    /* 25 + 75 + 100 + 100 */
        {1010000, 11, 1000 / 10.25}, /* 25 + 75 + 9 x 100 over 10.25 s */
        {1060000, 60, 5975 / 60.0},  /* 999 has left the 60 s window */
        {1061000, 60, 100},          /* full window: exact */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        agg_t *agg = s_agg(60, 6);
        feed_t fd = {0};
        s_feed(agg, &fd, 1000000, cases[i].snap_ms + 1, 100);
        Tide__V1__MetricsSnapshot *snap = agg_snapshot(agg, cases[i].snap_ms);
        if (snap->stable_covered_s != cases[i].want_covered ||
            fabs(snap->rps_stable - cases[i].want_stable) > 1e-6 || snap->rps_stable < 75)
            fail_msg("case %zu: covered %u (want %u), rps_stable %f (want %f)", i,
                     snap->stable_covered_s, cases[i].want_covered, snap->rps_stable,
                     cases[i].want_stable);
        agg_snapshot_destroy(&snap);
        agg_destroy(&agg);
    }
    /* before the first whole second: nothing to report */
    agg_t *agg = s_agg(60, 6);
    Tide__V1__MetricsSnapshot *snap = agg_snapshot(agg, 1000500);
    assert_int_equal(snap->stable_covered_s, 0);
    s_near(snap->rps_stable, 0);
    assert_int_equal(snap->proxies, 0);
    assert_int_equal(snap->n_instances, 0);
    agg_snapshot_destroy(&snap);
    agg_destroy(&agg);
}

/* A start in the middle of a second does not count that second in full. */
static void test_coverage_mid_second(void **state)
{
    (void)state;
    agg_t *agg = s_agg(60, 6);
    feed_t fd = {0};
    s_feed(agg, &fd, 1000500, 1004001, 100); /* the proxy started at 1000.250 */
    Tide__V1__MetricsSnapshot *snap = agg_snapshot(agg, 1004000);
    assert_int_equal(snap->stable_covered_s, 4);
    /* whole seconds 1000..1003 hold 350 requests over the 3.75 s since the proxy started,
     * not over 4 s (the last 250 ms arrive with the next message) */
    s_near(snap->rps_stable, 350 / 3.75);
    agg_snapshot_destroy(&snap);
    agg_destroy(&agg);
}

/* A proxy first heard seconds after it started (tide-metrics restarted, or its first messages
 * were lost while connecting): its counts are spread over the time since it started, not
 * read as a burst in one second. Below one second of data the rate divides by 1 s, never by
 * less, so a start reads low rather than as a spike that would make the scaler panic. */
static void test_first_message_spread(void **state)
{
    (void)state;
    static const struct {
        uint64_t started_ms, requests; /* first message at 1000950 (its clock and ours) */
        unsigned want_covered;
        double want_panic, want_last;
    } cases[] = {
        {997050, 390, 4, 390 / 3.95, 95}, /* 3.9 s: 95 + 100 + 100 + 95 */
        {1000700, 25, 1, 25, 25},         /* 0.25 s, all in second 1000: divided by 1 s */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        agg_t *agg = s_agg(60, 6);
        fake_t f;
        inst_spec_t i0 = {"production0", cases[i].requests, 0, 0};
        assert_int_equal(
            agg_on_stats(agg, s_fake(&f, "P", 1, 1000950, cases[i].started_ms, 0, &i0, 1), 1000950),
            AGG_NEW_FULL);
        Tide__V1__MetricsSnapshot *snap = agg_snapshot(agg, 1001000);
        if (snap->stable_covered_s != cases[i].want_covered ||
            fabs(snap->rps_panic - cases[i].want_panic) > 1e-6 ||
            fabs(snap->rps_last - cases[i].want_last) > 1e-6 ||
            fabs(snap->instances[0]->rps_panic - cases[i].want_panic) > 1e-6)
            fail_msg("case %zu: covered %u, rps_panic %f, rps_last %f, instance %f", i,
                     snap->stable_covered_s, snap->rps_panic, snap->rps_last,
                     snap->instances[0]->rps_panic);
        assert_int_equal(agg_totals(agg)[AGG_REQ], cases[i].requests);
        agg_snapshot_destroy(&snap);
        agg_destroy(&agg);
    }
}

/* Messages lost for 3 s: the next one carries 3 s of counts, spread over the gap rather than
 * read as a burst in one second. */
static void test_gap_spread(void **state)
{
    (void)state;
    agg_t *agg = s_agg(60, 6);
    feed_t fd = {0};
    s_feed(agg, &fd, 1000000, 1010000, 100); /* last message at 1009.750 */
    fake_t f;
    fd.requests += 325; /* 3.25 s at 100 rps */
    inst_spec_t i0 = {"production0", fd.requests, 0, 0};
    assert_int_equal(
        agg_on_stats(agg, s_fake(&f, "P", ++fd.seq, 1013000, fd.started_ms, 0, &i0, 1), 1013000),
        AGG_DELTA);
    s_feed(agg, &fd, 1013250, 1014001, 100);
    Tide__V1__MetricsSnapshot *snap = agg_snapshot(agg, 1014000);
    /* the gap's 325 went 25 to 1009 (which had 100 already) and 100 each to 1010..1012; 1013
     * holds 75 (its last 250 ms arrive at 1014.000), not 400 */
    s_near(snap->rps_last, 75);
    s_near(snap->rps_panic, (100 + 125 + 100 + 100 + 100 + 75) / 6.0);
    s_near(snap->instances[0]->rps_panic, snap->rps_panic);
    assert_int_equal(agg_totals(agg)[AGG_REQ], fd.requests);
    agg_snapshot_destroy(&snap);
    agg_destroy(&agg);
}

/* When traffic stops, rps_panic is 0 within panic_window_s + 1 s, whether the proxy keeps
 * reporting (counters flat) or goes silent. */
static void test_zero_load_quickly(void **state)
{
    (void)state;
    for (int silent = 0; silent <= 1; silent++) {
        agg_t *agg = s_agg(60, 6);
        feed_t fd = {0};
        s_feed(agg, &fd, 1000000, 1030000, 400); /* last delta lands in second 1029 */
        if (!silent)
            s_feed(agg, &fd, 1030000, 1036000, 0);
        Tide__V1__MetricsSnapshot *snap = agg_snapshot(agg, 1035999);
        /* 1029, with its 400 requests, is still inside the last 6 whole seconds */
        s_near(snap->rps_panic, 400.0 / 6);
        agg_snapshot_destroy(&snap);
        snap = agg_snapshot(agg, 1036000); /* 6 s + 1 s after the last second with traffic */
        s_near(snap->rps_panic, 0);
        s_near(snap->rps_last, 0);
        /* 30 s of 400 rps over the 36-37 s covered since the first message */
        assert_true(snap->rps_stable >= 400.0 * 30 / 37 && snap->rps_stable <= 400.0 * 30 / 36);
        assert_int_equal(snap->proxies, silent ? 0 : 1);
        agg_snapshot_destroy(&snap);
        agg_destroy(&agg);
    }
}

/* ---- stale and forgotten proxies -------------------------------------------------------- */

static void test_stale_proxies(void **state)
{
    (void)state;
    agg_config_t c = {.stable_window_s = 10,
                      .panic_window_s = 2,
                      .stale_after_ms = 2000,
                      .forget_after_ms = 30000};
    agg_t *agg = agg_new(&c);
    assert_non_null(agg);
    fake_t f;
    inst_spec_t a[] = {{"production0", 10, 0, 4}, {"production1", 10, 0, 1}};
    inst_spec_t b[] = {{"production0", 10, 0, 2}};
    agg_on_stats(agg, s_fake(&f, "A", 1, 5000, 4900, 0, a, 2), 100000);
    agg_on_stats(agg, s_fake(&f, "B", 1, 5000, 4900, 0, b, 1), 100000);
    agg_on_stats(agg, s_fake(&f, "B", 2, 6500, 4900, 0, b, 1), 101500);

    static const struct {
        uint64_t now;
        unsigned proxies, in_flight, in_flight_p0, senders, instances;
    } cases[] = {
        {100500, 2, 7, 6, 2, 2}, /* both live */
        {101999, 2, 7, 6, 2, 2}, /* A heard 1999 ms ago: still live */
        {102000, 1, 2, 2, 2, 2}, /* A stale: its in-flight no longer counts */
        {103500, 0, 0, 0, 2, 2}, /* both stale, not forgotten */
        {130000, 0, 0, 0, 2, 2}, /* A exactly at the forget limit */
        {130001, 0, 0, 0, 1, 1}, /* A forgotten, and production1 only A listed */
        {131501, 0, 0, 0, 0, 0}, /* B forgotten, and production0 B listed last */
        {200000, 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Tide__V1__MetricsSnapshot *snap = agg_snapshot(agg, cases[i].now);
        unsigned p0 = 0;
        for (size_t k = 0; k < snap->n_instances; k++)
            if (strcmp(snap->instances[k]->name, "production0") == 0)
                p0 = snap->instances[k]->in_flight;
        if (snap->proxies != cases[i].proxies || snap->in_flight != cases[i].in_flight ||
            p0 != cases[i].in_flight_p0 || agg_sender_count(agg) != cases[i].senders ||
            snap->n_instances != cases[i].instances)
            fail_msg("case %zu: proxies %u in_flight %u p0 %u senders %zu instances %zu", i,
                     snap->proxies, snap->in_flight, p0, agg_sender_count(agg), snap->n_instances);
        agg_snapshot_destroy(&snap);
    }
    /* a forgotten proxy that comes back long after it started is a baseline again */
    inst_spec_t a2[] = {{"production0", 50, 0, 0}};
    assert_int_equal(agg_on_stats(agg, s_fake(&f, "A", 9, 60000, 4900, 0, a2, 1), 200000),
                     AGG_NEW_BASELINE);
    agg_destroy(&agg);
}

/* Error rates and class rates over the panic window; the instance table has a ceiling. */
static void test_error_rate_and_limits(void **state)
{
    (void)state;
    agg_t *agg = s_agg(10, 2);
    fake_t f;
    inst_spec_t a0[] = {{"p0", 0, 0, 0}};
    agg_on_stats(agg, s_fake(&f, "A", 1, 5000, 5000, 0, a0, 1), 100000);
    inst_spec_t a1[] = {{"p0", 40, 10, 0}};
    agg_on_stats(agg, s_fake(&f, "A", 2, 5250, 5000, 6, a1, 1), 100250);
    Tide__V1__MetricsSnapshot *snap = agg_snapshot(agg, 101000);
    s_near(snap->rps_panic, 46);
    s_near(snap->rate_2xx, 30);
    s_near(snap->rate_5xx, 16);
    s_near(snap->instances[0]->error_rate, 10.0 / 40.0);
    agg_snapshot_destroy(&snap);

    /* bad configurations are refused */
    agg_config_t bad[] = {{0, 0, 1000, 0}, {10, 0, 1000, 0}, {10, 11, 1000, 0}, {3601, 6, 1, 0}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_null(agg_new(&bad[i]));
    agg_destroy(&agg);
    agg_destroy(&agg); /* NULL: nothing */
    agg_snapshot_destroy(NULL);
}

/* Too many proxies: the extra ones are rejected, the tracked ones keep working. */
static void test_sender_limit(void **state)
{
    (void)state;
    agg_t *agg = s_agg(10, 2);
    fake_t f;
    char name[32];
    for (int i = 0; i < AGG_MAX_SENDERS + 5; i++) {
        snprintf(name, sizeof name, "proxy/%d", i);
        agg_result_t r = agg_on_stats(agg, s_fake(&f, name, 1, 5000, 4900, 1, NULL, 0), 100000);
        assert_int_equal(r, i < AGG_MAX_SENDERS ? AGG_NEW_FULL : AGG_REJECTED);
    }
    assert_int_equal(agg_sender_count(agg), AGG_MAX_SENDERS);
    assert_int_equal(agg_totals(agg)[AGG_REQ], AGG_MAX_SENDERS);
    agg_destroy(&agg);
}

int main(void)
{
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deltas_and_restarts),
        cmocka_unit_test(test_instance_deltas),
        cmocka_unit_test(test_steady_rate),
        cmocka_unit_test(test_partial_second_ignored),
        cmocka_unit_test(test_coverage_fresh_start),
        cmocka_unit_test(test_coverage_mid_second),
        cmocka_unit_test(test_first_message_spread),
        cmocka_unit_test(test_gap_spread),
        cmocka_unit_test(test_zero_load_quickly),
        cmocka_unit_test(test_stale_proxies),
        cmocka_unit_test(test_error_rate_and_limits),
        cmocka_unit_test(test_sender_limit),
    };
    /* clang-format on */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
