/* test_profiler.c - unit tests of scaler/profiler.c: when an instance's errors get it a
 * profile (threshold held for error_for, one per min_interval, a gap in the snapshots restarts
 * the count), which sibling is the baseline, crashes found by a list, and the checks of a
 * manual profile. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "profiler.h"

static profiler_config_t s_cfg(void)
{
    profiler_config_t c = {
        .enabled = true,
        .error_rate = 0.2,
        .error_for_ms = 3000,
        .min_interval_ms = 60000,
        .window_s = 5,
        .manual_s = 10,
        .max_s = 120,
        .stale_ms = 2500,
    };
    return c;
}

/* Feeds one snapshot a second from t0 to t1 (inclusive): instance 1 at rate1, instance 0 and
 * 2 healthy at rate0 and rate2. Returns how many profiles were due, the last in *w. */
static int s_run(profiler_t *p, uint64_t t0, uint64_t t1, double rate1, double rate0, double rate2,
                 profile_want_t *w)
{
    int due = 0;
    for (uint64_t t = t0; t <= t1; t += 1000) {
        profiler_note(p, 0, rate0, t);
        profiler_note(p, 1, rate1, t);
        profiler_note(p, 2, rate2, t);
        while (profiler_due(p, t, w) == 1)
            due++;
    }
    return due;
}

static void test_errors_trigger_once_per_interval(void **state)
{
    (void)state;
    profiler_config_t c = s_cfg();
    profiler_t *p = profiler_new(&c);
    profile_want_t w;
    /* 2 s over the threshold: not yet */
    assert_int_equal(s_run(p, 1000, 3000, 0.5, 0.0, 0.05, &w), 0);
    /* the 3rd second over it: one profile, of instance 1, baseline the healthiest (0) */
    assert_int_equal(s_run(p, 4000, 4000, 0.5, 0.0, 0.05, &w), 1);
    assert_int_equal(w.index, 1);
    assert_int_equal(w.baseline, 0);
    assert_string_equal(w.reason, "errors");
    assert_string_equal(w.detail, "error rate 0.50 for 3.0 s");
    assert_int_equal(w.seconds, 5);
    /* still failing for the rest of the interval: nothing more */
    assert_int_equal(s_run(p, 5000, 63000, 0.5, 0.0, 0.05, &w), 0);
    /* past min_interval: the next one */
    assert_int_equal(s_run(p, 64000, 64000, 0.5, 0.0, 0.05, &w), 1);
    profiler_destroy(&p);
    assert_null(p);
}

static void test_below_threshold_or_gaps_do_not_trigger(void **state)
{
    (void)state;
    profiler_config_t c = s_cfg();
    profiler_t *p = profiler_new(&c);
    profile_want_t w;
    /* just under the threshold for long: never */
    assert_int_equal(s_run(p, 1000, 30000, 0.19, 0, 0, &w), 0);
    /* failing 2 s, a dip, failing 2 s: the streak restarts at the dip */
    assert_int_equal(s_run(p, 31000, 33000, 0.9, 0, 0, &w), 0);
    assert_int_equal(s_run(p, 34000, 34000, 0.0, 0, 0, &w), 0);
    assert_int_equal(s_run(p, 35000, 37000, 0.9, 0, 0, &w), 0);
    /* a 5 s gap in the snapshots (metrics down): the time failing is unknown, start again */
    assert_int_equal(s_run(p, 42000, 44000, 0.9, 0, 0, &w), 0);
    assert_int_equal(s_run(p, 45000, 45000, 0.9, 0, 0, &w), 1);
    profiler_destroy(&p);

    c.enabled = false;
    p = profiler_new(&c);
    assert_int_equal(s_run(p, 1000, 20000, 1.0, 0, 0, &w), 0);
    profiler_destroy(&p);
}

