/* test_policy.c - unit tests of policy.c, policy_target.c and policy_threshold.c: rates to
 * desired counts, panic, bounds, max_step, the scale-down delay, and no flapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "policy.h"
#include "test_fixtures.h"

static policy_config_t s_cfg(policy_kind_t kind)
{
    return test_policy_cfg(kind);
}

static policy_input_t s_in(uint64_t now_ms, uint32_t current, double stable, double panic)
{
    policy_input_t in = {.now_ms = now_ms,
                         .current = current,
                         .fresh = true,
                         .rps_stable = stable,
                         .rps_panic = panic};
    return in;
}

/* ---- target: one evaluation from a fresh state ------------------------------------------- */

typedef struct {
    const char *what;
    uint32_t min, max, max_step;
    uint32_t current;
    double stable, panic;
    bool fresh, pinned;
    uint32_t forced;
    uint32_t want_desired, want_next;
    bool want_panic, want_hold;
} target_case_t;

static const target_case_t s_target_cases[] = {
    {"no traffic at min", 1, 10, 5, 1, 0, 0, true, false, 0, 1, 1, false, false},
    {"half load", 1, 10, 5, 1, 50, 50, true, false, 0, 1, 1, false, false},
    {"exactly at target", 1, 10, 5, 2, 200, 200, true, false, 0, 2, 2, false, false},
    {"float noise above a multiple", 1, 10, 5, 2, 200.0000000001, 200, true, false, 0, 2, 2, false,
     false},
    {"a bit above target", 1, 10, 5, 2, 201, 201, true, false, 0, 3, 3, false, false},
    {"stable rise, calm panic window", 1, 10, 5, 1, 250, 100, true, false, 0, 3, 3, false, false},
    {"panic jumps to the panic count", 1, 10, 5, 1, 150, 450, true, false, 0, 5, 5, true, false},
    {"panic below threshold x current", 1, 10, 5, 3, 300, 500, true, false, 0, 3, 3, false, false},
    {"clamped to max, stepped", 1, 10, 5, 1, 2000, 100, true, false, 0, 10, 6, false, false},
    {"above max is lowered at once", 1, 10, 5, 12, 2000, 2000, true, false, 0, 10, 10, false,
     false},
    {"below min is raised", 3, 10, 5, 1, 0, 0, true, false, 0, 3, 3, false, false},
    {"from zero, any request wants one", 0, 10, 5, 0, 0.2, 0.5, true, false, 0, 1, 1, false, false},
    {"from zero, a burst only in the panic window", 0, 10, 5, 0, 0, 0.5, true, false, 0, 1, 1,
     false, false},
    {"from zero, nothing stays at zero", 0, 10, 5, 0, 0, 0, true, false, 0, 0, 0, false, false},
    {"stale metrics hold", 1, 10, 5, 4, 0, 0, false, false, 0, 4, 4, false, true},
    {"stale metrics still honour min", 2, 10, 5, 0, 0, 0, false, false, 0, 2, 2, false, true},
    {"stale metrics still honour max", 1, 3, 5, 5, 0, 0, false, false, 0, 3, 3, false, true},
    {"pinned wins over load", 1, 10, 5, 2, 900, 900, true, true, 4, 4, 4, false, false},
    {"pinned is clamped", 1, 10, 5, 2, 0, 0, true, true, 20, 10, 7, false, false},
    {"pinned down is immediate", 1, 10, 2, 6, 900, 900, false, true, 1, 1, 4, false, false},
    {"max_step 1 up", 1, 10, 1, 1, 900, 100, true, false, 0, 9, 2, false, false},
};

