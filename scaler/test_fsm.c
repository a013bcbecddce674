/* test_fsm.c - unit tests of fsm.c: every transition, every ignored event, reconcile, backoff,
 * pause, scale, bounds, drain. The machine is pure, so each test drives it with events and a
 * made-up clock and checks the actions it answers with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm.h"
#include "test_fixtures.h"

#define IDLE  TIDE__V1__STATE__STATE_IDLE
#define BUSY  TIDE__V1__STATE__STATE_BUSY
#define READY TIDE__V1__STATE__STATE_READY
#define UP    TIDE__V1__STATE__STATE_UP

#define K_UP     TIDE__V1__JOB_KIND__JOB_SCALE_UP
#define K_DOWN   TIDE__V1__JOB_KIND__JOB_SCALE_DOWN
#define K_LIST   TIDE__V1__JOB_KIND__JOB_LIST
#define J_OK     TIDE__V1__JOB_STATE__JOB_SUCCEEDED
#define J_FAILED TIDE__V1__JOB_STATE__JOB_FAILED
#define J_RUN    TIDE__V1__JOB_STATE__JOB_RUNNING

static fsm_config_t s_cfg(void)
{
    fsm_config_t c;
    memset(&c, 0, sizeof c);
    c.policy = test_policy_cfg(POLICY_TARGET);
    c.settle_ms = 2000;
    c.job_deadline_ms = 10000;
    c.deadline_grace_ms = 5000;
    c.poll_ms = 2000;
    c.backoff_initial_ms = 1000;
    c.backoff_max_ms = 8000;
    c.drain_deadline_ms = 30000;
    c.stale_ms = 3000;
    c.reconcile_adopt = true;
    snprintf(c.job_prefix, sizeof c.job_prefix, "test");
    snprintf(c.name_prefix, sizeof c.name_prefix, "production");
    return c;
}

/* ---- driving helpers ---------------------------------------------------------------------- */

/* Finishes the job in flight with state; results list `running` indices (ok = healthy). */
static void s_finish(fsm_t *f, Tide__V1__JobState state, const int *running, size_t n, uint64_t now,
                     fsm_actions_t *acts)
{
    const fsm_job_t *job = fsm_job(f);
    assert_non_null(job);
    fsm_result_t res[64];
    for (size_t i = 0; i < n; i++)
        res[i] = (fsm_result_t){.index = running[i], .ok = true, .running = true};
    char id[FSM_JOB_ID_MAX];
    snprintf(id, sizeof id, "%s", job->id);
    fsm_job_result_t r = {
        .job_id = id, .kind = job->kind, .state = state, .results = res, .n_results = n};
    fsm_on_job_result(f, &r, now, acts);
}

static void s_ok(fsm_t *f, uint64_t now, fsm_actions_t *acts)
{
    s_finish(f, J_OK, NULL, 0, now, acts);
}

/* A stop of instances already out of the pool drains first too: it asks for a pool write, and
 * the job goes out once that write is done and the proxies are drained. */
static void s_drain_then_send(fsm_t *f, fsm_actions_t *a, uint64_t now)
{
    assert_true(a->pool_changed);
    assert_false(a->send_job);
    assert_int_equal(fsm_job(f)->kind, TIDE__V1__JOB_KIND__JOB_SCALE_DOWN);
    fsm_on_pool_written(f, 100, now);
    fsm_on_tick(f, now, true, a);
    assert_true(a->send_job);
}

static bool s_has_trans(const fsm_actions_t *a, Tide__V1__State from, Tide__V1__State to)
{
    for (size_t i = 0; i < a->n_trans; i++)
        if (a->trans[i].from == from && a->trans[i].to == to)
            return true;
    return false;
}

static bool s_quiet(const fsm_actions_t *a)
{
    return !a->send_job && !a->poll_job && !a->pool_changed && a->n_trans == 0;
}

static fsm_record_t *s_record(const int *pool, size_t n)
{
    fsm_record_t *rec = calloc(1, sizeof *rec);
    for (size_t i = 0; i < n; i++)
        rec->pool[rec->n_pool++] = (uint16_t)pool[i];
    rec->current = rec->n_pool;
    rec->pool_version = 7;
    return rec;
}

/* A machine restored with `n` instances in the pool (production0..n-1) and reconciled (the
 * list shows exactly those running), at time 1000, with no metrics yet. */
static fsm_t *s_running(fsm_config_t cfg, uint32_t n)
{
    fsm_t *f = fsm_new(&cfg);
    int idx[64];
    for (uint32_t i = 0; i < n; i++)
        idx[i] = (int)i;
    fsm_record_t *rec = s_record(idx, n);
    fsm_actions_t a;
    fsm_restore(f, rec, 1000, &a);
    free(rec);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    s_finish(f, J_OK, idx, n, 1000, &a);
    fsm_on_pool_written(f, 8, 1000);
    return f;
}

/* A running machine at UP with n instances and a steady load that wants exactly n. */
static fsm_t *s_up(uint32_t n, uint64_t *now)
{
    fsm_t *f = s_running(s_cfg(), n);
    fsm_actions_t a;
    *now = 2000;
    fsm_on_snapshot(f, 100.0 * n, 100.0 * n, 60, *now, &a);
    assert_int_equal(fsm_state(f), n <= 1 ? IDLE : UP);
    assert_false(a.send_job);
    return f;
}

/* From UP/IDLE with `from` instances, a load that wants `to` (> from): BUSY with a job. */
static fsm_t *s_busy_up(uint32_t from, uint32_t to, uint64_t *now)
{
    fsm_t *f = s_up(from, now);
    fsm_actions_t a;
    *now += 1000;
    fsm_on_snapshot(f, 100.0 * to - 1, 100.0 * from, 60, *now, &a);
    assert_int_equal(fsm_state(f), BUSY);
    assert_true(a.send_job);
    return f;
}

/* ---- reconcile ---------------------------------------------------------------------------- */

static void test_restore_empty_lists_first(void **state)
{
    (void)state;
    fsm_config_t cfg = s_cfg();
    fsm_t *f = fsm_new(&cfg);
    assert_false(fsm_restored(f));
    fsm_actions_t a;
    /* metrics before the restore are remembered but nothing happens */
    fsm_on_snapshot(f, 900, 900, 60, 500, &a);
    assert_true(s_quiet(&a));
    fsm_on_tick(f, 600, false, &a);
    assert_true(s_quiet(&a));

    fsm_record_t *rec = s_record(NULL, 0);
    fsm_restore(f, rec, 1000, &a);
    free(rec);
    assert_true(fsm_restored(f));
    assert_int_equal(fsm_state(f), BUSY);
    assert_true(a.send_job && a.persist);
    assert_false(a.poll_job);
    assert_true(s_has_trans(&a, IDLE, BUSY));
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    assert_string_equal(fsm_job(f)->id, "test-1");
    fsm_status_t st;
    fsm_status(f, &st);
    assert_true(st.reconciling);

    /* while listing, even a big load starts nothing */
    fsm_on_snapshot(f, 900, 900, 60, 1100, &a);
    assert_false(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_LIST);

    /* an empty list, no metrics fresh... the load above is: min 1 is reached first anyway */
    s_finish(f, J_OK, NULL, 0, 1200, &a);
    assert_true(s_has_trans(&a, BUSY, IDLE)); /* reconciled: 0 instances */
    assert_true(a.pool_changed);              /* instances and pool agree from now on */
    assert_true(s_has_trans(&a, IDLE, BUSY)); /* and the policy scales up right away */
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_UP);
    fsm_destroy(&f);
    assert_null(f);
    fsm_destroy(&f);
}

static void test_restore_without_metrics_raises_to_min(void **state)
{
    (void)state;
    fsm_config_t cfg = s_cfg();
    cfg.policy.min = 2;
    fsm_t *f = fsm_new(&cfg);
    fsm_actions_t a;
    fsm_record_t *rec = s_record(NULL, 0);
    fsm_restore(f, rec, 1000, &a);
    free(rec);
    s_finish(f, J_OK, NULL, 0, 1000, &a);
    const fsm_job_t *job = fsm_job(f);
    assert_non_null(job);
    assert_int_equal(job->kind, K_UP);
    assert_int_equal(job->n, 2);
    assert_int_equal(job->idx[0], 0);
    assert_int_equal(job->idx[1], 1);
    fsm_destroy(&f);
}

