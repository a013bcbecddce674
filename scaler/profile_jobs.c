/* profile_jobs.c - wanted profiles to PROFILE jobs (see profile_jobs.h). */
#include "profile_jobs.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "names.h"
#include "tide_clock.h"
#include "tide_log.h"

bool profile_jobs_is(const char *job_id)
{
    return job_id && strncmp(job_id, PROFILE_JOB_PREFIX, strlen(PROFILE_JOB_PREFIX)) == 0;
}

int profile_jobs_send(exec_client_t *exec, const tide_config_t *cfg, const profile_want_t *want,
                      uint64_t now_ms, char *job_id, size_t idlen)
{
    char names[2][64];
    Tide__V1__Instance inst[2], *ptrs[2];
    int idx[2] = {want->index, want->baseline};
    size_t n = want->baseline >= 0 ? 2 : 1;
    for (size_t i = 0; i < n; i++) {
        tide__v1__instance__init(&inst[i]);
        inst[i].name =
            (char *)names_format(names[i], sizeof names[i], cfg->app.name_prefix, idx[i]);
        inst[i].host = (char *)cfg->app.host;
        inst[i].port = (uint32_t)(cfg->app.base_port + idx[i]);
        ptrs[i] = &inst[i];
    }
    snprintf(job_id, idlen, "%s%s-%" PRIu64, PROFILE_JOB_PREFIX, names[0], clock_wall_ms());
    Tide__V1__ProfileSpec spec = TIDE__V1__PROFILE_SPEC__INIT;
    spec.reason = (char *)want->reason;
    spec.seconds = want->seconds;
    spec.detail = (char *)want->detail;
    spec.pid = want->pid;
    /* The sampling itself, plus ansible's start, perf script and the folding. */
    uint32_t deadline_ms = (want->seconds + PROFILE_JOB_OVERHEAD_S) * 1000;
    int rc = exec_client_submit_profile(exec, job_id, ptrs, n, &spec, deadline_ms, now_ms);
    char q[200];
    if (rc == 0)
        log_info("profile job sent", "job_id=%s reason=%s seconds=%u baseline=%s detail=%s", job_id,
                 want->reason, want->seconds, n > 1 ? names[1] : "-",
                 log_quote(q, sizeof q, want->detail));
    else
        log_warn("profile job not sent", "job_id=%s err=%d", job_id, rc);
    return rc;
}

void profile_jobs_send_due(exec_client_t *exec, const tide_config_t *cfg, profiler_t *profiler,
                           uint64_t now_ms)
{
    profile_want_t want;
    char job_id[128];
    while (profiler_due(profiler, now_ms, &want) == 1) {
        if (profile_jobs_send(exec, cfg, &want, now_ms, job_id, sizeof job_id) == 0)
            profiler_sent(profiler, want.index, job_id);
    }
}

void profile_jobs_note_list(profiler_t *profiler, const fsm_t *fsm, const tide_config_t *cfg,
                            const Tide__V1__JobRecord *rec, uint64_t now_ms)
{
    if (rec->kind != TIDE__V1__JOB_KIND__JOB_LIST ||
        rec->state != TIDE__V1__JOB_STATE__JOB_SUCCEEDED)
        return;
    for (size_t i = 0; i < rec->n_results; i++) {
        const Tide__V1__InstanceResult *x = rec->results[i];
        if (x->running || x->exited_pid == 0 || !x->instance)
            continue;
        int index = names_index(cfg->app.name_prefix, x->instance->name);
        bool in_pool = index >= 0 && fsm_in_pool(fsm, index);
        char q[300];
        if (in_pool)
            log_warn("instance exited", "instance=%s pid=%u how=%s", x->instance->name,
                     x->exited_pid, log_quote(q, sizeof q, x->detail));
        if (profiler_crashed(profiler, index, in_pool, x->exited_pid, x->detail, now_ms) ==
            PROFILER_CRASH_LIMITED)
            log_info("crash not profiled",
                     "instance=%s pid=%u reason=\"an automatic profile of it "
                     "within profiling.min_interval_s (%d s)\"",
                     x->instance->name, x->exited_pid, cfg->profiling.min_interval_s);
    }
}

void profile_jobs_on_record(profiler_t *profiler, const char *job_id,
                            const Tide__V1__JobRecord *rec, uint64_t now_ms)
{
    char q[300];
    if (rec && rec->state == TIDE__V1__JOB_STATE__JOB_FAILED) {
        log_warn("profile job failed", "job_id=%s error=%s", job_id,
                 log_quote(q, sizeof q, rec->error));
        profiler_finished(profiler, job_id, false, now_ms);
    } else if (rec && rec->state == TIDE__V1__JOB_STATE__JOB_SUCCEEDED) {
        log_info("profile job finished", "job_id=%s profile=%s", job_id,
                 rec->profile_id ? rec->profile_id : "");
        if (profiler_finished(profiler, job_id, true, now_ms) >= 0)
            log_info("crash not profiled",
                     "job_id=%s reason=\"the instance's profile just written "
                     "counts against profiling.min_interval_s\"",
                     job_id);
    }
}

void profile_jobs_on_reply(profiler_t *profiler, const char *job_id,
                           const Tide__V1__ExecReply *reply, uint64_t now_ms)
{
    char q[300];
    if (!reply || !reply->accepted) {
        if (!reply)
            log_warn("profile job not answered", "job_id=%s", job_id);
        else
            log_warn("profile job refused", "job_id=%s reason=%s", job_id,
                     log_quote(q, sizeof q, reply->reason));
        profiler_finished(profiler, job_id, false, now_ms);
    } else {
        profile_jobs_on_record(profiler, job_id, reply->job, now_ms);
    }
}

int profile_jobs_manual(exec_client_t *exec, const tide_config_t *cfg, profiler_t *profiler,
                        const fsm_t *fsm, const char *instance, uint32_t seconds, uint64_t now_ms,
                        char *job_id, size_t idlen, char *err, size_t errlen)
{
    int index = names_index(cfg->app.name_prefix, instance);
    profile_want_t want;
    char why[160];
    int rc = profiler_manual(profiler, index, index >= 0 && fsm_in_pool(fsm, index), seconds,
                             now_ms, &want, why, sizeof why);
    if (rc != 0) {
        snprintf(err, errlen, "%.64s: %s", instance, why);
        return rc;
    }
    rc = profile_jobs_send(exec, cfg, &want, now_ms, job_id, idlen);
    if (rc != 0)
        snprintf(err, errlen, "the executor queue is full; try again");
    return rc;
}
