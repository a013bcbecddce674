/* fsm.c - the scaler's state machine: events and time in, actions out (see fsm.h). */
#include "fsm.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_IDLE  TIDE__V1__STATE__STATE_IDLE
#define S_BUSY  TIDE__V1__STATE__STATE_BUSY
#define S_READY TIDE__V1__STATE__STATE_READY
#define S_UP    TIDE__V1__STATE__STATE_UP

#define K_UP   TIDE__V1__JOB_KIND__JOB_SCALE_UP
#define K_DOWN TIDE__V1__JOB_KIND__JOB_SCALE_DOWN
#define K_LIST TIDE__V1__JOB_KIND__JOB_LIST

/* Where the machine is in its life: reconcile first, then normal operation. */
typedef enum {
    PH_START,   /* not restored yet: only remembers metrics */
    PH_RECOVER, /* asking the executor about the job left in flight by the previous run */
    PH_LIST,    /* listing running instances (or waiting out a backoff to retry) */
    PH_RUN,
} phase_t;

/* What BUSY is busy with. */
typedef enum {
    B_NONE,
    B_UP,      /* scale-up job sent */
    B_DRAIN,   /* instances out of the pool, waiting for the proxies to drain them */
    B_DOWN,    /* scale-down job sent (after a drain, or to stop leftovers) */
    B_LIST,    /* reconcile: list job */
    B_RECOVER, /* reconcile: status of the previous run's job */
    B_CHECK,   /* health check: list job while running */
} busy_t;

struct _fsm_t {
    fsm_config_t cfg;
    policy_config_t pcfg; /* the policy config with the bounds in force */
    uint64_t job_seq;
    bool bounds_set;
    bool paused, pinned;
    uint32_t forced;

    bool in_pool[NAMES_MAX];
    bool stopping[NAMES_MAX];
    bool suspect[NAMES_MAX];           /* failing requests: to be checked */
    uint64_t pool_since[NAMES_MAX];    /* when it (last) joined the pool */
    uint64_t checked_ok_ms[NAMES_MAX]; /* when a health check last found it healthy */
    uint64_t last_check_ms;            /* the last list (reconcile or health check) ended */
    bool check_periodic;               /* the health check in flight had no suspect */
    uint32_t current;
    uint64_t pool_version;

    Tide__V1__State state;
    uint64_t since_ms;
    phase_t phase;
    busy_t busy;
    bool has_job, job_sent;
    fsm_job_t job;
    uint64_t job_deadline_ms, next_poll_ms;
    bool drain_written;
    uint64_t drain_version, drain_deadline_ms;
    uint64_t ready_until_ms;

    uint32_t failures;
    uint64_t backoff_until_ms;
    char last_error[FSM_REASON_MAX];

    policy_state_t pst;
    policy_decision_t dec;
    bool have_dec;
    bool have_pub;
    uint32_t pub_desired;
    bool pub_panicking;

    bool have_snapshot;
    uint64_t snapshot_ms;
    double rps_stable, rps_panic;
    uint32_t stable_window_s;
};

void fsm_config_from_tide(fsm_config_t *cfg, const tide_config_t *tide, const char *job_prefix)
{
    memset(cfg, 0, sizeof *cfg);
    policy_config_from_tide(&cfg->policy, tide);
    cfg->settle_ms = (uint32_t)tide->scaler.settle_ms;
    cfg->job_deadline_ms = (uint32_t)tide->scaler.job_deadline_ms;
    /* The executor kills the playbook at its own deadline and then reports; give it time to
     * do so (and for a couple of lost requests) before declaring the outcome unknown. A scale
     * up killed at its deadline is followed by a scale_down of its instances (up to
     * executor.cleanup_deadline_ms, then killed too) before the report: waiting for that
     * report, rather than failing the job first and sending a stop the executor must refuse
     * while its cleanup holds the instances, keeps the outcome known. */
    cfg->deadline_grace_ms =
        TIDE_EXEC_KILL_GRACE_MS + 2u * (uint32_t)tide->scaler.request_timeout_ms + 1000u;
    cfg->up_cleanup_ms = (uint32_t)tide->executor.cleanup_deadline_ms + TIDE_EXEC_KILL_GRACE_MS;
    cfg->poll_ms = 2000;
    cfg->backoff_initial_ms = (uint32_t)tide->scaler.backoff_initial_ms;
    cfg->backoff_max_ms = (uint32_t)tide->scaler.backoff_max_ms;
    cfg->drain_deadline_ms = (uint32_t)tide->scaler.drain_deadline_ms;
    uint32_t snap = (uint32_t)tide->metrics.snapshot_interval_ms;
    cfg->stale_ms = 3u * snap > 3000u ? 3u * snap : 3000u;
    cfg->reconcile_adopt = strcmp(tide->scaler.reconcile, "stop") != 0;
    /* No tide.yml keys for these yet: a dead instance fails every request sent to it, an
     * overloaded one may time out on some. */
    cfg->suspect_error_rate = 0.5;
    cfg->suspect_grace_ms = (uint32_t)tide->metrics.panic_window_s * 1000u + 2u * snap;
    cfg->check_gap_ms = 5000;
    cfg->check_interval_ms = (uint32_t)tide->scaler.health_check_interval_s * 1000u;
    snprintf(cfg->job_prefix, sizeof cfg->job_prefix, "%s", job_prefix);
    snprintf(cfg->name_prefix, sizeof cfg->name_prefix, "%s", tide->app.name_prefix);
}

fsm_t *fsm_new(const fsm_config_t *cfg)
{
    fsm_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = *cfg;
    self->pcfg = cfg->policy;
    self->state = S_IDLE;
    self->phase = PH_START;
    return self;
}

