/* profiler.c - the scaler's rule for when to profile an instance (see profiler.h). */
#include "profiler.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double rate;
    uint64_t seen_ms;                  /* last snapshot that had it; 0 = never */
    uint64_t failing_since;            /* when its rate reached the threshold; 0 = not failing */
    uint64_t last_auto_ms;             /* last automatic profile; 0 = none */
    uint64_t prev_auto_ms;             /* the one before: restored when the last one's job failed */
    char pending[PROFILER_JOB_ID_MAX]; /* the automatic profile's job in flight; "" = none */
    bool crash_waiting;                /* a crash came while that job could still fail */
    uint32_t crashed_pid;              /* the last crash reported (each pid counts once) */
    bool crash_due;                    /* a crash profile of crashed_pid is to be taken */
    char crash_how[120];
} inst_t;

struct profiler_t {
    profiler_config_t cfg;
    inst_t inst[NAMES_MAX];
};

void profiler_config_from_tide(profiler_config_t *cfg, const tide_config_t *tide)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->enabled = strcmp(tide->profiling.enabled, "on") == 0;
    cfg->error_rate = tide->profiling.error_rate;
    cfg->error_for_ms = (uint64_t)tide->profiling.error_for_s * 1000;
    cfg->min_interval_ms = (uint64_t)tide->profiling.min_interval_s * 1000;
    cfg->window_s = (uint32_t)tide->profiling.window_s;
    cfg->manual_s = (uint32_t)tide->profiling.manual_seconds;
    cfg->max_s = (uint32_t)tide->profiling.max_seconds;
    /* Two snapshots missed: the instance has left the pool or metrics are not coming. */
    cfg->stale_ms = 2 * (uint64_t)tide->metrics.snapshot_interval_ms + 500;
}

profiler_t *profiler_new(const profiler_config_t *cfg)
{
    profiler_t *self = calloc(1, sizeof *self);
    if (self)
        self->cfg = *cfg;
    return self;
}

void profiler_destroy(profiler_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free(*self_p);
    *self_p = NULL;
}

static bool s_fresh(const profiler_t *self, const inst_t *in, uint64_t now_ms)
{
    return in->seen_ms > 0 && now_ms - in->seen_ms <= self->cfg.stale_ms;
}

void profiler_note(profiler_t *self, int index, double error_rate, uint64_t now_ms)
{
    if (index < 0 || index >= NAMES_MAX)
        return;
    inst_t *in = &self->inst[index];
    /* A gap in the snapshots breaks a failing streak: the time it lasted is unknown. */
    if (!s_fresh(self, in, now_ms))
        in->failing_since = 0;
    in->rate = error_rate;
    in->seen_ms = now_ms;
    if (error_rate < self->cfg.error_rate)
        in->failing_since = 0;
    else if (in->failing_since == 0)
        in->failing_since = now_ms;
}

/* The pool member failing least, under half the threshold, other than index; -1 if none. */
static int s_baseline(const profiler_t *self, int index, uint64_t now_ms)
{
    int best = -1;
    for (int i = 0; i < NAMES_MAX; i++) {
        const inst_t *in = &self->inst[i];
        if (i == index || !s_fresh(self, in, now_ms) || in->rate >= self->cfg.error_rate / 2)
            continue;
        if (best < 0 || in->rate < self->inst[best].rate)
            best = i;
    }
    return best;
}

static bool s_limited(const profiler_t *self, const inst_t *in, uint64_t now_ms)
{
    return in->last_auto_ms && now_ms - in->last_auto_ms < self->cfg.min_interval_ms;
}

profiler_crash_t profiler_crashed(profiler_t *self, int index, bool in_pool, uint32_t pid,
                                  const char *how, uint64_t now_ms)
{
    if (index < 0 || index >= NAMES_MAX || pid == 0)
        return PROFILER_CRASH_IGNORED;
    inst_t *in = &self->inst[index];
    if (!in_pool || pid == in->crashed_pid)
        return PROFILER_CRASH_IGNORED;
    in->crashed_pid = pid;
    in->failing_since = 0; /* the errors were the crash's; the replacement starts afresh */
    in->crash_due = self->cfg.enabled && !s_limited(self, in, now_ms);
    /* An errors profile sent as the instance was dying usually fails (its process is gone):
     * the crash waits for its outcome instead of being lost to its rate limit. */
    in->crash_waiting = self->cfg.enabled && !in->crash_due && in->pending[0];
    snprintf(in->crash_how, sizeof in->crash_how, "%s", how && how[0] ? how : "exited");
    if (!self->cfg.enabled)
        return PROFILER_CRASH_IGNORED;
    return in->crash_due || in->crash_waiting ? PROFILER_CRASH_PROFILED : PROFILER_CRASH_LIMITED;
}

