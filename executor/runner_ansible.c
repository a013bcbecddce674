/* runner_ansible.c - ansible-playbook as a child process group, watched from the zloop. */
#include "runner_ansible.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "profile.h"
#include "tide_clock.h"
#include "tide_log.h"
#include "tide_msg.h"

extern char **environ;

#define TICK_MS    100
#define READ_CHUNK 8192

typedef struct run_t {
    runner_ansible_t *owner;
    job_t *job;
    pid_t pid; /* also the process group id */
    int fd;    /* read end of the output pipe, -1 once closed */
    char line[JOB_LINE_MAX + 1];
    size_t line_len;
    bool exited;
    int status;
    bool timed_out;
    uint64_t deadline; /* mono ms: the job's, then the cleanup's */
    uint64_t kill_at;  /* mono ms of the SIGKILL after a SIGTERM, 0 = not killing */
    bool cleanup;      /* running scale_down after a scale up hit its deadline */
    char cleanup_note[256];
    char dir[CFG_PATH + JOB_ID_MAX + 16];
    char vars[CFG_PATH + JOB_ID_MAX + 32];
    char result[CFG_PATH + JOB_ID_MAX + 32];
} run_t;

struct runner_ansible_t {
    const tide_config_t *cfg;
    zloop_t *loop;
    runner_sink_t sink;
    int timer;
    int grace_ms;
    run_t **runs;
    size_t n, cap;
};

static int s_on_tick(zloop_t *loop, int timer_id, void *arg);

runner_ansible_t *runner_ansible_new(const tide_config_t *cfg, zloop_t *loop,
                                     const runner_sink_t *sink)
{
    runner_ansible_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = cfg;
    self->loop = loop;
    self->sink = *sink;
    self->grace_ms = TIDE_EXEC_KILL_GRACE_MS;
    self->timer = zloop_timer(loop, TICK_MS, 0, s_on_tick, self);
    if (self->timer < 0) {
        free(self);
        return NULL;
    }
    return self;
}

void runner_ansible_set_kill_grace(runner_ansible_t *self, int ms)
{
    self->grace_ms = ms;
}

size_t runner_ansible_running(runner_ansible_t *self)
{
    return self->n;
}

/* ---- files ------------------------------------------------------------------------------ */

