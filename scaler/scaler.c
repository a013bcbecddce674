/* scaler.c - tide-scaler's poll loop: bus, control, executor and Redis around the pure fsm. */
#include "scaler.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "drain.h"
#include "executor_client.h"
#include "fsm.h"
#include "lease.h"
#include "names.h"
#include "placement.h"
#include "profile_jobs.h"
#include "profiler.h"
#include "store.h"
#include "tide_clock.h"
#include "tide_curve.h"
#include "tide_log.h"
#include "tide_msg.h"

#define EXEC_TRIES    3    /* lazy pirate: sends of one request before giving up */
#define LOAD_RETRY_MS 1000 /* Redis unreachable at start: retry this often */

struct _scaler_t {
    const tide_config_t *cfg;
    msg_sender_t sender;
    zsock_t *pub, *rep, *sub_metrics, *sub_exec;
    exec_client_t *exec;
    store_t *store;
    lease_t *lease;
    char id[128];
    /* A write was refused by the fencing: after this turn, renew at once to learn why (another
     * leads: standby; Redis lost its data: rewrite). Until then nothing more is written. */
    bool fence_refused;
    drain_t *drain;
    fsm_t *fsm;
    fsm_config_t fcfg;
    profiler_t *profiler;
    placement_t *placement; /* where a list may say an instance runs */

    bool loaded; /* Redis read and the fsm restored */
    uint64_t next_load_ms;
    unsigned load_tries;
    bool store_dirty;  /* the fsm changed and Redis does not have it yet */
    bool pool_dirty;   /* ... and that change includes the pool */
    bool send_pending; /* a job waits for its state to be persisted first */
    char send_pending_id[FSM_JOB_ID_MAX];
    uint64_t next_tick_ms;
    bool store_down_logged;
    /* the draining list last published, so a change of it alone is published too */
    uint32_t pub_n_stopping;
    uint16_t pub_stopping[NAMES_MAX];
    /* the last snapshot's count of live proxies: draining is only trusted when we hear from
     * at least that many (else their stats are not reaching us and only the deadline is) */
    uint32_t snap_proxies;
    uint64_t snap_ms;
};

/* ---- publishing --------------------------------------------------------------------------- */

static int64_t s_wall_offset(void)
{
    return (int64_t)clock_wall_ms() - (int64_t)clock_mono_ms();
}

static void s_pub_state(scaler_t *self, const fsm_transition_t *t)
{
    char q[FSM_REASON_MAX + 8];
    log_info(t->from == t->to ? "notice" : "transition",
             "from=%s to=%s reason=%s current=%u desired=%u job_id=%s paused=%d",
             msg_state_name(t->from), msg_state_name(t->to), log_quote(q, sizeof q, t->reason),
             t->current, t->desired, t->job_id[0] ? t->job_id : "-", t->paused);
    Tide__V1__ScalerState m = TIDE__V1__SCALER_STATE__INIT;
    m.header = msg_sender_next(&self->sender);
    m.state = t->to;
    m.previous = t->from;
    m.reason = (char *)t->reason;
    m.current = t->current;
    m.desired = t->desired;
    m.job_id = (char *)t->job_id;
    m.paused = t->paused;
    msg_send(self->pub, TOPIC_SCALER_STATE, &m.base);
}

static void s_pub_decision(scaler_t *self)
{
    double rs = 0, rp = 0;
    const policy_decision_t *d = fsm_decision(self->fsm, &rs, &rp);
    if (!d)
        return;
    const char *policy = policy_kind_name(fsm_policy(self->fsm)->kind);
    char q[200];
    log_info("decision",
             "policy=%s current=%u desired=%u next=%u wanted=%u rps_stable=%.2f rps_panic=%.2f "
             "panicking=%d hold=%d reason=%s",
             policy, fsm_current(self->fsm), d->desired, d->next, d->wanted, rs, rp, d->panicking,
             d->hold, log_quote(q, sizeof q, d->reason));
    Tide__V1__ScalerDecision m = TIDE__V1__SCALER_DECISION__INIT;
    m.header = msg_sender_next(&self->sender);
    m.policy = (char *)policy;
    m.current = fsm_current(self->fsm);
    m.desired = d->desired;
    m.rps_stable = rs;
    m.rps_panic = rp;
    m.panicking = d->panicking;
    m.reason = (char *)d->reason;
    msg_send(self->pub, TOPIC_SCALER_DECISION, &m.base);
}