static void test_restore_job_in_flight_succeeded(void **state)
{
    (void)state;
    fsm_config_t cfg = s_cfg();
    fsm_t *f = fsm_new(&cfg);
    int pool[] = {0};
    fsm_record_t *rec = s_record(pool, 1);
    rec->state = BUSY;
    snprintf(rec->job_id, sizeof rec->job_id, "old-run-3");
    fsm_actions_t a;
    fsm_restore(f, rec, 1000, &a);
    free(rec);
    assert_true(a.poll_job);
    assert_false(a.send_job);
    assert_string_equal(fsm_job(f)->id, "old-run-3");
    /* polled every poll_ms until it answers */
    fsm_on_tick(f, 2000, false, &a);
    assert_false(a.poll_job);
    fsm_on_tick(f, 3000, false, &a);
    assert_true(a.poll_job);
    /* a running record changes nothing */
    fsm_job_result_t running = {.job_id = "old-run-3", .kind = K_UP, .state = J_RUN};
    fsm_on_job_result(f, &running, 3100, &a);
    assert_true(s_quiet(&a));
    /* it succeeded: production1 joins the pool, then the list */
    int inst[] = {1};
    fsm_job_result_t done = {
        .job_id = "old-run-3", .kind = K_UP, .state = J_OK, .instances = inst, .n_instances = 1};
    fsm_on_job_result(f, &done, 3200, &a);
    assert_true(a.pool_changed);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    assert_int_equal(fsm_current(f), 2);
    int running_now[] = {0, 1};
    s_finish(f, J_OK, running_now, 2, 3300, &a);
    assert_int_equal(fsm_state(f), UP);
    assert_int_equal(fsm_current(f), 2);
    fsm_destroy(&f);
}

static void test_restore_job_unknown_goes_to_list(void **state)
{
    (void)state;
    fsm_config_t cfg = s_cfg();
    fsm_t *f = fsm_new(&cfg);
    int pool[] = {0, 1};
    fsm_record_t *rec = s_record(pool, 2);
    rec->state = BUSY;
    snprintf(rec->job_id, sizeof rec->job_id, "old-run-9");
    fsm_actions_t a;
    fsm_restore(f, rec, 1000, &a);
    free(rec);
    fsm_on_job_error(f, "other-job", FSM_ERR_UNKNOWN_JOB, "unknown job", 1100, &a);
    assert_true(s_quiet(&a)); /* not about our job */
    fsm_on_job_error(f, "old-run-9", FSM_ERR_UNKNOWN_JOB, "unknown job", 1200, &a);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    fsm_destroy(&f);

    /* and when the executor never answers about it, the deadline moves on to the list */
    f = fsm_new(&cfg);
    rec = s_record(pool, 2);
    rec->state = BUSY;
    snprintf(rec->job_id, sizeof rec->job_id, "old-run-9");
    fsm_restore(f, rec, 1000, &a);
    free(rec);
    fsm_on_tick(f, 1000 + 15000, false, &a);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    fsm_destroy(&f);
}

typedef struct {
    const char *what;
    bool adopt;
    int pool[8];
    size_t n_pool;
    int stopping[4];
    size_t n_stopping;
    int running[8];
    bool healthy[8];
    size_t n_running;
    uint32_t want_current;
    int want_in_pool[8]; /* -1 ends */
    int want_stop[8];    /* -1 ends: the stop job that follows */
} list_case_t;

static const list_case_t s_list_cases[] = {
    {"pool matches", true, {0, 1}, 2, {0}, 0, {0, 1}, {1, 1}, 2, 2, {0, 1, -1}, {-1}},
    {"pool entry not running is removed",
     true,
     {0, 1, 2},
     3,
     {0},
     0,
     {0, 2},
     {1, 1},
     2,
     2,
     {0, 2, -1},
     {-1}},
    {"healthy stray adopted", true, {0}, 1, {0}, 0, {0, 1}, {1, 1}, 2, 2, {0, 1, -1}, {-1}},
    {"unhealthy stray stopped", true, {0}, 1, {0}, 0, {0, 1}, {1, 0}, 2, 1, {0, -1}, {1, -1}},
    {"stop policy stops strays",
     false,
     {0},
     1,
     {0},
     0,
     {0, 1, 2},
     {1, 1, 1},
     3,
     1,
     {0, -1},
     {1, 2, -1}},
    {"a draining instance is stopped, not adopted",
     true,
     {0},
     1,
     {1},
     1,
     {0, 1},
     {1, 1},
     2,
     1,
     {0, -1},
     {1, -1}},
    {"a healthy stray past scaler.max is stopped, not adopted",
     true,
     {0},
     1,
     {0},
     0,
     {0, 12},
     {1, 1},
     2,
     1,
     {0, -1},
     {12, -1}},
    {"a stop-list entry that is gone is forgotten",
     true,
     {0},
     1,
     {3},
     1,
     {0},
     {1},
     1,
     1,
     {0, -1},
     {-1}},
};

static void test_list_reconcile_table(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof s_list_cases / sizeof s_list_cases[0]; c++) {
        const list_case_t *lc = &s_list_cases[c];
        fsm_config_t cfg = s_cfg();
        cfg.reconcile_adopt = lc->adopt;
        fsm_t *f = fsm_new(&cfg);
        fsm_record_t *rec = s_record(lc->pool, lc->n_pool);
        for (size_t i = 0; i < lc->n_stopping; i++)
            rec->stopping[rec->n_stopping++] = (uint16_t)lc->stopping[i];
        fsm_actions_t a;
        fsm_restore(f, rec, 1000, &a);
        free(rec);
        fsm_result_t res[8];
        for (size_t i = 0; i < lc->n_running; i++)
            res[i] = (fsm_result_t){lc->running[i], lc->healthy[i], true, false};
        fsm_job_result_t r = {.job_id = fsm_job(f)->id,
                              .kind = K_LIST,
                              .state = J_OK,
                              .results = res,
                              .n_results = lc->n_running};
        char id[FSM_JOB_ID_MAX];
        snprintf(id, sizeof id, "%s", r.job_id);
        r.job_id = id;
        fsm_on_job_result(f, &r, 1100, &a);
        if (fsm_current(f) != lc->want_current)
            fail_msg("%s: current %u, want %u", lc->what, fsm_current(f), lc->want_current);
        assert_true(a.pool_changed);
        for (int i = 0; lc->want_in_pool[i] >= 0; i++)
            if (!fsm_in_pool(f, lc->want_in_pool[i]))
                fail_msg("%s: %d not in pool", lc->what, lc->want_in_pool[i]);
        const fsm_job_t *job = fsm_job(f);
        if (lc->want_stop[0] < 0) {
            if (job && job->kind == K_DOWN)
                fail_msg("%s: unexpected stop job", lc->what);
        } else {
            if (!job || job->kind != K_DOWN || a.send_job)
                fail_msg("%s: no stop job (drained first)", lc->what);
            for (uint32_t i = 0; i < job->n; i++)
                if (job->idx[i] != lc->want_stop[i])
                    fail_msg("%s: stop job[%u] = %u, want %d", lc->what, i, job->idx[i],
                             lc->want_stop[i]);
            assert_int_equal(lc->want_stop[job->n], -1);
        }
        fsm_destroy(&f);
    }
}