static int s_mkdirs(const char *path, mode_t mode)
{
    char buf[CFG_PATH + 64];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return -ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static void s_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

int runner_ansible_write_vars(const tide_config_t *cfg, const job_t *job, const char *path,
                              const char *result_file)
{
    /* 0600 from the start: the file is created with it, never widened later. */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    if (fchmod(fd, 0600) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e = errno;
        close(fd);
        return -e;
    }
    fputs("{\"job_id\": ", f);
    s_json_str(f, job->id);
    fputs(", \"kind\": ", f);
    s_json_str(f, msg_job_kind_name(job->kind));
    fputs(", \"service\": ", f);
    s_json_str(f, cfg->service);
    fputs(",\n \"instances\": [", f);
    for (size_t i = 0; i < job->n_instances; i++) {
        fputs(i ? ", {\"name\": " : "{\"name\": ", f);
        s_json_str(f, job->instances[i].name);
        fputs(", \"host\": ", f);
        s_json_str(f, job->instances[i].host);
        fprintf(f, ", \"port\": %u}", job->instances[i].port);
    }
    fputs("],\n \"app\": {\"host\": ", f);
    s_json_str(f, cfg->app.host);
    fprintf(f, ", \"base_port\": %d, \"name_prefix\": ", cfg->app.base_port);
    s_json_str(f, cfg->app.name_prefix);
    fputs(", \"health_path\": ", f);
    s_json_str(f, cfg->app.health_path);
    fprintf(f, ", \"health_timeout_ms\": %d, \"command\": ", cfg->app.health_timeout_ms);
    s_json_str(f, cfg->app.command);
    fputs(", \"args\": ", f);
    s_json_str(f, cfg->app.args);
    fputs(", \"image\": ", f);
    s_json_str(f, cfg->app.image);
    fputs("},\n \"state_dir\": ", f);
    s_json_str(f, cfg->executor.state_dir);
    fputs(", \"supervisor_config\": ", f);
    s_json_str(f, cfg->executor.supervisor_config);
    fputs(", \"result_file\": ", f);
    s_json_str(f, result_file);
    /* Every job: list.yml keeps the host's flight recorder as these say; profile.yml reads it. */
    fputs(",\n \"profiling\": {\"enabled\": ", f);
    s_json_str(f, cfg->profiling.enabled);
    fputs(", \"perf\": ", f);
    s_json_str(f, cfg->profiling.perf);
    fprintf(f, ", \"rate_hz\": %d, \"window_s\": %d, \"ring_pages\": %u}", cfg->profiling.rate_hz,
            cfg->profiling.window_s,
            profile_ring_pages(cfg->profiling.rate_hz, cfg->profiling.window_s));
    if (job->kind == TIDE__V1__JOB_KIND__JOB_PROFILE) {
        char work[CFG_PATH + 2 * JOB_ID_MAX + 32];
        fputs(",\n \"profile\": {\"reason\": ", f);
        s_json_str(f, job->profile.reason);
        fprintf(f,
                ", \"seconds\": %u, \"pid\": %u, \"rate_hz\": %d, \"perf\": ", job->profile.seconds,
                job->profile.pid, cfg->profiling.rate_hz);
        s_json_str(f, cfg->profiling.perf);
        fputs(", \"out_dir\": ", f);
        s_json_str(f, profile_work_dir(cfg, job, work, sizeof work));
        fputs("}", f);
    }
    fputs("}\n", f);
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad)
        return -EIO;
    return 0;
}

static void s_remove_files(run_t *run)
{
    unlink(run->vars);
    unlink(run->result);
    rmdir(run->dir);
}

/* ---- the child's environment ------------------------------------------------------------ */

/* Ansible reads its settings from the environment first: plain, uncoloured output, no retry
 * files, temp files under the state dir, no fact gathering unless a play asks. */
static char **s_child_env(const tide_config_t *cfg)
{
    char tmp[CFG_PATH + 64], ansible_cfg[CFG_PATH + 64];
    snprintf(tmp, sizeof tmp, "%s/tmp", cfg->executor.state_dir);
    snprintf(ansible_cfg, sizeof ansible_cfg, "%s/ansible.cfg", cfg->executor.playbooks_dir);
    const char *set[][2] = {
        {"ANSIBLE_NOCOLOR", "1"},
        {"ANSIBLE_FORCE_COLOR", "0"},
        {"ANSIBLE_STDOUT_CALLBACK", "default"},
        {"ANSIBLE_HOST_KEY_CHECKING", "False"},
        {"ANSIBLE_RETRY_FILES_ENABLED", "0"},
        {"ANSIBLE_DEPRECATION_WARNINGS", "0"},
        {"ANSIBLE_LOCALHOST_WARNING", "0"},
        {"ANSIBLE_GATHERING", "explicit"},
        {"ANSIBLE_PIPELINING", "1"},
        {"ANSIBLE_LOCAL_TEMP", tmp},
        {"ANSIBLE_REMOTE_TEMP", tmp},
        {"PYTHONUNBUFFERED", "1"},
        {"ANSIBLE_CONFIG", access(ansible_cfg, R_OK) == 0 ? ansible_cfg : NULL},
    };
    size_t nset = sizeof set / sizeof set[0];
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **env = calloc(n + nset + 1, sizeof *env);
    if (!env)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        bool overridden = false;
        for (size_t k = 0; k < nset && !overridden; k++) {
            size_t kl = strlen(set[k][0]);
            overridden = strncmp(environ[i], set[k][0], kl) == 0 && environ[i][kl] == '=';
        }
        if (!overridden && !(env[o++] = strdup(environ[i])))
            goto oom;
    }
    for (size_t k = 0; k < nset; k++) {
        if (!set[k][1])
            continue;
        if (asprintf(&env[o], "%s=%s", set[k][0], set[k][1]) < 0) {
            env[o] = NULL;
            goto oom;
        }
        o++;
    }
    return env;
