/* test_prom.c - unit tests of metrics/prom.c: the Prometheus exposition is well formed and
 * carries the counters, the snapshot gauges and what the scaler and executor said. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prom.h"
#include "tide_msg.h"

/* One proxy that just started, two instances (one with an awkward name), some 5xx. */
static agg_t *s_agg_with_traffic(void)
{
    agg_config_t c = {.stable_window_s = 10, .panic_window_s = 2, .stale_after_ms = 2000};
    agg_t *agg = agg_new(&c);
    assert_non_null(agg);
    Tide__V1__Header h = TIDE__V1__HEADER__INIT;
    Tide__V1__ProxyStats st = TIDE__V1__PROXY_STATS__INIT;
    Tide__V1__Counters tot = TIDE__V1__COUNTERS__INIT, c0 = TIDE__V1__COUNTERS__INIT,
                       c1 = TIDE__V1__COUNTERS__INIT;
    Tide__V1__InstanceStats i0 = TIDE__V1__INSTANCE_STATS__INIT,
                            i1 = TIDE__V1__INSTANCE_STATS__INIT;
    Tide__V1__InstanceStats *insts[] = {&i0, &i1};
    uint64_t lat[HIST_BUCKETS] = {0}, l0[HIST_BUCKETS] = {0}, l1[HIST_BUCKETS] = {0};
    h.sender = "proxy/t";
    h.seq = 1;
    h.ts_ms = 5000;
    st.header = &h;
    st.started_ms = 5000;
    st.totals = &tot;
    st.instances = insts;
    st.n_instances = 2;
    st.latency_buckets = lat;
    st.n_latency_buckets = HIST_BUCKETS;
    st.in_flight = 3;
    i0.name = "production0";
    i0.addr = "127.0.0.1:9101";
    i0.counters = &c0;
    i0.in_flight = 2;
    i0.latency_buckets = l0;
    i0.n_latency_buckets = HIST_BUCKETS;
    i1.name = "we\"ird\\na\nme";
    i1.counters = &c1;
    i1.in_flight = 1;
    i1.latency_buckets = l1;
    i1.n_latency_buckets = HIST_BUCKETS;
    c0.requests = 7;
    c0.status_2xx = 6;
    c0.status_5xx = 1;
    c0.upstream_errors = 1;
    l0[0] = 7;
    c1.requests = 3;
    c1.status_4xx = 3;
    l1[HIST_BUCKETS - 1] = 3;
    tot.requests = 12;
    tot.status_2xx = 6;
    tot.status_4xx = 3;
    tot.status_5xx = 3; /* two 503s nobody served */
    tot.upstream_errors = 1;
    tot.bytes_in = 1000;
    tot.bytes_out = 5000;
    lat[0] = 9;
    lat[5] = 0;
    lat[HIST_BUCKETS - 1] = 3;
    assert_int_equal(agg_on_stats(agg, &st, 100000), AGG_NEW_FULL);
    return agg;
}

/* Checks the text is valid exposition: every sample line is name[{labels}] value, every family
 * has one TYPE line before its samples, and histogram buckets never decrease. */
static void s_check_format(const char *text)
{
    char typed[128][64];
    size_t n_typed = 0;
    char *copy = strdup(text);
    uint64_t last_bucket = 0;
    for (char *save = NULL, *line = strtok_r(copy, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[64];
            assert_int_equal(sscanf(line + 7, "%63s", name), 1);
            for (size_t i = 0; i < n_typed; i++)
                if (strcmp(typed[i], name) == 0)
                    fail_msg("family %s typed twice", name);
            snprintf(typed[n_typed++], sizeof typed[0], "%s", name);
            last_bucket = 0;
            continue;
        }
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        assert_true(line[0] != '#');
        size_t k = 0;
        while (isalnum((unsigned char)line[k]) || line[k] == '_')
            k++;
        assert_true(k > 0);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)k, line);
        /* the sample belongs to the last family typed (histograms add suffixes) */
        assert_true(n_typed > 0);
        assert_true(strncmp(name, typed[n_typed - 1], strlen(typed[n_typed - 1])) == 0);
        const char *rest = line + k;
        if (*rest == '{') {
            bool in_str = false;
            rest++;
            while (*rest && (in_str || *rest != '}')) {
                if (in_str && *rest == '\\')
                    rest++;
                else if (*rest == '"')
                    in_str = !in_str;
                rest++;
            }
            assert_int_equal(*rest, '}');
            rest++;
        }
        assert_int_equal(*rest, ' ');
        char *end;
        double v = strtod(rest + 1, &end);
        if (*end != '\0')
            fail_msg("bad value in line: %s", line);
        if (strstr(line, "_bucket{")) {
            assert_true((uint64_t)v >= last_bucket);
            last_bucket = (uint64_t)v;
        }
    }
    free(copy);
}

