/* policy_threshold.c - the seed's policy: one instance more when each carries more than
 * scale_up_rps, one fewer when each carries less than scale_down_rps (after the delay). */
#include "policy.h"

#include <stdio.h>

uint32_t policy_threshold_wanted(const policy_config_t *cfg, const policy_input_t *in,
                                 policy_state_t *st, policy_decision_t *out)
{
    uint32_t cur = in->current;
    st->panicking = false;
    out->panicking = false;
    if (cur == 0) {
        /* No instance to divide by: any request seen wants one. */
        uint32_t wanted = in->rps_stable > 0 || in->rps_panic > 0 ? 1 : 0;
        snprintf(out->reason, sizeof out->reason, "no instance, rps_stable=%.1f -> %u",
                 in->rps_stable, wanted);
        return wanted;
    }
    double per = in->rps_stable / (double)cur;
    uint32_t wanted = cur;
    const char *why = "within thresholds";
    if (per > cfg->scale_up_rps) {
        wanted = cur + 1;
        why = "above scale_up_rps";
    } else if (per < cfg->scale_down_rps) {
        wanted = cur - 1;
        why = "below scale_down_rps";
    }
    snprintf(out->reason, sizeof out->reason, "rps per instance=%.1f %s (up %g, down %g) -> %u",
             per, why, cfg->scale_up_rps, cfg->scale_down_rps, wanted);
    return wanted;
}
