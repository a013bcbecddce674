/* profile_jobs.h - the edge of profiling in tide-scaler: a wanted profile (profiler.h) sent as
 * a PROFILE job through the executor client, beside the state machine's own job. The fsm never
 * sees these jobs: their ids start with PROFILE_JOB_PREFIX, and their results are only
 * logged. */
#ifndef SCALER_PROFILE_JOBS_H
#define SCALER_PROFILE_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "executor_client.h"
#include "fsm.h"
#include "profiler.h"
#include "tide_config.h"

#define PROFILE_JOB_PREFIX     "profile-"
#define PROFILE_JOB_OVERHEAD_S 60 /* a profile job's deadline: its seconds plus this */

/* True when job_id is a profile job's. */
bool profile_jobs_is(const char *job_id);

/* Queues want as a PROFILE job named "profile-<instance>-<wall ms>" (into job_id) and logs it.
 * Returns 0, or exec_client_submit_profile's error (-ENOSPC when the queue is full, -ENOMEM),
 * logged too. */
int profile_jobs_send(exec_client_t *exec, const tide_config_t *cfg, const profile_want_t *want,
                      uint64_t now_ms, char *job_id, size_t idlen);

/* Sends every automatic profile due now (profiler_due). */
void profile_jobs_send_due(exec_client_t *exec, const tide_config_t *cfg, profiler_t *profiler,
                           uint64_t now_ms);

/* A finished LIST record (a reconcile or a health check): each instance it reports exited
 * (InstanceResult.exited_pid) is logged and told to the profiler, with whether the fsm still
 * has it in the pool. Call before the fsm applies the record (which takes it out). */
void profile_jobs_note_list(profiler_t *profiler, const fsm_t *fsm, const tide_config_t *cfg,
                            const Tide__V1__JobRecord *rec, uint64_t now_ms);

/* tidectl profile NAME [--seconds N]: checks instance against the pool (fsm) and the bounds
 * (profiler_manual), then sends the job. Returns 0 with its id in job_id, or a negative errno
 * with the reason in err. */
int profile_jobs_manual(exec_client_t *exec, const tide_config_t *cfg, profiler_t *profiler,
                        const fsm_t *fsm, const char *instance, uint32_t seconds, uint64_t now_ms,
                        char *job_id, size_t idlen, char *err, size_t errlen);

/* The executor's reply to a profile job (NULL: it never answered): logged, and a refusal or
 * no answer told to the profiler (profiler_finished: no profile written). */
void profile_jobs_on_reply(profiler_t *profiler, const char *job_id,
                           const Tide__V1__ExecReply *reply, uint64_t now_ms);

/* A profile job's record: logged when it has ended (FINISHED event or status reply), and its
 * outcome told to the profiler. */
void profile_jobs_on_record(profiler_t *profiler, const char *job_id,
                            const Tide__V1__JobRecord *rec, uint64_t now_ms);

#endif