static void test_list_failure_retried_with_backoff(void **state)
{
    (void)state;
    fsm_config_t cfg = s_cfg();
    fsm_t *f = fsm_new(&cfg);
    fsm_record_t *rec = s_record(NULL, 0);
    fsm_actions_t a;
    fsm_restore(f, rec, 1000, &a);
    free(rec);
    char first[FSM_JOB_ID_MAX];
    snprintf(first, sizeof first, "%s", fsm_job(f)->id);
    fsm_on_job_error(f, first, FSM_ERR_UNREACHABLE, "no reply", 1100, &a);
    assert_int_equal(fsm_state(f), BUSY);
    assert_null(fsm_job(f));
    fsm_status_t st;
    fsm_status(f, &st);
    assert_int_equal(st.failures, 1);
    assert_int_equal(st.backoff_until_ms, 2100);
    /* no scaling blind: a big load starts nothing while reconciling */
    fsm_on_snapshot(f, 900, 900, 60, 1500, &a);
    assert_false(a.send_job);
    fsm_on_tick(f, 2000, false, &a);
    assert_false(a.send_job);
    fsm_on_tick(f, 2100, false, &a);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    assert_string_not_equal(fsm_job(f)->id, first);
    /* fails again: backoff doubles */
    s_finish(f, J_FAILED, NULL, 0, 2200, &a);
    fsm_status(f, &st);
    assert_int_equal(st.backoff_until_ms, 2200 + 2000);
    fsm_destroy(&f);
}

/* ---- scale up ----------------------------------------------------------------------------- */

static void test_scale_up_to_ready_to_up(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up(1, &now);
    assert_int_equal(fsm_state(f), IDLE);
    fsm_actions_t a;
    now += 1000;
    fsm_on_snapshot(f, 350, 200, 60, now, &a); /* wants 4 */
    assert_true(s_has_trans(&a, IDLE, BUSY));
    assert_true(a.send_job && a.persist && a.pub_decision);
    const fsm_job_t *job = fsm_job(f);
    assert_int_equal(job->kind, K_UP);
    assert_int_equal(job->n, 3);
    assert_int_equal(job->idx[0], 1);
    assert_int_equal(job->idx[2], 3);
    assert_int_equal(job->deadline_ms, 10000);
    fsm_record_t rec;
    fsm_record(f, &rec);
    assert_int_equal(rec.state, BUSY);
    assert_string_equal(rec.job_id, job->id); /* persisted before it is sent */

    s_ok(f, now + 500, &a);
    assert_true(s_has_trans(&a, BUSY, READY));
    assert_true(a.pool_changed && a.persist);
    assert_int_equal(fsm_current(f), 4);
    fsm_on_tick(f, now + 500 + 1999, false, &a);
    assert_int_equal(fsm_state(f), READY);
    fsm_on_tick(f, now + 500 + 2000, false, &a);
    assert_true(s_has_trans(&a, READY, UP));
    assert_int_equal(fsm_state(f), UP);
    fsm_destroy(&f);
}

static void test_ready_goes_idle_when_at_min(void **state)
{
    (void)state;
    /* from 0 to min=1 (a first start): after settling it is at the minimum */
    fsm_config_t cfg = s_cfg();
    fsm_t *f = fsm_new(&cfg);
    fsm_record_t *rec = s_record(NULL, 0);
    fsm_actions_t a;
    fsm_restore(f, rec, 1000, &a);
    free(rec);
    s_ok(f, 1000, &a); /* empty list -> scale up to 1 */
    s_ok(f, 1500, &a);
    assert_int_equal(fsm_state(f), READY);
    fsm_on_tick(f, 3500, false, &a);
    assert_true(s_has_trans(&a, READY, IDLE));
    fsm_destroy(&f);
}

typedef enum { EV_RESULT, EV_SNAPSHOT, EV_ERROR, EV_TICK, EV_WRITTEN } ev_kind_t;

typedef struct {
    const char *what;
    ev_kind_t kind;
    const char *job_id; /* NULL: the job in flight */
    Tide__V1__JobState job_state;
    double rps;
    uint64_t dt; /* ms after the fixture's time */
} ignored_t;

static void s_fire(fsm_t *f, const ignored_t *ev, uint64_t now, fsm_actions_t *a)
{
    char id[FSM_JOB_ID_MAX] = "nobody-1";
    if (!ev->job_id && fsm_job(f))
        snprintf(id, sizeof id, "%s", fsm_job(f)->id);
    else if (ev->job_id)
        snprintf(id, sizeof id, "%s", ev->job_id);
    switch (ev->kind) {
    case EV_RESULT: {
        fsm_job_result_t r = {.job_id = id, .kind = K_UP, .state = ev->job_state};
        fsm_on_job_result(f, &r, now + ev->dt, a);
        break;
    }
    case EV_SNAPSHOT:
        fsm_on_snapshot(f, ev->rps, ev->rps, 60, now + ev->dt, a);
        break;
    case EV_ERROR:
        fsm_on_job_error(f, id, FSM_ERR_REFUSED, "x", now + ev->dt, a);
        break;
    case EV_TICK:
        fsm_on_tick(f, now + ev->dt, true, a);
        break;
    case EV_WRITTEN:
        fsm_on_pool_written(f, 99, now + ev->dt);
        memset(a, 0, sizeof *a);
        break;
    }
}

static const ignored_t s_busy_ignored[] = {
    {"FINISHED for an unknown job id", EV_RESULT, "someone-else-7", J_OK, 0, 10},
    {"FAILED for an unknown job id", EV_RESULT, "someone-else-7", J_FAILED, 0, 10},
    {"a RUNNING record for our job", EV_RESULT, NULL, J_RUN, 0, 10},
    {"a snapshot wanting more", EV_SNAPSHOT, NULL, 0, 5000, 10},
    {"a snapshot wanting fewer", EV_SNAPSHOT, NULL, 0, 0, 10},
    {"a refusal for another job", EV_ERROR, "someone-else-7", 0, 0, 10},
    {"a tick before the poll time", EV_TICK, NULL, 0, 0, 100},
    {"a pool write that is not a drain", EV_WRITTEN, NULL, 0, 0, 10},
};

static void test_busy_ignores(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_busy_ignored / sizeof s_busy_ignored[0]; i++) {
        uint64_t now;
        fsm_t *f = s_busy_up(1, 3, &now);
        char id[FSM_JOB_ID_MAX];
        snprintf(id, sizeof id, "%s", fsm_job(f)->id);
        fsm_actions_t a;
        s_fire(f, &s_busy_ignored[i], now, &a);
        if (!s_quiet(&a) || fsm_state(f) != BUSY || strcmp(fsm_job(f)->id, id) != 0)
            fail_msg("BUSY should ignore: %s", s_busy_ignored[i].what);
        fsm_destroy(&f);
    }
}

static const ignored_t s_ready_ignored[] = {
    {"the same FINISHED again (event after a status reply)", EV_RESULT, "test-2", J_OK, 0, 10},
    {"a snapshot wanting more", EV_SNAPSHOT, NULL, 0, 5000, 10},
    {"a snapshot wanting fewer", EV_SNAPSHOT, NULL, 0, 0, 10},
    {"a tick before the settle time", EV_TICK, NULL, 0, 0, 1999},
};

static void test_ready_ignores(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_ready_ignored / sizeof s_ready_ignored[0]; i++) {
        uint64_t now;
        fsm_t *f = s_busy_up(1, 3, &now);
        assert_string_equal(fsm_job(f)->id, "test-2");
        fsm_actions_t a;
        s_ok(f, now, &a);
        assert_int_equal(fsm_state(f), READY);
        s_fire(f, &s_ready_ignored[i], now, &a);
        if (!s_quiet(&a) || fsm_state(f) != READY || fsm_current(f) != 3)
            fail_msg("READY should ignore: %s", s_ready_ignored[i].what);
        fsm_destroy(&f);
    }
}

static const ignored_t s_stable_ignored[] = {
    {"a FINISHED for no job", EV_RESULT, "test-1", J_OK, 0, 10},
    {"a refusal for no job", EV_ERROR, "test-9", 0, 0, 10},
    {"a snapshot wanting what we have", EV_SNAPSHOT, NULL, 0, 200, 10},
    {"a tick", EV_TICK, NULL, 0, 0, 10},
};

static void test_stable_ignores(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_stable_ignored / sizeof s_stable_ignored[0]; i++) {
        uint64_t now;
        fsm_t *f = s_up(2, &now);
        fsm_actions_t a;
        s_fire(f, &s_stable_ignored[i], now, &a);
        if (!s_quiet(&a) || fsm_state(f) != UP || fsm_current(f) != 2)
            fail_msg("UP should ignore: %s", s_stable_ignored[i].what);
        fsm_destroy(&f);
    }
}