static void s_pub_pool(scaler_t *self, const fsm_record_t *rec)
{
    const char *prefix = self->cfg->app.name_prefix;
    size_t n = rec->n_pool, nd = rec->n_stopping;
    Tide__V1__PoolEntry *entries = calloc(n ? n : 1, sizeof *entries);
    Tide__V1__PoolEntry **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    char(*text)[2][280] = calloc(n + nd ? n + nd : 1, sizeof *text);
    char **draining = calloc(nd ? nd : 1, sizeof *draining);
    if (entries && ptrs && text && draining) {
        for (size_t i = 0; i < n; i++) {
            tide__v1__pool_entry__init(&entries[i]);
            entries[i].name =
                (char *)names_format(text[i][0], sizeof text[i][0], prefix, rec->pool[i]);
            entries[i].addr =
                (char *)store_addr(self->store, rec->pool[i], text[i][1], sizeof text[i][1]);
            ptrs[i] = &entries[i];
        }
        for (size_t i = 0; i < nd; i++)
            draining[i] = (char *)names_format(text[n + i][0], sizeof text[n + i][0], prefix,
                                               rec->stopping[i]);
        Tide__V1__ScalerPool m = TIDE__V1__SCALER_POOL__INIT;
        m.header = msg_sender_next(&self->sender);
        m.version = rec->pool_version;
        m.entries = ptrs;
        m.n_entries = n;
        m.draining = draining;
        m.n_draining = nd;
        msg_send(self->pub, TOPIC_SCALER_POOL, &m.base);
        log_info("pool", "version=%" PRIu64 " instances=%zu draining=%zu", rec->pool_version, n,
                 nd);
    } else {
        log_error("out of memory publishing the pool", "version=%" PRIu64, rec->pool_version);
    }
    free(entries);
    free(ptrs);
    free(text);
    free(draining);
}

/* ---- actions ------------------------------------------------------------------------------ */

static void s_apply(scaler_t *self, const fsm_actions_t *acts, uint64_t now_ms);

static void s_job_error(scaler_t *self, const char *job_id, fsm_err_t err, const char *why,
                        uint64_t now_ms)
{
    fsm_actions_t acts;
    fsm_on_job_error(self->fsm, job_id, err, why, now_ms, &acts);
    s_apply(self, &acts, now_ms);
}

static void s_send_job(scaler_t *self, uint64_t now_ms)
{
    const fsm_job_t *job = fsm_job(self->fsm);
    if (!job)
        return;
    size_t n = job->n;
    Tide__V1__Instance *inst = calloc(n ? n : 1, sizeof *inst);
    Tide__V1__Instance **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    char(*names)[64] = calloc(n ? n : 1, sizeof *names);
    int rc = -ENOMEM;
    if (inst && ptrs && names) {
        for (size_t i = 0; i < n; i++) {
            tide__v1__instance__init(&inst[i]);
            inst[i].name = (char *)names_format(names[i], sizeof names[i],
                                                self->cfg->app.name_prefix, job->idx[i]);
            inst[i].host = (char *)self->cfg->app.host;
            inst[i].port = (uint32_t)(self->cfg->app.base_port + job->idx[i]);
            ptrs[i] = &inst[i];
        }
        rc = exec_client_submit(self->exec, job->kind, job->id, ptrs, n, job->deadline_ms, now_ms);
    }
    free(inst);
    free(ptrs);
    free(names);
    if (rc == 0) {
        log_info("job sent", "job_id=%s kind=%s instances=%zu", job->id,
                 msg_job_kind_name(job->kind), n);
    } else {
        char id[FSM_JOB_ID_MAX];
        snprintf(id, sizeof id, "%s", job->id);
        s_job_error(self, id, FSM_ERR_UNREACHABLE,
                    rc == -ENOSPC ? "request queue full" : "out of memory", now_ms);
    }
}

static void s_poll_job(scaler_t *self, uint64_t now_ms)
{
    const fsm_job_t *job = fsm_job(self->fsm);
    if (!job)
        return;
    int rc =
        exec_client_submit(self->exec, TIDE__V1__JOB_KIND__JOB_STATUS, job->id, NULL, 0, 0, now_ms);
    if (rc == 0)
        log_debug("job status asked", "job_id=%s", job->id);
    else if (rc != -EALREADY)
        log_warn("job status not asked", "job_id=%s err=%d", job->id, rc);
}

/* Writes the fsm's record to Redis; on success publishes a pool change and releases a job
 * that was waiting for its state to be persisted. On failure everything stays pending and the
 * next tick retries: Redis first, then the world. */
