/* test_fixtures.h - what the scaler's unit tests share: the policy settings they start from
 * (the defaults of deploy/tide.yml's scaler section, with min 1 and max 10). */
#ifndef SCALER_TEST_FIXTURES_H
#define SCALER_TEST_FIXTURES_H

#include "policy.h"

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
