/* runner_ansible.h - runs a job as `ansible-playbook` in its own process group: writes the
 * job's vars.json, spawns the playbook of the configured driver with an argument vector, feeds
 * its output lines back, enforces the deadline by killing the whole group, and turns the exit
 * status (and, for LIST, the result file) into the job's end. */
#ifndef EXEC_RUNNER_ANSIBLE_H
#define EXEC_RUNNER_ANSIBLE_H

#include <czmq.h>
#include <stddef.h>

#include "jobs.h"
#include "tide_config.h"

/* Where a runner reports: output (one line, no newline) and finished (the runner has called
 * job_finish and added the results). arg is passed back; exec_server_output and
 * exec_server_finished with the server as arg fit. */
typedef struct {
    void (*output)(void *arg, job_t *job, const char *line);
    void (*finished)(void *arg, job_t *job);
    void *arg;
} runner_sink_t;

typedef struct runner_ansible_t runner_ansible_t;

/* Creates a runner on loop (it adds a 100 ms timer and one reader per running playbook).
 * cfg and loop must outlive the runner. Returns NULL when out of memory. */
runner_ansible_t *runner_ansible_new(const tide_config_t *cfg, zloop_t *loop,
                                     const runner_sink_t *sink);

/* Stops every running playbook (SIGTERM to its group, SIGKILL after the grace period), fails
 * their jobs with "executor stopped" through the sink, and frees the runner. Nothing on NULL;
 * sets *self_p to NULL. Blocks at most the grace period plus a little. */
void runner_ansible_destroy(runner_ansible_t **self_p);

/* How long a killed playbook's group gets between SIGTERM and SIGKILL (default 3000 ms). */
void runner_ansible_set_kill_grace(runner_ansible_t *self, int ms);

/* exec_start_fn for the server (arg is the runner): writes
 * <state_dir>/jobs/<job_id>/vars.json (0600) and spawns
 * `ansible-playbook -i INVENTORY PLAYBOOK -e @VARS` with the playbook of
 * runner_ansible_playbook. Returns 0 with the job RUNNING, or a negative errno-style code with
 * the reason in err (no process left behind).
 *
 * A scale up that succeeded and wrote the result file (the docker driver: where each instance
 * was placed) has its results carry the reported host; the placement is checked against the
 * job (jobs_check_placement) and a bad one fails the job. Without the file (the process
 * driver) the results carry the job's own hosts. */
int runner_ansible_start(void *self, job_t *job, char *err, size_t errlen);

/* The playbook for book ("scale_up.yml", "scale_down.yml", "list.yml") of the configured
 * driver, into buf: the docker driver's are the seed's, <playbooks_dir>/<book>; any other
 * driver's are in its folder, <playbooks_dir>/<driver>/<book>. Returns buf. */
const char *runner_ansible_playbook(const tide_config_t *cfg, const char *book, char *buf,
                                    size_t len);

/* Playbooks running now. */
size_t runner_ansible_running(runner_ansible_t *self);

/* Writes the job's vars as JSON to path with mode 0600 (exposed for tests). Returns 0 or a
 * negative errno. */
int runner_ansible_write_vars(const tide_config_t *cfg, const job_t *job, const char *path,
                              const char *result_file);

#endif