oom:
    for (size_t i = 0; env[i]; i++)
        free(env[i]);
    free(env);
    return NULL;
}

static void s_free_env(char **env)
{
    for (size_t i = 0; env && env[i]; i++)
        free(env[i]);
    free(env);
}

/* ---- start ------------------------------------------------------------------------------ */

static const char *s_playbook_name(Tide__V1__JobKind kind)
{
    switch (kind) {
    case TIDE__V1__JOB_KIND__JOB_SCALE_UP:
        return "scale_up.yml";
    case TIDE__V1__JOB_KIND__JOB_SCALE_DOWN:
        return "scale_down.yml";
    case TIDE__V1__JOB_KIND__JOB_LIST:
        return "list.yml";
    case TIDE__V1__JOB_KIND__JOB_PROFILE:
        return "profile.yml";
    default:
        return NULL;
    }
}

const char *runner_ansible_playbook(const tide_config_t *cfg, const char *book, char *buf,
                                    size_t len)
{
    if (strcmp(cfg->executor.driver, "docker") == 0)
        snprintf(buf, len, "%s/%s", cfg->executor.playbooks_dir, book);
    else
        snprintf(buf, len, "%s/%s/%s", cfg->executor.playbooks_dir, cfg->executor.driver, book);
    return buf;
}

static int s_on_output(zloop_t *loop, zmq_pollitem_t *item, void *arg);

/* Spawns `ansible-playbook -i INVENTORY PLAYBOOK -e @VARS` in its own process group with its
 * output on a pipe watched by the loop. Returns 0, or a negative errno with err set. */
static int s_spawn(runner_ansible_t *self, run_t *run, const char *playbook, char *err,
                   size_t errlen)
{
    const tide_config_t *cfg = self->cfg;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        int rc = -errno;
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return rc;
    }
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);

    char at_vars[sizeof run->vars + 1];
    snprintf(at_vars, sizeof at_vars, "@%s", run->vars);
    char *argv[] = {(char *)cfg->executor.ansible_playbook,
                    "-i",
                    (char *)cfg->executor.inventory,
                    (char *)playbook,
                    "-e",
                    at_vars,
                    NULL};
    char **env = s_child_env(cfg);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    /* Nothing of ours (sockets, other jobs' pipes) leaks into the playbook. */
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGHUP);
    sigaddset(&defaults, SIGCHLD);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    /* Its own process group, so a deadline kills ansible and everything it started. */
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    int rc = env ? posix_spawnp(&run->pid, argv[0], &fa, &attr, argv, env) : ENOMEM;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    s_free_env(env);
    close(fds[1]);
    if (rc != 0) {
        snprintf(err, errlen, "cannot run %s: %s", argv[0], strerror(rc));
        close(fds[0]);
        return -rc;
    }
    run->fd = fds[0];
    run->line_len = 0;
    run->exited = false;
    run->status = 0;
    run->kill_at = 0;
    zmq_pollitem_t item = {NULL, run->fd, ZMQ_POLLIN, 0};
    zloop_poller(self->loop, &item, s_on_output, run);
    zloop_poller_set_tolerant(self->loop, &item);
    char q[CFG_PATH * 2 + 96];
    log_info("playbook started", "job=%s pid=%d playbook=%s", run->job->id, (int)run->pid,
             log_quote(q, sizeof q, playbook));
    return 0;
}