/* The baseline is a pool member under half the threshold; none when all siblings fail. */
static void test_baseline_choice(void **state)
{
    (void)state;
    profiler_config_t c = s_cfg();
    profiler_t *p = profiler_new(&c);
    profile_want_t w;
    assert_int_equal(s_run(p, 1000, 4000, 0.6, 0.15, 0.02, &w), 1);
    assert_int_equal(w.baseline, 2); /* 0 fails 15%: over half the threshold */
    profiler_destroy(&p);
    p = profiler_new(&c);
    assert_int_equal(s_run(p, 1000, 4000, 0.6, 0.5, 0.5, &w), 3); /* all three fail */
    assert_int_equal(w.baseline, -1);
    profiler_destroy(&p);
}

static void test_manual(void **state)
{
    (void)state;
    profiler_config_t c = s_cfg();
    profiler_t *p = profiler_new(&c);
    profile_want_t w;
    char err[160];
    s_run(p, 1000, 1000, 0.0, 0.0, 0.0, &w);
    assert_int_equal(profiler_manual(p, 1, true, 0, 1000, &w, err, sizeof err), 0);
    assert_int_equal(w.seconds, 10);
    assert_int_equal(w.index, 1);
    assert_int_equal(w.baseline, 0);
    assert_string_equal(w.reason, "manual");
    /* manual ones are not rate limited */
    assert_int_equal(profiler_manual(p, 1, true, 120, 1000, &w, err, sizeof err), 0);
    assert_int_equal(profiler_manual(p, 1, true, 121, 1000, &w, err, sizeof err), -EINVAL);
    assert_string_equal(err, "seconds 121 out of bounds (1..120, profiling.max_seconds)");
    assert_int_equal(profiler_manual(p, 7, false, 5, 1000, &w, err, sizeof err), -EINVAL);
    assert_string_equal(err, "not an instance in the pool");
    assert_int_equal(profiler_manual(p, -1, false, 5, 1000, &w, err, sizeof err), -EINVAL);
    profiler_destroy(&p);
}

/* A crash of an instance in the pool: one "crash" profile of the dead pid, from the ring
 * (window_s), with a healthy baseline; the same exit reported by the next list, or an exit of
 * an instance outside the pool, gets none; the rate limit is the one errors profiles use. */
static void test_crash(void **state)
{
    (void)state;
    profiler_config_t c = s_cfg();
    profiler_t *p = profiler_new(&c);
    profile_want_t w;
    assert_int_equal(s_run(p, 1000, 2000, 0.0, 0.0, 0.05, &w), 0);
    assert_int_equal(
        profiler_crashed(p, 1, true, 4242, "terminated by SIGSEGV (core dumped)", 2500),
        PROFILER_CRASH_PROFILED);
    assert_int_equal(profiler_due(p, 2500, &w), 1);
    assert_int_equal(w.index, 1);
    assert_int_equal(w.pid, 4242);
    assert_int_equal(w.baseline, 0);
    assert_string_equal(w.reason, "crash");
    assert_string_equal(w.detail, "pid 4242 exited: terminated by SIGSEGV (core dumped)");
    assert_int_equal(w.seconds, 5);
    assert_int_equal(profiler_due(p, 2500, &w), 0);
    /* the next list reports the same exit: nothing */
    assert_int_equal(
        profiler_crashed(p, 1, true, 4242, "terminated by SIGSEGV (core dumped)", 3000),
        PROFILER_CRASH_IGNORED);
    assert_int_equal(profiler_due(p, 3000, &w), 0);
    /* not in the pool: nobody was served from it */
    assert_int_equal(profiler_crashed(p, 2, false, 5000, "exit status 1", 3000),
                     PROFILER_CRASH_IGNORED);
    assert_int_equal(profiler_due(p, 3000, &w), 0);
    /* the replacement crashes within min_interval: rate limited; after it, profiled */
    assert_int_equal(profiler_crashed(p, 1, true, 4300, "exit status 3", 30000),
                     PROFILER_CRASH_LIMITED);
    assert_int_equal(profiler_due(p, 30000, &w), 0);
    profiler_crashed(p, 1, true, 4400, "exit status 3", 70000);
    assert_int_equal(profiler_due(p, 70000, &w), 1);
    assert_int_equal(w.pid, 4400);
    assert_string_equal(w.detail, "pid 4400 exited: exit status 3");
    /* errors of the same instance right after: the crash used its slot */
    assert_int_equal(s_run(p, 71000, 80000, 0.9, 0.0, 0.0, &w), 0);
    profiler_destroy(&p);

    /* automatic profiles off: a crash is logged by the caller, not profiled */
    c.enabled = false;
    p = profiler_new(&c);
    assert_int_equal(profiler_crashed(p, 1, true, 4242, "exit status 1", 1000),
                     PROFILER_CRASH_IGNORED);
    assert_int_equal(profiler_due(p, 1000, &w), 0);
    profiler_destroy(&p);
}