static void test_target_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_target_cases / sizeof s_target_cases[0]; i++) {
        const target_case_t *c = &s_target_cases[i];
        policy_config_t cfg = s_cfg(POLICY_TARGET);
        cfg.min = c->min;
        cfg.max = c->max;
        cfg.max_step = c->max_step;
        policy_state_t st = {0};
        policy_input_t in = s_in(1000000, c->current, c->stable, c->panic);
        in.fresh = c->fresh;
        in.pinned = c->pinned;
        in.forced = c->forced;
        policy_decision_t d;
        policy_desired(&cfg, &in, &st, &d);
        if (d.desired != c->want_desired || d.next != c->want_next ||
            d.panicking != c->want_panic || d.hold != c->want_hold)
            fail_msg("case '%s': desired=%u next=%u panic=%d hold=%d (want %u %u %d %d) reason=%s",
                     c->what, d.desired, d.next, d.panicking, d.hold, c->want_desired, c->want_next,
                     c->want_panic, c->want_hold, d.reason);
        assert_true(d.reason[0] != '\0');
    }
}

/* ---- sequences: each step is (time, current, rates) -> expected desired ------------------- */

typedef struct {
    uint64_t t_s;
    uint32_t current;
    double stable, panic;
    bool fresh;
    uint32_t want_desired;
    int want_panic; /* -1: don't care */
} step_t;

static void s_run_steps(const char *what, policy_config_t cfg, const step_t *steps, size_t n)
{
    policy_state_t st = {0};
    for (size_t i = 0; i < n; i++) {
        const step_t *s = &steps[i];
        policy_input_t in = s_in(s->t_s * 1000, s->current, s->stable, s->panic);
        in.fresh = s->fresh;
        policy_decision_t d;
        policy_desired(&cfg, &in, &st, &d);
        if (d.desired != s->want_desired || (s->want_panic >= 0 && d.panicking != s->want_panic))
            fail_msg("%s step %zu (t=%llus): desired=%u panic=%d (want %u %d) reason=%s", what, i,
                     (unsigned long long)s->t_s, d.desired, d.panicking, s->want_desired,
                     s->want_panic, d.reason);
    }
}

static void test_target_panic_enter_exit(void **state)
{
    (void)state;
    /* current 2; a burst: panic window wants 5 (>= 2 x 2) -> jump to 5. While panicking
     * nothing scales down, until a stable window (60 s) passes without a trigger; then the
     * ordinary scale-down delay (30 s) applies. */
    const step_t steps[] = {
        {100, 2, 150, 150, true, 2, 0}, {101, 2, 160, 500, true, 5, 1}, /* enter panic */
        {105, 5, 200, 450, true, 5, 1}, /* scaled; 450 < 2 x 5: no new trigger */
        {110, 5, 200, 100, true, 5, 1}, /* load gone from the panic window: still panicking */
        {160, 5, 150, 100, true, 5, 1}, /* 59 s after the last trigger */
        {161, 5, 150, 100, true, 5, 0}, /* 60 s: panic over, down to 2 now pending */
        {190, 5, 150, 100, true, 5, 0}, /* 29 s of the 30 s delay */
        {191, 5, 150, 100, true, 2, 0}, /* delay over */
    };
    s_run_steps("panic", s_cfg(POLICY_TARGET), steps, sizeof steps / sizeof steps[0]);
}

static void test_target_panic_retrigger_extends(void **state)
{
    (void)state;
    const step_t steps[] = {
        {0, 1, 100, 400, true, 4, 1},  /* 4 >= 2 x 1 */
        {30, 4, 300, 900, true, 9, 1}, /* 9 >= 2 x 4: trigger again at 30 s */
        {80, 9, 100, 100, true, 9, 1}, /* 50 s after the last trigger: still panicking */
        {90, 9, 100, 100, true, 9, 0}, /* 60 s: over (down pending) */
    };
    s_run_steps("retrigger", s_cfg(POLICY_TARGET), steps, sizeof steps / sizeof steps[0]);
}