static void s_persist(scaler_t *self, uint64_t now_ms)
{
    fsm_record_t *rec = malloc(sizeof *rec);
    if (!rec)
        return;
    fsm_record(self->fsm, rec);
    uint64_t since_wall = (uint64_t)((int64_t)rec->since_ms + s_wall_offset());
    uint64_t version = rec->pool_version;
    int rc = store_write(self->store, rec, self->pool_dirty, since_wall, &version);
    if (rc == -EPERM) {
        /* The leader key is not ours: another scaler leads (this one hung past its lease), or
         * Redis lost its data. Nothing was written, nothing this fsm decided reaches the world
         * (a job waits for its write), and the lease step after this turn finds out which. */
        store_set_fence(self->store, NULL);
        self->fence_refused = true;
        free(rec);
        return;
    }
    if (rc != 0) {
        if (!self->store_down_logged)
            log_warn("state not persisted; retrying", "pool_change=%d send_pending=%d",
                     self->pool_dirty, self->send_pending);
        self->store_down_logged = true;
        free(rec);
        return;
    }
    if (self->store_down_logged)
        log_info("state persisted again", "pool_version=%" PRIu64, version);
    self->store_down_logged = false;
    self->store_dirty = false;
    bool stopping_changed =
        rec->n_stopping != self->pub_n_stopping ||
        memcmp(rec->stopping, self->pub_stopping, rec->n_stopping * sizeof rec->stopping[0]) != 0;
    bool pool_changed = self->pool_dirty;
    if (pool_changed) {
        self->pool_dirty = false;
        fsm_on_pool_written(self->fsm, version, now_ms);
        rec->pool_version = version;
    }
    /* A pool change, or only the draining list (a stop finished): both are news for
     * watchers; proxies re-read Redis and find the same version in the second case. */
    if (pool_changed || stopping_changed) {
        s_pub_pool(self, rec);
        self->pub_n_stopping = rec->n_stopping;
        memcpy(self->pub_stopping, rec->stopping, rec->n_stopping * sizeof rec->stopping[0]);
    }
    free(rec);
}

/* Sends the job that waited for its state to reach Redis, if it is still the fsm's job. */
static void s_flush_send(scaler_t *self, uint64_t now_ms)
{
    if (!self->send_pending || self->store_dirty)
        return;
    self->send_pending = false;
    const fsm_job_t *job = fsm_job(self->fsm);
    if (job && strcmp(job->id, self->send_pending_id) == 0)
        s_send_job(self, now_ms);
}

static void s_apply(scaler_t *self, const fsm_actions_t *acts, uint64_t now_ms)
{
    if (acts->pool_changed)
        self->pool_dirty = true;
    if (acts->persist || acts->pool_changed)
        self->store_dirty = true;
    if (acts->send_job) {
        const fsm_job_t *job = fsm_job(self->fsm);
        if (job) {
            self->send_pending = true;
            snprintf(self->send_pending_id, sizeof self->send_pending_id, "%s", job->id);
        }
    }
    /* Redis first (and the pool event after it), then the news, then the executor: a job is
     * only sent once its id is persisted, so a crash cannot lose it. */
    if (self->store_dirty)
        s_persist(self, now_ms);
    for (size_t i = 0; i < acts->n_trans; i++)
        s_pub_state(self, &acts->trans[i]);
    if (acts->pub_decision)
        s_pub_decision(self);
    s_flush_send(self, now_ms);
    /* A job still waiting for Redis was never sent: asking about it would only get "unknown
     * job" and fail it. */
    if (acts->poll_job && !self->send_pending)
        s_poll_job(self, now_ms);
}

/* ---- inputs ------------------------------------------------------------------------------- */

