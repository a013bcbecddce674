/* policy_target.c - the default policy (the Knative KPA's idea): enough instances that each
 * carries target_rps over the stable window, with a panic window that jumps ahead of bursts. */
#include "policy.h"

#include <math.h>
#include <stdio.h>

/* ceil(rps / per), guarded: a rate a hair above a multiple (float noise) does not add one. */
static uint32_t s_count_for(double rps, double per)
{
    if (!(rps > 0) || !(per > 0))
        return 0;
    double n = ceil(rps / per - 1e-9);
    if (n < 1)
        n = 1; /* any traffic at all wants an instance */
    if (n > POLICY_COUNT_CAP)
        return POLICY_COUNT_CAP;
    return (uint32_t)n;
}

uint32_t policy_target_wanted(const policy_config_t *cfg, const policy_input_t *in,
                              policy_state_t *st, policy_decision_t *out)
{
    uint32_t stable = s_count_for(in->rps_stable, cfg->target_rps);
    uint32_t panic = s_count_for(in->rps_panic, cfg->target_rps);
    uint32_t cur = in->current;
    double base = cur ? (double)cur : 1.0; /* from zero, "twice the current" means twice one */
    uint32_t window_s = in->stable_window_s ? in->stable_window_s : cfg->stable_window_s;
    uint64_t window_ms = (uint64_t)window_s * 1000u;

    if (panic > cur && (double)panic >= cfg->panic_threshold * base) {
        if (!st->panicking) {
            st->panicking = true;
            st->panic_since_ms = in->now_ms;
        }
        st->panic_trigger_ms = in->now_ms;
    } else if (st->panicking && in->now_ms - st->panic_trigger_ms >= window_ms) {
        st->panicking = false;
    }

    uint32_t wanted;
    if (st->panicking) {
        /* Jump to the panic window's count, and never below what we have: no scale down
         * until a whole stable window has passed without a trigger. */
        wanted = panic > stable ? panic : stable;
        if (wanted < cur)
            wanted = cur;
        snprintf(out->reason, sizeof out->reason,
                 "panic: rps_panic=%.1f rps_stable=%.1f target_rps=%g -> %u", in->rps_panic,
                 in->rps_stable, cfg->target_rps, wanted);
    } else {
        wanted = stable;
        if (wanted == 0 && cur == 0 && in->rps_panic > 0)
            wanted = 1; /* requests seen in the last seconds wake a service scaled to zero */
        snprintf(out->reason, sizeof out->reason, "rps_stable=%.1f target_rps=%g -> %u",
                 in->rps_stable, cfg->target_rps, wanted);
    }
    out->panicking = st->panicking;
    return wanted;
}
