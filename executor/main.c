/* main.c - tide-executor: answers job requests and runs them as ansible-playbook. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "profile.h"
#include "protocol.h"
#include "runner_ansible.h"
#include "tide_config.h"
#include "tide_log.h"

int main(int argc, char **argv)
{
    tide_config_t cfg;
    char id[128];
    config_from_args(argc, argv, "tide-executor", &cfg, id, sizeof id);
    log_init("executor", LOGL_INFO);

    exec_server_t *server = exec_server_new(&cfg, "executor", id, false);
    if (!server)
        return 1;
    runner_sink_t sink = {exec_server_output, exec_server_finished, server};
    runner_ansible_t *runner = runner_ansible_new(&cfg, exec_server_loop(server), &sink);
    if (!runner) {
        log_error("out of memory", "%s", "");
        exec_server_destroy(&server);
        return 1;
    }
    exec_server_set_runner(server, runner_ansible_start, NULL, runner);
    int stale = profile_clean_work(&cfg);
    if (stale > 0)
        log_info("removed the captures of profile jobs an earlier run left", "count=%d", stale);

    char q1[CFG_PATH + 8], q2[CFG_PATH + 8], q3[CFG_PATH * 2 + 96];
    log_info("executor started", "control=%s events=%s driver=%s playbooks=%s state_dir=%s",
             cfg.endpoints.executor_control, cfg.endpoints.executor_events, cfg.executor.driver,
             log_quote(q1, sizeof q1, cfg.executor.playbooks_dir),
             log_quote(q2, sizeof q2, cfg.executor.state_dir));
    char probe[CFG_PATH * 2 + 64];
    runner_ansible_playbook(&cfg, "scale_up.yml", probe, sizeof probe);
    if (access(probe, R_OK) != 0)
        log_warn("no playbooks for the driver: its jobs will fail", "missing=%s",
                 log_quote(q3, sizeof q3, probe));
    if (strcmp(cfg.executor.driver, "docker") == 0 && !jobs_image_ok(cfg.app.image))
        log_warn("app.image is not a plain image reference: scale-up jobs will be refused",
                 "image=%s", log_quote(q3, sizeof q3, cfg.app.image));

    exec_server_run(server);

    log_info("executor stopping", "running=%zu", runner_ansible_running(runner));
    runner_ansible_destroy(&runner);
    exec_server_destroy(&server);
    log_info("executor stopped", "%s", "");
    return 0;
}
