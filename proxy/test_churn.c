/* test_churn.c - pool churn on a running worker: 10,000 pool changes, each with an address not
 * seen before, leave the worker holding the current pool's instances only, and the stats the
 * ones a publisher still has to tell (bounded, not one per address ever seen). */
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>

#include "pool.h"
#include "stats.h"
#include "tide_clock.h"
#include "worker.h"

/* A port nothing listens on right now (the worker binds it with SO_REUSEPORT). */
static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void s_wait_version(worker_t *w, uint64_t v)
{
    uint64_t deadline = clock_mono_ms() + 5000;
    while (worker_pool_version(w) != v) {
        assert_true(clock_mono_ms() < deadline);
        sched_yield();
    }
}

static void test_churn(void **state)
{
    (void)state;
    tide_config_t cfg;
    config_defaults(&cfg);
    snprintf(cfg.proxy.listen, sizeof cfg.proxy.listen, "127.0.0.1:%d", s_free_port());
    stats_t *stats = stats_new(1);
    stats_expect_publisher(stats); /* the stricter case: unused records wait to be told */
    int err = 0;
    worker_t *w = worker_new(0, 1, &cfg, stats, &err);
    assert_non_null(w);
    assert_int_equal(worker_start(w), 0);
    size_t most_inst = 0, most_rec = 0;
    for (int i = 1; i <= 10000; i++) {
        pool_entry_t e[2] = {0};
        snprintf(e[0].name, sizeof e[0].name, "stable");
        snprintf(e[0].addr, sizeof e[0].addr, "127.0.0.1:9");
        snprintf(e[1].name, sizeof e[1].name, "production%d", i);
        snprintf(e[1].addr, sizeof e[1].addr, "127.1.%d.%d:9000", i / 250, i % 250 + 1);
        pool_t *p = pool_new((uint64_t)i, e, 2);
        worker_set_pool(w, p);
        pool_unref(&p);
        s_wait_version(w, (uint64_t)i);
        size_t n = worker_instance_count(w);
        most_inst = n > most_inst ? n : most_inst;
        if (i % 100 == 0) { /* the publisher's pace, roughly */
            Tide__V1__ProxyStats *m = stats_message(stats, clock_wall_ms());
            stats_message_free(&m);
            size_t r = stats_record_count(stats);
            most_rec = r > most_rec ? r : most_rec;
        }
    }
    /* The instance that just left was freed as the pool that dropped it was applied. */
    assert_int_equal(most_inst, 2);
    assert_true(most_rec <= 1024 + 2);
    worker_drain(w);
    worker_stop(w);
    worker_destroy(&w);
    stats_destroy(&stats);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
