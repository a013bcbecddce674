/* test_store.c - store.c against a real redis-server started on a free port in a temp dir:
 * the keys and fields written, one script per change, the fencing, the read-back, foreign
 * entries, and reconnecting after Redis comes back. Set TIDE_TEST_PORT_BASE to choose where
 * ports are searched (else the kernel picks one). Fails when redis-server is not installed. */
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

#include "names.h"
#include "store.h"
#include "tide_clock.h"
#include "tide_log.h"
#include "tide_redis.h"
#include "test_fixtures.h"

static char s_dir[] = "/tmp/tide-test-store-XXXXXX";
static test_redis_t s_redis = {.port = 0, .pid = -1};
static tide_config_t s_cfg;

static redis_conn_t *s_conn(void)
{
    return redis_conn_new("127.0.0.1", s_redis.port, 200, 500);
}

static int setup(void **state)
{
    (void)state;
    log_init("test-store", LOGL_ERROR);
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

static char *s_get(redis_conn_t *c, const char *key)
{
    char k[256];
    const char *argv[] = {"GET", redis_key(k, sizeof k, s_cfg.service, key)};
    redisReply *r = s_cmd(c, 2, argv);
    char *v = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
    freeReplyObject(r);
    return v;
}

static char *s_hget(redis_conn_t *c, const char *key, const char *field)
{
    char k[256];
    const char *argv[] = {"HGET", redis_key(k, sizeof k, s_cfg.service, key), field};
    redisReply *r = s_cmd(c, 3, argv);
    char *v = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
    freeReplyObject(r);
    return v;
}

static void s_assert_hfield(redis_conn_t *c, const char *field, const char *want)
{
    char *v = s_hget(c, KEY_STATE, field);
    if (!v || strcmp(v, want) != 0)
        fail_msg("state.%s = %s, want %s", field, v ? v : "(nil)", want);
    free(v);
}

/* calls of a command so far, from INFO commandstats */
static long s_calls(redis_conn_t *c, const char *cmd)
{
    const char *argv[] = {"INFO", "commandstats"};
    redisReply *r = s_cmd(c, 2, argv);
    char needle[64];
    snprintf(needle, sizeof needle, "cmdstat_%s:calls=", cmd);
    const char *p = r->type == REDIS_REPLY_STRING ? strstr(r->str, needle) : NULL;
    long n = p ? atol(p + strlen(needle)) : 0;
    freeReplyObject(r);
    return n;
}

static void s_flush(redis_conn_t *c)
{
    const char *argv[] = {"FLUSHALL"};
    freeReplyObject(s_cmd(c, 1, argv));
}

/* Makes st the lease holder: the leader key holds its fence, as lease.c would set it. */
static void s_own(store_t *st)
{
    redis_conn_t *c = s_conn();
    char k[256];
    redis_key(k, sizeof k, s_cfg.service, KEY_LEADER);
    const char *argv[] = {"SET", k, "test 1"};
    freeReplyObject(s_cmd(c, 3, argv));
    redis_conn_destroy(&c);
    store_set_fence(st, "test 1");
}

static void test_empty_load(void **state)
{
    (void)state;
    REQUIRE_REDIS();
    redis_conn_t *c = s_conn();
    s_flush(c);
    store_t *st = store_new(&s_cfg);
    s_own(st);
    fsm_record_t *rec = malloc(sizeof *rec);
    store_info_t info;
    assert_int_equal(store_load(st, rec, &info), 0);
    assert_true(info.empty);
    assert_int_equal(rec->n_pool, 0);
    assert_int_equal(rec->pool_version, 0);
    assert_int_equal(rec->state, TIDE__V1__STATE__STATE_IDLE);
    assert_false(rec->bounds_set);
    free(rec);
    store_destroy(&st);
    assert_null(st);
    redis_conn_destroy(&c);
}

static void test_write_and_read_back(void **state)
{
    (void)state;
    REQUIRE_REDIS();
    redis_conn_t *c = s_conn();
    s_flush(c);
    store_t *st = store_new(&s_cfg);
    s_own(st);
    fsm_record_t *rec = calloc(1, sizeof *rec);
    rec->state = TIDE__V1__STATE__STATE_BUSY;
    snprintf(rec->job_id, sizeof rec->job_id, "scaler-x-1");
    rec->desired = 4;
    rec->current = 3;
    rec->paused = true;
    rec->pinned = true;
    rec->forced = 4;
    rec->bounds_set = true;
    rec->min = 1;
    rec->max = 6;
    rec->pool[0] = 0;
    rec->pool[1] = 1;
    rec->pool[2] = 10;
    rec->n_pool = 3;
    rec->stopping[0] = 11;
    rec->n_stopping = 1;

    long exec0 = s_calls(c, "eval");
    uint64_t version = 0;
    assert_int_equal(store_write(st, rec, true, 1234567, &version), 0);
    assert_int_equal(version, 1);
    assert_int_equal(s_calls(c, "eval"), exec0 + 1); /* one transaction */

    /* the read side the proxies use sees the pool, sorted, with addresses */
    pool_entry_t entries[8];
    uint64_t v = 0;
    assert_int_equal(redis_read_pool(c, s_cfg.service, &v, entries, 8), 3);
    assert_int_equal(v, 1);
    assert_string_equal(entries[0].name, "production0");
    assert_string_equal(entries[0].addr, "127.0.0.1:9101");
    assert_string_equal(entries[2].name, "production10");
    assert_string_equal(entries[2].addr, "127.0.0.1:9111");
    char *inst = s_get(c, KEY_INSTANCES);
    assert_string_equal(inst, "3");
    free(inst);
    s_assert_hfield(c, "state", "BUSY");
    s_assert_hfield(c, "job_id", "scaler-x-1");
    s_assert_hfield(c, "since_ms", "1234567");
    s_assert_hfield(c, "desired", "4");
    s_assert_hfield(c, "current", "3");
    s_assert_hfield(c, "paused", "1");
    s_assert_hfield(c, "forced", "4");
    s_assert_hfield(c, "pinned", "1");
    s_assert_hfield(c, "min", "1");
    s_assert_hfield(c, "max", "6");
    s_assert_hfield(c, "bounds", "control");
    s_assert_hfield(c, "stopping", "production11");

    fsm_record_t *back = malloc(sizeof *back);
    store_info_t info;
    assert_int_equal(store_load(st, back, &info), 0);
    assert_false(info.empty);
    assert_int_equal(info.instances, 3);
    assert_int_equal(info.foreign, 0);
    assert_int_equal(info.bad_fields, 0);
    assert_int_equal(back->state, TIDE__V1__STATE__STATE_BUSY);
    assert_string_equal(back->job_id, "scaler-x-1");
    assert_int_equal(back->n_pool, 3);
    assert_int_equal(back->pool[2], 10);
    assert_int_equal(back->n_stopping, 1);
    assert_int_equal(back->stopping[0], 11);
    assert_true(back->paused && back->pinned && back->bounds_set);
    assert_int_equal(back->forced, 4);
    assert_int_equal(back->min, 1);
    assert_int_equal(back->max, 6);
    assert_int_equal(back->pool_version, 1);

    /* a smaller pool replaces the whole hash; a state-only write leaves the pool alone */
    rec->n_pool = 1;
    rec->state = TIDE__V1__STATE__STATE_IDLE;
    rec->job_id[0] = '\0';
    rec->bounds_set = false;
    assert_int_equal(store_write(st, rec, true, 1, &version), 0);
    assert_int_equal(version, 2);
    assert_int_equal(redis_read_pool(c, s_cfg.service, &v, entries, 8), 1);
    rec->paused = false;
    version = 77;
    assert_int_equal(store_write(st, rec, false, 2, &version), 0);
    assert_int_equal(version, 77); /* untouched */
    assert_int_equal(redis_read_pool(c, s_cfg.service, &v, entries, 8), 1);
    assert_int_equal(v, 2);
    s_assert_hfield(c, "paused", "0");
    s_assert_hfield(c, "job_id", "");
    s_assert_hfield(c, "bounds", "config");
    assert_int_equal(store_load(st, back, &info), 0);
    assert_false(back->bounds_set); /* config bounds are not pinned by a restart */

    /* an empty pool: the hash disappears, instances says 0 */
    rec->n_pool = 0;
    assert_int_equal(store_write(st, rec, true, 3, &version), 0);
    assert_int_equal(version, 3);
    assert_int_equal(redis_read_pool(c, s_cfg.service, &v, entries, 8), 0);
    inst = s_get(c, KEY_INSTANCES);
    assert_string_equal(inst, "0");
    free(inst);

    free(back);
    free(rec);
    store_destroy(&st);
    redis_conn_destroy(&c);
}

static void test_foreign_and_bad_values(void **state)
{
    (void)state;
    REQUIRE_REDIS();
    redis_conn_t *c = s_conn();
    s_flush(c);
    char kp[256], ks[256];
    redis_key(kp, sizeof kp, s_cfg.service, KEY_POOL);
    redis_key(ks, sizeof ks, s_cfg.service, KEY_STATE);
    const char *hset_pool[] = {"HSET",           kp,           "production1",
                               "127.0.0.1:9102", "web7",       "10.0.0.1:80",
                               "production01",   "127.0.0.1:1"};
    freeReplyObject(s_cmd(c, 8, hset_pool));
    const char *hset_state[] = {"HSET",   ks,   "state",    "WEIRD",
                                "forced", "3x", "stopping", "production1,production4,nonsense"};
    freeReplyObject(s_cmd(c, 8, hset_state));
    store_t *st = store_new(&s_cfg);
    s_own(st);
    fsm_record_t *rec = malloc(sizeof *rec);
    store_info_t info;
    assert_int_equal(store_load(st, rec, &info), 0);
    assert_int_equal(info.foreign, 2);
    assert_int_equal(rec->n_pool, 1);
    assert_int_equal(rec->pool[0], 1);
    assert_int_equal(info.bad_fields, 3); /* state, forced, one stopping name */
    assert_int_equal(rec->state, TIDE__V1__STATE__STATE_IDLE);
    /* production1 is in the pool: the pool wins over the stop list */
    assert_int_equal(rec->n_stopping, 1);
    assert_int_equal(rec->stopping[0], 4);
    /* the next pool write drops what is not ours */
    uint64_t version;
    assert_int_equal(store_write(st, rec, true, 1, &version), 0);
    pool_entry_t entries[8];
    uint64_t v;
    assert_int_equal(redis_read_pool(c, s_cfg.service, &v, entries, 8), 1);
    free(rec);
    store_destroy(&st);
    redis_conn_destroy(&c);
}

/* A command failing inside EXEC (here: HSET on a key that is a string) fails the write. */
static void test_error_inside_transaction(void **state)
{
    (void)state;
    REQUIRE_REDIS();
    redis_conn_t *c = s_conn();
    s_flush(c);
    char ks[256];
    redis_key(ks, sizeof ks, s_cfg.service, KEY_STATE);
    const char *set_state[] = {"SET", ks, "not a hash"};
    freeReplyObject(s_cmd(c, 3, set_state));
    store_t *st = store_new(&s_cfg);
    s_own(st);
    fsm_record_t *rec = calloc(1, sizeof *rec);
    uint64_t version = 0;
    assert_int_equal(store_write(st, rec, true, 1, &version), -EIO);
    free(rec);
    store_destroy(&st);
    redis_conn_destroy(&c);
}

/* Addresses the executor reported go to the pool, and come back with it at the next start. */
static void test_reported_addresses(void **state)
{
    (void)state;
    REQUIRE_REDIS();
    redis_conn_t *c = s_conn();
    s_flush(c);
    store_t *st = store_new(&s_cfg);
    s_own(st);
    char buf[80];
    assert_string_equal(store_addr(st, 2, buf, sizeof buf), "127.0.0.1:9103");
    assert_int_equal(store_set_addr(st, 2, "10.1.2.3", 9103), 0);
    assert_int_equal(store_set_addr(st, 3, "::1", 9104), 0);
    assert_int_equal(store_set_addr(st, 4, "host-a", 9105), -EINVAL);
    assert_int_equal(store_set_addr(st, 4, "10.1.2.3", 0), -EINVAL);
    assert_int_equal(store_set_addr(st, -1, "10.1.2.3", 80), -EINVAL);
    assert_int_equal(store_set_addr(st, NAMES_MAX, "10.1.2.3", 80), -EINVAL);
    assert_string_equal(store_addr(st, 2, buf, sizeof buf), "10.1.2.3:9103");
    assert_string_equal(store_addr(st, 3, buf, sizeof buf), "::1:9104");
    assert_string_equal(store_addr(st, 4, buf, sizeof buf), "127.0.0.1:9105");
    fsm_record_t *rec = calloc(1, sizeof *rec);
    rec->n_pool = 3;
    rec->pool[0] = 1;
    rec->pool[1] = 2;
    rec->pool[2] = 3;
    uint64_t version = 0;
    assert_int_equal(store_write(st, rec, true, 1, &version), 0);
    char *v = s_hget(c, KEY_POOL, "production2");
    assert_string_equal(v, "10.1.2.3:9103");
    free(v);
    store_destroy(&st);

    /* a new store (a restarted scaler) reads them back with the pool */
    st = store_new(&s_cfg);
    store_info_t info;
    assert_int_equal(store_load(st, rec, &info), 0);
    assert_int_equal(rec->n_pool, 3);
    assert_string_equal(store_addr(st, 1, buf, sizeof buf), "127.0.0.1:9102");
    assert_string_equal(store_addr(st, 2, buf, sizeof buf), "10.1.2.3:9103");
    assert_string_equal(store_addr(st, 3, buf, sizeof buf), "::1:9104");
    free(rec);
    store_destroy(&st);
    redis_conn_destroy(&c);
}

static void test_redis_down_then_back(void **state)
{
    (void)state;
    REQUIRE_REDIS();
    store_t *st = store_new(&s_cfg);
    s_own(st);
    fsm_record_t *rec = calloc(1, sizeof *rec);
    rec->n_pool = 2;
    rec->pool[1] = 1;
    uint64_t version = 0;
    assert_int_equal(store_write(st, rec, true, 1, &version), 0);
    uint64_t before = version;
    test_redis_stop(&s_redis);
    uint64_t t0 = clock_mono_ms();
    assert_int_equal(store_write(st, rec, true, 1, &version), -EIO);
    store_info_t info;
    assert_int_equal(store_load(st, rec, &info), -EIO);
    assert_true(clock_mono_ms() - t0 < 3000); /* timeouts, not a hang */
    assert_int_equal(test_redis_start(&s_redis, s_dir), 0);
    /* a fresh, empty Redis: the store reconnects by itself, but the lease went with the data,
     * so the write is refused until the lease is there again */
    rec->n_pool = 2;
    assert_int_equal(store_write(st, rec, true, 1, &version), -EPERM);
    s_own(st);
    assert_int_equal(store_write(st, rec, true, 1, &version), 0);
    assert_int_equal(version, before + 1); /* on from the one known, not from Redis's nothing */
    free(rec);
    store_destroy(&st);
}

/* A write under a fence the leader key does not hold changes nothing; no fence, no write. */
static void test_fenced_write_refused(void **state)
{
    (void)state;
    REQUIRE_REDIS();
    redis_conn_t *c = s_conn();
    s_flush(c);
    store_t *st = store_new(&s_cfg);
    s_own(st);
    fsm_record_t *rec = calloc(1, sizeof *rec);
    rec->n_pool = 1;
    uint64_t version = 0;
    assert_int_equal(store_write(st, rec, true, 1, &version), 0);
    assert_int_equal(version, 1);
    char k[256];
    redis_key(k, sizeof k, s_cfg.service, KEY_LEADER);
    const char *other[] = {"SET", k, "other 2"};
    freeReplyObject(s_cmd(c, 3, other));
    rec->n_pool = 3;
    rec->state = TIDE__V1__STATE__STATE_UP;
    assert_int_equal(store_write(st, rec, true, 1, &version), -EPERM);
    assert_int_equal(store_write(st, rec, false, 1, &version), -EPERM);
    char *inst = s_get(c, KEY_INSTANCES);
    assert_string_equal(inst, "1");
    free(inst);
    s_assert_hfield(c, "state", "IDLE");
    pool_entry_t entries[8];
    uint64_t v = 0;
    assert_int_equal(redis_read_pool(c, s_cfg.service, &v, entries, 8), 1);
    assert_int_equal(v, 1);
    store_set_fence(st, NULL);
    assert_int_equal(store_write(st, rec, false, 1, &version), -EPERM);
    /* the floor: a version learnt elsewhere (a standby's reads) is where the next one goes on */
    store_set_fence(st, "other 2");
    store_note_version(st, 41);
    store_note_version(st, 7); /* lower: no change */
    assert_int_equal(store_write(st, rec, true, 1, &version), 0);
    assert_int_equal(version, 42);
    free(rec);
    store_destroy(&st);
    redis_conn_destroy(&c);
}

/* total_connections_received from INFO stats, or -1. */
static long s_connections(redis_conn_t *c)
{
    const char *argv[] = {"INFO", "stats"};
    redisReply *r = redis_conn_command(c, 2, argv);
    long n = -1;
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, "total_connections_received:");
        if (p)
            n = atol(p + strlen("total_connections_received:"));
    }
    if (r)
        freeReplyObject(r);
    return n;
}

