/* test_balancer.c - the instance choice: two random choices, the less loaded wins, fair ties,
 * exclusions, instances marked down. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "balancer.h"

#define DRAWS 30000

/* How often each candidate wins over DRAWS random draws. */
static void s_hits(const balancer_cand_t *c, size_t n, int *hits)
{
    uint64_t rng = 12345;
    for (size_t i = 0; i < n; i++)
        hits[i] = 0;
    for (int i = 0; i < DRAWS; i++) {
        int k = balancer_pick(c, n, balancer_random(&rng));
        assert_true(k >= 0 && (size_t)k < n);
        hits[k]++;
    }
}

static void s_near(int hits, double share)
{
    double want = share * DRAWS;
    assert_true(hits > want - 0.03 * DRAWS);
    assert_true(hits < want + 0.03 * DRAWS);
}

static void test_empty(void **state)
{
    (void)state;
    assert_int_equal(balancer_pick(NULL, 0, 1), -1);
}

static void test_one_and_two(void **state)
{
    (void)state;
    balancer_cand_t one[1] = {{.in_flight = 7}};
    for (uint64_t r = 1; r < 50; r++)
        assert_int_equal(balancer_pick(one, 1, r * 0x9E3779B97F4A7C15ULL), 0);
    /* With two candidates both are always drawn: the less loaded one always wins. */
    balancer_cand_t two[2] = {{.in_flight = 5}, {.in_flight = 1}};
    uint64_t rng = 99;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(balancer_pick(two, 2, balancer_random(&rng)), 1);
}

static void test_two_choices(void **state)
{
    (void)state;
    int hits[4];
    /* The idle one is in two of the three possible pairs; the busiest one never wins. */
    balancer_cand_t a[3] = {{.in_flight = 0}, {.in_flight = 5}, {.in_flight = 9}};
    s_hits(a, 3, hits);
    s_near(hits[0], 2.0 / 3);
    s_near(hits[1], 1.0 / 3);
    assert_int_equal(hits[2], 0);
    /* Four: the least loaded wins every pair it is in (1/2 of draws), the next 1/3, then 1/6. */
    balancer_cand_t b[4] = {{.in_flight = 3}, {.in_flight = 1}, {.in_flight = 8}, {.in_flight = 2}};
    s_hits(b, 4, hits);
    s_near(hits[1], 1.0 / 2);
    s_near(hits[3], 1.0 / 3);
    s_near(hits[0], 1.0 / 6);
    assert_int_equal(hits[2], 0);
}

static void test_ties_spread(void **state)
{
    (void)state;
    balancer_cand_t c[3] = {{.in_flight = 2}, {.in_flight = 2}, {.in_flight = 2}};
    int hits[3];
    s_hits(c, 3, hits);
    for (int i = 0; i < 3; i++)
        s_near(hits[i], 1.0 / 3);
}

static void test_excluded(void **state)
{
    (void)state;
    balancer_cand_t c[3] = {{.in_flight = 0, .excluded = true}, {.in_flight = 5}, {.in_flight = 6}};
    int hits[3];
    s_hits(c, 3, hits);
    assert_int_equal(hits[0], 0);
    assert_int_equal(hits[1], DRAWS); /* the two others are both drawn: 5 beats 6 */
    c[1].excluded = c[2].excluded = true;
    assert_int_equal(balancer_pick(c, 3, 3), -1);
}

static void test_down(void **state)
{
    (void)state;
    balancer_cand_t c[3] = {{.in_flight = 0, .down = true}, {.in_flight = 4}, {.in_flight = 6}};
    int hits[3];
    s_hits(c, 3, hits);
    assert_int_equal(hits[0], 0); /* down: never while another is up */
    assert_int_equal(hits[1], DRAWS);
    /* Every candidate down: still choose among them rather than fail the request. */
    c[1].down = c[2].down = true;
    s_hits(c, 3, hits);
    assert_int_equal(hits[2], 0);
    s_near(hits[0], 2.0 / 3);
    /* Down and excluded: the excluded one never comes back. */
    c[0].excluded = true;
    s_hits(c, 3, hits);
    assert_int_equal(hits[0], 0);
    assert_int_equal(hits[1], DRAWS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),       cmocka_unit_test(test_one_and_two),
        cmocka_unit_test(test_two_choices), cmocka_unit_test(test_ties_spread),
        cmocka_unit_test(test_excluded),    cmocka_unit_test(test_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
