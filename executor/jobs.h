/* jobs.h - the executor's job table: records keyed by the client's job_id, request validation
 * against the config, and the JobRecord view sent on the bus.
 *
 * Shared by tide-executor and tide-fake-executor, so both accept, refuse and report jobs the
 * same way. Single-threaded: only the thread that runs the executor's loop touches it. */
#ifndef EXEC_JOBS_H
#define EXEC_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tide.pb-c.h"
#include "tide_config.h"

#define JOB_ID_MAX        128 /* longest job_id accepted (the bus check allows 128) */
#define JOB_NAME_MAX      64
#define JOB_HOST_MAX      64
#define JOB_TEXT_MAX      512  /* error and per-instance detail */
#define JOB_LINE_MAX      1000 /* longest output line kept; longer ones are cut */
#define JOB_TAIL_MAX      1000 /* output_tail_lines is clamped to this (frame size) */
#define JOBS_KEEP_DEFAULT 256  /* finished records kept for status queries and resends */

typedef struct {
    char name[JOB_NAME_MAX];
    char host[JOB_HOST_MAX];
    uint32_t port;
} job_instance_t;

typedef struct {
    job_instance_t instance;
    bool ok;             /* the job's action succeeded for it */
    bool running;        /* running after the job (for LIST: every running instance) */
    uint32_t exited_pid; /* LIST: not running, its process exited on its own (0: not known) */
    char detail[JOB_TEXT_MAX];
} job_result_t;

/* A job record. Plain data that the runners read and fill in; the table owns it, and keeps it
 * until it is evicted (never while it runs). Fields after the comment are the runner's. */
typedef struct job_t {
    char id[JOB_ID_MAX + 1];
    Tide__V1__JobKind kind;
    Tide__V1__JobState state;
    uint64_t started_ms;  /* wall clock */
    uint64_t finished_ms; /* wall clock, 0 while running */
    uint64_t deadline_mono_ms;
    char error[JOB_TEXT_MAX];
    job_instance_t *instances; /* what the job was asked to act on */
    size_t n_instances;
    job_result_t *results;
    size_t n_results;
    char **tail; /* ring of the last output lines */
    size_t tail_cap, tail_len, tail_head;
    /* PROFILE jobs: what to capture (instances[0], baseline instances[1]) and what was written */
    struct {
        char reason[16];
        uint32_t seconds;
        char detail[JOB_TEXT_MAX];
        uint32_t pid;            /* crash: the process that died */
        char id[JOB_ID_MAX + 1]; /* the profile's folder, once written */
    } profile;
    /* runner's own */
    void *runner_data;
    bool holds_instances; /* false: other jobs may act on its instances (see jobs_busy) */
} job_t;

typedef struct jobs_t jobs_t;

/* Creates an empty table for cfg (kept by reference: it must outlive the table). keep is how
 * many finished records are kept (0 = JOBS_KEEP_DEFAULT). Returns NULL when out of memory. */
jobs_t *jobs_new(const tide_config_t *cfg, size_t keep);

/* Frees the table and every record; nothing on NULL. Sets *self_p to NULL. Runners must have
 * released their runner_data first. */
void jobs_destroy(jobs_t **self_p);

/* Checks a job request against the config before anything runs: the job_id (1..128 of
 * [A-Za-z0-9_.:-], not starting with '.', as it names a directory), the kind, and every
 * instance (name = app.name_prefix + N with 0 <= N < scaler.max and no leading zero, host =
 * app.host, port = app.base_port + N, no name twice). A request carries no image: what a
 * container runs is always app.image, and a scale up on the docker driver is refused while
 * app.image is not a plain image reference (jobs_image_ok). A PROFILE job names the instance
 * to profile and at most one baseline sibling, a reason (errors, crash, manual) and 1 to
 * profiling.max_seconds seconds. Returns 0, or -EINVAL with a human-readable reason in
 * reason. JOB_STATUS is not a job and is refused here. */
int jobs_validate(const tide_config_t *cfg, const Tide__V1__ExecRequest *req, char *reason,
                  size_t len);

/* The record for id, or NULL. The pointer stays valid until the record is evicted, which only
 * happens in jobs_add to finished records. */
job_t *jobs_find(jobs_t *self, const char *id);

/* A job still running (PENDING or RUNNING, holds_instances) that acts on instance name, or
 * NULL: one job per instance at a time. */
