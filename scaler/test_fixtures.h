/* test_fixtures.h - what the scaler's unit tests share: the policy settings they start from
 * (the defaults of deploy/tide.yml's scaler section, with min 1 and max 10), and a redis-server
 * a test starts, pings and stops. */
#ifndef SCALER_TEST_FIXTURES_H
#define SCALER_TEST_FIXTURES_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "policy.h"
#include "tide_clock.h"
#include "tide_redis.h"

/* True when the redis-server on 127.0.0.1:port answers PING (connect 200 ms, command 500 ms). */
static inline bool test_redis_ping(int port)
{
    redis_conn_t *c = redis_conn_new("127.0.0.1", port, 200, 500);
    const char *argv[] = {"PING"};
    redisReply *r = c ? redis_conn_command(c, 1, argv) : NULL;
    bool ok = r && r->type == REDIS_REPLY_STATUS;
    if (r)
        freeReplyObject(r);
    redis_conn_destroy(&c);
    return ok;
}

/* A redis-server a test starts on a free port, its data (none kept) under dir. */
typedef struct {
    int port;
    pid_t pid;
} test_redis_t;

/* A port nobody listens on: from TIDE_TEST_PORT_BASE upwards, or one the kernel picks. */
static inline int test_free_port(void)
{
    const char *base = getenv("TIDE_TEST_PORT_BASE");
    int first = base ? atoi(base) : 0;
    for (int p = first; p < (first ? first + 200 : 1); p++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
            getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
            close(fd);
            return ntohs(a.sin_port);
        }
        close(fd);
    }
    return -1;
}

static inline void test_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Starts redis-server on r->port and waits (polling, bounded: 10 s) until it answers PING.
 * Returns 0, or -1 with r->pid -1. */
static inline int test_redis_start(test_redis_t *r, const char *dir)
{
    char port[16];
    snprintf(port, sizeof port, "%d", r->port);
    r->pid = fork();
    if (r->pid == 0) {
        int null = open("/dev/null", 1);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--dir", dir, (char *)NULL);
        _exit(127);
    }
    uint64_t until = clock_mono_ms() + 10000;
    while (clock_mono_ms() < until) {
        int status;
        if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
            r->pid = -1;
            return -1;
        }
        if (test_redis_ping(r->port))
            return 0;
        test_sleep_ms(50);
    }
    return -1;
}

static inline void test_redis_stop(test_redis_t *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGCONT); /* a test may have stopped it (SIGSTOP) and failed meanwhile */
        kill(r->pid, SIGTERM);
        waitpid(r->pid, NULL, 0);
        r->pid = -1;
    }
}

static inline policy_config_t test_policy_cfg(policy_kind_t kind)
{
    policy_config_t c = {
        .kind = kind,
        .min = 1,
        .max = 10,
        .target_rps = 100,
        .panic_threshold = 2,
        .max_step = 5,
        .scale_up_rps = 100,
        .scale_down_rps = 30,
        .scale_down_delay_s = 30,
        .stable_window_s = 60,
    };
    return c;
}

#endif