/* Maps a JobRecord to the fsm's terms (names to indices) and hands it over. */
static void s_on_record(scaler_t *self, const char *job_id, const Tide__V1__JobRecord *rec,
                        uint64_t now_ms)
{
    const char *prefix = self->cfg->app.name_prefix;
    size_t nr = rec->n_results, ni = rec->n_instances;
    fsm_result_t *results = calloc(nr ? nr : 1, sizeof *results);
    int *instances = calloc(ni ? ni : 1, sizeof *instances);
    if (!results || !instances) {
        free(results);
        free(instances);
        log_error("out of memory reading a job record", "job_id=%s", job_id);
        return;
    }
    for (size_t i = 0; i < nr; i++) {
        const Tide__V1__InstanceResult *x = rec->results[i];
        results[i].index = x->instance ? names_index(prefix, x->instance->name) : -1;
        results[i].ok = x->ok;
        results[i].running = x->running;
        if (results[i].index < 0)
            log_once_per_kind("foreign-instance", "job record names an instance that is not ours",
                              x->instance && x->instance->name ? x->instance->name : "?");
    }
    for (size_t i = 0; i < ni; i++)
        instances[i] = names_index(prefix, rec->instances[i]->name);
    const fsm_job_t *cur = fsm_job(self->fsm);
    bool ours = cur && strcmp(cur->id, job_id) == 0 &&
                (cur->kind == rec->kind || cur->kind == TIDE__V1__JOB_KIND__JOB_UNKNOWN);
    /* A list reports what runs, not what tide asked for: an instance it gives another host or
     * port than tide's rule is neither adopted nor given that address in the pool. It is not
     * stopped either: a stop acts by name, and nothing proves the entry is the instance of
     * that name (a healthy pool member may be the one stopped). Left alone, it is logged at
     * every list; the next list that reports it where it belongs settles it. */
    if (ours && rec->kind == TIDE__V1__JOB_KIND__JOB_LIST) {
        for (size_t i = 0; i < nr; i++) {
            const Tide__V1__Instance *in = rec->results[i]->instance;
            char why[200], q[240];
            if (results[i].index < 0 || !results[i].running ||
                placement_check(self->placement, results[i].index, in->host, in->port, why,
                                sizeof why) == 0)
                continue;
            results[i].unverified = true;
            log_warn("listed instance left alone: its address is not tide's for it",
                     "job_id=%s name=%s host=%s port=%u reason=%s", job_id, in->name,
                     log_quote(q, 80, in->host ? in->host : ""), in->port,
                     log_quote(q + 80, sizeof q - 80, why));
        }
    }
    /* Where the job in flight says its instances run (the host a scale up placed each on, or
     * the list's): the pool gets these addresses. Records of other jobs change nothing. */
    if (ours && rec->state == TIDE__V1__JOB_STATE__JOB_SUCCEEDED &&
        (rec->kind == TIDE__V1__JOB_KIND__JOB_SCALE_UP ||
         rec->kind == TIDE__V1__JOB_KIND__JOB_LIST)) {
        for (size_t i = 0; i < nr; i++) {
            const Tide__V1__Instance *in = rec->results[i]->instance;
            if (results[i].index < 0 || !results[i].running || results[i].unverified || !in->host ||
                !in->host[0])
                continue;
            if (store_set_addr(self->store, results[i].index, in->host, in->port) != 0)
                log_once_per_kind("bad-instance-addr", "job record gives an unusable address",
                                  in->host);
        }
    }
    fsm_job_result_t r = {
        .job_id = job_id,
        .kind = rec->kind,
        .state = rec->state,
        .error = rec->error,
        .results = results,
        .n_results = nr,
        .instances = instances,
        .n_instances = ni,
    };
    if (rec->state == TIDE__V1__JOB_STATE__JOB_SUCCEEDED ||
        rec->state == TIDE__V1__JOB_STATE__JOB_FAILED) {
        char q[300];
        log_info("job finished", "job_id=%s kind=%s state=%s results=%zu error=%s", job_id,
                 msg_job_kind_name(rec->kind), msg_job_state_name(rec->state), nr,
                 log_quote(q, sizeof q, rec->error));
    }
    /* The fsm drops a dead instance from the pool; first, a crash is worth a profile. */
    if (cur && strcmp(cur->id, job_id) == 0) {
        profile_jobs_note_list(self->profiler, self->fsm, self->cfg, rec, now_ms);
        profile_jobs_send_due(self->exec, self->cfg, self->profiler, now_ms);
    }
    fsm_actions_t acts;
    fsm_on_job_result(self->fsm, &r, now_ms, &acts);
    free(results);
    free(instances);
    s_apply(self, &acts, now_ms);
}

/* control_ctx_t.profile: tidectl profile NAME [--seconds N]. */
static int s_profile_manual(void *arg, const char *instance, uint32_t seconds, uint64_t now_ms,
                            char *job_id, size_t idlen, char *err, size_t errlen)
{
    scaler_t *self = arg;
    return profile_jobs_manual(self->exec, self->cfg, self->profiler, self->fsm, instance, seconds,
                               now_ms, job_id, idlen, err, errlen);
}

static void s_on_exec_result(scaler_t *self, exec_result_t *res, uint64_t now_ms)
{
    if (profile_jobs_is(res->job_id)) {
        profile_jobs_on_reply(self->profiler, res->job_id, res->reply, now_ms);
        exec_result_free(res);
        return;
    }
    if (!self->loaded) {
        exec_result_free(res); /* standby: the leader asks about its own jobs */
        return;
    }
    bool status = res->kind == TIDE__V1__JOB_KIND__JOB_STATUS;
    if (!res->reply) {
        if (status)
            log_warn("executor did not answer a status query", "job_id=%s", res->job_id);
        else
            s_job_error(self, res->job_id, FSM_ERR_UNREACHABLE, "no reply after retries", now_ms);
    } else if (!res->reply->accepted) {
        const char *why = res->reply->reason ? res->reply->reason : "";
        char q[300];
        log_warn("executor refused", "job_id=%s kind=%s reason=%s", res->job_id,
                 msg_job_kind_name(res->kind), log_quote(q, sizeof q, why));
        s_job_error(self, res->job_id, status ? FSM_ERR_UNKNOWN_JOB : FSM_ERR_REFUSED, why, now_ms);
    } else if (res->reply->job) {
        s_on_record(self, res->job_id, res->reply->job, now_ms);
    }
    exec_result_free(res);
}