static void test_scale_up_failed_backoff_and_retry(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_busy_up(2, 4, &now);
    fsm_actions_t a;
    char first[FSM_JOB_ID_MAX];
    snprintf(first, sizeof first, "%s", fsm_job(f)->id);
    s_finish(f, J_FAILED, NULL, 0, now + 100, &a);
    assert_true(s_has_trans(&a, BUSY, UP)); /* back to the previous stable state */
    assert_false(a.send_job);
    assert_false(a.pool_changed);
    assert_int_equal(fsm_current(f), 2);
    fsm_status_t st;
    fsm_status(f, &st);
    assert_int_equal(st.failures, 1);
    assert_int_equal(st.backoff_until_ms, now + 100 + 1000);
    assert_true(strstr(st.last_error, "failed") != NULL);
    assert_true(strstr(a.trans[0].reason, "retry after 1000 ms") != NULL);

    /* the policy still wants 4: nothing before the backoff ends */
    fsm_on_snapshot(f, 399, 200, 60, now + 500, &a);
    assert_false(a.send_job);
    fsm_on_tick(f, now + 1099, false, &a);
    assert_false(a.send_job);
    fsm_on_tick(f, now + 1100, false, &a);
    assert_true(a.send_job);
    assert_string_not_equal(fsm_job(f)->id, first);

    /* refused this time: the backoff doubles, still no leftovers to stop */
    fsm_on_job_error(f, fsm_job(f)->id, FSM_ERR_REFUSED, "bad port", now + 1200, &a);
    fsm_status(f, &st);
    assert_int_equal(st.failures, 2);
    assert_int_equal(st.backoff_until_ms, now + 1200 + 2000);
    assert_int_equal(st.n_stopping, 0);

    /* once the load is gone, the policy no longer wants it: no job after the backoff */
    fsm_on_snapshot(f, 200, 200, 60, now + 3000, &a);
    fsm_on_tick(f, now + 3300, false, &a);
    assert_false(a.send_job);
    assert_int_equal(fsm_state(f), UP);

    /* a success resets the backoff */
    fsm_on_snapshot(f, 399, 200, 60, now + 4000, &a);
    assert_true(a.send_job);
    s_ok(f, now + 4100, &a);
    fsm_status(f, &st);
    assert_int_equal(st.failures, 0);
    assert_int_equal(st.backoff_until_ms, 0);
    fsm_destroy(&f);
}

/* A record under the id of the scale up in flight that is another job (a LIST someone
 * registered under that id first, or other instances) never counts as the scale up done: it is
 * a refusal, the pool is untouched and the scale up is retried under a new id. */
static void test_record_of_another_job_is_a_refusal(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_busy_up(2, 4, &now);
    fsm_actions_t a;
    char first[FSM_JOB_ID_MAX];
    snprintf(first, sizeof first, "%s", fsm_job(f)->id);
    fsm_result_t res[] = {{0, true, true, false}, {1, true, true, false}};
    fsm_job_result_t r = {
        .job_id = first, .kind = K_LIST, .state = J_OK, .results = res, .n_results = 2};
    fsm_on_job_result(f, &r, now + 100, &a);
    assert_true(s_has_trans(&a, BUSY, UP));
    assert_false(s_has_trans(&a, BUSY, READY));
    assert_false(a.pool_changed);
    assert_int_equal(fsm_current(f), 2);
    assert_non_null(strstr(a.trans[0].reason, "is a LIST of 0 instances, not the SCALE_UP of 2"));
    fsm_status_t st;
    fsm_status(f, &st);
    assert_int_equal(st.failures, 1);
    assert_int_equal(st.n_stopping, 0); /* it never ran: nothing to stop */
    fsm_on_tick(f, now + 1100, false, &a);
    assert_true(a.send_job);
    assert_string_not_equal(fsm_job(f)->id, first);

    /* The right kind, other instances: the same. */
    snprintf(first, sizeof first, "%s", fsm_job(f)->id);
    int other[] = {5, 6};
    fsm_job_result_t r2 = {
        .job_id = first, .kind = K_UP, .state = J_OK, .instances = other, .n_instances = 2};
    fsm_on_job_result(f, &r2, now + 1200, &a);
    assert_false(s_has_trans(&a, BUSY, READY));
    assert_int_equal(fsm_current(f), 2);
    fsm_status(f, &st);
    assert_int_equal(st.failures, 2);
    fsm_destroy(&f);
}

/* A list entry at an address that is not the instance's own (scaler.c marks it unverified):
 * not adopted, not stopped, and a pool member it names keeps its entry. */
static void test_list_unverified_left_alone(void **state)
{
    (void)state;
    fsm_config_t cfg = s_cfg();
    fsm_t *f = fsm_new(&cfg);
    int pool[] = {0};
    fsm_record_t *rec = s_record(pool, 1);
    fsm_actions_t a;
    fsm_restore(f, rec, 1000, &a);
    free(rec);
    fsm_result_t res[] = {{0, true, true, true}, {1, true, true, true}, {2, true, true, false}};
    char id[FSM_JOB_ID_MAX];
    snprintf(id, sizeof id, "%s", fsm_job(f)->id);
    fsm_job_result_t r = {
        .job_id = id, .kind = K_LIST, .state = J_OK, .results = res, .n_results = 3};
    fsm_on_job_result(f, &r, 1100, &a);
    assert_true(fsm_in_pool(f, 0));
    assert_false(fsm_in_pool(f, 1));
    assert_true(fsm_in_pool(f, 2)); /* a stray at its own address is adopted as before */
    assert_int_equal(fsm_current(f), 2);
    fsm_status_t st;
    fsm_status(f, &st);
    assert_int_equal(st.n_stopping, 0);
    assert_true(s_has_trans(&a, BUSY, UP));
    assert_non_null(strstr(a.trans[a.n_trans - 1].reason, "1 adopted, 0 to stop, 1 left alone"));
    fsm_destroy(&f);
}

static void test_backoff_doubles_to_max(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_busy_up(1, 2, &now);
    fsm_actions_t a;
    uint64_t want[] = {1000, 2000, 4000, 8000, 8000, 8000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_non_null(fsm_job(f));
        s_finish(f, J_FAILED, NULL, 0, now, &a);
        fsm_status_t st;
        fsm_status(f, &st);
        if (st.backoff_until_ms != now + want[i])
            fail_msg("failure %zu: backoff %llu, want %llu", i + 1,
                     (unsigned long long)(st.backoff_until_ms - now), (unsigned long long)want[i]);
        now = st.backoff_until_ms;
        fsm_on_snapshot(f, 199, 100, 60, now, &a);
        assert_true(a.send_job);
    }
    fsm_destroy(&f);
}

static void test_scale_up_deadline_polls_then_fails(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_busy_up(1, 2, &now);
    const fsm_job_t *job = fsm_job(f);
    assert_int_equal(job->idx[0], 1);
    fsm_actions_t a;
    int polls = 0;
    for (uint64_t t = now + 250; t < now + 15000; t += 250) {
        fsm_on_tick(f, t, false, &a);
        polls += a.poll_job;
        assert_false(a.send_job);
        fsm_on_snapshot(f, 199, 100, 60, t, &a); /* metrics keep flowing */
        polls += a.poll_job;
        assert_false(a.send_job);
        assert_int_equal(fsm_state(f), BUSY);
    }
    assert_true(polls >= 6 && polls <= 8); /* every 2 s over 15 s */
    fsm_on_tick(f, now + 15000, false, &a);
    assert_true(s_has_trans(&a, BUSY, IDLE));
    fsm_status_t st;
    fsm_status(f, &st);
    assert_true(strstr(st.last_error, "deadline") != NULL);
    /* the outcome is unknown: production1 may run, so it is stopped before anything else */
    assert_int_equal(st.n_stopping, 1);
    assert_false(fsm_in_pool(f, 1));
    fsm_on_tick(f, now + 16000, false, &a);
    assert_true(s_has_trans(&a, IDLE, BUSY));
    s_drain_then_send(f, &a, now + 16000);
    assert_int_equal(fsm_job(f)->kind, K_DOWN);
    assert_int_equal(fsm_job(f)->idx[0], 1);
    s_ok(f, now + 16100, &a);
    fsm_status(f, &st);
    assert_int_equal(st.n_stopping, 0);
    /* and the scale up comes next (the metrics are still fresh), on the same name */
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_UP);
    assert_int_equal(fsm_job(f)->idx[0], 1);
    fsm_destroy(&f);
}