int profiler_due(profiler_t *self, uint64_t now_ms, profile_want_t *out)
{
    if (!self->cfg.enabled)
        return 0;
    for (int i = 0; i < NAMES_MAX; i++) {
        inst_t *in = &self->inst[i];
        if (!in->crash_due)
            continue;
        in->crash_due = false;
        in->prev_auto_ms = in->last_auto_ms;
        in->last_auto_ms = now_ms;
        in->pending[0] = '\0';
        memset(out, 0, sizeof *out);
        out->index = i;
        out->baseline = s_baseline(self, i, now_ms);
        out->pid = in->crashed_pid;
        snprintf(out->reason, sizeof out->reason, "crash");
        snprintf(out->detail, sizeof out->detail, "pid %u exited: %s", in->crashed_pid,
                 in->crash_how);
        out->seconds = self->cfg.window_s;
        return 1;
    }
    for (int i = 0; i < NAMES_MAX; i++) {
        inst_t *in = &self->inst[i];
        if (!s_fresh(self, in, now_ms) || in->failing_since == 0 ||
            now_ms - in->failing_since < self->cfg.error_for_ms)
            continue;
        if (s_limited(self, in, now_ms))
            continue;
        in->prev_auto_ms = in->last_auto_ms;
        in->last_auto_ms = now_ms;
        in->pending[0] = '\0';
        memset(out, 0, sizeof *out);
        out->index = i;
        out->baseline = s_baseline(self, i, now_ms);
        snprintf(out->reason, sizeof out->reason, "errors");
        snprintf(out->detail, sizeof out->detail, "error rate %.2f for %.1f s", in->rate,
                 (double)(now_ms - in->failing_since) / 1000.0);
        out->seconds = self->cfg.window_s;
        return 1;
    }
    return 0;
}

void profiler_sent(profiler_t *self, int index, const char *job_id)
{
    if (index < 0 || index >= NAMES_MAX || !job_id)
        return;
    snprintf(self->inst[index].pending, sizeof self->inst[index].pending, "%s", job_id);
}

int profiler_finished(profiler_t *self, const char *job_id, bool written, uint64_t now_ms)
{
    for (int i = 0; job_id && job_id[0] && i < NAMES_MAX; i++) {
        inst_t *in = &self->inst[i];
        if (strcmp(in->pending, job_id) != 0)
            continue;
        in->pending[0] = '\0';
        if (!written)
            in->last_auto_ms = in->prev_auto_ms; /* no profile was taken: the slot is free */
        if (!in->crash_waiting)
            return -1;
        in->crash_waiting = false;
        in->crash_due = !s_limited(self, in, now_ms);
        return in->crash_due ? -1 : i;
    }
    return -1;
}

int profiler_manual(profiler_t *self, int index, bool in_pool, uint32_t seconds, uint64_t now_ms,
                    profile_want_t *out, char *err, size_t errlen)
{
    if (index < 0 || !in_pool) {
        snprintf(err, errlen, "not an instance in the pool");
        return -EINVAL;
    }
    uint32_t s = seconds ? seconds : self->cfg.manual_s;
    if (s < 1 || s > self->cfg.max_s) {
        snprintf(err, errlen, "seconds %u out of bounds (1..%u, profiling.max_seconds)", s,
                 self->cfg.max_s);
        return -EINVAL;
    }
    memset(out, 0, sizeof *out);
    out->index = index;
    out->baseline = s_baseline(self, index, now_ms);
    snprintf(out->reason, sizeof out->reason, "manual");
    snprintf(out->detail, sizeof out->detail, "tidectl profile, %u s", s);
    out->seconds = s;
    return 0;
}
