/* test_runner.c - unit tests of executor/runner_ansible.c against a fake `ansible-playbook`
 * shell script: the argument vector, vars.json, output lines, exit codes, the LIST result
 * file, and the deadline killing the playbook's whole process group. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "profile.h"
#include "runner_ansible.h"
#include "tide_profiles.h"
#include "tide_clock.h"

static char s_dir[] = "/tmp/tide-test-runner-XXXXXX";
static tide_config_t s_cfg;

/* The fake playbook runner: records its argv, a copy of the vars file and its mode, then does
 * what FAKE_MODE says. */
static const char s_script[] =
    "#!/bin/sh\n"
    "d=$(dirname \"$0\")\n"
    "for a in \"$@\"; do echo \"$a\"; done > \"$d/argv.txt\"\n"
    "vars=$(echo \"$5\" | sed 's/^@//')\n"
    "cp \"$vars\" \"$d/vars-copy.json\"\n"
    "stat -c %a \"$vars\" > \"$d/vars-mode.txt\"\n"
    "echo \"$ANSIBLE_NOCOLOR $ANSIBLE_RETRY_FILES_ENABLED\" > \"$d/env.txt\"\n"
    "case \"$FAKE_MODE\" in\n"
    "ok) echo 'PLAY [scale up]'; echo 'to stderr' >&2; printf 'no newline at end'; exit 0;;\n"
    "fail) echo 'TASK [start]'; echo 'fatal: [localhost]: FAILED! => {\"msg\": \"boom\"}';\n"
    "      echo 'PLAY RECAP'; exit 2;;\n"
    "list) rf=$(sed -n 's/.*\"result_file\": \"\\([^\"]*\\)\".*/\\1/p' \"$vars\")\n"
    "      printf 'production0 127.0.0.1 9101 1\\n\\nproduction2 127.0.0.1 9103 0\\n' > \"$rf\"\n"
    "      exit 0;;\n"
    "badlist) rf=$(sed -n 's/.*\"result_file\": \"\\([^\"]*\\)\".*/\\1/p' \"$vars\")\n"
    "      echo 'garbage' > \"$rf\"; exit 0;;\n"
    "place) rf=$(sed -n 's/.*\"result_file\": \"\\([^\"]*\\)\".*/\\1/p' \"$vars\")\n"
    "      echo 'production1 10.0.0.7 9102 1' > \"$rf\"; exit 0;;\n"
    "badplace) rf=$(sed -n 's/.*\"result_file\": \"\\([^\"]*\\)\".*/\\1/p' \"$vars\")\n"
    "      echo 'production1 10.0.0.7 9999 1' > \"$rf\"; exit 0;;\n"
    "hang) case \"$3\" in *scale_down.yml) echo 'cleanup'; exit 0;; esac\n"
    "      trap '' TERM; sleep 1000 & echo $! > \"$d/sleep.pid\"; echo 'hanging'; wait;;\n"
    "esac\n"
    "exit 9\n";

typedef struct {
    char lines[64][JOB_LINE_MAX + 1];
    int n_lines;
    job_t *finished;
} sink_log_t;

static void s_on_output(void *arg, job_t *job, const char *line)
{
    sink_log_t *log = arg;
    job_output(job, line, NULL); /* as exec_server_output does */
    if (log->n_lines < 64)
        snprintf(log->lines[log->n_lines++], JOB_LINE_MAX + 1, "%s", line);
}

static void s_on_finished(void *arg, job_t *job)
{
    sink_log_t *log = arg;
    log->finished = job;
}

static int s_check_done(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    sink_log_t *log = arg;
    return log->finished ? -1 : 0;
}

static int s_stop(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    (void)arg;
    return -1;
}