/* A scale up that hit its deadline is followed, in the executor, by a cleanup run (scale_down
 * of its instances) before the report: the scaler waits for that report (deadline + grace +
 * up_cleanup_ms) instead of failing the job first and sending a stop the executor would refuse
 * while its cleanup holds the instances. A report in that window is taken as it is; without
 * one the job fails at the end of it. */
static void test_scale_up_deadline_waits_for_cleanup(void **state)
{
    (void)state;
    fsm_config_t cfg = s_cfg();
    cfg.up_cleanup_ms = 20000; /* deadline 10000 + grace 5000 + 20000 */
    for (int reported = 0; reported < 2; reported++) {
        fsm_t *f = s_running(cfg, 1);
        fsm_actions_t a;
        fsm_on_snapshot(f, 199, 100, 60, 3000, &a); /* wants 2 */
        assert_true(a.send_job);
        assert_int_equal(fsm_job(f)->kind, K_UP);
        uint64_t end = reported ? 3000 + 30000 : 3000 + 35000;
        for (uint64_t t = 3250; t < end; t += 250) {
            fsm_on_tick(f, t, false, &a);
            fsm_on_snapshot(f, 199, 100, 60, t, &a);
            assert_int_equal(fsm_state(f), BUSY); /* past 3000 + 15000 too */
        }
        fsm_status_t st;
        if (reported) {
            /* The executor reports: the scale up failed, its cleanup stopped production1. */
            s_finish(f, TIDE__V1__JOB_STATE__JOB_FAILED, NULL, 0, end, &a);
            fsm_status(f, &st);
            assert_int_equal(st.n_stopping, 0);
        } else {
            fsm_on_tick(f, end, false, &a);
            assert_int_not_equal(fsm_state(f), BUSY);
            fsm_status(f, &st);
            assert_true(strstr(st.last_error, "deadline") != NULL);
            assert_int_equal(st.n_stopping, 1); /* unknown outcome: production1 may run */
        }
        assert_false(fsm_in_pool(f, 1));
        fsm_destroy(&f);
    }

    /* A scale down is not extended: it fails at deadline + grace. */
    fsm_t *f = s_running(cfg, 4);
    fsm_actions_t a;
    uint64_t now = 2000;
    fsm_on_snapshot(f, 400, 400, 60, now, &a);
    for (int k = 0; k <= 40 && fsm_state(f) != BUSY; k++) {
        now += 1000;
        fsm_on_snapshot(f, 50, 50, 60, now, &a);
    }
    assert_int_equal(fsm_state(f), BUSY);
    s_drain_then_send(f, &a, now);
    for (uint64_t t = now + 250; t < now + 15000; t += 250) {
        fsm_on_tick(f, t, false, &a);
        assert_int_equal(fsm_state(f), BUSY);
    }
    fsm_on_tick(f, now + 15000, false, &a);
    assert_int_not_equal(fsm_state(f), BUSY);
    fsm_status_t st;
    fsm_status(f, &st);
    assert_true(strstr(st.last_error, "deadline") != NULL);
    fsm_destroy(&f);
}

static void test_unreachable_executor_leftovers(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_busy_up(1, 3, &now);
    fsm_actions_t a;
    fsm_on_job_error(f, fsm_job(f)->id, FSM_ERR_UNREACHABLE, "no reply", now, &a);
    assert_true(s_has_trans(&a, BUSY, IDLE));
    fsm_status_t st;
    fsm_status(f, &st);
    assert_int_equal(st.n_stopping, 2);
    /* a failed record that says an instance runs after all puts that one on the list */
    fsm_on_snapshot(f, 299, 100, 60, now + 1000, &a);
    s_drain_then_send(f, &a, now + 1000);
    assert_int_equal(fsm_job(f)->kind, K_DOWN);
    s_ok(f, now + 1100, &a); /* stopped; the policy still wants 3: up right away */
    assert_true(s_has_trans(&a, BUSY, IDLE) && s_has_trans(&a, IDLE, BUSY));
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_UP);
    int running[] = {2};
    s_finish(f, J_FAILED, running, 1, now + 1300, &a);
    fsm_status(f, &st);
    assert_int_equal(st.n_stopping, 1);
    fsm_destroy(&f);
}

/* ---- scale down --------------------------------------------------------------------------- */

/* UP with 4, load drops to 1 instance's worth: after the delay, BUSY draining 3. */
static fsm_t *s_draining(uint64_t *now)
{
    fsm_t *f = s_up(4, now);
    fsm_actions_t a;
    for (int s = 0; s <= 30; s++) {
        *now += 1000;
        fsm_on_snapshot(f, 50, 50, 60, *now, &a);
        if (fsm_state(f) == BUSY)
            break;
        assert_false(a.pool_changed);
    }
    assert_int_equal(fsm_state(f), BUSY);
    assert_true(a.pool_changed && a.persist);
    assert_false(a.send_job); /* nothing is stopped before the proxies have drained */
    return f;
}

static void test_scale_down_drain_then_stop(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_draining(&now);
    fsm_actions_t a;
    assert_int_equal(fsm_current(f), 1);
    assert_true(fsm_in_pool(f, 0));
    assert_false(fsm_in_pool(f, 3));
    const fsm_job_t *job = fsm_job(f);
    assert_int_equal(job->kind, K_DOWN);
    assert_int_equal(job->n, 3);
    assert_int_equal(job->idx[0], 3); /* highest first */
    fsm_record_t rec;
    fsm_record(f, &rec);
    assert_int_equal(rec.n_pool, 1);
    assert_int_equal(rec.n_stopping, 3); /* draining names are persisted */
    assert_int_equal(rec.pool_version, 9);

    /* not written yet: nothing drains, even if the proxies look idle */
    assert_null(fsm_draining(f, NULL));
    fsm_on_tick(f, now + 100, true, &a);
    assert_false(a.send_job);
    fsm_on_pool_written(f, 9, now + 200);
    uint64_t v = 0;
    assert_non_null(fsm_draining(f, &v));
    assert_int_equal(v, 9);
    fsm_on_tick(f, now + 300, false, &a);
    assert_false(a.send_job);
    fsm_on_tick(f, now + 400, true, &a);
    assert_true(a.send_job);
    assert_null(fsm_draining(f, NULL));
    s_ok(f, now + 500, &a);
    assert_true(s_has_trans(&a, BUSY, IDLE)); /* count == min */
    fsm_record(f, &rec);
    assert_int_equal(rec.n_stopping, 0);
    fsm_destroy(&f);
}

static void test_scale_down_drain_deadline(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_draining(&now);
    fsm_actions_t a;
    fsm_on_pool_written(f, 9, now);
    fsm_on_tick(f, now + 29999, false, &a);
    assert_false(a.send_job);
    fsm_on_tick(f, now + 30000, false, &a);
    assert_true(a.send_job);
    assert_true(strstr(a.trans[0].reason, "deadline") != NULL);
    fsm_destroy(&f);
}

static void test_scale_down_to_up_when_above_min(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up(4, &now);
    fsm_actions_t a;
    for (int s = 0; s <= 31 && fsm_state(f) != BUSY; s++) {
        now += 1000;
        fsm_on_snapshot(f, 250, 250, 60, now, &a); /* wants 3 */
    }
    assert_int_equal(fsm_state(f), BUSY);
    assert_int_equal(fsm_current(f), 3);
    fsm_on_pool_written(f, 9, now);
    fsm_on_tick(f, now + 10, true, &a);
    s_ok(f, now + 20, &a);
    assert_true(s_has_trans(&a, BUSY, UP));
    fsm_destroy(&f);
}