static void test_target_scale_down_delay(void **state)
{
    (void)state;
    const step_t steps[] = {
        {0, 5, 100, 100, true, 5, 0}, /* wants 1: pending */
        {15, 5, 100, 100, true, 5, 0},
        {29, 5, 100, 100, true, 5, 0},
        {30, 5, 100, 100, true, 1, 0}, /* 30 s held */
        {40, 5, 600, 200, true, 6, 0}, /* load back: the streak ends */
        /* a dip during a streak does not overshoot: the largest wanted count is used */
        {100, 5, 300, 300, true, 5, 0}, /* wants 3: streak begins */
        {110, 5, 50, 50, true, 5, 0},   /* wants 1 */
        {130, 5, 50, 50, true, 3, 0},   /* held 30 s: max wanted over the streak is 3 */
        /* stepped down to 3; still wanting 1 needs its own streak, and then gets there */
        {131, 3, 50, 50, true, 3, 0},
        {160, 3, 50, 50, true, 3, 0},
        {161, 3, 50, 50, true, 1, 0},
    };
    s_run_steps("delay", s_cfg(POLICY_TARGET), steps, sizeof steps / sizeof steps[0]);
}

static void test_target_delay_interrupted(void **state)
{
    (void)state;
    const step_t steps[] = {
        {0, 5, 100, 100, true, 5, 0},  /* streak begins */
        {20, 5, 600, 200, true, 6, 0}, /* load back above: streak broken (and up to 6) */
        {21, 5, 100, 100, true, 5, 0}, /* new streak */
        {40, 5, 100, 100, true, 5, 0}, /* 19 s: the first 20 s do not count */
        {51, 5, 100, 100, true, 1, 0}, /* 30 s since the new streak began */
    };
    s_run_steps("interrupted", s_cfg(POLICY_TARGET), steps, sizeof steps / sizeof steps[0]);
}

static void test_stale_metrics_reset_streak(void **state)
{
    (void)state;
    const step_t steps[] = {
        {0, 5, 100, 100, true, 5, -1},   /* streak begins */
        {20, 5, 100, 100, false, 5, -1}, /* metrics stale: hold, streak forgotten */
        {35, 5, 100, 100, true, 5, -1},  /* back: a new streak, not 35 s of one */
        {64, 5, 100, 100, true, 5, -1},  {65, 5, 100, 100, true, 1, -1},
    };
    s_run_steps("stale", s_cfg(POLICY_TARGET), steps, sizeof steps / sizeof steps[0]);
}

static void test_target_down_by_max_step(void **state)
{
    (void)state;
    policy_config_t cfg = s_cfg(POLICY_TARGET);
    cfg.max_step = 3;
    policy_state_t st = {0};
    policy_decision_t d;
    policy_input_t in = s_in(0, 10, 50, 50);
    policy_desired(&cfg, &in, &st, &d);
    assert_int_equal(d.desired, 10);
    assert_true(d.down_pending);
    in.now_ms = 30000;
    policy_desired(&cfg, &in, &st, &d);
    assert_int_equal(d.desired, 1);
    assert_int_equal(d.next, 7);
    /* after the first step the streak still holds (target's count comes from the total
     * rate), so the next step follows without another delay */
    in.now_ms = 31000;
    in.current = 7;
    policy_desired(&cfg, &in, &st, &d);
    assert_int_equal(d.desired, 1);
    assert_int_equal(d.next, 4);
}

/* ---- threshold ---------------------------------------------------------------------------- */

typedef struct {
    const char *what;
    uint32_t current;
    double stable;
    uint32_t want_wanted, want_desired;
} thr_case_t;

static const thr_case_t s_thr_cases[] = {
    {"above scale_up_rps", 2, 250, 3, 3},     {"exactly scale_up_rps is not above", 2, 200, 2, 2},
    {"between the thresholds", 2, 100, 2, 2}, {"below scale_down_rps: pending", 2, 40, 1, 2},
    {"from zero with traffic", 0, 0.1, 1, 1}, {"at max stays", 10, 5000, 11, 10},
    {"one step at a time", 1, 900, 2, 2},
};