static void s_add_run(runner_ansible_t *self, run_t *run)
{
    if (self->n == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 8;
        run_t **runs = realloc(self->runs, cap * sizeof *runs);
        if (!runs)
            abort(); /* a few pointers: out of memory here means the process is done */
        self->runs = runs;
        self->cap = cap;
    }
    self->runs[self->n++] = run;
}

int runner_ansible_start(void *arg, job_t *job, char *err, size_t errlen)
{
    runner_ansible_t *self = arg;
    const tide_config_t *cfg = self->cfg;
    const char *book = s_playbook_name(job->kind);
    if (!book) {
        snprintf(err, errlen, "%s jobs are not supported", msg_job_kind_name(job->kind));
        return -ENOTSUP;
    }
    char playbook[CFG_PATH * 2 + 64];
    runner_ansible_playbook(cfg, book, playbook, sizeof playbook);
    if (access(playbook, R_OK) != 0) {
        snprintf(err, errlen, "playbook %s: %s", playbook, strerror(errno));
        return -ENOENT;
    }
    run_t *run = calloc(1, sizeof *run);
    if (!run) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    run->owner = self;
    run->job = job;
    run->fd = -1;
    snprintf(run->dir, sizeof run->dir, "%s/jobs/%s", cfg->executor.state_dir, job->id);
    snprintf(run->vars, sizeof run->vars, "%s/vars.json", run->dir);
    snprintf(run->result, sizeof run->result, "%s/result.txt", run->dir);
    char tmp[CFG_PATH + 8];
    snprintf(tmp, sizeof tmp, "%s/tmp", cfg->executor.state_dir);
    char work[CFG_PATH + 2 * JOB_ID_MAX + 32];
    profile_work_dir(cfg, job, work, sizeof work);
    int rc = s_mkdirs(run->dir, 0700);
    if (rc == 0)
        rc = s_mkdirs(tmp, 0700);
    if (rc == 0 && job->kind == TIDE__V1__JOB_KIND__JOB_PROFILE) {
        profile_remove_work(work); /* a stale capture of an earlier run of the id */
        rc = s_mkdirs(work, 0700);
    }
    if (rc != 0) {
        snprintf(err, errlen, "cannot create %s: %s", run->dir, strerror(-rc));
        free(run);
        return rc;
    }
    unlink(run->result); /* a stale one from an earlier run of the same id must not count */
    rc = runner_ansible_write_vars(cfg, job, run->vars, run->result);
    if (rc != 0) {
        snprintf(err, errlen, "cannot write %s: %s", run->vars, strerror(-rc));
        s_remove_files(run);
        free(run);
        return rc;
    }

    rc = s_spawn(self, run, playbook, err, errlen);
    if (rc != 0) {
        s_remove_files(run);
        free(run);
        return rc;
    }
    s_add_run(self, run);
    job->runner_data = run;
    job->state = TIDE__V1__JOB_STATE__JOB_RUNNING;
    run->deadline = job->deadline_mono_ms;
    return 0;
}

/* ---- output ----------------------------------------------------------------------------- */

static void s_emit_line(run_t *run)
{
    run->line[run->line_len] = '\0';
    run->owner->sink.output(run->owner->sink.arg, run->job, run->line);
    run->line_len = 0;
}

static void s_feed(run_t *run, const char *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (data[i] == '\n') {
            s_emit_line(run);
        } else {
            /* A line longer than the record keeps goes out in pieces rather than lost. */
            if (run->line_len == JOB_LINE_MAX)
                s_emit_line(run);
            run->line[run->line_len++] = data[i];
        }
    }
}

static void s_close_pipe(run_t *run)
{
    if (run->fd < 0)
        return;
    zmq_pollitem_t item = {NULL, run->fd, ZMQ_POLLIN, 0};
    zloop_poller_end(run->owner->loop, &item);
    close(run->fd);
    run->fd = -1;
}