static void test_scale_down_failure_keeps_them_out(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_draining(&now);
    fsm_actions_t a;
    fsm_on_pool_written(f, 9, now);
    fsm_on_tick(f, now + 10, true, &a);
    /* the executor stopped production3 but not the others */
    fsm_result_t res[] = {
        {3, true, false, false}, {2, false, true, false}, {1, false, true, false}};
    fsm_job_result_t r = {.job_id = fsm_job(f)->id,
                          .kind = K_DOWN,
                          .state = J_FAILED,
                          .error = "boom",
                          .results = res,
                          .n_results = 3};
    char id[FSM_JOB_ID_MAX];
    snprintf(id, sizeof id, "%s", r.job_id);
    r.job_id = id;
    fsm_on_job_result(f, &r, now + 20, &a);
    assert_true(s_has_trans(&a, BUSY, IDLE));
    assert_false(a.pool_changed); /* never put back silently */
    assert_int_equal(fsm_current(f), 1);
    fsm_record_t rec;
    fsm_record(f, &rec);
    assert_int_equal(rec.n_stopping, 2);
    fsm_status_t st;
    fsm_status(f, &st);
    assert_int_equal(st.backoff_until_ms, now + 20 + 1000);
    /* retried after the backoff, whatever the policy says */
    fsm_on_tick(f, now + 500, false, &a);
    assert_false(a.send_job);
    fsm_on_tick(f, now + 1020, false, &a);
    assert_false(fsm_in_pool(f, 1));
    s_drain_then_send(f, &a, now + 1020);
    assert_int_equal(fsm_current(f), 1); /* the rewrite did not put anything back */
    assert_int_equal(fsm_job(f)->kind, K_DOWN);
    assert_int_equal(fsm_job(f)->n, 2);
    assert_int_equal(fsm_state(f), BUSY);
    s_ok(f, now + 1100, &a);
    fsm_record(f, &rec);
    assert_int_equal(rec.n_stopping, 0);
    assert_int_equal(fsm_state(f), IDLE);
    fsm_destroy(&f);
}

static void test_stale_metrics_hold(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up(2, &now);
    fsm_actions_t a;
    fsm_on_snapshot(f, 50, 50, 60, now, &a);
    /* The last snapshot said "wants 1" (a scale down after scale_down_delay_s, 30 s, if it
     * held); then metrics go silent. Nothing scales on old news. */
    for (uint64_t t = now; t < now + 120000; t += 250) {
        fsm_on_tick(f, t, false, &a);
        assert_false(a.send_job);
        assert_false(a.pool_changed);
    }
    const policy_decision_t *d = fsm_decision(f, NULL, NULL);
    assert_true(d->hold);
    fsm_destroy(&f);
}

/* ---- control ------------------------------------------------------------------------------ */

static void test_pause_resume(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up(1, &now);
    fsm_actions_t a;
    assert_int_equal(fsm_pause(f, now, &a), 0);
    assert_true(a.persist);
    assert_int_equal(a.n_trans, 1);
    assert_int_equal(a.trans[0].from, a.trans[0].to);
    fsm_on_snapshot(f, 500, 500, 60, now + 100, &a);
    assert_false(a.send_job);
    fsm_on_tick(f, now + 200, false, &a);
    assert_false(a.send_job);
    fsm_record_t rec;
    fsm_record(f, &rec);
    assert_true(rec.paused);
    assert_int_equal(fsm_resume(f, now + 300, &a), 0);
    assert_true(a.send_job);
    assert_int_equal(fsm_state(f), BUSY);

    /* a job in flight finishes under pause */
    fsm_pause(f, now + 400, &a);
    s_ok(f, now + 500, &a);
    assert_int_equal(fsm_state(f), READY);
    fsm_on_tick(f, now + 3000, false, &a);
    assert_int_equal(fsm_state(f), UP);
    fsm_destroy(&f);
}

static void test_scale_pins_until_resume(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up(2, &now);
    fsm_actions_t a;
    char err[128];
    assert_int_equal(fsm_scale(f, 11, now, err, sizeof err, &a), -EINVAL);
    assert_true(strstr(err, "outside the bounds [1, 10]") != NULL);
    assert_false(a.persist);
    assert_int_equal(fsm_scale(f, 0, now, err, sizeof err, &a), -EINVAL);
    assert_int_equal(fsm_scale(f, 5, now, err, sizeof err, &a), 0);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->n, 3);
    s_ok(f, now + 100, &a);
    fsm_on_tick(f, now + 2100, false, &a);
    assert_int_equal(fsm_state(f), UP);
    /* the load says 2, but the pin holds */
    for (int i = 0; i < 60; i++)
        fsm_on_snapshot(f, 200, 200, 60, now + 3000 + (uint64_t)i * 1000, &a);
    assert_int_equal(fsm_state(f), UP);
    assert_int_equal(fsm_current(f), 5);
    fsm_record_t rec;
    fsm_record(f, &rec);
    assert_true(rec.pinned);
    assert_int_equal(rec.forced, 5);
    /* resume: the policy decides again (and the scale-down delay applies) */
    now += 70000;
    fsm_resume(f, now, &a);
    fsm_record(f, &rec);
    assert_false(rec.pinned);
    assert_false(a.pool_changed);
    for (int i = 1; i <= 31 && fsm_state(f) != BUSY; i++)
        fsm_on_snapshot(f, 200, 200, 60, now + (uint64_t)i * 1000, &a);
    assert_int_equal(fsm_state(f), BUSY);
    assert_int_equal(fsm_current(f), 2);
    /* pinning is refused while paused (resume would clear it anyway) */
    fsm_pause(f, now + 40000, &a);
    assert_int_equal(fsm_scale(f, 3, now + 40000, err, sizeof err, &a), -EINVAL);
    assert_true(strstr(err, "paused") != NULL);
    fsm_destroy(&f);
}

static void test_bounds(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up(1, &now);
    fsm_actions_t a;
    char err[128];
    assert_int_equal(fsm_bounds(f, 3, 2, now, err, sizeof err, &a), -EINVAL);
    assert_true(strstr(err, "min <= max") != NULL);
    assert_int_equal(fsm_bounds(f, 0, 1001, now, err, sizeof err, &a), -EINVAL);
    /* above scaler.max of the config: the executor would refuse every such job */
    assert_int_equal(fsm_bounds(f, 0, s_cfg().policy.max + 1, now, err, sizeof err, &a), -EINVAL);
    assert_true(strstr(err, "scaler.max") != NULL);
    assert_int_equal(fsm_bounds(f, 3, 8, now, err, sizeof err, &a), 0);
    assert_true(a.send_job); /* below the new minimum: up at once */
    assert_int_equal(fsm_job(f)->n, 2);
    fsm_record_t rec;
    fsm_record(f, &rec);
    assert_true(rec.bounds_set);
    assert_int_equal(rec.min, 3);
    assert_int_equal(rec.max, 8);
    s_ok(f, now + 10, &a);
    fsm_on_tick(f, now + 2010, false, &a);
    assert_int_equal(fsm_state(f), IDLE); /* 3 == min */
    /* a lower max is applied without the scale-down delay */
    fsm_bounds(f, 0, 1, now + 3000, err, sizeof err, &a);
    assert_true(a.pool_changed);
    assert_int_equal(fsm_current(f), 1);
    fsm_destroy(&f);
}

static void test_persisted_settings_restored(void **state)
{
    (void)state;
    fsm_config_t cfg = s_cfg();
    fsm_t *f = fsm_new(&cfg);
    int pool[] = {0, 1, 2};
    fsm_record_t *rec = s_record(pool, 3);
    rec->paused = true;
    rec->pinned = true;
    rec->forced = 3;
    rec->bounds_set = true;
    rec->min = 2;
    rec->max = 4;
    fsm_actions_t a;
    fsm_restore(f, rec, 1000, &a);
    free(rec);
    s_finish(f, J_OK, pool, 3, 1100, &a);
    fsm_status_t st;
    fsm_status(f, &st);
    assert_true(st.paused && st.pinned);
    assert_int_equal(st.forced, 3);
    assert_int_equal(st.min, 2);
    assert_int_equal(st.max, 4);
    assert_int_equal(st.current, 3);
    assert_int_equal(st.state, UP);
    assert_false(st.reconciling);
    fsm_destroy(&f);
}