job_t *jobs_busy(jobs_t *self, const char *name);

/* Whether req asks for what job was asked to do: the same kind, the same instances (name,
 * host, port; in any order) and, for a PROFILE job, the same reason, seconds and pid. Only such
 * a request is a resend of the job (answered with its record); any other request under a known
 * id is refused, or a LIST pre-registered under the id a scale up would use would make that
 * scale up look done. Returns 0, or -EEXIST with the difference in reason. */
int jobs_same_request(const job_t *job, const Tide__V1__ExecRequest *req, char *reason, size_t len);

/* Adds a record for a validated request, state PENDING, started now, deadline from
 * req->deadline_ms or executor.job_deadline_ms. Evicts the oldest finished records past keep.
 * Returns the record (owned by the table) or NULL when out of memory or the id is known. */
job_t *jobs_add(jobs_t *self, const Tide__V1__ExecRequest *req);

/* Number of records held, and of those still running (for logs and tests). */
size_t jobs_size(jobs_t *self);
size_t jobs_running(jobs_t *self);

/* Calls fn for every record still PENDING or RUNNING (e.g. to kill them at shutdown). */
void jobs_each_running(jobs_t *self, void (*fn)(job_t *job, void *arg), void *arg);

/* Appends one output line (cut at JOB_LINE_MAX, invalid UTF-8 and control bytes replaced) to
 * the record's tail, dropping the oldest past the tail size. The sanitized copy of the line is
 * written to clean (size JOB_LINE_MAX + 1) when clean is not NULL. Out of memory drops the
 * line from the tail (counted by the caller's log, never fatal). */
void job_output(job_t *job, const char *line, char *clean);

/* Lines currently in the tail, oldest first: index i in 0..tail_len-1. */
const char *job_tail_line(const job_t *job, size_t i);

/* Adds a per-instance result. Returns 0 or -ENOMEM. */
int job_add_result(job_t *job, const job_instance_t *inst, bool ok, bool running,
                   const char *detail);

/* Ends the job: state SUCCEEDED or FAILED, error (may be NULL), finished now. */
void job_finish(job_t *job, Tide__V1__JobState state, const char *error);

/* True while PENDING or RUNNING. */
bool job_is_running(const job_t *job);

/* A JobRecord that points into job (no string copies): valid while job is unchanged. */
typedef struct {
    Tide__V1__JobRecord record;
    Tide__V1__InstanceResult *results;
    Tide__V1__InstanceResult **result_ptrs;
    Tide__V1__Instance *result_insts;
    Tide__V1__Instance *insts;
    Tide__V1__Instance **inst_ptrs;
    char **tail_ptrs;
} job_view_t;

/* Fills view from job. Returns 0, or -ENOMEM (view is then empty but safe to clear). */
int job_view_init(job_view_t *view, const job_t *job);
void job_view_clear(job_view_t *view);

/* Parses one line of a playbook's result file (LIST: every running instance; SCALE_UP on the
 * docker driver: where each instance was placed): "NAME HOST PORT HEALTHY" separated by spaces
 * or tabs, HEALTHY one of 1/0/true/false (any case). NAME must be prefix + digits; HOST a
 * numeric IPv4 or IPv6 address (it goes to the pool, and proxies connect to it as given).
 * Returns 0 and fills *out (ok = healthy, running = true), 1 for a blank line, -EINVAL for
 * anything else. A LIST may also report an instance whose process exited on its own:
 * "NAME HOST PORT exited PID HOW...", HOW the rest of the line (how it ended, what evidence
 * was kept); *out then has running = false, exited_pid = PID and detail = HOW. */
int jobs_parse_list_line(const char *line, const char *prefix, job_result_t *out);

/* True when host is a numeric IPv4 or IPv6 address. */
bool jobs_host_ok(const char *host);

/* True when image is a plain image reference: 1..255 characters of [A-Za-z0-9._/:@-], not
 * starting with '-', '.', '/' or ':' (it becomes a Docker API argument; no option, no path). */
bool jobs_image_ok(const char *image);

/* Checks the placement a scale up reported (lines[0..n), parsed result-file lines) against
 * the job: every instance of the job exactly once, with its own port, and nothing else.
 * Returns 0, or -EINVAL with the reason in err. */
int jobs_check_placement(const job_t *job, const job_result_t *lines, size_t n, char *err,
                         size_t errlen);

#endif