static void test_threshold_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_thr_cases / sizeof s_thr_cases[0]; i++) {
        const thr_case_t *c = &s_thr_cases[i];
        policy_config_t cfg = s_cfg(POLICY_THRESHOLD);
        cfg.min = 0;
        policy_state_t st = {0};
        policy_input_t in = s_in(5000, c->current, c->stable, c->stable);
        policy_decision_t d;
        policy_desired(&cfg, &in, &st, &d);
        if (d.wanted != c->want_wanted || d.desired != c->want_desired)
            fail_msg("threshold '%s': wanted=%u desired=%u (want %u %u) reason=%s", c->what,
                     d.wanted, d.desired, c->want_wanted, c->want_desired, d.reason);
        assert_false(d.panicking);
    }
}

static void test_threshold_each_step_waits(void **state)
{
    (void)state;
    /* per instance 20 rps < 30 at 3 instances; each removal waits its own delay, because the
     * rate per instance is measured anew at the new count */
    const step_t steps[] = {
        {0, 3, 60, 60, true, 3, 0},
        {30, 3, 60, 60, true, 2, 0}, /* 30 s at 20/instance: remove one */
        {31, 2, 40, 40, true, 2, 0}, /* now 20/instance at 2: a new streak */
        {60, 2, 40, 40, true, 2, 0},
        {61, 2, 40, 40, true, 1, 0},
        {62, 1, 40, 40, true, 1, 0}, /* 40/instance at 1: within the thresholds */
    };
    policy_config_t cfg = s_cfg(POLICY_THRESHOLD);
    s_run_steps("threshold steps", cfg, steps, sizeof steps / sizeof steps[0]);
}

/* ---- no flapping ---------------------------------------------------------------------------- */

/* Feeds rates oscillating around a boundary once a second for ten minutes, applying each
 * decision at once (as if jobs were instant), and counts the changes of the count. */
static void s_no_flap(policy_kind_t kind, double centre, double swing, uint32_t start,
                      uint32_t *ups, uint32_t *downs, uint32_t *final)
{
    policy_config_t cfg = s_cfg(kind);
    policy_state_t st = {0};
    uint32_t cur = start;
    *ups = *downs = 0;
    for (uint64_t t = 0; t < 600; t++) {
        double rps = centre + (t % 2 ? swing : -swing);
        policy_input_t in = s_in(t * 1000, cur, rps, rps);
        policy_decision_t d;
        policy_desired(&cfg, &in, &st, &d);
        if (d.next > cur)
            (*ups)++;
        if (d.next < cur)
            (*downs)++;
        cur = d.next;
    }
    *final = cur;
}

static void test_no_flapping(void **state)
{
    (void)state;
    uint32_t ups, downs, final;
    /* target 100/instance, load oscillating 195..205 around 2 instances' worth */
    s_no_flap(POLICY_TARGET, 200, 5, 2, &ups, &downs, &final);
    assert_int_equal(ups, 1);
    assert_int_equal(downs, 0);
    assert_int_equal(final, 3);
    /* starting above: never goes down while every other sample wants the current count */
    s_no_flap(POLICY_TARGET, 200, 50, 3, &ups, &downs, &final);
    assert_int_equal(ups + downs, 0);
    /* threshold: per-instance rate oscillating around scale_down_rps */
    s_no_flap(POLICY_THRESHOLD, 2 * 30, 2, 2, &ups, &downs, &final);
    assert_int_equal(ups + downs, 0);
    assert_int_equal(final, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target_table),
        cmocka_unit_test(test_target_panic_enter_exit),
        cmocka_unit_test(test_target_panic_retrigger_extends),
        cmocka_unit_test(test_target_scale_down_delay),
        cmocka_unit_test(test_target_delay_interrupted),
        cmocka_unit_test(test_stale_metrics_reset_streak),
        cmocka_unit_test(test_target_down_by_max_step),
        cmocka_unit_test(test_threshold_table),
        cmocka_unit_test(test_threshold_each_step_waits),
        cmocka_unit_test(test_no_flapping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
