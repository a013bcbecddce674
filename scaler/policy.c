/* policy.c - the frame both policies share: pinning, holding on stale metrics, bounds, the
 * scale-down delay and the maximum step. */
#include "policy.h"

#include <stdio.h>
#include <string.h>

void policy_config_from_tide(policy_config_t *cfg, const tide_config_t *tide)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = strcmp(tide->scaler.policy, "threshold") == 0 ? POLICY_THRESHOLD : POLICY_TARGET;
    cfg->min = (uint32_t)tide->scaler.min;
    cfg->max = (uint32_t)tide->scaler.max;
    if (cfg->min > cfg->max)
        cfg->min = cfg->max;
    cfg->target_rps = tide->scaler.target_rps;
    cfg->panic_threshold = tide->scaler.panic_threshold;
    cfg->max_step = (uint32_t)tide->scaler.max_step;
    cfg->scale_up_rps = tide->scaler.scale_up_rps;
    cfg->scale_down_rps = tide->scaler.scale_down_rps;
    cfg->scale_down_delay_s = (uint32_t)tide->scaler.scale_down_delay_s;
    cfg->stable_window_s = (uint32_t)tide->metrics.stable_window_s;
}

const char *policy_kind_name(policy_kind_t kind)
{
    return kind == POLICY_THRESHOLD ? "threshold" : "target";
}

static uint32_t s_clamp(uint32_t v, uint32_t lo, uint32_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* The next job's target: desired, but no further than max_step from current. */
static uint32_t s_step(uint32_t current, uint32_t desired, uint32_t max_step)
{
    if (max_step == 0)
        max_step = 1;
    if (desired > current && desired - current > max_step)
        return current + max_step;
    if (desired < current && current - desired > max_step)
        return current - max_step;
    return desired;
}

static void s_reset_streak(policy_state_t *st)
{
    st->below = false;
    st->below_since_ms = 0;
    st->below_max = 0;
}

void policy_desired(const policy_config_t *cfg, const policy_input_t *in, policy_state_t *st,
                    policy_decision_t *out)
{
    memset(out, 0, sizeof *out);
    uint32_t lo = cfg->min, hi = cfg->max < cfg->min ? cfg->min : cfg->max;
    uint32_t cur = in->current;

    if (in->pinned) {
        /* An operator's "scale N" bypasses the policy, the delay and panic. */
        s_reset_streak(st);
        out->wanted = in->forced;
        out->desired = s_clamp(in->forced, lo, hi);
        snprintf(out->reason, sizeof out->reason, "pinned to %u by scale", in->forced);
    } else if (!in->fresh) {
        /* Metrics down: no load-based decision, but the bounds still hold (a count below min
         * is raised, above max lowered) because they do not depend on load. A streak cannot
         * have held while we could not see, so it starts over. */
        s_reset_streak(st);
        out->hold = true;
        out->wanted = cur;
        out->desired = s_clamp(cur, lo, hi);
        snprintf(out->reason, sizeof out->reason, "%s",
                 out->desired == cur ? "no fresh metrics: hold" : "no fresh metrics: bounds");
    } else {
        /* threshold compares the rate per instance at the current count, so a streak seen
         * at another count says nothing: each step waits its own delay. target's count is
         * computed from the total rate and stays valid across steps. */
        if (cfg->kind == POLICY_THRESHOLD && st->below && st->below_current != cur)
            s_reset_streak(st);
        uint32_t wanted = cfg->kind == POLICY_THRESHOLD ? policy_threshold_wanted(cfg, in, st, out)
                                                        : policy_target_wanted(cfg, in, st, out);
        if (wanted > POLICY_COUNT_CAP)
            wanted = POLICY_COUNT_CAP;
        out->wanted = wanted;
        uint32_t bounded = s_clamp(wanted, lo, hi);
        /* Above max is corrected at once; anything lower waits for the delay. */
        uint32_t floor_now = cur > hi ? hi : cur;
        if (bounded < floor_now) {
            /* A streak whose largest wanted count is no longer below the current count has
             * already been acted on (we stepped down to it): what is wanted now needs a
             * streak of its own, or desired would stay at that count for good. */
            if (!st->below || st->below_max >= floor_now) {
                st->below = true;
                st->below_since_ms = in->now_ms;
                st->below_max = bounded;
                st->below_current = cur;
            } else if (bounded > st->below_max) {
                st->below_max = bounded;
            }
            uint64_t held = in->now_ms - st->below_since_ms;
            uint64_t delay = (uint64_t)cfg->scale_down_delay_s * 1000u;
            if (held >= delay) {
                /* The largest count wanted during the streak, so a dip does not overshoot. */
                out->desired = st->below_max;
            } else {
                out->desired = floor_now;
                out->down_pending = true;
                size_t n = strlen(out->reason);
                snprintf(out->reason + n, sizeof out->reason - n,
                         "; down to %u pending (%llus of %us)", bounded,
                         (unsigned long long)(held / 1000u), cfg->scale_down_delay_s);
            }
        } else {
            s_reset_streak(st);
            out->desired = bounded;
        }
        if (bounded != wanted) {
            size_t n = strlen(out->reason);
            snprintf(out->reason + n, sizeof out->reason - n, "; bounded to [%u,%u]", lo, hi);
        }
    }
    out->panicking = st->panicking && !in->pinned && in->fresh;
    out->next = s_step(cur, out->desired, cfg->max_step);
}