/* ---- health checks ------------------------------------------------------------------------- */

static fsm_config_t s_check_cfg(void)
{
    fsm_config_t c = s_cfg();
    c.suspect_error_rate = 0.5;
    c.suspect_grace_ms = 5000;
    c.check_gap_ms = 3000;
    return c;
}

/* A running machine with production0..n-1 at UP, load for exactly n, at time 2000. */
static fsm_t *s_up_checked(fsm_config_t cfg, uint32_t n, uint64_t *now)
{
    fsm_t *f = s_running(cfg, n);
    fsm_actions_t a;
    *now = 2000;
    fsm_on_snapshot(f, 100.0 * n, 100.0 * n, 60, *now, &a);
    assert_int_equal(fsm_state(f), UP);
    assert_false(a.send_job);
    return f;
}

/* Finishes the list in flight: running[i] runs, healthy when healthy[i]. */
static void s_list_answer(fsm_t *f, const int *running, const bool *healthy, size_t n, uint64_t now,
                          fsm_actions_t *acts)
{
    const fsm_job_t *job = fsm_job(f);
    assert_non_null(job);
    assert_int_equal(job->kind, K_LIST);
    fsm_result_t res[64];
    for (size_t i = 0; i < n; i++)
        res[i] = (fsm_result_t){.index = running[i], .ok = healthy[i], .running = true};
    char id[FSM_JOB_ID_MAX];
    snprintf(id, sizeof id, "%s", job->id);
    fsm_job_result_t r = {
        .job_id = id, .kind = K_LIST, .state = J_OK, .results = res, .n_results = n};
    fsm_on_job_result(f, &r, now, acts);
}

static bool s_reason_has(const fsm_actions_t *a, const char *text)
{
    for (size_t i = 0; i < a->n_trans; i++)
        if (strstr(a->trans[i].reason, text))
            return true;
    return false;
}

/* A killed instance fails the requests sent to it: it is checked, leaves the pool and the
 * policy puts a new one in its place. */
static void test_check_replaces_dead_instance(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up_checked(s_check_cfg(), 3, &now);
    fsm_actions_t a;
    /* errors from an instance that joined the pool less than the grace ago do not count */
    fsm_note_errors(f, 1, 1.0, 3000);
    fsm_on_snapshot(f, 300, 300, 60, 3000, &a);
    assert_false(a.send_job);
    /* a low error rate does not count; unknown and out-of-pool indices are ignored */
    fsm_note_errors(f, 1, 0.2, 7000);
    fsm_note_errors(f, 7, 1.0, 7000);
    fsm_note_errors(f, -1, 1.0, 7000);
    fsm_on_snapshot(f, 300, 300, 60, 7000, &a);
    assert_false(a.send_job);
    assert_int_equal(fsm_state(f), UP);

    fsm_note_errors(f, 1, 1.0, 7500);
    fsm_on_snapshot(f, 300, 300, 60, 7500, &a);
    assert_int_equal(fsm_state(f), BUSY);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    assert_true(s_reason_has(&a, "health check: production1 failing requests"));
    assert_false(a.pool_changed); /* nothing leaves the pool on suspicion alone */

    /* the list says production1 is gone: out of the pool, and a scale up replaces it */
    int running[] = {0, 2};
    bool healthy[] = {true, true};
    s_list_answer(f, running, healthy, 2, 8000, &a);
    assert_true(a.pool_changed);
    assert_false(fsm_in_pool(f, 1));
    assert_true(s_reason_has(&a, "not running: production1"));
    assert_true(s_has_trans(&a, BUSY, UP));
    assert_true(s_has_trans(&a, UP, BUSY));
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_UP);
    assert_int_equal(fsm_job(f)->n, 1);
    assert_int_equal(fsm_job(f)->idx[0], 1);
    s_ok(f, 12000, &a);
    assert_true(fsm_in_pool(f, 1));
    assert_int_equal(fsm_current(f), 3);
    /* its predecessor's errors are still in the panic window: not held against it */
    fsm_on_tick(f, 15000, false, &a); /* READY -> UP */
    fsm_note_errors(f, 1, 1.0, 15000);
    fsm_on_snapshot(f, 300, 300, 60, 15000, &a);
    assert_false(a.send_job);
    fsm_destroy(&f);
}

/* Running but not answering its health path: out of the pool, drained, stopped, replaced. */
static void test_check_stops_unhealthy_instance(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up_checked(s_check_cfg(), 3, &now);
    fsm_actions_t a;
    fsm_note_errors(f, 2, 0.9, 7000);
    fsm_on_snapshot(f, 300, 300, 60, 7000, &a);
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    int running[] = {0, 1, 2, 5};
    bool healthy[] = {true, true, false, true}; /* production5: a healthy stray, adopted */
    s_list_answer(f, running, healthy, 4, 7500, &a);
    assert_true(a.pool_changed);
    assert_false(fsm_in_pool(f, 2));
    assert_true(fsm_in_pool(f, 5));
    assert_true(s_reason_has(&a, "unhealthy, to stop: production2; 1 adopted"));
    /* the stop goes first, drained like any scale down */
    assert_int_equal(fsm_job(f)->kind, K_DOWN);
    assert_int_equal(fsm_job(f)->idx[0], 2);
    s_drain_then_send(f, &a, 8000);
    s_ok(f, 9000, &a);
    assert_int_equal(fsm_current(f), 3);
    fsm_destroy(&f);
}

/* Under overload every instance may fail its health path: none is removed while no healthy
 * one would remain, since that would turn slow answers into 503s for everyone. */
static void test_check_keeps_pool_when_none_healthy(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up_checked(s_check_cfg(), 2, &now);
    fsm_actions_t a;
    fsm_note_errors(f, 0, 0.9, 7000);
    fsm_note_errors(f, 1, 0.9, 7000);
    fsm_on_snapshot(f, 200, 200, 60, 7000, &a);
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    int running[] = {0, 1};
    bool healthy[] = {false, false};
    s_list_answer(f, running, healthy, 2, 7500, &a);
    assert_true(fsm_in_pool(f, 0));
    assert_true(fsm_in_pool(f, 1));
    assert_int_equal(fsm_current(f), 2);
    assert_true(s_reason_has(&a, "2 unhealthy kept"));
    fsm_destroy(&f);
}

/* A check that found an instance healthy answers for its errors for a while: an app failing
 * requests while its health path says 200 is not listed again at every snapshot. */
static void test_check_ok_forgives_errors(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up_checked(s_check_cfg(), 2, &now);
    fsm_actions_t a;
    fsm_note_errors(f, 1, 0.9, 7000);
    fsm_on_snapshot(f, 200, 200, 60, 7000, &a);
    int running[] = {0, 1};
    bool healthy[] = {true, true};
    s_list_answer(f, running, healthy, 2, 7500, &a);
    assert_true(fsm_in_pool(f, 1));
    /* past the check gap (3000 ms) but inside the grace (5000 ms) of the good check */
    fsm_note_errors(f, 1, 0.9, 11000);
    fsm_on_snapshot(f, 200, 200, 60, 11000, &a);
    assert_false(a.send_job);
    /* after the grace the errors count again */
    fsm_note_errors(f, 1, 0.9, 13000);
    fsm_on_snapshot(f, 200, 200, 60, 13000, &a);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    fsm_destroy(&f);
}