void fsm_destroy(fsm_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free(*self_p);
    *self_p = NULL;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static void s_recount(fsm_t *self)
{
    uint32_t n = 0;
    for (int i = 0; i < NAMES_MAX; i++)
        if (self->in_pool[i])
            n++;
    self->current = n;
}

static uint32_t s_n_stopping(const fsm_t *self)
{
    uint32_t n = 0;
    for (int i = 0; i < NAMES_MAX; i++)
        if (self->stopping[i])
            n++;
    return n;
}

/* IDLE means "at the minimum": the stable state for the count we have. */
static Tide__V1__State s_stable_state(const fsm_t *self)
{
    return self->current <= self->pcfg.min ? S_IDLE : S_UP;
}

static void s_trans(fsm_t *self, Tide__V1__State to, uint64_t now_ms, fsm_actions_t *acts,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Moves to `to` (or records a notice when to == state) with a reason; always persists. */
static void s_trans(fsm_t *self, Tide__V1__State to, uint64_t now_ms, fsm_actions_t *acts,
                    const char *fmt, ...)
{
    if (acts->n_trans < FSM_TRANS_MAX) {
        fsm_transition_t *t = &acts->trans[acts->n_trans++];
        t->from = self->state;
        t->to = to;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->reason, sizeof t->reason, fmt, ap);
        va_end(ap);
        /* callers record a transition once the count and the job are final */
        t->current = self->current;
        t->desired = self->have_dec ? self->dec.desired : self->current;
        t->paused = self->paused;
        snprintf(t->job_id, sizeof t->job_id, "%s", self->has_job ? self->job.id : "");
    }
    if (to != self->state)
        self->since_ms = now_ms;
    self->state = to;
    acts->persist = true;
}

static void s_new_job(fsm_t *self, Tide__V1__JobKind kind)
{
    memset(&self->job, 0, sizeof self->job);
    snprintf(self->job.id, sizeof self->job.id, "%s-%llu", self->cfg.job_prefix,
             (unsigned long long)++self->job_seq);
    self->job.kind = kind;
    self->job.deadline_ms = self->cfg.job_deadline_ms;
    self->has_job = true;
    self->job_sent = false;
}

static void s_send(fsm_t *self, uint64_t now_ms, fsm_actions_t *acts)
{
    self->job_sent = true;
    /* A recovered job's kind is unknown: it may be a scale up in its cleanup run. */
    bool may_clean_up = self->job.kind == K_UP || self->busy == B_RECOVER;
    self->job_deadline_ms = now_ms + self->cfg.job_deadline_ms + self->cfg.deadline_grace_ms +
                            (may_clean_up ? self->cfg.up_cleanup_ms : 0);
    self->next_poll_ms = now_ms + self->cfg.poll_ms;
    acts->send_job = true;
}

static void s_clear_job(fsm_t *self)
{
    self->has_job = false;
    self->job_sent = false;
    self->busy = B_NONE;
    self->drain_written = false;
}

static void s_success(fsm_t *self)
{
    self->failures = 0;
    self->backoff_until_ms = 0;
}

/* Records a failure and starts the backoff; returns the backoff in ms. */
static uint64_t s_backoff(fsm_t *self, uint64_t now_ms, const char *reason)
{
    self->failures++;
    uint64_t delay = self->cfg.backoff_initial_ms;
    for (uint32_t i = 1; i < self->failures && delay < self->cfg.backoff_max_ms; i++)
        delay *= 2;
    if (delay > self->cfg.backoff_max_ms)
        delay = self->cfg.backoff_max_ms;
    self->backoff_until_ms = now_ms + delay;
    snprintf(self->last_error, sizeof self->last_error, "%s", reason);
    return delay;
}

static bool s_in_job(const fsm_t *self, int index)
{
    for (uint32_t i = 0; i < self->job.n; i++)
        if (self->job.idx[i] == index)
            return true;
    return false;
}

static bool s_valid(int index)
{
    return index >= 0 && index < NAMES_MAX;
}

/* Puts index in the pool; its errors count from now on. */
static void s_join(fsm_t *self, int index, uint64_t now_ms)
{
    self->in_pool[index] = true;
    self->stopping[index] = false;
    self->suspect[index] = false;
    self->pool_since[index] = now_ms;
}

/* Writes "production3,production4" for reasons (cut short with "..." when long). */
static const char *s_names(const fsm_t *self, char *buf, size_t size, const uint16_t *idx,
                           uint32_t n)
{
    size_t o = 0;
    buf[0] = '\0';
    for (uint32_t i = 0; i < n; i++) {
        if (o + strlen(self->cfg.name_prefix) + 12 >= size) {
            snprintf(buf + o, size - o, "...");
            break;
        }
        o += (size_t)snprintf(buf + o, size - o, "%s%s%u", i ? "," : "", self->cfg.name_prefix,
                              idx[i]);
    }
    if (n == 0)
        snprintf(buf, size, "none");
    return buf;
}

static const char *s_kind_name(Tide__V1__JobKind k)
{
    return k == K_UP ? "SCALE_UP" : k == K_DOWN ? "SCALE_DOWN" : k == K_LIST ? "LIST" : "other";
}

/* ---- decisions and job starts ------------------------------------------------------------- */

static void s_start_list(fsm_t *self, uint64_t now_ms, fsm_actions_t *acts)
{
    self->phase = PH_LIST;
    s_new_job(self, K_LIST);
    self->busy = B_LIST;
    s_send(self, now_ms, acts);
    s_trans(self, S_BUSY, now_ms, acts, "reconcile: listing running instances (job %s)",
            self->job.id);
}

static void s_start_up(fsm_t *self, uint32_t n, uint64_t now_ms, fsm_actions_t *acts)
{
    s_new_job(self, K_UP);
    /* Lowest free indices: production<cur>..production<desired-1> when the pool is dense. */
    for (int i = 0; i < NAMES_MAX && self->job.n < n; i++)
        if (!self->in_pool[i] && !self->stopping[i])
            self->job.idx[self->job.n++] = (uint16_t)i;
    if (self->job.n == 0) {
        s_clear_job(self);
        return;
    }
    self->busy = B_UP;
    s_send(self, now_ms, acts);
    acts->pub_decision = true;
    char names[128];
    s_trans(self, S_BUSY, now_ms, acts, "scale up %u -> %u (%s): %s", self->current,
            self->current + self->job.n,
            s_names(self, names, sizeof names, self->job.idx, self->job.n), self->dec.reason);
}

static void s_start_drain(fsm_t *self, uint32_t n, uint64_t now_ms, fsm_actions_t *acts)
{
    s_new_job(self, K_DOWN);
    /* Highest-numbered first, so the pool stays production0..N-1. */
    for (int i = NAMES_MAX - 1; i >= 0 && self->job.n < n; i--)
        if (self->in_pool[i])
            self->job.idx[self->job.n++] = (uint16_t)i;
    if (self->job.n == 0) {
        s_clear_job(self);
        return;
    }
    uint32_t from = self->current;
    for (uint32_t k = 0; k < self->job.n; k++) {
        self->in_pool[self->job.idx[k]] = false;
        self->stopping[self->job.idx[k]] = true;
    }
    s_recount(self);
    self->pool_version++;
    acts->pool_changed = true;
    self->busy = B_DRAIN;
    self->drain_written = false;
    acts->pub_decision = true;
    char names[128];
    s_trans(self, S_BUSY, now_ms, acts, "scale down %u -> %u: draining %s: %s", from, self->current,
            s_names(self, names, sizeof names, self->job.idx, self->job.n), self->dec.reason);
}

/* Instances out of the pool that still run (a failed stop, an uncertain scale up) are stopped
 * before anything else: never put back silently, never left running. */
static void s_start_stop(fsm_t *self, uint64_t now_ms, fsm_actions_t *acts)
{
    s_new_job(self, K_DOWN);
    for (int i = 0; i < NAMES_MAX; i++)
        if (self->stopping[i])
            self->job.idx[self->job.n++] = (uint16_t)i;
    /* They are already out of the pool, but after a restart mid-drain the proxies may still
     * have requests in flight to them: drain like any scale down. The pool is rewritten (same
     * entries, new version) so the drain has a version the proxies can be seen to reach. */
    self->pool_version++;
    acts->pool_changed = true;
    self->busy = B_DRAIN;
    self->drain_written = false;
    char names[128];
    s_trans(self, S_BUSY, now_ms, acts, "stopping instances out of the pool (%s): draining first",
            s_names(self, names, sizeof names, self->job.idx, self->job.n));
}

/* Suspects in the pool into idx (ascending); returns how many. */
static uint32_t s_suspects(const fsm_t *self, uint16_t *idx)
{
    uint32_t n = 0;
    for (int i = 0; i < NAMES_MAX; i++)
        if (self->suspect[i] && self->in_pool[i])
            idx[n++] = (uint16_t)i;
    return n;
}

/* A health check is due: a suspect in the pool and the gap since the last check passed (this
 * comes before any scaling: the count may be wrong), or the periodic interval passed and the
 * policy wants no change (so a periodic check never starts in the way of a scale up). */
static bool s_check_due(const fsm_t *self, uint64_t now_ms)
{
    uint16_t idx[NAMES_MAX];
    if (s_suspects(self, idx) > 0 && now_ms >= self->last_check_ms + self->cfg.check_gap_ms)
        return true;
    return self->cfg.check_interval_ms > 0 && self->dec.next == self->current &&
           now_ms >= self->last_check_ms + self->cfg.check_interval_ms;
}

static void s_start_check(fsm_t *self, uint64_t now_ms, fsm_actions_t *acts)
{
    uint16_t idx[NAMES_MAX];
    uint32_t n = s_suspects(self, idx);
    s_new_job(self, K_LIST);
    self->busy = B_CHECK;
    self->check_periodic = n == 0;
    s_send(self, now_ms, acts);
    char names[128];
    if (n > 0)
        s_trans(self, S_BUSY, now_ms, acts, "health check: %s failing requests; listing instances",
                s_names(self, names, sizeof names, idx, n));
    else
        s_trans(self, S_BUSY, now_ms, acts, "health check: periodic; listing instances");
}

static void s_maybe_start(fsm_t *self, uint64_t now_ms, fsm_actions_t *acts)
{
    if (self->paused || now_ms < self->backoff_until_ms)
        return;
    if (s_n_stopping(self) > 0) {
        s_start_stop(self, now_ms, acts);
        return;
    }
    if (s_check_due(self, now_ms)) {
        s_start_check(self, now_ms, acts);
        return;
    }
    uint32_t next = self->dec.next;
    if (next > self->current)
        s_start_up(self, next - self->current, now_ms, acts);
    else if (next < self->current)
        s_start_drain(self, self->current - next, now_ms, acts);
}

static void s_evaluate(fsm_t *self, uint64_t now_ms, fsm_actions_t *acts)
{
    if (self->phase == PH_START)
        return;
    policy_input_t in = {
        .now_ms = now_ms,
        .current = self->current,
        .fresh = self->have_snapshot && now_ms - self->snapshot_ms <= self->cfg.stale_ms,
        .rps_stable = self->rps_stable,
        .rps_panic = self->rps_panic,
        .stable_window_s = self->stable_window_s,
        .pinned = self->pinned,
        .forced = self->forced,
    };
    policy_desired(&self->pcfg, &in, &self->pst, &self->dec);
    self->have_dec = true;
    if (!self->have_pub || self->dec.desired != self->pub_desired ||
        self->dec.panicking != self->pub_panicking) {
        self->have_pub = true;
        self->pub_desired = self->dec.desired;
        self->pub_panicking = self->dec.panicking;
        acts->pub_decision = true;
        acts->persist = true; /* "desired" is in the state hash */
    }
    if (self->phase == PH_RUN && (self->state == S_IDLE || self->state == S_UP))
        s_maybe_start(self, now_ms, acts);
}

/* ---- job outcomes ------------------------------------------------------------------------- */

static void s_up_done(fsm_t *self, uint64_t now_ms, fsm_actions_t *acts)
{
    uint32_t from = self->current;
    for (uint32_t k = 0; k < self->job.n; k++)
        s_join(self, self->job.idx[k], now_ms);
    s_recount(self);
    self->pool_version++;
    acts->pool_changed = true;
    s_success(self);
    char names[128];
    s_names(self, names, sizeof names, self->job.idx, self->job.n);
    s_clear_job(self);
    self->ready_until_ms = now_ms + self->cfg.settle_ms;
    s_trans(self, S_READY, now_ms, acts, "scale up %u -> %u succeeded (%s)", from, self->current,
            names);
}

/* A failed scale up: back to the stable state with backoff. When the outcome is unknown
 * (deadline, no answer, executor forgot the job) its instances may run: they go to the stop
 * list. When the executor reported, only those it says still run do. */
static void s_up_failed(fsm_t *self, const fsm_job_result_t *r, bool unknown, const char *why,
                        uint64_t now_ms, fsm_actions_t *acts)
{
    uint32_t leftovers = 0;
    if (unknown) {
        for (uint32_t k = 0; k < self->job.n; k++) {
            self->stopping[self->job.idx[k]] = true;
            leftovers++;
        }
    } else if (r) {
        for (size_t i = 0; i < r->n_results; i++)
            if (r->results[i].running && s_valid(r->results[i].index) &&
                s_in_job(self, r->results[i].index) && !self->in_pool[r->results[i].index]) {
                self->stopping[r->results[i].index] = true;
                leftovers++;
            }
    }
    uint64_t delay = s_backoff(self, now_ms, why);
    s_clear_job(self);
    s_trans(self, s_stable_state(self), now_ms, acts, "scale up failed: %s; retry after %llu ms%s",
            why, (unsigned long long)delay, leftovers ? "; its instances will be stopped" : "");
}

static void s_down_done(fsm_t *self, const fsm_job_result_t *r, const char *why, uint64_t now_ms,
                        fsm_actions_t *acts)
{
    if (r && r->state == TIDE__V1__JOB_STATE__JOB_SUCCEEDED) {
        for (uint32_t k = 0; k < self->job.n; k++)
            self->stopping[self->job.idx[k]] = false;
        s_success(self);
        s_clear_job(self);
        s_trans(self, s_stable_state(self), now_ms, acts, "scale down succeeded: %u instances",
                self->current);
        return;
    }
    /* Failed: those the executor says are no longer running are done; the rest stay on the
     * stop list and are retried after the backoff. They stay out of the pool. */
    if (r)
        for (size_t i = 0; i < r->n_results; i++)
            if (!r->results[i].running && s_valid(r->results[i].index) &&
                s_in_job(self, r->results[i].index))
                self->stopping[r->results[i].index] = false;
    uint64_t delay = s_backoff(self, now_ms, why);
    s_clear_job(self);
    s_trans(self, s_stable_state(self), now_ms, acts,
            "scale down failed: %s; %u instances left to stop, retry after %llu ms", why,
            s_n_stopping(self), (unsigned long long)delay);
}

static void s_list_failed(fsm_t *self, const char *why, uint64_t now_ms, fsm_actions_t *acts)
{
    uint64_t delay = s_backoff(self, now_ms, why);
    s_clear_job(self);
    self->busy = B_LIST; /* waiting out the backoff; the tick retries */
    s_trans(self, S_BUSY, now_ms, acts, "reconcile: list failed: %s; retry after %llu ms", why,
            (unsigned long long)delay);
}

/* The previous run's job finished while we were away (or just now): apply what it did, so
 * the list that follows only has to deal with real strays. */
static void s_apply_recovered(fsm_t *self, const fsm_job_result_t *r, uint64_t now_ms,
                              fsm_actions_t *acts)
{
    bool ok = r->state == TIDE__V1__JOB_STATE__JOB_SUCCEEDED;
    int idx[NAMES_MAX];
    size_t n = 0;
    if (r->n_instances > 0) {
        for (size_t i = 0; i < r->n_instances && n < NAMES_MAX; i++)
            if (s_valid(r->instances[i]))
                idx[n++] = r->instances[i];
    } else {
        for (size_t i = 0; i < r->n_results && n < NAMES_MAX; i++)
            if (s_valid(r->results[i].index))
                idx[n++] = r->results[i].index;
    }
    if (r->kind == K_UP && ok) {
        for (size_t i = 0; i < n; i++)
            s_join(self, idx[i], now_ms);
        s_recount(self);
        self->pool_version++;
        acts->pool_changed = true;
    } else if (r->kind == K_UP) {
        for (size_t i = 0; i < r->n_results; i++)
            if (r->results[i].running && s_valid(r->results[i].index) &&
                !self->in_pool[r->results[i].index])
                self->stopping[r->results[i].index] = true;
    } else if (r->kind == K_DOWN && ok) {
        for (size_t i = 0; i < n; i++)
            self->stopping[idx[i]] = false;
    } else if (r->kind == K_DOWN) {
        for (size_t i = 0; i < r->n_results; i++)
            if (!r->results[i].running && s_valid(r->results[i].index))
                self->stopping[r->results[i].index] = false;
    }
    s_trans(self, S_BUSY, now_ms, acts, "reconcile: previous job %s %s %s", r->job_id,
            s_kind_name(r->kind), ok ? "succeeded" : "failed");
    s_clear_job(self);
    s_start_list(self, now_ms, acts);
}

/* A list job's results as tables by instance index: running, healthy (if running), and
 * unverified (running at an address not its own). An unverified one counts as running and
 * healthy, so a pool member it names stays where it is; the callers never adopt or stop it. */
static void s_list_results(const fsm_job_result_t *r, bool *running, bool *healthy,
                           bool *unverified)
{
    for (size_t i = 0; i < r->n_results; i++) {
        const fsm_result_t *x = &r->results[i];
        if (s_valid(x->index) && x->running) {
            running[x->index] = true;
            healthy[x->index] = x->ok || x->unverified;
            unverified[x->index] = x->unverified;
        }
    }
}

/* Instance i runs outside the pool and is not being stopped: it joins the pool (returns true)
 * when adopting is configured and it is healthy, else it goes on the stop list. Past
 * scaler.max (the config was lowered, or someone started it by hand) it is never adopted: the
 * policy could not keep it, it would only be drained again. */
static bool s_adopt_or_stop(fsm_t *self, int i, bool healthy, uint64_t now_ms)
{
    if (self->cfg.reconcile_adopt && healthy && (uint32_t)i < self->cfg.policy.max) {
        s_join(self, i, now_ms);
        return true;
    }
    self->stopping[i] = true;
    return false;
}

/* The list of running instances is the truth: pool entries that do not run are dropped,
 * running instances outside the pool are adopted (when healthy and the policy says so) or
 * stopped. Afterwards instances == the pool. */
static void s_apply_list(fsm_t *self, const fsm_job_result_t *r, uint64_t now_ms,
                         fsm_actions_t *acts)
{
    bool running[NAMES_MAX] = {false}, healthy[NAMES_MAX] = {false};
    bool unverified[NAMES_MAX] = {false};
    s_list_results(r, running, healthy, unverified);
    uint32_t removed = 0, adopted = 0, alone = 0;
    for (int i = 0; i < NAMES_MAX; i++) {
        if (self->in_pool[i] && !running[i]) {
            self->in_pool[i] = false;
            removed++;
        }
        if (self->stopping[i] && !running[i])
            self->stopping[i] = false; /* already gone */
        if (running[i] && !self->in_pool[i] && !self->stopping[i] && unverified[i])
            alone++;
        else if (running[i] && !self->in_pool[i] && !self->stopping[i])
            adopted += s_adopt_or_stop(self, i, healthy[i], now_ms);
    }
    s_recount(self);
    /* Always rewrite the pool: the instances key and the pool agree from here on. */
    self->pool_version++;
    acts->pool_changed = true;
    s_success(self);
    s_clear_job(self);
    self->last_check_ms = now_ms;
    self->phase = PH_RUN;
    s_trans(self, s_stable_state(self), now_ms, acts,
            "reconciled: %u in pool, %u removed (not running), %u adopted, %u to stop, %u left "
            "alone (listed at an address not theirs)",
            self->current, removed, adopted, s_n_stopping(self), alone);
}

/* A health check's list: instances in the pool that do not run leave it; ones that run but do
 * not answer their health path leave it and are stopped (drained first, like any stop);
 * running instances nobody asked for are adopted or stopped as at start. The policy then
 * replaces what left. */
static void s_apply_check(fsm_t *self, const fsm_job_result_t *r, uint64_t now_ms,
                          fsm_actions_t *acts)
{
    bool running[NAMES_MAX] = {false}, healthy[NAMES_MAX] = {false};
    bool unverified[NAMES_MAX] = {false};
    s_list_results(r, running, healthy, unverified);
    /* Under overload every instance may miss its health deadline; removing them all would turn
     * slow answers into 503s for everyone. Unhealthy-but-running instances are only removed
     * while at least one healthy one stays in the pool. */
    uint32_t n_healthy = 0;
    for (int i = 0; i < NAMES_MAX; i++)
        if (self->in_pool[i] && running[i] && healthy[i])
            n_healthy++;
    uint16_t gone[NAMES_MAX], sick[NAMES_MAX];
    uint32_t n_gone = 0, n_sick = 0, adopted = 0, strays = 0, kept_sick = 0, alone = 0;
    for (int i = 0; i < NAMES_MAX; i++) {
        if (self->in_pool[i] && running[i] && healthy[i] && !unverified[i])
            self->checked_ok_ms[i] = now_ms;
        if (self->in_pool[i] && !running[i]) {
            self->in_pool[i] = false;
            gone[n_gone++] = (uint16_t)i;
        } else if (self->in_pool[i] && !healthy[i] && n_healthy == 0) {
            kept_sick++;
        } else if (self->in_pool[i] && !healthy[i]) {
            self->in_pool[i] = false;
            self->stopping[i] = true;
            sick[n_sick++] = (uint16_t)i;
        } else if (self->stopping[i] && !running[i]) {
            self->stopping[i] = false; /* already gone */
        } else if (running[i] && !self->in_pool[i] && !self->stopping[i] && unverified[i]) {
            alone++;
        } else if (running[i] && !self->in_pool[i] && !self->stopping[i]) {
            if (s_adopt_or_stop(self, i, healthy[i], now_ms))
                adopted++;
            else
                strays++;
        }
    }
    memset(self->suspect, 0, sizeof self->suspect);
    s_recount(self);
    if (n_gone + n_sick + adopted > 0) {
        self->pool_version++;
        acts->pool_changed = true;
    }
    s_clear_job(self);
    self->last_check_ms = now_ms;
    char g[128], k[128];
    s_trans(self, s_stable_state(self), now_ms, acts,
            "health check: %u in pool; not running: %s; unhealthy, to stop: %s; %u adopted, %u "
            "strays to stop; %u unhealthy kept (none healthy); %u left alone (listed at an "
            "address not theirs)",
            self->current, s_names(self, g, sizeof g, gone, n_gone),
            s_names(self, k, sizeof k, sick, n_sick), adopted, strays, kept_sick, alone);
}

static void s_check_failed(fsm_t *self, const char *why, uint64_t now_ms, fsm_actions_t *acts)
{
    memset(self->suspect, 0, sizeof self->suspect);
    s_clear_job(self);
    self->last_check_ms = now_ms;
    if (self->check_periodic) {
        /* Nothing was suspected: the failure says nothing about scaling. It neither backs off
         * the next scale up nor counts against it; the next check comes after the interval. */
        snprintf(self->last_error, sizeof self->last_error, "%s", why);
        s_trans(self, s_stable_state(self), now_ms, acts,
                "periodic health check failed: %s; pool unchanged, next in %u ms", why,
                self->cfg.check_interval_ms);
        return;
    }
    uint64_t delay = s_backoff(self, now_ms, why);
    s_trans(self, s_stable_state(self), now_ms, acts,
            "health check failed: %s; pool unchanged, retry after %llu ms", why,
            (unsigned long long)delay);
}

/* ---- events ------------------------------------------------------------------------------- */

void fsm_restore(fsm_t *self, const fsm_record_t *rec, uint64_t now_ms, fsm_actions_t *acts)
{
    memset(acts, 0, sizeof *acts);
    memset(self->in_pool, 0, sizeof self->in_pool);
    memset(self->stopping, 0, sizeof self->stopping);
    memset(self->suspect, 0, sizeof self->suspect);
    for (uint32_t i = 0; i < rec->n_pool && i < NAMES_MAX; i++)
        s_join(self, rec->pool[i] % NAMES_MAX, now_ms);
    for (uint32_t i = 0; i < rec->n_stopping && i < NAMES_MAX; i++)
        if (!self->in_pool[rec->stopping[i] % NAMES_MAX])
            self->stopping[rec->stopping[i] % NAMES_MAX] = true;
    s_recount(self);
    self->pool_version = rec->pool_version;
    self->paused = rec->paused;
    self->pinned = rec->pinned;
    self->forced = rec->forced;
    if (rec->bounds_set && rec->min <= rec->max && rec->max <= self->cfg.policy.max) {
        self->bounds_set = true;
        self->pcfg.min = rec->min;
        self->pcfg.max = rec->max;
    }
    self->state = rec->state <= S_UP ? rec->state : S_IDLE;
    self->since_ms = now_ms;
    if (rec->state == S_BUSY && rec->job_id[0]) {
        self->phase = PH_RECOVER;
        memset(&self->job, 0, sizeof self->job);
        snprintf(self->job.id, sizeof self->job.id, "%s", rec->job_id);
        self->job.kind = TIDE__V1__JOB_KIND__JOB_UNKNOWN;
        self->has_job = true;
        self->busy = B_RECOVER;
        s_send(self, now_ms, acts);
        acts->send_job = false;
        acts->poll_job = true;
        s_trans(self, S_BUSY, now_ms, acts, "restart: asking the executor about job %s",
                rec->job_id);
    } else {
        s_start_list(self, now_ms, acts);
    }
    s_evaluate(self, now_ms, acts);
}

void fsm_on_snapshot(fsm_t *self, double rps_stable, double rps_panic, uint32_t stable_window_s,
                     uint64_t now_ms, fsm_actions_t *acts)
{
    memset(acts, 0, sizeof *acts);
    self->have_snapshot = true;
    self->snapshot_ms = now_ms;
    self->rps_stable = rps_stable;
    self->rps_panic = rps_panic;
    self->stable_window_s = stable_window_s;
    s_evaluate(self, now_ms, acts);
}

/* Deadline and status poll of a sent job; returns true when the deadline failed it. */
static bool s_job_timers(fsm_t *self, uint64_t now_ms, fsm_actions_t *acts)
{
    if (!self->has_job || !self->job_sent)
        return false;
    if (now_ms >= self->job_deadline_ms) {
        switch (self->busy) {
        case B_UP:
            s_up_failed(self, NULL, true, "deadline passed", now_ms, acts);
            break;
        case B_DOWN:
            s_down_done(self, NULL, "deadline passed", now_ms, acts);
            break;
        case B_LIST:
            s_list_failed(self, "deadline passed", now_ms, acts);
            break;
        case B_CHECK:
            s_check_failed(self, "deadline passed", now_ms, acts);
            break;
        case B_RECOVER:
            s_trans(self, S_BUSY, now_ms, acts, "reconcile: no outcome for job %s by its deadline",
                    self->job.id);
            s_clear_job(self);
            s_start_list(self, now_ms, acts);
            break;
        default:
            break;
        }
        return true;
    }
    if (now_ms >= self->next_poll_ms) {
        self->next_poll_ms = now_ms + self->cfg.poll_ms;
        acts->poll_job = true;
    }
    return false;
}

void fsm_note_errors(fsm_t *self, int index, double error_rate, uint64_t now_ms)
{
    if (!s_valid(index) || !self->in_pool[index] || error_rate < self->cfg.suspect_error_rate)
        return;
    if (now_ms < self->pool_since[index] + self->cfg.suspect_grace_ms)
        return;
    /* A health check that found it healthy answers for the errors of the panic window it
     * looked at: without this an app failing requests while its health path says 200 would be
     * checked again at every snapshot, a LIST job every few seconds for good. */
    if (now_ms < self->checked_ok_ms[index] + self->cfg.suspect_grace_ms)
        return;
    self->suspect[index] = true;
}

void fsm_on_tick(fsm_t *self, uint64_t now_ms, bool drained, fsm_actions_t *acts)
{
    memset(acts, 0, sizeof *acts);
    switch (self->phase) {
    case PH_START:
        return;
    case PH_RECOVER:
        s_job_timers(self, now_ms, acts);
        break;
    case PH_LIST:
        if (self->has_job)
            s_job_timers(self, now_ms, acts);
        else if (now_ms >= self->backoff_until_ms)
            s_start_list(self, now_ms, acts);
        break;
    case PH_RUN:
        if (self->state == S_READY && now_ms >= self->ready_until_ms) {
            s_trans(self, s_stable_state(self), now_ms, acts, "settled after scale up");
        } else if (self->state == S_BUSY && self->busy == B_DRAIN) {
            if (self->drain_written && (drained || now_ms >= self->drain_deadline_ms)) {
                s_send(self, now_ms, acts);
                self->busy = B_DOWN;
                char names[128];
                s_trans(self, S_BUSY, now_ms, acts, "%s: stopping %s (job %s)",
                        drained ? "drained" : "drain deadline passed",
                        s_names(self, names, sizeof names, self->job.idx, self->job.n),
                        self->job.id);
            }
        } else if (self->state == S_BUSY) {
            s_job_timers(self, now_ms, acts);
        }
        break;
    }
    s_evaluate(self, now_ms, acts);
}

/* Whether a record under the id of the job in flight is that job: the same kind and the
 * instances it was sent with. An executor that lets another request take the id first (a LIST
 * registered under the id of our scale up) would otherwise make the scale up look done. A
 * recovered job's kind and instances are not known, so any record fits it. */
static bool s_record_fits(const fsm_t *self, const fsm_job_result_t *r)
{
    if (self->busy == B_RECOVER || self->job.kind == TIDE__V1__JOB_KIND__JOB_UNKNOWN)
        return true;
    if (r->kind != self->job.kind)
        return false;
    /* The executor names a job's instances in every record; one naming none says nothing. */
    if (r->n_instances > 0 && r->n_instances != self->job.n)
        return false;
    for (size_t i = 0; i < r->n_instances; i++)
        if (!s_valid(r->instances[i]) || !s_in_job(self, r->instances[i]))
            return false;
    return true;
}

void fsm_on_job_result(fsm_t *self, const fsm_job_result_t *r, uint64_t now_ms, fsm_actions_t *acts)
{
    memset(acts, 0, sizeof *acts);
    if (!self->has_job || !self->job_sent || !r->job_id || strcmp(r->job_id, self->job.id) != 0)
        return;
    if (!s_record_fits(self, r)) {
        char why[FSM_REASON_MAX];
        snprintf(why, sizeof why,
                 "the executor's job %s is a %s of %zu instances, not the %s of %u sent", r->job_id,
                 s_kind_name(r->kind), r->n_instances, s_kind_name(self->job.kind), self->job.n);
        fsm_on_job_error(self, r->job_id, FSM_ERR_REFUSED, why, now_ms, acts);
        return;
    }
    bool ok = r->state == TIDE__V1__JOB_STATE__JOB_SUCCEEDED;
    if (!ok && r->state != TIDE__V1__JOB_STATE__JOB_FAILED)
        return; /* pending or running: nothing to do yet */
    char why[FSM_REASON_MAX];
    snprintf(why, sizeof why, "job failed: %s", r->error && r->error[0] ? r->error : "no detail");
    switch (self->busy) {
    case B_UP:
        if (ok)
            s_up_done(self, now_ms, acts);
        else
            s_up_failed(self, r, false, why, now_ms, acts);
        break;
    case B_DOWN:
        s_down_done(self, r, why, now_ms, acts);
        break;
    case B_LIST:
        if (ok)
            s_apply_list(self, r, now_ms, acts);
        else
            s_list_failed(self, why, now_ms, acts);
        break;
    case B_CHECK:
        if (ok)
            s_apply_check(self, r, now_ms, acts);
        else
            s_check_failed(self, why, now_ms, acts);
        break;
    case B_RECOVER:
        s_apply_recovered(self, r, now_ms, acts);
        break;
    default:
        return;
    }
    s_evaluate(self, now_ms, acts);
}

void fsm_on_job_error(fsm_t *self, const char *job_id, fsm_err_t err, const char *reason,
                      uint64_t now_ms, fsm_actions_t *acts)
{
    memset(acts, 0, sizeof *acts);
    if (!self->has_job || !self->job_sent || !job_id || strcmp(job_id, self->job.id) != 0)
        return;
    char why[FSM_REASON_MAX];
    snprintf(why, sizeof why, "%s: %s",
             err == FSM_ERR_REFUSED       ? "refused"
             : err == FSM_ERR_UNKNOWN_JOB ? "executor does not know the job"
                                          : "executor unreachable",
             reason && reason[0] ? reason : "no detail");
    switch (self->busy) {
    case B_UP:
        s_up_failed(self, NULL, err != FSM_ERR_REFUSED, why, now_ms, acts);
        break;
    case B_DOWN:
        s_down_done(self, NULL, why, now_ms, acts);
        break;
    case B_LIST:
        s_list_failed(self, why, now_ms, acts);
        break;
    case B_CHECK:
        s_check_failed(self, why, now_ms, acts);
        break;
    case B_RECOVER:
        /* The previous job is unknown to the executor (or it does not answer): the list tells
         * what actually runs. */
        s_trans(self, S_BUSY, now_ms, acts, "reconcile: job %s: %s", self->job.id, why);
        s_clear_job(self);
        s_start_list(self, now_ms, acts);
        break;
    default:
        return;
    }
    s_evaluate(self, now_ms, acts);
}

void fsm_on_pool_written(fsm_t *self, uint64_t version, uint64_t now_ms)
{
    self->pool_version = version;
    if (self->busy == B_DRAIN && !self->drain_written) {
        /* The drain clock starts when the proxies can see the change, not when we decided. */
        self->drain_written = true;
        self->drain_version = version;
        self->drain_deadline_ms = now_ms + self->cfg.drain_deadline_ms;
    }
}

/* ---- control ------------------------------------------------------------------------------ */

int fsm_pause(fsm_t *self, uint64_t now_ms, fsm_actions_t *acts)
{
    memset(acts, 0, sizeof *acts);
    self->paused = true;
    s_trans(self, self->state, now_ms, acts, "paused: no new jobs");
    return 0;
}

int fsm_resume(fsm_t *self, uint64_t now_ms, fsm_actions_t *acts)
{
    memset(acts, 0, sizeof *acts);
    self->paused = false;
    self->pinned = false;
    self->forced = 0;
    s_trans(self, self->state, now_ms, acts, "resumed: the policy decides");
    s_evaluate(self, now_ms, acts);
    return 0;
}

int fsm_scale(fsm_t *self, uint32_t count, uint64_t now_ms, char *err, size_t errlen,
              fsm_actions_t *acts)
{
    memset(acts, 0, sizeof *acts);
    if (count < self->pcfg.min || count > self->pcfg.max) {
        snprintf(err, errlen, "scale %u is outside the bounds [%u, %u]", count, self->pcfg.min,
                 self->pcfg.max);
        return -EINVAL;
    }
    if (self->paused) {
        snprintf(err, errlen, "paused: resume first (resume also clears a pinned count)");
        return -EINVAL;
    }
    self->pinned = true;
    self->forced = count;
    s_trans(self, self->state, now_ms, acts, "pinned to %u until resume", count);
    s_evaluate(self, now_ms, acts);
    return 0;
}

int fsm_bounds(fsm_t *self, uint32_t min, uint32_t max, uint64_t now_ms, char *err, size_t errlen,
               fsm_actions_t *acts)
{
    memset(acts, 0, sizeof *acts);
    /* The executor refuses instance numbers at or past scaler.max in tide.yml, so bounds
     * above it would only produce refused jobs: say so now instead. */
    uint32_t cap = self->cfg.policy.max;
    if (min > max || max > cap) {
        snprintf(err, errlen,
                 "bounds %u %u: want 0 <= min <= max <= %u (scaler.max in the config file)", min,
                 max, cap);
        return -EINVAL;
    }
    self->pcfg.min = min;
    self->pcfg.max = max;
    self->bounds_set = true;
    s_trans(self, self->state, now_ms, acts, "bounds set to [%u, %u]", min, max);
    s_evaluate(self, now_ms, acts);
    return 0;
}

/* ---- read side ---------------------------------------------------------------------------- */

Tide__V1__State fsm_state(const fsm_t *self)
{
    return self->state;
}

uint32_t fsm_current(const fsm_t *self)
{
    return self->current;
}

bool fsm_in_pool(const fsm_t *self, int index)
{
    return s_valid(index) && self->in_pool[index];
}

bool fsm_restored(const fsm_t *self)
{
    return self->phase != PH_START;
}

const fsm_job_t *fsm_job(const fsm_t *self)
{
    return self->has_job ? &self->job : NULL;
}

const fsm_job_t *fsm_draining(const fsm_t *self, uint64_t *version)
{
    if (!self->has_job || self->busy != B_DRAIN || !self->drain_written)
        return NULL;
    if (version)
        *version = self->drain_version;
    return &self->job;
}

const policy_decision_t *fsm_decision(const fsm_t *self, double *rps_stable, double *rps_panic)
{
    if (rps_stable)
        *rps_stable = self->rps_stable;
    if (rps_panic)
        *rps_panic = self->rps_panic;
    return self->have_dec ? &self->dec : NULL;
}

void fsm_record(const fsm_t *self, fsm_record_t *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->state = self->state;
    if (self->has_job && self->state == S_BUSY)
        snprintf(rec->job_id, sizeof rec->job_id, "%s", self->job.id);
    rec->since_ms = self->since_ms;
    rec->desired = self->have_dec ? self->dec.desired : self->current;
    rec->current = self->current;
    rec->paused = self->paused;
    rec->pinned = self->pinned;
    rec->forced = self->forced;
    rec->bounds_set = self->bounds_set;
    rec->min = self->pcfg.min;
    rec->max = self->pcfg.max;
    for (int i = 0; i < NAMES_MAX; i++) {
        if (self->in_pool[i])
            rec->pool[rec->n_pool++] = (uint16_t)i;
        if (self->stopping[i])
            rec->stopping[rec->n_stopping++] = (uint16_t)i;
    }
    rec->pool_version = self->pool_version;
}

void fsm_status(const fsm_t *self, fsm_status_t *st)
{
    memset(st, 0, sizeof *st);
    st->state = self->state;
    st->since_ms = self->since_ms;
    st->current = self->current;
    st->desired = self->have_dec ? self->dec.desired : self->current;
    st->min = self->pcfg.min;
    st->max = self->pcfg.max;
    st->paused = self->paused;
    st->pinned = self->pinned;
    st->forced = self->forced;
    st->reconciling = self->phase != PH_RUN;
    st->job_id = self->has_job ? self->job.id : "";
    st->backoff_until_ms = self->backoff_until_ms;
    st->failures = self->failures;
    st->last_error = self->last_error;
    st->pool_version = self->pool_version;
    st->n_stopping = s_n_stopping(self);
}

const policy_config_t *fsm_policy(const fsm_t *self)
{
    return &self->pcfg;
}
