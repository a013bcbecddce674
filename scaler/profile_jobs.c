/* profile_jobs.c - wanted profiles to PROFILE jobs (see profile_jobs.h). */
#include "profile_jobs.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "names.h"
#include "tide_clock.h"

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
    return exec_client_submit_profile(exec, job_id, ptrs, n, &spec, now_ms);
}
