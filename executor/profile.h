/* profile.h - turns what a profile playbook captured into a profile folder: folds the
 * instance's and its baseline's samples (one perf recording, so the same seconds), renders the
 * flamegraph and the differential, writes record.json, and keeps the store within its limits.
 *
 * The playbook's contract (playbooks/README.md): it writes, in the work folder the job's vars
 * name (profile.out_dir), script.txt (`perf script` output with comm, pid, tid, time, ip, sym
 * and dso) and meta.txt (lines "KEY VALUE": target_pid, baseline_pid, start_ms, end_ms, host,
 * command, and crash_note / crash.txt when it looked for a crash stack). */
#ifndef EXEC_PROFILE_H
#define EXEC_PROFILE_H

#include <stddef.h>

#include "jobs.h"
#include "tide_config.h"

/* The work folder of job: <state_dir>/profiles/.work-<job_id> (hidden from listings). */
const char *profile_work_dir(const tide_config_t *cfg, const job_t *job, char *buf, size_t len);

/* The pages (4 KiB, a power of two from 8 to 1024) of each CPU's ring in a host's flight
 * recorder sampling at rate_hz: room for about four times window_s seconds of ~400-byte
 * samples, so a crash profile, which starts only after a list found the crash, still finds
 * the window before it. The list playbooks start the recorder with it (vars.json
 * profiling.ring_pages). */
unsigned profile_ring_pages(int rate_hz, int window_s);

/* Builds the profile of job from its work folder and removes the work folder (also on
 * failure). On success sets job->profile.id and returns 0; otherwise returns a negative errno
 * with the reason in err and writes no profile folder. */
int profile_build(const tide_config_t *cfg, job_t *job, char *err, size_t errlen);

/* Removes the work folders an executor that stopped mid-job left in the store. Returns how
 * many. Call at start, before any job runs. */
int profile_clean_work(const tide_config_t *cfg);

/* Removes a work folder and what is in it; nothing when it is absent. */
void profile_remove_work(const char *dir);

#endif
