/* profiler.h - when tide profiles an instance: the scaler's pure rule. An instance failing at
 * least profiling.error_rate of its requests for profiling.error_for_s gets an "errors"
 * profile, and one found dead by a list (its process exited on its own) a "crash" profile of
 * that process, either at most once per instance per profiling.min_interval_s; `tidectl
 * profile NAME` asks for a "manual" one. Either way a healthy sibling (the pool member failing
 * least, below half the threshold) is the baseline. A job that wrote no profile (it failed)
 * does not count against the limit.
 *
 * Pure: snapshots' error rates and the time go in, wanted profiles come out; the caller sends
 * the PROFILE job beside the scaling jobs (a profile never waits for, nor holds up, scaling). */
#ifndef SCALER_PROFILER_H
#define SCALER_PROFILER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "names.h"
#include "tide_config.h"

typedef struct {
    bool enabled; /* automatic profiles; manual ones work either way */
    double error_rate;
    uint64_t error_for_ms;
    uint64_t min_interval_ms;
    uint32_t window_s; /* seconds an automatic profile samples */
    uint32_t manual_s; /* a manual profile without seconds */
    uint32_t max_s;    /* the longest manual profile */
    uint64_t stale_ms; /* an instance not in a snapshot this long is forgotten */
} profiler_config_t;

void profiler_config_from_tide(profiler_config_t *cfg, const tide_config_t *tide);

/* A profile to take. */
typedef struct {
    int index;    /* the instance */
    int baseline; /* a healthy sibling, or -1 */
    char reason[16];
    char detail[160];
    uint32_t seconds;
    uint32_t pid; /* crash: the process that died */
} profile_want_t;

typedef struct profiler_t profiler_t;

/* NULL when out of memory. cfg is copied. */
profiler_t *profiler_new(const profiler_config_t *cfg);
void profiler_destroy(profiler_t **self_p);

/* One snapshot's error rate of instance index, which is in the pool. */
void profiler_note(profiler_t *self, int index, double error_rate, uint64_t now_ms);

/* A list found instance index not running because its process pid exited on its own (how:
 * the driver's words, such as "terminated by SIGSEGV (core dumped)"). in_pool says whether it
 * was in the pool until then: only those are crashes worth a profile (an exit reported again
 * by a later list, or of an instance nobody served from, is not). Each pid counts once.
 * Returns PROFILER_CRASH_PROFILED when a crash profile will be asked for (now, or once the
 * instance's errors profile in flight has failed), PROFILER_CRASH_LIMITED for a new crash the
 * instance's rate limit holds back, PROFILER_CRASH_IGNORED otherwise (not a new crash, not in
 * the pool, automatic profiles off). */
typedef enum {
    PROFILER_CRASH_IGNORED,
    PROFILER_CRASH_PROFILED,
    PROFILER_CRASH_LIMITED,
} profiler_crash_t;

profiler_crash_t profiler_crashed(profiler_t *self, int index, bool in_pool, uint32_t pid,
                                  const char *how, uint64_t now_ms);

/* The next automatic profile due now, if any: returns 1 with *out filled (and the instance's
 * rate limit started), else 0. Call until it returns 0. */
int profiler_due(profiler_t *self, uint64_t now_ms, profile_want_t *out);

#define PROFILER_JOB_ID_MAX 128

/* The automatic profile profiler_due just gave for index went out as job job_id. */
void profiler_sent(profiler_t *self, int index, const char *job_id);

/* Job job_id has ended (or could not be sent), written saying whether it wrote a profile. An
 * automatic profile's job that wrote none gives back its instance's rate limit slot, and a
 * crash that came while it was in flight is then due. Other ids are ignored. Returns the
 * instance whose waiting crash the written profile's rate limit now holds back, else -1. */
int profiler_finished(profiler_t *self, const char *job_id, bool written, uint64_t now_ms);

/* A manual profile of index for seconds (0 = manual_s). in_pool says whether the instance is
 * in the pool. Returns 0 with *out filled, or -EINVAL with the reason in err (not in the
 * pool, seconds out of bounds). Manual profiles are not rate limited. */
int profiler_manual(profiler_t *self, int index, bool in_pool, uint32_t seconds, uint64_t now_ms,
                    profile_want_t *out, char *err, size_t errlen);

#endif
