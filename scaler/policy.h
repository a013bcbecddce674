/* policy.h - the decision policies: pure functions from (config, metrics, state) to a desired
 * instance count.
 *
 * Two policies share one frame (policy.c): a pinned count ("scale N") or stale metrics bypass
 * the policy, the result is clamped to [min, max], a scale down must be wanted continuously for
 * scale_down_delay_s, and one job moves at most max_step instances. The policy-specific part
 * (policy_target.c, policy_threshold.c) only says what it wants right now.
 *
 * Nothing here reads a clock or a socket: time comes in policy_input_t.now_ms, and everything
 * a policy remembers between evaluations lives in policy_state_t, owned by the caller. So the
 * same inputs always give the same decision, and traces can be replayed in tests. */
#ifndef SCALER_POLICY_H
#define SCALER_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "tide_config.h"

typedef enum { POLICY_TARGET = 0, POLICY_THRESHOLD = 1 } policy_kind_t;

/* Largest count a policy ever returns, whatever the rates say (guards the float->int cast). */
#define POLICY_COUNT_CAP 100000u

typedef struct {
    policy_kind_t kind;
    uint32_t min, max;      /* bounds; min <= max */
    double target_rps;      /* target: requests/s per instance (> 0) */
    double panic_threshold; /* target: panic when panic count >= this x current (>= 1) */
    uint32_t max_step;      /* most instances one job adds or removes (>= 1) */
    double scale_up_rps;    /* threshold: per-instance rps above which one is added */
    double scale_down_rps;  /* threshold: per-instance rps below which one is removed */
    uint32_t scale_down_delay_s;
    uint32_t stable_window_s; /* panic lasts this long after its last trigger (when the
                                 snapshot does not say its own window) */
} policy_config_t;

typedef struct {
    uint64_t now_ms;          /* any monotonic millisecond clock */
    uint32_t current;         /* instances in the pool */
    bool fresh;               /* a recent metrics.snapshot exists; false means hold */
    double rps_stable;        /* mean requests/s over the stable window */
    double rps_panic;         /* mean requests/s over the panic window */
    uint32_t stable_window_s; /* from the snapshot; 0 = use the config's */
    bool pinned;              /* "scale N" in force: desired is forced, clamped */
    uint32_t forced;
} policy_input_t;

/* What a policy carries between evaluations. Zero-initialise it once; the caller keeps it. */
typedef struct {
    bool below; /* desired < current seen continuously since below_since_ms */
    uint64_t below_since_ms;
    uint32_t below_max;     /* the largest count wanted during that streak */
    uint32_t below_current; /* the count when the streak began */
    bool panicking;
    uint64_t panic_since_ms;
    uint64_t panic_trigger_ms; /* last evaluation that met the panic condition */
} policy_state_t;

typedef struct {
    uint32_t wanted;  /* what the policy wants now, before bounds and delay */
    uint32_t desired; /* bounded, after the scale-down delay: the count to reach */
    uint32_t next;    /* desired limited to max_step from current: the next job */
    bool panicking;
    bool hold;         /* metrics are stale: no load-based decision was made */
    bool down_pending; /* a scale down is wanted but the delay has not passed */
    char reason[160];
} policy_decision_t;

/* Fills cfg from the loaded tide.yml (scaler.* and metrics.stable_window_s). */
void policy_config_from_tide(policy_config_t *cfg, const tide_config_t *tide);

/* Evaluates the configured policy. Updates *st (the caller's memory of streaks and panic) and
 * fills *out. Pure: no clock, no I/O, no allocation. */
void policy_desired(const policy_config_t *cfg, const policy_input_t *in, policy_state_t *st,
                    policy_decision_t *out);

/* The policy-specific parts: what each wants now, with a short reason written into out->reason
 * and out->panicking set. Called by policy_desired; exposed for tests. */
uint32_t policy_target_wanted(const policy_config_t *cfg, const policy_input_t *in,
                              policy_state_t *st, policy_decision_t *out);
uint32_t policy_threshold_wanted(const policy_config_t *cfg, const policy_input_t *in,
                                 policy_state_t *st, policy_decision_t *out);

/* "target" or "threshold". */
const char *policy_kind_name(policy_kind_t kind);

#endif
