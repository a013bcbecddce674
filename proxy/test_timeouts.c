/* test_timeouts.c - the worker's shared client timeouts on a real libuv loop: order, never
 * early, cancel, move, set again from the callback, and the loop ends when nothing is set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "timeouts.h"

typedef struct {
    timeout_t to;
    int id;
    int fired;
    uint64_t set_at, fired_at;
    int again; /* set again (class 0) from the callback this many times */
} item_t;

static int s_order[16];
static int s_nfired;

static void s_cb(timeouts_t *tos, timeout_t *t)
{
    item_t *it = list_entry(t, item_t, to);
    assert_false(timeout_is_set(t));
    it->fired++;
    it->fired_at = uv_now(tos->timer.loop);
    s_order[s_nfired++] = it->id;
    if (it->again > 0) {
        it->again--;
        it->set_at = uv_now(tos->timer.loop);
        timeouts_set(tos, t, 0);
    }
}

static void s_setup(uv_loop_t *loop, timeouts_t *tos, item_t *items, int n)
{
    static const uint64_t lens[3] = {40, 10, 25};
    assert_int_equal(uv_loop_init(loop), 0);
    timeouts_init(tos, loop, lens, 3, s_cb);
    memset(items, 0, sizeof *items * (size_t)n);
    for (int i = 0; i < n; i++) {
        timeout_init(&items[i].to);
        items[i].id = i;
    }
    s_nfired = 0;
}

static void s_teardown(uv_loop_t *loop, timeouts_t *tos)
{
    timeouts_close(tos, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* Entries of three lengths set in one order come due in deadline order, never early, and
 * uv_run returns once the last has fired: the timer does not keep the loop alive. */
static void test_order_and_never_early(void **state)
{
    (void)state;
    uv_loop_t loop;
    timeouts_t tos;
    item_t it[4];
    s_setup(&loop, &tos, it, 4);
    int cls[4] = {0, 1, 2, 1}; /* 40, 10, 25, 10 ms */
    for (int i = 0; i < 4; i++) {
        it[i].set_at = uv_now(&loop);
        timeouts_set(&tos, &it[i].to, cls[i]);
        assert_true(timeout_is_set(&it[i].to));
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(s_nfired, 4);
    int want[4] = {1, 3, 2, 0};
    assert_memory_equal(s_order, want, sizeof want);
    uint64_t len[3] = {40, 10, 25};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(it[i].fired, 1);
        assert_true(it[i].fired_at >= it[i].set_at + len[cls[i]]);
    }
    s_teardown(&loop, &tos);
}

/* A cancelled entry never fires; setting an entry again moves its deadline later. */
static void test_cancel_and_move(void **state)
{
    (void)state;
    uv_loop_t loop;
    timeouts_t tos;
    item_t it[3];
    s_setup(&loop, &tos, it, 3);
    timeouts_set(&tos, &it[0].to, 1); /* 10 ms, then cancelled */
    timeouts_set(&tos, &it[1].to, 1); /* 10 ms, then moved to 40 ms */
    timeouts_set(&tos, &it[2].to, 2); /* 25 ms */
    timeout_cancel(&it[0].to);
    assert_false(timeout_is_set(&it[0].to));
    timeout_cancel(&it[0].to); /* twice: nothing */
    it[1].set_at = uv_now(&loop);
    timeouts_set(&tos, &it[1].to, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(it[0].fired, 0);
    assert_int_equal(s_nfired, 2);
    assert_int_equal(s_order[0], 2);
    assert_int_equal(s_order[1], 1);
    assert_true(it[1].fired_at >= it[1].set_at + 40);
    s_teardown(&loop, &tos);
}

/* The callback may set its entry again: it fires once more, a full length later. With
 * everything cancelled the timer stops at its next firing, which is never later than the
 * earliest deadline that was set: the loop ends without waiting for the long one. */
static void test_again_and_cancel_all(void **state)
{
    (void)state;
    uv_loop_t loop;
    timeouts_t tos;
    item_t it[2];
    s_setup(&loop, &tos, it, 2);
    it[0].again = 1;
    timeouts_set(&tos, &it[0].to, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(it[0].fired, 2);
    assert_true(it[0].fired_at >= it[0].set_at + 40);

    s_teardown(&loop, &tos);

    /* Cancelled with ten seconds to go: uv_run returns long before. */
    static const uint64_t lens[2] = {10000, 10};
    assert_int_equal(uv_loop_init(&loop), 0);
    timeouts_init(&tos, &loop, lens, 2, s_cb);
    timeouts_set(&tos, &it[1].to, 0);
    timeout_cancel(&it[1].to);
    timeouts_set(&tos, &it[0].to, 1);
    timeout_cancel(&it[0].to);
    uint64_t t0 = uv_now(&loop);
    uv_run(&loop, UV_RUN_DEFAULT); /* the timer fires once for nothing (10 ms) and stops */
    uv_update_time(&loop);
    assert_true(uv_now(&loop) - t0 < 5000);
    assert_int_equal(it[1].fired, 0);
    assert_int_equal(s_nfired, 2);
    s_teardown(&loop, &tos);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_never_early),
        cmocka_unit_test(test_cancel_and_move),
        cmocka_unit_test(test_again_and_cancel_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