static void s_on_metrics(scaler_t *self, uint64_t now_ms)
{
    msg_in_t in;
    if (msg_recv(self->sub_metrics, &in) != 0)
        return;
    if (strcmp(in.topic, TOPIC_SNAPSHOT) == 0) {
        const Tide__V1__MetricsSnapshot *s = (const void *)in.msg;
        self->snap_proxies = s->proxies;
        self->snap_ms = now_ms;
        if (self->fsm && self->loaded) {
            for (size_t i = 0; i < s->n_instances; i++) {
                int index = names_index(self->cfg->app.name_prefix, s->instances[i]->name);
                fsm_note_errors(self->fsm, index, s->instances[i]->error_rate, now_ms);
                if (index >= 0 && fsm_in_pool(self->fsm, index))
                    profiler_note(self->profiler, index, s->instances[i]->error_rate, now_ms);
            }
            profile_jobs_send_due(self->exec, self->cfg, self->profiler, now_ms);
            fsm_actions_t acts;
            fsm_on_snapshot(self->fsm, s->rps_stable, s->rps_panic, s->stable_window_s, now_ms,
                            &acts);
            s_apply(self, &acts, now_ms);
        }
    } else if (strcmp(in.topic, TOPIC_STATS) == 0) {
        drain_on_stats(self->drain, (const Tide__V1__ProxyStats *)in.msg, now_ms);
    }
    msg_in_free(&in);
}

static void s_on_exec_event(scaler_t *self, uint64_t now_ms)
{
    msg_in_t in;
    if (msg_recv(self->sub_exec, &in) != 0)
        return;
    if (strcmp(in.topic, TOPIC_EXEC_JOB) == 0 && self->loaded) {
        const Tide__V1__JobEvent *e = (const void *)in.msg;
        if (e->type == TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_FINISHED && e->job &&
            profile_jobs_is(e->job_id))
            profile_jobs_on_record(self->profiler, e->job_id, e->job, now_ms);
        else if (e->type == TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_FINISHED && e->job)
            s_on_record(self, e->job_id, e->job, now_ms);
        else if (e->type == TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_OUTPUT)
            log_debug("job output", "job_id=%s line=\"%.200s\"", e->job_id, e->line ? e->line : "");
    }
    msg_in_free(&in);
}

static void s_on_control(scaler_t *self, uint64_t now_ms)
{
    char standby[256];
    if (!lease_leading(self->lease))
        snprintf(standby, sizeof standby, "standby: %s%s",
                 lease_holder(self->lease)[0] ? "the leader is " : "no leader yet",
                 lease_holder(self->lease));
    control_ctx_t ctx = {
        .cfg = self->cfg,
        .store = self->store,
        .sender = &self->sender,
        .wall_offset_ms = s_wall_offset(),
        .not_ready = lease_leading(self->lease) ? "starting: waiting for Redis" : standby,
        .profile = s_profile_manual,
        .profile_arg = self,
    };
    fsm_actions_t acts;
    int rc = control_serve(self->rep, self->loaded ? self->fsm : NULL, &ctx, now_ms, &acts);
    if (rc == -EIO)
        log_warn("control reply not sent", "%s", "");
    if (self->loaded)
        s_apply(self, &acts, now_ms);
}

/* Start-up: read Redis (until it answers), then restore the fsm, which starts the reconcile. */
static void s_try_load(scaler_t *self, uint64_t now_ms)
{
    if (now_ms < self->next_load_ms)
        return;
    fsm_record_t *rec = malloc(sizeof *rec);
    if (!rec)
        return;
    store_info_t info;
    int rc = store_load(self->store, rec, &info);
    if (rc != 0) {
        self->load_tries++;
        if (self->load_tries == 1 || self->load_tries % 30 == 0)
            log_warn("cannot read state from Redis; retrying", "addr=%s:%d tries=%u",
                     self->cfg->redis.host, self->cfg->redis.port, self->load_tries);
        self->next_load_ms = now_ms + LOAD_RETRY_MS;
        free(rec);
        return;
    }
    log_info("state read from Redis",
             "empty=%d state=%s job_id=%s pool=%u instances_key=%" PRIu64 " pool_version=%" PRIu64
             " stopping=%u paused=%d pinned=%d forced=%u bounds_set=%d min=%u max=%u "
             "foreign=%zu bad_fields=%zu",
             info.empty, msg_state_name(rec->state), rec->job_id[0] ? rec->job_id : "-",
             rec->n_pool, info.instances, rec->pool_version, rec->n_stopping, rec->paused,
             rec->pinned, rec->forced, rec->bounds_set, rec->min, rec->max, info.foreign,
             info.bad_fields);
    self->loaded = true;
    fsm_actions_t acts;
    fsm_restore(self->fsm, rec, now_ms, &acts);
    free(rec);
    s_apply(self, &acts, now_ms);
}

