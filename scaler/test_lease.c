/* test_lease.c - lease.c against a real redis-server started on a free port in a temp dir: one
 * leader at a time, a standby taking a lease that ran out under a higher epoch, the old leader
 * told it lost, an emptied Redis taken back by the leader (LEASE_WIPED) while a standby waits,
 * and the store's fencing following the lease. Set TIDE_TEST_PORT_BASE to choose where ports
 * are searched (else the kernel picks one). Fails when redis-server is not installed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lease.h"
#include "names.h"
#include "store.h"
#include "tide_clock.h"
#include "tide_log.h"
#include "tide_redis.h"
#include "test_fixtures.h"

static char s_dir[] = "/tmp/tide-test-lease-XXXXXX";
static test_redis_t s_redis = {.port = 0, .pid = -1};
static tide_config_t s_cfg;

static redis_conn_t *s_conn(void)
{
    return redis_conn_new("127.0.0.1", s_redis.port, 200, 500);
}

static int setup(void **state)
{
    (void)state;
    log_init("test-lease", LOGL_ERROR);
    if (system("command -v redis-server >/dev/null 2>&1") != 0)
        return 0; /* each test then fails with the reason */
    if (!mkdtemp(s_dir))
        return -1;
    s_redis.port = test_free_port();
    if (s_redis.port <= 0 || test_redis_start(&s_redis, s_dir) != 0)
        return -1;
    config_defaults(&s_cfg);
    snprintf(s_cfg.service, sizeof s_cfg.service, "t1");
    s_cfg.redis.port = s_redis.port;
    s_cfg.redis.connect_timeout_ms = 200;
    s_cfg.redis.command_timeout_ms = 500;
    s_cfg.scaler.lease_ms = 600; /* renew every 200 ms, standby polls every 100 ms */
    snprintf(s_cfg.app.host, sizeof s_cfg.app.host, "127.0.0.1");
    s_cfg.app.base_port = 9101;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_redis_stop(&s_redis);
    if (strstr(s_dir, "XXXXXX") == NULL) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

#define REQUIRE_REDIS()                                                                            \
    do {                                                                                           \
        if (s_redis.pid <= 0)                                                                      \
            fail_msg("redis-server did not start: run scripts/setup-deps");                        \
    } while (0)

static redisReply *s_cmd(redis_conn_t *c, int argc, const char **argv)
{
    redisReply *r = redis_conn_command(c, argc, argv);
    assert_non_null(r);
    return r;
}

static void s_flush(redis_conn_t *c)
{
    const char *argv[] = {"FLUSHALL"};
    freeReplyObject(s_cmd(c, 1, argv));
}

static char *s_get(redis_conn_t *c, const char *key)
{
    char k[256];
    const char *argv[] = {"GET", redis_key(k, sizeof k, s_cfg.service, key)};
    redisReply *r = s_cmd(c, 2, argv);
    char *v = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
    freeReplyObject(r);
    return v;
}

/* Steps l until it reports want or ms pass (its own cadence decides when it talks to Redis). */
static bool s_step_until(lease_t *l, lease_event_t want, uint64_t ms)
{
    uint64_t until = clock_mono_ms() + ms;
    while (clock_mono_ms() < until) {
        if (lease_step(l, clock_mono_ms()) == want)
            return true;
        test_sleep_ms(20);
    }
    return false;
}

static void test_one_leader_then_take_over(void **state)
{
    (void)state;
    REQUIRE_REDIS();
    redis_conn_t *c = s_conn();
    s_flush(c);
    lease_t *a = lease_new(&s_cfg, "a");
    lease_t *b = lease_new(&s_cfg, "b");
    /* a first start: an empty Redis is taken at once */
    assert_int_equal(lease_step(a, clock_mono_ms()), LEASE_ACQUIRED);
    assert_true(lease_leading(a));
    assert_string_equal(lease_fence(a), "a 1");
    char *v = s_get(c, KEY_LEADER);
    assert_string_equal(v, "a 1");
    free(v);
    /* b stands by while a renews, for several lease periods */
    uint64_t until = clock_mono_ms() + 3 * (uint64_t)s_cfg.scaler.lease_ms;
    while (clock_mono_ms() < until) {
        assert_int_equal(lease_step(b, clock_mono_ms()), LEASE_NONE);
        assert_int_equal(lease_step(a, clock_mono_ms()), LEASE_NONE);
        test_sleep_ms(20);
    }
    assert_false(lease_leading(b));
    assert_string_equal(lease_fence(b), "");
    assert_string_equal(lease_holder(b), "a 1");
    /* a stops renewing (dead or hung): b takes over within the lease plus its poll */
    uint64_t t0 = clock_mono_ms();
    assert_true(s_step_until(b, LEASE_ACQUIRED, 2 * (uint64_t)s_cfg.scaler.lease_ms));
    assert_true(clock_mono_ms() - t0 <= (uint64_t)s_cfg.scaler.lease_ms * 7 / 6 + 300);
    assert_string_equal(lease_fence(b), "b 2");
    /* a wakes: its renewal finds b, it steps down and names the leader */
    assert_int_equal(lease_step(a, clock_mono_ms()), LEASE_LOST);
    assert_false(lease_leading(a));
    assert_string_equal(lease_holder(a), "b 2");
    /* the store follows: a write under a's old fence is refused, b's goes through */
    store_t *st = store_new(&s_cfg);
    fsm_record_t *rec = calloc(1, sizeof *rec);
    uint64_t version = 0;
    store_set_fence(st, "a 1");
    assert_int_equal(store_write(st, rec, true, 1, &version), -EPERM);
    store_set_fence(st, lease_fence(b));
    assert_int_equal(store_write(st, rec, true, 1, &version), 0);
    free(rec);
    store_destroy(&st);
    /* a clean stop gives the lease up: a standby takes it at its next try */
    assert_int_equal(lease_release(a), 0); /* not leading: nothing to give */
    assert_int_equal(lease_release(b), 0);
    assert_false(lease_leading(b));
    v = s_get(c, KEY_LEADER);
    assert_null(v);
    assert_true(s_step_until(a, LEASE_ACQUIRED, (uint64_t)s_cfg.scaler.lease_ms / 2));
    assert_string_equal(lease_fence(a), "a 3");
    lease_destroy(&a);
    lease_destroy(&b);
    assert_null(a);
    redis_conn_destroy(&c);
}