static void test_render_counters_and_snapshot(void **state)
{
    (void)state;
    agg_t *agg = s_agg_with_traffic();
    Tide__V1__MetricsSnapshot *snap = agg_snapshot(agg, 101000);
    bus_gauges_t g = {0};
    size_t len = 0;
    char *text = prom_render(agg, snap, &g, 4, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    s_check_format(text);
    static const char *want[] = {
        "# TYPE tide_requests_total counter\n",
        "tide_requests_total{instance=\"production0\"} 7\n",
        "tide_requests_total{instance=\"we\\\"ird\\\\na\\nme\"} 3\n",
        "tide_responses_total{instance=\"production0\",class=\"5xx\"} 1\n",
        "tide_upstream_errors_total{instance=\"production0\"} 1\n",
        "tide_proxy_requests_total 12\n",
        "tide_proxy_responses_total{class=\"5xx\"} 3\n",
        "tide_proxy_bytes_total{direction=\"out\"} 5000\n",
        "# TYPE tide_latency_seconds histogram\n",
        "tide_latency_seconds_bucket{le=\"0.0001\"} 9\n",
        "tide_latency_seconds_bucket{le=\"0.00025\"} 9\n",
        "tide_latency_seconds_bucket{le=\"60\"} 9\n",
        "tide_latency_seconds_bucket{le=\"+Inf\"} 12\n",
        "tide_latency_seconds_count 12\n",
        "tide_rps{window=\"stable\"} 12\n",
        "tide_rps{window=\"panic\"} 12\n",
        "tide_instance_rps{instance=\"production0\",window=\"panic\"} 7\n",
        "tide_instance_in_flight{instance=\"production0\"} 2\n",
        "tide_in_flight 3\n",
        "tide_proxies 1\n",
        "tide_stable_covered_seconds 1\n",
        "tide_dropped_frames_total 4\n",
        "tide_jobs_total{kind=\"scale_up\",result=\"succeeded\"} 0\n",
        "tide_jobs_total{kind=\"list\",result=\"failed\"} 0\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text, want[i]))
            fail_msg("missing %s in:\n%s", want[i], text);
    /* the scaler has said nothing: no made-up gauges */
    assert_null(strstr(text, "tide_scaler_state{"));
    assert_null(strstr(text, "tide_instances "));
    assert_null(strstr(text, "kind=\"unknown\""));
    free(text);

    /* no snapshot yet: counters only, still valid */
    text = prom_render(agg, NULL, &g, 0, &len);
    assert_non_null(text);
    s_check_format(text);
    assert_null(strstr(text, "tide_rps"));
    free(text);
    agg_snapshot_destroy(&snap);
    agg_destroy(&agg);
}

static void test_bus_events(void **state)
{
    (void)state;
    bus_gauges_t g = {0};
    Tide__V1__Header h = TIDE__V1__HEADER__INIT;
    Tide__V1__ScalerState ss = TIDE__V1__SCALER_STATE__INIT;
    ss.header = &h;
    ss.state = TIDE__V1__STATE__STATE_BUSY;
    ss.current = 2;
    ss.desired = 4;
    prom_on_event(&g, TOPIC_SCALER_STATE, &ss.base);
    Tide__V1__PoolEntry e0 = TIDE__V1__POOL_ENTRY__INIT, e1 = TIDE__V1__POOL_ENTRY__INIT;
    Tide__V1__PoolEntry *entries[] = {&e0, &e1};
    char *draining[] = {"production2"};
    Tide__V1__ScalerPool sp = TIDE__V1__SCALER_POOL__INIT;
    sp.header = &h;
    sp.version = 17;
    sp.entries = entries;
    sp.n_entries = 2;
    sp.draining = draining;
    sp.n_draining = 1;
    prom_on_event(&g, TOPIC_SCALER_POOL, &sp.base);

    /* jobs: (type, kind, state) -> counted where */
    static const struct {
        int type, kind, state;
    } jobs[] = {
        {TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_STARTED, TIDE__V1__JOB_KIND__JOB_SCALE_UP, 1},
        {TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_OUTPUT, TIDE__V1__JOB_KIND__JOB_SCALE_UP, 1},
        {TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_FINISHED, TIDE__V1__JOB_KIND__JOB_SCALE_UP, 2},
        {TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_FINISHED, TIDE__V1__JOB_KIND__JOB_SCALE_UP, 2},
        {TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_FINISHED, TIDE__V1__JOB_KIND__JOB_SCALE_DOWN, 3},
    };
    for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
        Tide__V1__JobRecord rec = TIDE__V1__JOB_RECORD__INIT;
        Tide__V1__JobEvent ev = TIDE__V1__JOB_EVENT__INIT;
        rec.kind = jobs[i].kind;
        rec.state = jobs[i].state;
        ev.header = &h;
        ev.job_id = "j";
        ev.type = jobs[i].type;
        ev.job = &rec;
        prom_on_event(&g, TOPIC_EXEC_JOB, &ev.base);
    }
    prom_on_event(&g, TOPIC_STATS, &ss.base); /* other topics: ignored */

    agg_config_t c = {.stable_window_s = 10, .panic_window_s = 2, .stale_after_ms = 2000};
    agg_t *agg = agg_new(&c);
    size_t len;
    char *text = prom_render(agg, NULL, &g, 0, &len);
    assert_non_null(text);
    s_check_format(text);
    static const char *want[] = {
        "tide_instances 2\n",
        "tide_instances_desired 4\n",
        "tide_scaler_state{state=\"IDLE\"} 0\n",
        "tide_scaler_state{state=\"BUSY\"} 1\n",
        "tide_scaler_paused 0\n",
        "tide_pool_version 17\n",
        "tide_draining_instances 1\n",
        "tide_scaler_transitions_total 1\n",
        "tide_jobs_started_total{kind=\"scale_up\"} 1\n",
        "tide_jobs_total{kind=\"scale_up\",result=\"succeeded\"} 2\n",
        "tide_jobs_total{kind=\"scale_down\",result=\"failed\"} 1\n",
        "tide_jobs_total{kind=\"profile\",result=\"succeeded\"} 0\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text, want[i]))
            fail_msg("missing %s in:\n%s", want[i], text);
    free(text);
    agg_destroy(&agg);
}

int main(void)
{
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_counters_and_snapshot),
        cmocka_unit_test(test_bus_events),
    };
    /* clang-format on */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