/* An instance fails requests as it dies: the errors profile sent first fails (its process is
 * gone), which gives the slot back, and the crash that the list reports meanwhile is profiled
 * then; had the errors profile been written, the crash would wait out min_interval. */
static void test_crash_after_a_failed_errors_profile(void **state)
{
    (void)state;
    profiler_config_t c = s_cfg();
    profiler_t *p = profiler_new(&c);
    profile_want_t w;
    assert_int_equal(s_run(p, 1000, 4000, 0.9, 0.0, 0.0, &w), 1);
    assert_string_equal(w.reason, "errors");
    profiler_sent(p, 1, "profile-production1-1");
    assert_int_equal(profiler_crashed(p, 1, true, 777, "terminated by SIGSEGV (core dumped)", 4500),
                     PROFILER_CRASH_PROFILED);
    assert_int_equal(profiler_due(p, 4500, &w), 0); /* the errors job may yet succeed */
    profiler_finished(p, "profile-someone-else", false, 5000);
    assert_int_equal(profiler_due(p, 5000, &w), 0);
    assert_int_equal(profiler_finished(p, "profile-production1-1", false, 5500), -1);
    assert_int_equal(profiler_due(p, 5500, &w), 1);
    assert_string_equal(w.reason, "crash");
    assert_int_equal(w.pid, 777);
    assert_int_equal(profiler_due(p, 5500, &w), 0);
    profiler_sent(p, 1, "profile-production1-2");
    profiler_finished(p, "profile-production1-2", true, 9000);
    /* the crash profile was written: the replacement's errors wait out min_interval */
    assert_int_equal(s_run(p, 10000, 20000, 0.9, 0.0, 0.0, &w), 0);
    profiler_destroy(&p);

    /* the errors profile was written: the crash that follows is rate limited */
    p = profiler_new(&c);
    assert_int_equal(s_run(p, 1000, 4000, 0.9, 0.0, 0.0, &w), 1);
    profiler_sent(p, 1, "profile-production1-1");
    profiler_crashed(p, 1, true, 778, "exit status 1", 4500);
    assert_int_equal(profiler_finished(p, "profile-production1-1", true, 6000), 1);
    assert_int_equal(profiler_due(p, 6000, &w), 0);
    profiler_destroy(&p);

    /* a job that wrote no profile before the crash: the crash is due at once */
    p = profiler_new(&c);
    assert_int_equal(s_run(p, 1000, 4000, 0.9, 0.0, 0.0, &w), 1);
    profiler_sent(p, 1, "profile-production1-1");
    profiler_finished(p, "profile-production1-1", false, 5000);
    profiler_crashed(p, 1, true, 779, "exit status 1", 5500);
    assert_int_equal(profiler_due(p, 5500, &w), 1);
    assert_int_equal(w.pid, 779);
    profiler_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_trigger_once_per_interval),
        cmocka_unit_test(test_below_threshold_or_gaps_do_not_trigger),
        cmocka_unit_test(test_baseline_choice),
        cmocka_unit_test(test_manual),
        cmocka_unit_test(test_crash),
        cmocka_unit_test(test_crash_after_a_failed_errors_profile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
