/* test_pool.c - pool snapshots: copies, equality, references. (The watcher needs Redis and
 * is exercised by the integration tests.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pool.h"

static void test_snapshot(void **state)
{
    (void)state;
    pool_entry_t e[2] = {{"production0", "127.0.0.1:9100"}, {"production1", "127.0.0.1:9101"}};
    pool_t *a = pool_new(3, e, 2);
    strcpy(e[1].addr, "127.0.0.1:9999"); /* the snapshot holds its own copy */
    pool_t *b = pool_new(3, e, 2);
    assert_non_null(a);
    assert_string_equal(a->entries[1].addr, "127.0.0.1:9101");
    assert_false(pool_equal(a, b));
    pool_t *c = pool_new(3, a->entries, a->n);
    assert_true(pool_equal(a, c));
    c->version = 4;
    assert_false(pool_equal(a, c));
    pool_t *empty = pool_new(0, NULL, 0);
    assert_int_equal(empty->n, 0);
    assert_false(pool_equal(a, empty));

    pool_t *ref = pool_ref(a);
    assert_ptr_equal(ref, a);
    pool_unref(&ref);
    assert_null(ref);
    assert_string_equal(a->entries[0].name, "production0"); /* still alive: one ref left */
    pool_unref(&a);
    pool_unref(&a); /* NULL: nothing */
    pool_unref(&b);
    pool_unref(&c);
    pool_unref(&empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