static void s_tick(scaler_t *self, uint64_t now_ms)
{
    if (!lease_leading(self->lease))
        return;
    if (!self->loaded) {
        s_try_load(self, now_ms);
        return;
    }
    if (self->store_dirty) {
        s_persist(self, now_ms);
        s_flush_send(self, now_ms);
    }
    bool drained = false;
    uint64_t version = 0;
    const fsm_job_t *draining = fsm_draining(self->fsm, &version);
    if (draining) {
        const char *names[NAMES_MAX];
        char text[NAMES_MAX][48];
        for (uint32_t i = 0; i < draining->n; i++)
            names[i] =
                names_format(text[i], sizeof text[i], self->cfg->app.name_prefix, draining->idx[i]);
        /* Trusted only while tide-metrics is heard and we hear every proxy it counts;
         * otherwise the drain deadline decides. */
        bool metrics_fresh = self->snap_ms && now_ms - self->snap_ms <= self->fcfg.stale_ms;
        drained = metrics_fresh && drain_live(self->drain, now_ms) >= self->snap_proxies &&
                  drain_drained(self->drain, names, draining->n, version, now_ms);
    }
    fsm_actions_t acts;
    fsm_on_tick(self->fsm, now_ms, drained, &acts);
    s_apply(self, &acts, now_ms);
}

/* ---- life ----------------------------------------------------------------------------------- */

/* Job ids must be unique across restarts and leaderships (a new fsm counts from 1 again) and
 * usable as file names by the executor. */