/* A Redis that takes connections but answers nothing (here SIGSTOPped) costs one timeout,
 * then further attempts are held off for a while instead of each blocking its caller (the
 * scaler's loop) for another timeout: ten calls make one connection attempt, not ten. Once it
 * answers again, the connection comes back by itself. */
static void test_unresponsive_redis_held_off(void **state)
{
    (void)state;
    REQUIRE_REDIS();
    redis_conn_t *probe = s_conn();
    long before = s_connections(probe);
    assert_true(before > 0);
    redis_conn_t *c = s_conn(); /* connect 200 ms, command 500 ms */
    const char *ping[] = {"PING"};
    assert_int_equal(kill(s_redis.pid, SIGSTOP), 0);
    uint64_t t0 = clock_mono_ms();
    for (int i = 0; i < 10; i++)
        assert_null(redis_conn_command(c, 1, ping));
    uint64_t took = clock_mono_ms() - t0;
    assert_int_equal(kill(s_redis.pid, SIGCONT), 0);
    /* Every connection waiting in the backlog since the SIGSTOP is accepted in the one accept
     * pass that sees c's: once the count shows c's, it shows them all. */
    long after = before;
    uint64_t until = clock_mono_ms() + 5000;
    while (after < before + 1 && clock_mono_ms() < until)
        after = s_connections(probe);
    assert_int_equal(after - before, 1); /* c's one attempt; the probe's own is in before */
    assert_true(took < 1500);            /* one 500 ms timeout, not ten */
    redisReply *r = NULL;
    uint64_t deadline = clock_mono_ms() + 5000;
    while (!r && clock_mono_ms() < deadline) {
        r = redis_conn_command(c, 1, ping);
        if (!r)
            test_sleep_ms(50);
    }
    assert_non_null(r);
    freeReplyObject(r);
    redis_conn_destroy(&c);
    redis_conn_destroy(&probe);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_load),
        cmocka_unit_test(test_write_and_read_back),
        cmocka_unit_test(test_foreign_and_bad_values),
        cmocka_unit_test(test_error_inside_transaction),
        cmocka_unit_test(test_reported_addresses),
        cmocka_unit_test(test_redis_down_then_back),
        cmocka_unit_test(test_fenced_write_refused),
        cmocka_unit_test(test_unresponsive_redis_held_off),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