/* Checks wait for a stable moment and their gap; a failed one changes nothing but backs off. */
static void test_check_gap_pause_and_failure(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up_checked(s_check_cfg(), 2, &now);
    fsm_actions_t a;
    char err[128];
    /* paused: no job, not even a check */
    assert_int_equal(fsm_pause(f, 6500, &a), 0);
    fsm_note_errors(f, 0, 1.0, 7000);
    fsm_on_snapshot(f, 200, 200, 60, 7000, &a);
    assert_false(a.send_job);
    assert_int_equal(fsm_resume(f, 7100, &a), 0);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_LIST);

    /* the list fails: pool unchanged, backoff */
    const fsm_job_t *job = fsm_job(f);
    char id[FSM_JOB_ID_MAX];
    snprintf(id, sizeof id, "%s", job->id);
    fsm_job_result_t r = {.job_id = id, .kind = K_LIST, .state = J_FAILED, .error = "host down"};
    fsm_on_job_result(f, &r, 7500, &a);
    assert_false(a.pool_changed);
    assert_false(a.send_job);
    assert_int_equal(fsm_state(f), UP);
    assert_true(s_reason_has(&a, "health check failed: job failed: host down"));
    fsm_status_t st;
    fsm_status(f, &st);
    assert_int_equal(st.backoff_until_ms, 8500);
    assert_int_equal(fsm_current(f), 2);

    /* suspect again at once: the gap (3000 ms since the last check) holds it back */
    fsm_note_errors(f, 0, 1.0, 9000);
    fsm_on_snapshot(f, 200, 200, 60, 9000, &a);
    assert_false(a.send_job);
    fsm_note_errors(f, 0, 1.0, 10600);
    fsm_on_snapshot(f, 200, 200, 60, 10600, &a);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    /* every instance healthy: nothing changes */
    int running[] = {0, 1};
    bool healthy[] = {true, true};
    s_list_answer(f, running, healthy, 2, 11000, &a);
    assert_false(a.pool_changed);
    assert_false(a.send_job);
    assert_int_equal(fsm_state(f), UP);
    /* a scale up is not held back by a check's success or failure beyond the backoff */
    assert_int_equal(fsm_scale(f, 3, 11500, err, sizeof err, &a), 0);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_UP);
    fsm_destroy(&f);
}

/* s_up_checked at 2 instances with a periodic check every 10 s. */
static fsm_t *s_up_periodic(uint64_t *now)
{
    fsm_config_t cfg = s_check_cfg();
    cfg.check_interval_ms = 10000;
    return s_up_checked(cfg, 2, now);
}

/* With check_interval_ms set, a check runs that often even without suspects. */
static void test_check_periodic(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up_periodic(&now);
    fsm_actions_t a;
    fsm_on_tick(f, 10900, false, &a);
    assert_false(a.send_job);
    fsm_on_tick(f, 11000, false, &a); /* the reconcile's list ended at 1000 */
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    assert_true(s_reason_has(&a, "health check: periodic"));
    int running[] = {1};
    bool healthy[] = {true};
    s_list_answer(f, running, healthy, 1, 11500, &a);
    assert_false(fsm_in_pool(f, 0));
    assert_int_equal(fsm_state(f), IDLE); /* at the minimum; the metrics are stale */
    fsm_on_snapshot(f, 200, 200, 60, 11600, &a);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_UP); /* the load wants 2 */
    fsm_destroy(&f);
}

/* A periodic check never delays a scale up: when load for 3 arrives as the check comes due,
 * the scale up goes first; the check runs once the count is steady (after READY's settle). */
static void test_check_periodic_after_scale_up(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up_periodic(&now);
    fsm_actions_t a;
    fsm_on_snapshot(f, 300, 300, 60, 11000, &a); /* the check is due since 11000 too */
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_UP);
    assert_int_equal(fsm_job(f)->n, 1);
    s_ok(f, 11500, &a);
    assert_int_equal(fsm_current(f), 3);
    assert_int_equal(fsm_state(f), READY);
    fsm_on_snapshot(f, 300, 300, 60, 12000, &a);
    assert_false(a.send_job);         /* READY: settling */
    fsm_on_tick(f, 13600, false, &a); /* settled: READY -> UP, steady at 3: now the check */
    assert_int_equal(fsm_current(f), 3);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    assert_true(s_reason_has(&a, "health check: periodic"));
    fsm_destroy(&f);
}

/* A periodic check that fails (the executor refuses the list, say) suspected nothing: it
 * does not back off or count against the next scale up, which goes out at once. */
static void test_check_periodic_failure_does_not_hold_scaling(void **state)
{
    (void)state;
    uint64_t now;
    fsm_t *f = s_up_periodic(&now);
    fsm_actions_t a;
    fsm_on_tick(f, 11000, false, &a);
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    fsm_on_job_error(f, fsm_job(f)->id, FSM_ERR_UNREACHABLE, "no reply", 11100, &a);
    assert_true(s_reason_has(&a, "periodic health check failed"));
    fsm_status_t st;
    fsm_status(f, &st);
    assert_int_equal(st.failures, 0);
    assert_int_equal(st.backoff_until_ms, 0);
    fsm_on_snapshot(f, 300, 300, 60, 11200, &a); /* load for 3 */
    assert_true(a.send_job);
    assert_int_equal(fsm_job(f)->kind, K_UP);
    fsm_destroy(&f);
}

/* A job recovered after a restart has an unknown kind: it may be a scale up in the executor's
 * cleanup run, so the scaler waits as long as for one before asking for a list. */
static void test_restore_job_waits_for_cleanup(void **state)
{
    (void)state;
    fsm_config_t cfg = s_cfg();
    cfg.up_cleanup_ms = 20000; /* deadline 10000 + grace 5000 + 20000 */
    fsm_t *f = fsm_new(&cfg);
    int pool[] = {0};
    fsm_record_t *rec = s_record(pool, 1);
    rec->state = BUSY;
    snprintf(rec->job_id, sizeof rec->job_id, "old-run-4");
    fsm_actions_t a;
    fsm_restore(f, rec, 1000, &a);
    free(rec);
    fsm_job_result_t running = {.job_id = "old-run-4", .kind = K_UP, .state = J_RUN};
    for (uint64_t t = 1250; t < 1000 + 35000; t += 250) {
        fsm_on_tick(f, t, false, &a);
        if (a.poll_job)
            fsm_on_job_result(f, &running, t, &a);
        assert_int_equal(fsm_state(f), BUSY);
        assert_string_equal(fsm_job(f)->id, "old-run-4");
    }
    fsm_on_tick(f, 1000 + 35000, false, &a);
    assert_true(a.send_job); /* no outcome: the list tells what runs */
    assert_int_equal(fsm_job(f)->kind, K_LIST);
    fsm_destroy(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_periodic_failure_does_not_hold_scaling),
        cmocka_unit_test(test_restore_job_waits_for_cleanup),
        cmocka_unit_test(test_check_periodic_after_scale_up),
        cmocka_unit_test(test_scale_up_deadline_waits_for_cleanup),
        cmocka_unit_test(test_restore_empty_lists_first),
        cmocka_unit_test(test_restore_without_metrics_raises_to_min),
        cmocka_unit_test(test_restore_job_in_flight_succeeded),
        cmocka_unit_test(test_restore_job_unknown_goes_to_list),
        cmocka_unit_test(test_list_reconcile_table),
        cmocka_unit_test(test_list_failure_retried_with_backoff),
        cmocka_unit_test(test_scale_up_to_ready_to_up),
        cmocka_unit_test(test_ready_goes_idle_when_at_min),
        cmocka_unit_test(test_busy_ignores),
        cmocka_unit_test(test_ready_ignores),
        cmocka_unit_test(test_stable_ignores),
        cmocka_unit_test(test_scale_up_failed_backoff_and_retry),
        cmocka_unit_test(test_backoff_doubles_to_max),
        cmocka_unit_test(test_record_of_another_job_is_a_refusal),
        cmocka_unit_test(test_list_unverified_left_alone),
        cmocka_unit_test(test_scale_up_deadline_polls_then_fails),
        cmocka_unit_test(test_unreachable_executor_leftovers),
        cmocka_unit_test(test_scale_down_drain_then_stop),
        cmocka_unit_test(test_scale_down_drain_deadline),
        cmocka_unit_test(test_scale_down_to_up_when_above_min),
        cmocka_unit_test(test_scale_down_failure_keeps_them_out),
        cmocka_unit_test(test_stale_metrics_hold),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_scale_pins_until_resume),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_persisted_settings_restored),
        cmocka_unit_test(test_check_replaces_dead_instance),
        cmocka_unit_test(test_check_keeps_pool_when_none_healthy),
        cmocka_unit_test(test_check_ok_forgives_errors),
        cmocka_unit_test(test_check_stops_unhealthy_instance),
        cmocka_unit_test(test_check_gap_pause_and_failure),
        cmocka_unit_test(test_check_periodic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