/* Reads what is there; closes the pipe at end of file. */
static void s_drain(run_t *run)
{
    char buf[READ_CHUNK];
    while (run->fd >= 0) {
        ssize_t r = read(run->fd, buf, sizeof buf);
        if (r > 0) {
            s_feed(run, buf, (size_t)r);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        s_close_pipe(run); /* end of file or a real error: either way nothing more comes */
    }
}

static int s_on_output(zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void)loop;
    (void)item;
    s_drain(arg);
    return 0;
}

/* ---- the end ---------------------------------------------------------------------------- */

/* The most telling line of a failed run for the error text: Ansible's "fatal:" or "ERROR!"
 * line if there is one, else the last line. */
static const char *s_telling_line(const job_t *job)
{
    const char *last = NULL;
    for (size_t i = job->tail_len; i-- > 0;) {
        const char *l = job_tail_line(job, i);
        if (strstr(l, "fatal:") || strstr(l, "ERROR!") || strstr(l, "FAILED!"))
            return l;
        if (!last && l[strspn(l, " \t")] != '\0')
            last = l;
    }
    return last;
}

static int s_read_list(run_t *run, char *err, size_t errlen)
{
    FILE *f = fopen(run->result, "r");
    if (!f) {
        snprintf(err, errlen, "list: no result file (%s)", strerror(errno));
        return -ENOENT;
    }
    char line[512];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        job_result_t res;
        int r = jobs_parse_list_line(line, run->owner->cfg->app.name_prefix, &res);
        if (r == 1)
            continue;
        if (r != 0) {
            snprintf(err, errlen, "list: result line %d is malformed", lineno);
            rc = -EINVAL;
            break;
        }
        if (job_add_result(run->job, &res.instance, res.ok, res.running, res.detail) == 0)
            run->job->results[run->job->n_results - 1].exited_pid = res.exited_pid;
    }
    fclose(f);
    return rc;
}

/* Where a successful scale up placed its instances: the result file, when the playbook wrote
 * one, checked against the job. Returns 1 with placed[k] (the host of job->instances[k]) set,
 * 0 when there is no file (the job's own hosts stand), or -EINVAL with err set. */
static int s_read_placement(run_t *run, char (*placed)[JOB_HOST_MAX], char *err, size_t errlen)
{
    job_t *job = run->job;
    FILE *f = fopen(run->result, "r");
    if (!f)
        return 0;
    job_result_t *lines = calloc(job->n_instances + 1, sizeof *lines);
    size_t n = 0;
    int rc = lines ? 0 : -ENOMEM;
    char line[512];
    int lineno = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        job_result_t res;
        int r = jobs_parse_list_line(line, run->owner->cfg->app.name_prefix, &res);
        if (r == 1)
            continue;
        if (r != 0 || !res.running || n > job->n_instances) {
            snprintf(err, errlen, "scale up: placement line %d is %s", lineno,
                     r != 0 ? "malformed" : "one too many");
            rc = -EINVAL;
            break;
        }
        lines[n++] = res;
    }
    fclose(f);
    if (rc == -ENOMEM)
        snprintf(err, errlen, "scale up: out of memory reading the placement");
    if (rc == 0 && jobs_check_placement(job, lines, n, line, sizeof line) != 0) {
        snprintf(err, errlen, "scale up: %.400s", line);
        rc = -EINVAL;
    }
    for (size_t k = 0; rc == 0 && k < job->n_instances; k++)
        for (size_t i = 0; i < n; i++)
            if (strcmp(lines[i].instance.name, job->instances[k].name) == 0)
                snprintf(placed[k], JOB_HOST_MAX, "%s", lines[i].instance.host);
    free(lines);
    return rc == 0 ? 1 : rc;
}

static void s_remove_run(runner_ansible_t *self, run_t *run)
{
    for (size_t i = 0; i < self->n; i++) {
        if (self->runs[i] == run) {
            memmove(&self->runs[i], &self->runs[i + 1], (self->n - i - 1) * sizeof(run_t *));
            self->n--;
            break;
        }
    }
}