static void s_write(const char *name, const char *text, mode_t mode)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static char *s_read(const char *name)
{
    static char buf[8192];
    char path[256];
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int s_setup(void **state)
{
    (void)state;
    if (!mkdtemp(s_dir))
        return -1;
    char path[512];
    snprintf(path, sizeof path, "%s/playbooks/process", s_dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", path);
    if (system(cmd) != 0)
        return -1;
    s_write("fake-ansible.sh", s_script, 0755);
    s_write("playbooks/process/scale_up.yml", "# fake\n", 0644);
    s_write("playbooks/process/scale_down.yml", "# fake\n", 0644);
    s_write("playbooks/process/list.yml", "# fake\n", 0644);
    s_write("inventory.ini", "localhost\n", 0644);
    config_defaults(&s_cfg);
    s_cfg.scaler.max = 4;
    s_cfg.executor.output_tail_lines = 10;
    s_cfg.executor.job_deadline_ms = 20000;
    snprintf(s_cfg.executor.ansible_playbook, CFG_PATH, "%s/fake-ansible.sh", s_dir);
    snprintf(s_cfg.executor.playbooks_dir, CFG_PATH, "%s/playbooks", s_dir);
    snprintf(s_cfg.executor.inventory, CFG_PATH, "%s/inventory.ini", s_dir);
    snprintf(s_cfg.executor.state_dir, CFG_PATH, "%s/state", s_dir);
    snprintf(s_cfg.executor.supervisor_config, CFG_PATH, "%s/supervisord.conf", s_dir);
    snprintf(s_cfg.app.command, CFG_PATH, "/bin/app \"quoted\"");
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Runs one job to its end through a fresh runner and loop. */
static job_t *s_run(jobs_t *jobs, sink_log_t *log, Tide__V1__JobKind kind, const char *id,
                    const char *mode, uint32_t deadline_ms, int grace_ms)
{
    memset(log, 0, sizeof *log);
    setenv("FAKE_MODE", mode, 1);
    Tide__V1__ExecRequest req = TIDE__V1__EXEC_REQUEST__INIT;
    Tide__V1__Instance in = TIDE__V1__INSTANCE__INIT;
    Tide__V1__Instance *ptr = &in;
    in.name = "production1";
    in.host = "127.0.0.1";
    in.port = 9102;
    req.kind = kind;
    req.job_id = (char *)id;
    req.deadline_ms = deadline_ms;
    if (kind != TIDE__V1__JOB_KIND__JOB_LIST) {
        req.instances = &ptr;
        req.n_instances = 1;
    }
    char reason[256];
    assert_int_equal(jobs_validate(&s_cfg, &req, reason, sizeof reason), 0);
    job_t *job = jobs_add(jobs, &req);
    assert_non_null(job);
    zloop_t *loop = zloop_new();
    runner_sink_t sink = {s_on_output, s_on_finished, log};
    runner_ansible_t *runner = runner_ansible_new(&s_cfg, loop, &sink);
    assert_non_null(runner);
    runner_ansible_set_kill_grace(runner, grace_ms);
    char err[256];
    int rc = runner_ansible_start(runner, job, err, sizeof err);
    if (rc != 0)
        fail_msg("start: %s", err);
    assert_int_equal(job->state, TIDE__V1__JOB_STATE__JOB_RUNNING);
    assert_int_equal(runner_ansible_running(runner), 1);
    zloop_timer(loop, 20, 0, s_check_done, log);
    zloop_timer(loop, 15000, 1, s_stop, NULL); /* ends a stuck test: finished stays NULL */
    zloop_set_nonstop(loop, true);
    uint64_t t0 = clock_mono_ms();
    while (!log->finished && clock_mono_ms() - t0 < 15000)
        zloop_start(loop);
    assert_ptr_equal(log->finished, job);
    assert_int_equal(runner_ansible_running(runner), 0);
    runner_ansible_destroy(&runner);
    zloop_destroy(&loop);
    return job;
}

static void test_ok_argv_vars_output(void **state)
{
    (void)state;
    jobs_t *jobs = jobs_new(&s_cfg, 0);
    sink_log_t log;
    job_t *job = s_run(jobs, &log, TIDE__V1__JOB_KIND__JOB_SCALE_UP, "job-ok", "ok", 0, 1000);
    assert_int_equal(job->state, TIDE__V1__JOB_STATE__JOB_SUCCEEDED);
    assert_string_equal(job->error, "");
    /* Every line of stdout and stderr, the last one without its newline too. */
    assert_int_equal(log.n_lines, 3);
    assert_string_equal(log.lines[0], "PLAY [scale up]");
    assert_string_equal(log.lines[1], "to stderr");
    assert_string_equal(log.lines[2], "no newline at end");
    assert_int_equal(job->tail_len, 3);
    assert_int_equal(job->n_results, 1);
    assert_true(job->results[0].ok);
    assert_true(job->results[0].running);

    char want[2048];
    snprintf(want, sizeof want,
             "-i\n%s/inventory.ini\n%s/playbooks/process/scale_up.yml\n-e\n"
             "@%s/state/jobs/job-ok/vars.json\n",
             s_dir, s_dir, s_dir);
    assert_string_equal(s_read("argv.txt"), want);
    assert_string_equal(s_read("vars-mode.txt"), "600\n");
    assert_string_equal(s_read("env.txt"), "1 0\n");
    const char *vars = s_read("vars-copy.json");
    assert_non_null(vars);
    assert_non_null(strstr(vars, "\"job_id\": \"job-ok\""));
    assert_non_null(strstr(vars, "\"instances\": [{\"name\": \"production1\", \"host\": "
                                 "\"127.0.0.1\", \"port\": 9102}]"));
    assert_non_null(strstr(vars, "\"health_path\": \"/health\""));
    assert_non_null(strstr(vars, "\"command\": \"/bin/app \\\"quoted\\\"\""));
    assert_non_null(strstr(vars, "\"supervisor_config\": "));
    assert_non_null(strstr(vars, "\"result_file\": "));
    assert_non_null(strstr(vars, "\"state_dir\": "));
    /* The job's files are gone once it ended. */
    char path[512];
    snprintf(path, sizeof path, "%s/state/jobs/job-ok", s_dir);
    assert_int_equal(access(path, F_OK), -1);
    jobs_destroy(&jobs);
}

static void test_exit_code(void **state)
{
    (void)state;
    jobs_t *jobs = jobs_new(&s_cfg, 0);
    sink_log_t log;
    job_t *job = s_run(jobs, &log, TIDE__V1__JOB_KIND__JOB_SCALE_DOWN, "job-fail", "fail", 0, 1000);
    assert_int_equal(job->state, TIDE__V1__JOB_STATE__JOB_FAILED);
    assert_non_null(strstr(job->error, "ansible-playbook exited 2"));
    assert_non_null(strstr(job->error, "boom")); /* the fatal line, not the recap */
    assert_true(strstr(s_read("argv.txt"), "scale_down.yml") != NULL);
    assert_int_equal(job->n_results, 1);
    assert_false(job->results[0].ok);
    jobs_destroy(&jobs);
}

static void test_list_result(void **state)
{
    (void)state;
    jobs_t *jobs = jobs_new(&s_cfg, 0);
    sink_log_t log;
    job_t *job = s_run(jobs, &log, TIDE__V1__JOB_KIND__JOB_LIST, "job-list", "list", 0, 1000);
    assert_int_equal(job->state, TIDE__V1__JOB_STATE__JOB_SUCCEEDED);
    assert_int_equal(job->n_results, 2);
    assert_string_equal(job->results[0].instance.name, "production0");
    assert_true(job->results[0].ok);
    assert_true(job->results[0].running);
    assert_string_equal(job->results[1].instance.name, "production2");
    assert_int_equal(job->results[1].instance.port, 9103);
    assert_false(job->results[1].ok);
    assert_true(strstr(s_read("argv.txt"), "list.yml") != NULL);

    job = s_run(jobs, &log, TIDE__V1__JOB_KIND__JOB_LIST, "job-badlist", "badlist", 0, 1000);
    assert_int_equal(job->state, TIDE__V1__JOB_STATE__JOB_FAILED);
    assert_non_null(strstr(job->error, "malformed"));
    jobs_destroy(&jobs);
}

/* The docker driver: the seed's top-level playbooks, and the host each instance was placed on
 * (the scale up's result file) in the results. */
static void test_docker_placement(void **state)
{
    (void)state;
    s_write("playbooks/scale_up.yml", "# fake\n", 0644);
    tide_config_t saved = s_cfg;
    snprintf(s_cfg.executor.driver, sizeof s_cfg.executor.driver, "docker");
    char path[512];
    assert_string_equal(runner_ansible_playbook(&s_cfg, "list.yml", path, sizeof path) +
                            strlen(s_dir),
                        "/playbooks/list.yml");
    jobs_t *jobs = jobs_new(&s_cfg, 0);
    sink_log_t log;
    job_t *job = s_run(jobs, &log, TIDE__V1__JOB_KIND__JOB_SCALE_UP, "job-place", "place", 0, 1000);
    char want[1024];
    snprintf(want, sizeof want, "%s/playbooks/scale_up.yml\n", s_dir);
    assert_non_null(strstr(s_read("argv.txt"), want));
    assert_int_equal(job->state, TIDE__V1__JOB_STATE__JOB_SUCCEEDED);
    assert_int_equal(job->n_results, 1);
    assert_string_equal(job->results[0].instance.host, "10.0.0.7");
    assert_int_equal(job->results[0].instance.port, 9102);
    assert_true(job->results[0].running);
    /* what the job was asked to act on stays as asked */
    assert_string_equal(job->instances[0].host, "127.0.0.1");

    /* A placement that does not match the job: failed, and the instance may run. */
    job = s_run(jobs, &log, TIDE__V1__JOB_KIND__JOB_SCALE_UP, "job-badplace", "badplace", 0, 1000);
    assert_int_equal(job->state, TIDE__V1__JOB_STATE__JOB_FAILED);
    assert_non_null(strstr(job->error, "port 9999"));
    assert_true(job->results[0].running);
    assert_false(job->results[0].ok);
    jobs_destroy(&jobs);
    s_cfg = saved;
    snprintf(path, sizeof path, "%s/playbooks/scale_up.yml", s_dir);
    unlink(path);
}

static bool s_gone(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z'; /* a zombie is dead */
}

static void test_deadline_kills_group(void **state)
{
    (void)state;
    jobs_t *jobs = jobs_new(&s_cfg, 0);
    sink_log_t log;
    uint64_t t0 = clock_mono_ms();
    /* The script ignores SIGTERM, so only the SIGKILL to the whole group ends it; then the
     * runner stops the job's instances with scale_down before reporting. */
    job_t *job = s_run(jobs, &log, TIDE__V1__JOB_KIND__JOB_SCALE_UP, "job-hang", "hang", 500, 300);
    uint64_t took = clock_mono_ms() - t0;
    assert_int_equal(job->state, TIDE__V1__JOB_STATE__JOB_FAILED);
    assert_string_equal(job->error, "deadline exceeded; its instances were stopped");
    assert_true(took >= 700 && took < 5000);
    assert_int_equal(log.n_lines, 2);
    assert_string_equal(log.lines[0], "hanging");
    assert_string_equal(log.lines[1], "cleanup");
    assert_non_null(strstr(s_read("argv.txt"), "scale_down.yml"));
    assert_false(job->results[0].running);
    const char *text = s_read("sleep.pid");
    assert_non_null(text);
    pid_t sleeper = (pid_t)atoi(text);
    assert_true(sleeper > 1);
    bool gone = false;
    for (int i = 0; i < 100 && !gone; i++) {
        gone = s_gone(sleeper);
        if (!gone)
            usleep(20000);
    }
    if (!gone) {
        kill(sleeper, SIGKILL);
        fail_msg("the playbook's child %d outlived the deadline", (int)sleeper);
    }
    jobs_destroy(&jobs);
}

static void test_spawn_failures(void **state)
{
    (void)state;
    jobs_t *jobs = jobs_new(&s_cfg, 0);
    zloop_t *loop = zloop_new();
    sink_log_t log;
    memset(&log, 0, sizeof log);
    runner_sink_t sink = {s_on_output, s_on_finished, &log};
    tide_config_t cfg = s_cfg;
    snprintf(cfg.executor.ansible_playbook, CFG_PATH, "%s/no-such-program", s_dir);
    runner_ansible_t *runner = runner_ansible_new(&cfg, loop, &sink);
    Tide__V1__ExecRequest req = TIDE__V1__EXEC_REQUEST__INIT;
    req.kind = TIDE__V1__JOB_KIND__JOB_LIST;
    req.job_id = "nospawn";
    job_t *job = jobs_add(jobs, &req);
    char err[256] = "";
    assert_int_not_equal(runner_ansible_start(runner, job, err, sizeof err), 0);
    assert_non_null(strstr(err, "cannot run"));
    assert_int_equal(runner_ansible_running(runner), 0);
    runner_ansible_destroy(&runner);
    /* A driver without playbooks: refused before anything runs. */
    snprintf(cfg.executor.driver, sizeof cfg.executor.driver, "docker");
    runner = runner_ansible_new(&cfg, loop, &sink);
    req.job_id = "nobook";
    job = jobs_add(jobs, &req);
    assert_int_not_equal(runner_ansible_start(runner, job, err, sizeof err), 0);
    assert_non_null(strstr(err, "playbooks/list.yml")); /* docker: the top-level playbooks */
    runner_ansible_destroy(&runner);
    zloop_destroy(&loop);
    jobs_destroy(&jobs);
}

/* The recorder's rings: four times the window at ~400 bytes a sample, a power of two, bounded. */
static void test_ring_pages(void **state)
{
    (void)state;
    assert_int_equal(profile_ring_pages(49, 5), 128);   /* 95.7 pages wanted */
    assert_int_equal(profile_ring_pages(49, 10), 256);  /* 191.4 */
    assert_int_equal(profile_ring_pages(1, 1), 8);      /* the floor */
    assert_int_equal(profile_ring_pages(999, 4), 1024); /* 1561 wanted: the ceiling */
    assert_int_equal(profile_ring_pages(0, 0), 8);
}

/* One `perf script` sample of pid at time t (seconds), in the app's request function. */
static void s_sample(FILE *f, int pid, const char *t)
{
    fprintf(f, "tide-sample-app  %d/%d   %s: \n", pid, pid + 1, t);
    fprintf(f, "\t            3452 sample_request_work (/app)\n");
    fprintf(f, "\t            1f7fc start_thread (/app)\n\n");
}

/* A file the profile playbook would leave in the work folder, opened for writing. */
static FILE *s_work_file(const char *work, const char *name)
{
    char path[1100], cmd[1200];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", work);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/%s", work, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    return f;
}

/* A crash profile from the recorder's ring, stamped with the wall clock: only the samples in
 * the seconds before the exit that meta.txt names are kept, however many the dead process had
 * before them (it may have idled its last seconds), and none after the window's end. */
static void test_profile_keeps_the_named_seconds(void **state)
{
    (void)state;
    jobs_t *jobs = jobs_new(&s_cfg, 0);
    Tide__V1__ExecRequest req = TIDE__V1__EXEC_REQUEST__INIT;
    Tide__V1__Instance in = TIDE__V1__INSTANCE__INIT;
    Tide__V1__Instance *ptr = &in;
    Tide__V1__ProfileSpec spec = TIDE__V1__PROFILE_SPEC__INIT;
    in.name = "production1";
    in.host = "127.0.0.1";
    in.port = 9102;
    req.kind = TIDE__V1__JOB_KIND__JOB_PROFILE;
    req.job_id = "profile-production1-1";
    req.instances = &ptr;
    req.n_instances = 1;
    spec.reason = "crash";
    spec.seconds = 2;
    spec.pid = 4242;
    spec.detail = "pid 4242 exited: terminated by SIGSEGV (core dumped)";
    req.profile = &spec;
    char reason[256];
    assert_int_equal(jobs_validate(&s_cfg, &req, reason, sizeof reason), 0);
    job_t *job = jobs_add(jobs, &req);
    assert_non_null(job);
    char work[1024];
    profile_work_dir(&s_cfg, job, work, sizeof work);
    FILE *f = s_work_file(work, "meta.txt");
    fputs("target_pid 4242\nbaseline_pid 0\nsource ring\nclock realtime\nwindow_s 2\n"
          "start_ms 1000000000000\nend_ms 1000000002000\nhost 127.0.0.1\ncommand /app\n"
          "crash_note core kept; stacks read from it with gdb\n",
          f);
    fclose(f);
    f = s_work_file(work, "script.txt");
    s_sample(f, 4242, "999999990.500000"); /* busy long before */
    s_sample(f, 4242, "999999995.250000");
    s_sample(f, 4242, "1000000000.500000"); /* the two seconds before the exit */
    s_sample(f, 4242, "1000000001.750000");
    s_sample(f, 4343, "1000000001.800000"); /* another process */
    s_sample(f, 4242, "1000000002.900000"); /* after the window's end */
    s_sample(f, 4242, "1000000003.000000");
    fclose(f);
    char err[256] = "";
    assert_int_equal(profile_build(&s_cfg, job, err, sizeof err), 0);
    char root[1024], dir[1200];
    profiles_root(&s_cfg, root, sizeof root);
    snprintf(dir, sizeof dir, "%s/%s", root, job->profile.id);
    profile_rec_t rec;
    assert_int_equal(profile_rec_read(dir, &rec, err, sizeof err), 0);
    assert_int_equal(rec.samples, 2);
    assert_int_equal(rec.from_ms, 1000000000000ULL);
    assert_int_equal(rec.to_ms, 1000000002000ULL);
    assert_string_equal(rec.source, "ring");
    assert_string_equal(rec.crash_note, "core kept; stacks read from it with gdb");

    /* the process used no CPU in those seconds: a profile of 0 samples, not a failure */
    job->profile.id[0] = '\0';
    f = s_work_file(work, "meta.txt");
    fputs("target_pid 4242\nbaseline_pid 0\nsource ring\nclock realtime\nwindow_s 2\n"
          "start_ms 1000000010000\nend_ms 1000000012000\n",
          f);
    fclose(f);
    f = s_work_file(work, "script.txt");
    s_sample(f, 4242, "1000000001.750000");
    fclose(f);
    assert_int_equal(profile_build(&s_cfg, job, err, sizeof err), 0);
    snprintf(dir, sizeof dir, "%s/%s", root, job->profile.id);
    assert_int_equal(profile_rec_read(dir, &rec, err, sizeof err), 0);
    assert_int_equal(rec.samples, 0);
    jobs_destroy(&jobs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_argv_vars_output),
        cmocka_unit_test(test_exit_code),
        cmocka_unit_test(test_list_result),
        cmocka_unit_test(test_deadline_kills_group),
        cmocka_unit_test(test_docker_placement),
        cmocka_unit_test(test_spawn_failures),
        cmocka_unit_test(test_ring_pages),
        cmocka_unit_test(test_profile_keeps_the_named_seconds),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
