/* test_fixtures.h - what the scaler's unit tests share: the policy settings they start from
 * (the defaults of deploy/tide.yml's scaler section, with min 1 and max 10), and a PING of the
 * redis-server a test started. */
#ifndef SCALER_TEST_FIXTURES_H
#define SCALER_TEST_FIXTURES_H

#include <stdbool.h>

#include "policy.h"
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