/* The leader has exited: collect the last output, clean up, and end the job. */
static void s_finish(run_t *run, const char *forced_error)
{
    runner_ansible_t *self = run->owner;
    job_t *job = run->job;
    s_drain(run);
    s_close_pipe(run);
    if (run->line_len > 0)
        s_emit_line(run);
    /* Anything the playbook left in its group (a stray background child) goes with it. */
    kill(-run->pid, SIGKILL);

    /* A scale up killed half-way may have left instances added or running; a failed scale up
     * must leave none, so run scale_down on them before reporting. */
    if (!forced_error && run->timed_out && !run->cleanup &&
        job->kind == TIDE__V1__JOB_KIND__JOB_SCALE_UP) {
        char playbook[CFG_PATH * 2 + 64], err[JOB_TEXT_MAX];
        runner_ansible_playbook(self->cfg, "scale_down.yml", playbook, sizeof playbook);
        run->cleanup = true;
        run->timed_out = false;
        run->deadline = clock_mono_ms() + (uint64_t)self->cfg->executor.cleanup_deadline_ms;
        log_warn("scale up past its deadline: stopping its instances", "job=%s", job->id);
        if (s_spawn(self, run, playbook, err, sizeof err) == 0)
            return; /* finishes when the cleanup ends */
        snprintf(run->cleanup_note, sizeof run->cleanup_note, "; cleanup not run: %.200s", err);
        run->status = 0xff00;
        run->exited = true;
    }

    char error[JOB_TEXT_MAX] = "";
    bool ok = false;
    bool cleaned = false;
    if (forced_error) {
        snprintf(error, sizeof error, "%s", forced_error);
    } else if (run->cleanup) {
        cleaned = !run->cleanup_note[0] && !run->timed_out && WIFEXITED(run->status) &&
                  WEXITSTATUS(run->status) == 0;
        snprintf(error, sizeof error, "deadline exceeded%s",
                 cleaned                ? "; its instances were stopped"
                 : run->cleanup_note[0] ? run->cleanup_note
                                        : "; stopping its instances failed: they may still run");
    } else if (run->timed_out) {
        snprintf(error, sizeof error, "deadline exceeded");
    } else if (WIFEXITED(run->status) && WEXITSTATUS(run->status) == 0) {
        ok = true;
    } else {
        const char *tell = s_telling_line(job);
        if (WIFEXITED(run->status))
            snprintf(error, sizeof error, "ansible-playbook exited %d%s%.400s",
                     WEXITSTATUS(run->status), tell ? ": " : "", tell ? tell : "");
        else
            snprintf(error, sizeof error, "ansible-playbook killed by signal %d%s%.400s",
                     WTERMSIG(run->status), tell ? ": " : "", tell ? tell : "");
    }
    if (ok && job->kind == TIDE__V1__JOB_KIND__JOB_LIST)
        ok = s_read_list(run, error, sizeof error) == 0;
    if (job->kind == TIDE__V1__JOB_KIND__JOB_PROFILE) {
        char pwork[CFG_PATH + 2 * JOB_ID_MAX + 32];
        if (ok)
            ok = profile_build(self->cfg, job, error, sizeof error) == 0;
        else
            profile_remove_work(profile_work_dir(self->cfg, job, pwork, sizeof pwork));
    }

    bool up = job->kind == TIDE__V1__JOB_KIND__JOB_SCALE_UP;
    char(*placed)[JOB_HOST_MAX] = NULL;
    bool misplaced = false; /* the playbook succeeded but its placement is unusable */
    if (ok && up && job->n_instances > 0) {
        placed = calloc(job->n_instances, sizeof *placed);
        int rc = placed ? s_read_placement(run, placed, error, sizeof error) : -ENOMEM;
        if (rc == -ENOMEM)
            snprintf(error, sizeof error, "scale up: out of memory reading the placement");
        if (rc <= 0) {
            free(placed);
            placed = NULL;
        }
        misplaced = rc < 0;
        ok = !misplaced;
    }
    if (job->kind != TIDE__V1__JOB_KIND__JOB_LIST) {
        for (size_t i = 0; i < job->n_instances; i++) {
            /* A failed scale up has stopped what it started (the playbook's rescue, or the
             * cleanup run after a deadline); anything else may have left it running. */
            bool running = true;
            const char *detail = "may still run";
            job_instance_t inst = job->instances[i];
            if (job->kind == TIDE__V1__JOB_KIND__JOB_PROFILE) {
                detail = ok ? (i == 0 ? "profiled" : "baseline") : "not profiled";
            } else if (ok) {
                running = up;
                detail = up ? "ready" : "stopped";
                if (placed)
                    snprintf(inst.host, sizeof inst.host, "%s", placed[i]);
            } else if (misplaced) {
                detail = "started, but its placement was not reported: may still run";
            } else if (up && !forced_error &&
                       (run->cleanup ? cleaned
                                     : WIFEXITED(run->status) && WEXITSTATUS(run->status) == 2)) {
                /* Exit 2 is a task that failed, after the playbook's rescue stopped what the
                 * job started. A signal (OOM killer, a manual kill) or an unreachable host
                 * (exit 4) skips the rescue: those stay "may still run" so the scaler stops
                 * them. */
                running = false;
                detail = "not started";
            }
            job_add_result(job, &inst, ok, running, detail);
        }
    }
    free(placed);
    job_finish(job, ok ? TIDE__V1__JOB_STATE__JOB_SUCCEEDED : TIDE__V1__JOB_STATE__JOB_FAILED,
               ok ? NULL : error);
    s_remove_files(run);
    s_remove_run(self, run);
    job->runner_data = NULL;
    free(run);
    self->sink.finished(self->sink.arg, job);
}