static void s_job_prefix(char *buf, size_t size, const char *id, uint64_t epoch)
{
    snprintf(buf, size, "scaler-%.60s-%" PRIu64 "-e%" PRIu64, id, clock_wall_ms(), epoch);
    for (char *p = buf; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            *p = '_';
}

scaler_t *scaler_new(const tide_config_t *cfg, const char *id)
{
    scaler_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = cfg;
    msg_sender_init(&self->sender, "scaler", id);
    snprintf(self->id, sizeof self->id, "%s", id);
    char prefix[96];
    s_job_prefix(prefix, sizeof prefix, id, 0);
    fsm_config_from_tide(&self->fcfg, cfg, prefix);

    self->pub = zsock_new(ZMQ_PUB);
    self->rep = zsock_new(ZMQ_REP);
    self->sub_metrics = zsock_new(ZMQ_SUB);
    self->sub_exec = zsock_new(ZMQ_SUB);
    self->store = store_new(cfg);
    self->lease = lease_new(cfg, id);
    self->drain = drain_new((uint64_t)cfg->metrics.stale_after_ms);
    self->fsm = fsm_new(&self->fcfg);
    profiler_config_t pcfg;
    profiler_config_from_tide(&pcfg, cfg);
    self->profiler = profiler_new(&pcfg);
    char perr[400], pq[440];
    self->placement = placement_new(cfg, perr, sizeof perr);
    if (self->placement && perr[0])
        log_warn("only app.host is taken as an instance address in lists", "err=%s",
                 log_quote(pq, sizeof pq, perr));
    self->exec = exec_client_new(cfg->endpoints.executor_control, cfg->scaler.request_timeout_ms,
                                 EXEC_TRIES, &self->sender, cfg);
    if (!self->pub || !self->rep || !self->sub_metrics || !self->sub_exec || !self->store ||
        !self->lease || !self->drain || !self->fsm || !self->exec || !self->profiler ||
        !self->placement) {
        log_error("out of memory creating the scaler", "%s", "");
        scaler_destroy(&self);
        return NULL;
    }
    zsock_set_linger(self->pub, 0);
    zsock_set_linger(self->rep, 0);
    msg_socket_limits(self->pub); /* subscriptions come in on it */
    msg_socket_limits(self->rep);
    msg_socket_limits(self->sub_metrics);
    msg_socket_limits(self->sub_exec);
    const char *control, *events;
    if (config_scaler_endpoints(cfg, id, &control, &events) != 0) {
        log_error("this scaler's id is not in the config's scalers list", "id=%s path=%s", id,
                  cfg->path);
        scaler_destroy(&self);
        return NULL;
    }
    if (bus_secure_server(self->pub, cfg, BUS_ROLE_SCALER, events) ||
        zsock_bind(self->pub, "%s", events) < 0) {
        log_error("cannot bind", "endpoint=%s key=%s err=\"%s\"", events,
                  cfg->n_scalers ? "scalers[].events" : "endpoints.scaler_events",
                  zmq_strerror(zmq_errno()));
        scaler_destroy(&self);
        return NULL;
    }
    if (bus_secure_server(self->rep, cfg, BUS_ROLE_SCALER, control) ||
        zsock_bind(self->rep, "%s", control) < 0) {
        log_error("cannot bind", "endpoint=%s key=%s err=\"%s\"", control,
                  cfg->n_scalers ? "scalers[].control" : "endpoints.scaler_control",
                  zmq_strerror(zmq_errno()));
        scaler_destroy(&self);
        return NULL;
    }
    if (bus_secure_client(self->sub_metrics, cfg, BUS_ROLE_SCALER, BUS_ROLE_METRICS) ||
        bus_secure_client(self->sub_exec, cfg, BUS_ROLE_SCALER, BUS_ROLE_EXECUTOR) ||
        zsock_connect(self->sub_metrics, "%s", cfg->endpoints.metrics) != 0 ||
        zsock_connect(self->sub_exec, "%s", cfg->endpoints.executor_events) != 0) {
        log_error("cannot connect", "metrics=%s executor_events=%s", cfg->endpoints.metrics,
                  cfg->endpoints.executor_events);
        scaler_destroy(&self);
        return NULL;
    }
    zsock_set_subscribe(self->sub_metrics, TOPIC_SNAPSHOT);
    zsock_set_subscribe(self->sub_metrics, TOPIC_STATS);
    zsock_set_subscribe(self->sub_exec, TOPIC_EXEC_JOB);
    log_info("started",
             "id=%s policy=%s pub=%s rep=%s metrics=%s executor_events=%s executor_control=%s "
             "redis=%s:%d service=%s lease_ms=%d",
             id, cfg->scaler.policy, events, control, cfg->endpoints.metrics,
             cfg->endpoints.executor_events, cfg->endpoints.executor_control, cfg->redis.host,
             cfg->redis.port, cfg->service, cfg->scaler.lease_ms);
    return self;
}

void scaler_destroy(scaler_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    scaler_t *self = *self_p;
    exec_client_destroy(&self->exec);
    fsm_destroy(&self->fsm);
    profiler_destroy(&self->profiler);
    placement_destroy(&self->placement);
    drain_destroy(&self->drain);
    store_destroy(&self->store);
    lease_destroy(&self->lease);
    zsock_destroy(&self->sub_exec);
    zsock_destroy(&self->sub_metrics);
    zsock_destroy(&self->rep);
    zsock_destroy(&self->pub);
    free(self);
    *self_p = NULL;
}

/* ---- leadership ----------------------------------------------------------------------------- */

/* A fresh fsm (it does nothing until fsm_restore) with job ids no earlier fsm used, and a fresh
 * executor client and profiler, so no reply or retry of the old ones reaches the new fsm.
 * 0, or -ENOMEM. */
static int s_fresh_fsm(scaler_t *self)
{
    char prefix[96];
    s_job_prefix(prefix, sizeof prefix, self->id, lease_epoch(self->lease));
    fsm_config_from_tide(&self->fcfg, self->cfg, prefix);
    fsm_destroy(&self->fsm);
    exec_client_destroy(&self->exec);
    profiler_destroy(&self->profiler); /* its profile jobs' answers went with the old client */
    profiler_config_t pcfg;
    profiler_config_from_tide(&pcfg, self->cfg);
    self->profiler = profiler_new(&pcfg);
    self->fsm = fsm_new(&self->fcfg);
    self->exec =
        exec_client_new(self->cfg->endpoints.executor_control, self->cfg->scaler.request_timeout_ms,
                        EXEC_TRIES, &self->sender, self->cfg);
    self->store_dirty = self->pool_dirty = self->send_pending = false;
    self->store_down_logged = false;
    self->pub_n_stopping = 0;
    if (!self->fsm || !self->exec || !self->profiler) {
        log_error("out of memory renewing the state machine", "%s", "");
        return -ENOMEM;
    }
    log_info("job ids", "job_prefix=%s", prefix);
    return 0;
}

/* Standby: forget everything decided (the new leader reads Redis and asks the executor). */
static int s_become_standby(scaler_t *self)
{
    self->loaded = false;
    store_set_fence(self->store, NULL);
    log_info("standby", "id=%s leader=\"%s\"", self->id, lease_holder(self->lease));
    return s_fresh_fsm(self);
}

/* Leading from now on: read Redis and reconcile as a restarted scaler does, the job in flight
 * included (asked about by its id). */
static int s_become_leader(scaler_t *self, uint64_t now_ms)
{
    store_set_fence(self->store, lease_fence(self->lease));
    store_note_version(self->store, lease_seen_version(self->lease));
    int rc = s_fresh_fsm(self);
    self->loaded = false;
    self->next_load_ms = 0;
    self->load_tries = 0;
    if (rc == 0)
        s_try_load(self, now_ms);
    return rc;
}

/* Redis lost tide's data while this scaler led: restore the fsm from what it knows (as if read
 * back), which confirms it with a list (or asks about the job in flight), and rewrite count,
 * pool and state at once, the pool version above every one known. */
static int s_rewrite_after_wipe(scaler_t *self, uint64_t now_ms)
{
    store_set_fence(self->store, lease_fence(self->lease));
    if (!self->loaded)
        return s_become_leader(self, now_ms);
    fsm_record_t *rec = malloc(sizeof *rec);
    if (!rec)
        return -ENOMEM;
    fsm_record(self->fsm, rec);
    if (store_version_floor(self->store) > rec->pool_version)
        rec->pool_version = store_version_floor(self->store);
    int rc = s_fresh_fsm(self);
    if (rc == 0) {
        fsm_actions_t acts;
        fsm_restore(self->fsm, rec, now_ms, &acts);
        acts.pool_changed = true; /* the pool is gone from Redis: write it whatever changed */
        log_info("rewriting Redis from memory", "pool=%u current=%u state=%s job_id=%s",
                 rec->n_pool, rec->current, msg_state_name(rec->state),
                 rec->job_id[0] ? rec->job_id : "-");
        s_apply(self, &acts, now_ms);
    }
    free(rec);
    return rc;
}

/* The lease first, each loop turn: after a hang the renewal is overdue, so a scaler that lost
 * its lease learns it before it handles anything that woke it. */
static int s_lease(scaler_t *self, uint64_t now_ms)
{
    if (self->fence_refused) {
        self->fence_refused = false;
        lease_recheck(self->lease);
        if (lease_leading(self->lease))
            store_set_fence(self->store, lease_fence(self->lease)); /* unless told otherwise */
    }
    switch (lease_step(self->lease, now_ms)) {
    case LEASE_ACQUIRED:
        return s_become_leader(self, now_ms);
    case LEASE_LOST:
        return s_become_standby(self);
    case LEASE_WIPED:
        return s_rewrite_after_wipe(self, now_ms);
    case LEASE_NONE:
        break;
    }
    return 0;
}

int scaler_run(scaler_t *self)
{
    int tick = self->cfg->scaler.tick_ms;
    self->next_tick_ms = clock_mono_ms();
    while (!zsys_interrupted) {
        uint64_t now = clock_mono_ms();
        uint64_t wake = self->next_tick_ms;
        uint64_t ew = exec_client_wake_ms(self->exec);
        if (ew < wake)
            wake = ew;
        long timeout = wake > now ? (long)(wake - now) : 0;
        if (timeout > tick)
            timeout = tick;
        zmq_pollitem_t items[4] = {
            {zsock_resolve(self->sub_metrics), 0, ZMQ_POLLIN, 0},
            {zsock_resolve(self->sub_exec), 0, ZMQ_POLLIN, 0},
            {zsock_resolve(self->rep), 0, ZMQ_POLLIN, 0},
            {NULL, 0, ZMQ_POLLIN, 0},
        };
        int n = 3;
        void *eh = exec_client_handle(self->exec);
        if (eh) {
            items[3].socket = eh;
            n = 4;
        }
        int rc = zmq_poll(items, n, timeout);
        if (rc < 0) {
            if (zmq_errno() == EINTR)
                continue;
            log_error("poll failed", "err=\"%s\"", zmq_strerror(zmq_errno()));
            return -EIO;
        }
        now = clock_mono_ms();
        if (s_lease(self, now) != 0)
            return -ENOMEM;
        /* Drain each readable socket in bounded bursts so one flood cannot starve the rest. */
        for (int k = 0; k < 64 && (items[0].revents & ZMQ_POLLIN); k++) {
            s_on_metrics(self, now);
            if (!(zsock_events(self->sub_metrics) & ZMQ_POLLIN))
                break;
        }
        for (int k = 0; k < 64 && (items[1].revents & ZMQ_POLLIN); k++) {
            s_on_exec_event(self, now);
            if (!(zsock_events(self->sub_exec) & ZMQ_POLLIN))
                break;
        }
        if (items[2].revents & ZMQ_POLLIN)
            s_on_control(self, now);
        if (n == 4 && (items[3].revents & ZMQ_POLLIN)) {
            exec_result_t res;
            if (exec_client_on_readable(self->exec, now, &res) == 1)
                s_on_exec_result(self, &res, now);
        }
        exec_result_t res;
        if (exec_client_tick(self->exec, now, &res) == 1)
            s_on_exec_result(self, &res, now);
        if (now >= self->next_tick_ms) {
            self->next_tick_ms = now + (uint64_t)tick;
            s_tick(self, now);
        }
        if (self->fence_refused && s_lease(self, now) != 0)
            return -ENOMEM;
    }
    log_info("stopping", "reason=signal loaded=%d", self->loaded);
    /* A standby takes over at once. What is not persisted yet is lost either way, as after a
     * crash; Redis and the executor hold what the next leader needs. */
    lease_release(self->lease);
    return 0;
}