static void test_wipe_is_the_leaders_to_repair(void **state)
{
    (void)state;
    REQUIRE_REDIS();
    redis_conn_t *c = s_conn();
    s_flush(c);
    lease_t *a = lease_new(&s_cfg, "a");
    lease_t *b = lease_new(&s_cfg, "b");
    assert_int_equal(lease_step(a, clock_mono_ms()), LEASE_ACQUIRED);
    const char *setv[] = {"SET", "tide:t1:pool_version", "17"};
    freeReplyObject(s_cmd(c, 3, setv));
    assert_int_equal(lease_step(b, clock_mono_ms()), LEASE_NONE); /* b has seen a's epoch */
    assert_int_equal(lease_seen_version(b), 17);
    s_flush(c);
    /* a notices at its next renewal (a third of the lease) and leads under a new epoch; b,
     * having seen a leader, does not take the empty Redis meanwhile */
    uint64_t t0 = clock_mono_ms();
    bool wiped = false;
    while (!wiped && clock_mono_ms() - t0 < (uint64_t)s_cfg.scaler.lease_ms) {
        assert_int_equal(lease_step(b, clock_mono_ms()), LEASE_NONE);
        wiped = lease_step(a, clock_mono_ms()) == LEASE_WIPED;
        test_sleep_ms(20);
    }
    assert_true(wiped);
    assert_true(clock_mono_ms() - t0 <= (uint64_t)s_cfg.scaler.lease_ms / 3 + 300);
    assert_true(lease_leading(a));
    assert_string_equal(lease_fence(a), "a 2");
    char *v = s_get(c, KEY_EPOCH);
    assert_string_equal(v, "2");
    free(v);
    assert_int_equal(lease_step(b, clock_mono_ms() + 10000), LEASE_NONE);
    assert_false(lease_leading(b));
    /* an epoch key set back below the leader's (a replica that missed writes) is a wipe too */
    const char *old[] = {"SET", "tide:t1:epoch", "1"};
    freeReplyObject(s_cmd(c, 3, old));
    assert_true(s_step_until(a, LEASE_WIPED, (uint64_t)s_cfg.scaler.lease_ms));
    assert_string_equal(lease_fence(a), "a 3");
    lease_destroy(&a);
    lease_destroy(&b);
    redis_conn_destroy(&c);
}

/* A standby that finds Redis empty after it had seen a leader waits a lease period first. */
static void test_standby_waits_on_an_empty_redis(void **state)
{
    (void)state;
    REQUIRE_REDIS();
    redis_conn_t *c = s_conn();
    s_flush(c);
    lease_t *a = lease_new(&s_cfg, "a");
    lease_t *b = lease_new(&s_cfg, "b");
    assert_int_equal(lease_step(a, clock_mono_ms()), LEASE_ACQUIRED);
    assert_int_equal(lease_step(b, clock_mono_ms()), LEASE_NONE);
    lease_destroy(&a); /* gone, and then so is the data */
    s_flush(c);
    uint64_t t0 = clock_mono_ms();
    assert_true(s_step_until(b, LEASE_ACQUIRED, 3 * (uint64_t)s_cfg.scaler.lease_ms));
    assert_true(clock_mono_ms() - t0 >= (uint64_t)s_cfg.scaler.lease_ms);
    assert_string_equal(lease_fence(b), "b 2"); /* above the epoch it had seen */
    lease_destroy(&b);
    redis_conn_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_leader_then_take_over),
        cmocka_unit_test(test_wipe_is_the_leaders_to_repair),
        cmocka_unit_test(test_standby_waits_on_an_empty_redis),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
