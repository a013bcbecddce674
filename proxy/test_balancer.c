/* test_balancer.c - the instance choice: least outstanding, fair ties, exclusions, down. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "balancer.h"

static void test_empty(void **state)
{
    (void)state;
    assert_int_equal(balancer_pick(NULL, 0, 1), -1);
}

static void test_least(void **state)
{
    (void)state;
    /* Table: in-flight counts and the only right answer. */
    struct {
        uint32_t f[4];
        size_t n;
        int want;
    } t[] = {
        {{5, 1, 3, 2}, 4, 1},
        {{0, 9, 9, 9}, 4, 0},
        {{9, 9, 9, 0}, 4, 3},
        {{7}, 1, 0},
    };
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        balancer_cand_t c[4] = {0};
        for (size_t i = 0; i < t[k].n; i++)
            c[i].in_flight = t[k].f[i];
        for (uint64_t r = 1; r < 50; r++)
            assert_int_equal(balancer_pick(c, t[k].n, r * 7919), t[k].want);
    }
}

static void test_ties_spread(void **state)
{
    (void)state;
    balancer_cand_t c[3] = {{.in_flight = 2}, {.in_flight = 2}, {.in_flight = 2}};
    int hits[3] = {0};
    uint64_t rng = 12345;
    for (int i = 0; i < 30000; i++)
        hits[balancer_pick(c, 3, balancer_random(&rng))]++;
    for (int i = 0; i < 3; i++) {
        assert_true(hits[i] > 9000);
        assert_true(hits[i] < 11000);
    }
}

static void test_excluded(void **state)
{
    (void)state;
    balancer_cand_t c[2] = {{.in_flight = 0, .excluded = true}, {.in_flight = 5}};
    assert_int_equal(balancer_pick(c, 2, 3), 1);
    c[1].excluded = true;
    assert_int_equal(balancer_pick(c, 2, 3), -1);
}

static void test_down(void **state)
{
    (void)state;
    balancer_cand_t c[3] = {{.in_flight = 0, .down = true}, {.in_flight = 4}, {.in_flight = 6}};
    assert_int_equal(balancer_pick(c, 3, 3), 1);
    /* Every candidate down: still choose among them rather than fail the request. */
    c[1].down = c[2].down = true;
    assert_int_equal(balancer_pick(c, 3, 3), 0);
    /* Down and excluded: the excluded one never comes back. */
    c[0].excluded = true;
    assert_int_equal(balancer_pick(c, 3, 3), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),       cmocka_unit_test(test_least),
        cmocka_unit_test(test_ties_spread), cmocka_unit_test(test_excluded),
        cmocka_unit_test(test_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