static int s_on_tick(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    runner_ansible_t *self = arg;
    uint64_t now = clock_mono_ms();
    for (size_t i = 0; i < self->n;) {
        run_t *run = self->runs[i];
        pid_t r = waitpid(run->pid, &run->status, WNOHANG);
        if (r == run->pid || (r < 0 && errno == ECHILD)) {
            if (r < 0)
                run->status = 0xff00; /* someone else reaped it: report as exit 255 */
            run->exited = true;
            s_finish(run, NULL); /* removes runs[i] */
            continue;
        }
        if (run->kill_at == 0 && now >= run->deadline) {
            log_warn("deadline exceeded: killing the playbook", "job=%s pid=%d", run->job->id,
                     (int)run->pid);
            run->timed_out = true;
            kill(-run->pid, SIGTERM);
            run->kill_at = now + (uint64_t)self->grace_ms;
        } else if (run->kill_at && now >= run->kill_at) {
            kill(-run->pid, SIGKILL);
        }
        i++;
    }
    return 0;
}

void runner_ansible_destroy(runner_ansible_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    runner_ansible_t *self = *self_p;
    for (size_t i = 0; i < self->n; i++)
        kill(-self->runs[i]->pid, SIGTERM);
    uint64_t until = clock_mono_ms() + (uint64_t)self->grace_ms;
    while (self->n > 0) {
        run_t *run = self->runs[0];
        pid_t r = waitpid(run->pid, &run->status, WNOHANG);
        if (r == run->pid || (r < 0 && errno == ECHILD)) {
            s_finish(run, "executor stopped");
            continue;
        }
        if (clock_mono_ms() >= until) {
            kill(-run->pid, SIGKILL);
            waitpid(run->pid, &run->status, 0);
            s_finish(run, "executor stopped");
            continue;
        }
        usleep(20 * 1000);
    }
    zloop_timer_end(self->loop, self->timer);
    free(self->runs);
    free(self);
    *self_p = NULL;
}
