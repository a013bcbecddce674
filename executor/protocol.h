/* protocol.h - the executor's side of the job protocol: the control socket on
 * endpoints.executor_control, the exec.job events on endpoints.executor_events, and the loop
 * that runs them. Shared by tide-executor and tide-fake-executor; a runner plugs in to start
 * jobs and reports output and the end through exec_server_output / exec_server_finished.
 *
 * Every request is answered at once, before anything runs: accepted with the record, or
 * refused with a reason; garbage gets accepted=false reason="malformed request". */
#ifndef EXEC_PROTOCOL_H
#define EXEC_PROTOCOL_H

#include <czmq.h>
#include <stdbool.h>

#include "jobs.h"
#include "tide_config.h"

typedef struct exec_server_t exec_server_t;

/* Starts an accepted job (its record is in the table, PENDING). Returns 0 when the job runs
 * (the runner set it RUNNING and will call exec_server_finished later, never from inside this
 * call), or a negative errno-style code with the reason in err: the server then fails the job
 * with that reason and publishes FINISHED. */
typedef int(exec_start_fn)(void *arg, job_t *job, char *err, size_t errlen);

/* Called for every request received, before it is looked at: false drops it without a reply
 * (the fake executor's "hang"; only allowed on a ROUTER server, where it leaves no socket
 * stuck). */
typedef bool(exec_admit_fn)(void *arg);

/* Binds the control socket (REP, or ROUTER when router is true: it answers the same REQ
 * clients but may leave a request unanswered) and the PUB socket. program and id name the
 * sender on the bus. cfg must outlive the server. Returns NULL when a bind fails (logged). */
exec_server_t *exec_server_new(const tide_config_t *cfg, const char *program, const char *id,
                               bool router);

/* Closes the sockets and frees the job table; nothing on NULL; sets *self_p to NULL. Runners
 * must have been destroyed first (they hold pointers into the table). */
void exec_server_destroy(exec_server_t **self_p);

/* Sets the runner. admit may be NULL (every request is processed). */
void exec_server_set_runner(exec_server_t *self, exec_start_fn *start, exec_admit_fn *admit,
                            void *arg);

/* The loop the server's sockets are registered on: runners add their timers and pipes to it.
 * Owned by the server. */
zloop_t *exec_server_loop(exec_server_t *self);

/* The job table. Owned by the server. */
jobs_t *exec_server_jobs(exec_server_t *self);

/* Runs the loop until SIGINT/SIGTERM (czmq's handler) or until a handler ends it. Returns 0. */
int exec_server_run(exec_server_t *self);

/* Runner callbacks (arg is the server). output: keeps line in the job's tail and publishes it
 * as exec.job OUTPUT. finished: the runner has called job_finish (and added results);
 * publishes exec.job FINISHED with the record and logs the end. */
void exec_server_output(void *arg, job_t *job, const char *line);
void exec_server_finished(void *arg, job_t *job);

/* Requests answered, refused and malformed so far (for logs and the fake's stats). */
typedef struct {
    uint64_t requests, accepted, refused, malformed, dropped_unanswered;
} exec_server_stats_t;
void exec_server_stats(exec_server_t *self, exec_server_stats_t *out);

#endif
