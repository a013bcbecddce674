/* fake.c - tide-fake-executor: the executor's protocol without Ansible, for integration tests.
 *
 * Jobs are accepted, refused and reported by the same job core as tide-executor
 * (executor/jobs.c, executor/protocol.c). A scale up starts app.command as a direct child per
 * instance (`--listen HOST:PORT --name NAME` + app.args split on spaces) and succeeds once each
 * answers GET app.health_path with 200; a scale down sends SIGTERM (SIGKILL after 5 s); a list
 * reports the running children, health checked. Health checks run in a thread per job, so the
 * control socket always answers at once.
 *
 * A second socket (REP, `--control ENDPOINT`) takes plain-text commands that make it misbehave:
 *   fail N    the next N scale-up/scale-down jobs fail after starting, leaving nothing started
 *   delay MS  every job waits MS before finishing
 *   stall N   the next N scale-up/scale-down jobs are accepted but never finish: no FINISHED,
 *             RUNNING forever on status. They do not hold their instances, so a later job on
 *             the same instances is accepted (as after a real executor's deadline kill). They
 *             do count against executor.max_jobs, as RUNNING jobs.
 *   hang N    the next N requests on executor_control get no reply at all (a dead executor):
 *             the control socket is a ROUTER, so nothing is stuck; the request is not processed
 *   crash     the next scale-up/scale-down job starts its instances, then the process exits
 *             with status 3 before FINISHED (children die with it: PR_SET_PDEATHSIG)
 *   list-extra NAME HOST PORT
 *             every list from now on also reports NAME running and healthy at HOST:PORT
 *             (nothing of it runs): how a list with an entry tide never asked for looks; up to
 *             8, each as given (the name must look like one of tide's, HOST be numeric)
 *   reset     clears every injection above
 *   stats     one line of JSON: counters (jobs_* count scale-up/scale-down jobs; lists_started
 *             the LIST jobs), the injections still armed, and the running children's names
 * Each answers one plain-text frame ("ok", the JSON, or "error: ...").
 *
 * Usage: tide-fake-executor [-c FILE] [--id ID] [--control ENDPOINT] */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jobs.h"
#include "protocol.h"
#include "tide_clock.h"
#include "tide_config.h"
#include "tide_log.h"
#include "tide_msg.h"

#define TICK_MS         50
#define STOP_GRACE_MS   5000
#define MAX_ARGS        64
#define HEALTH_RETRY_MS 100

/* ---- health checks: a thread per job, blocking GETs with short timeouts ------------------- */

typedef struct {
    size_t n;
    job_instance_t *inst;
    char path[CFG_STR];
    uint64_t deadline; /* mono ms */
    bool once;         /* one attempt each (list), else retry until healthy or deadline */
    bool *ok;          /* written by the thread, read by main after done */
    atomic_bool done;
    atomic_bool cancel;
    pthread_t thread;
} health_t;

/* One GET; true when the status line says 200. Every step is bounded by timeout_ms. */
static bool s_http_ok(const char *host, uint32_t port, const char *path, int timeout_ms)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return false;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool ok = false;
    uint64_t until = clock_mono_ms() + (uint64_t)timeout_ms;
    struct pollfd pfd = {.fd = fd};
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EINPROGRESS)
            goto out;
        pfd.events = POLLOUT;
        if (poll(&pfd, 1, timeout_ms) != 1)
            goto out;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)
            goto out;
    }
    char req[CFG_STR + 128];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%u\r\nConnection: close\r\n\r\n",
                     path, host, port);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        goto out;
    char buf[64];
    size_t got = 0;
    while (got < 12) {
        int left = (int)(until > clock_mono_ms() ? until - clock_mono_ms() : 0);
        pfd.events = POLLIN;
        if (left <= 0 || poll(&pfd, 1, left) != 1)
            goto out;
        ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (r <= 0)
            goto out;
        got += (size_t)r;
    }
    buf[got] = '\0';
    ok = strncmp(buf, "HTTP/1.", 7) == 0 && strncmp(buf + 8, " 200", 4) == 0;
out:
    close(fd);
    return ok;
}

static void *s_health_main(void *arg)
{
    health_t *h = arg;
    for (;;) {
        bool all = true;
        for (size_t i = 0; i < h->n && !atomic_load(&h->cancel); i++) {
            if (!h->ok[i])
                h->ok[i] =
                    s_http_ok(h->inst[i].host, h->inst[i].port, h->path, h->once ? 1000 : 500);
            all = all && h->ok[i];
        }
        if (all || h->once || atomic_load(&h->cancel) || clock_mono_ms() >= h->deadline)
            break;
        usleep(HEALTH_RETRY_MS * 1000);
    }
    atomic_store_explicit(&h->done, true, memory_order_release);
    return NULL;
}

static health_t *s_health_start(const job_instance_t *inst, size_t n, const char *path,
                                int timeout_ms, bool once)
{
    health_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->n = n;
    h->inst = calloc(n ? n : 1, sizeof *h->inst);
    h->ok = calloc(n ? n : 1, sizeof *h->ok);
    if (!h->inst || !h->ok) {
        free(h->inst);
        free(h->ok);
        free(h);
        return NULL;
    }
    memcpy(h->inst, inst, n * sizeof *inst);
    snprintf(h->path, sizeof h->path, "%s", path);
    h->deadline = clock_mono_ms() + (uint64_t)timeout_ms;
    h->once = once;
    if (pthread_create(&h->thread, NULL, s_health_main, h) != 0) {
        free(h->inst);
        free(h->ok);
        free(h);
        return NULL;
    }
    return h;
}

static void s_health_destroy(health_t **hp)
{
    health_t *h = *hp;
    if (!h)
        return;
    atomic_store(&h->cancel, true);
    pthread_join(h->thread, NULL);
    free(h->inst);
    free(h->ok);
    free(h);
    *hp = NULL;
}

/* ---- the fake ------------------------------------------------------------------------------ */

typedef struct fake_job_t fake_job_t;

typedef struct {
    job_instance_t inst;
    pid_t pid;
    fake_job_t *starting; /* the scale up that started it, until that job ends */
    uint64_t kill_at;     /* SIGKILL time after a SIGTERM, 0 = not stopping */
    bool dead;
    int status;
} child_t;

struct fake_job_t {
    job_t *job;
    bool fail;           /* injected failure */
    bool crash;          /* injected exit before FINISHED */
    uint64_t not_before; /* delay: mono ms */
    health_t *health;
    char error[JOB_TEXT_MAX];
    pid_t *started; /* children this job started (a failed scale up stops them) */
    size_t n_started;
    bool stopping; /* waiting for children to exit (scale down, or a failed scale up) */
};

typedef struct {
    const tide_config_t *cfg;
    exec_server_t *server;
    zsock_t *control; /* --control REP, or NULL */
    child_t *children;
    size_t n_children, cap_children;
    fake_job_t **jobs;
    size_t n_jobs, cap_jobs;
    /* injections */
    int fail_n, stall_n, hang_n, delay_ms;
    bool crash;
    job_instance_t list_extra[8];
    size_t n_list_extra;
    /* counters: jobs_* count scale-up and scale-down jobs only, lists apart */
    uint64_t jobs_started, jobs_succeeded, jobs_failed, jobs_stalled, lists_started, unanswered;
} fake_t;

static child_t *s_child(fake_t *self, const char *name)
{
    for (size_t i = 0; i < self->n_children; i++)
        if (!self->children[i].dead && strcmp(self->children[i].inst.name, name) == 0)
            return &self->children[i];
    return NULL;
}

static child_t *s_child_by_pid(fake_t *self, pid_t pid)
{
    for (size_t i = 0; i < self->n_children; i++)
        if (self->children[i].pid == pid)
            return &self->children[i];
    return NULL;
}

/* Forks app.command for inst. The argument vector is built before fork: the child only calls
 * async-signal-safe functions. Returns the pid or a negative errno. Must run on the main
 * thread: PR_SET_PDEATHSIG fires when the forking *thread* ends. */
static pid_t s_spawn(fake_t *self, const job_instance_t *inst)
{
    const tide_config_t *cfg = self->cfg;
    char listen[JOB_HOST_MAX + 16];
    snprintf(listen, sizeof listen, "%s:%u", inst->host, inst->port);
    char args[CFG_PATH];
    snprintf(args, sizeof args, "%s", cfg->app.args);
    char *argv[MAX_ARGS + 6];
    int argc = 0;
    argv[argc++] = (char *)cfg->app.command;
    argv[argc++] = "--listen";
    argv[argc++] = listen;
    argv[argc++] = "--name";
    argv[argc++] = (char *)inst->name;
    char *save = NULL;
    for (char *t = strtok_r(args, " \t", &save); t && argc < MAX_ARGS + 5;
         t = strtok_r(NULL, " \t", &save))
        argv[argc++] = t;
    argv[argc] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1); /* the fake died between fork and prctl */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        closefrom(3);
        execvp(argv[0], argv);
        _exit(127);
    }
    if (self->n_children == self->cap_children) {
        size_t cap = self->cap_children ? self->cap_children * 2 : 16;
        child_t *c = realloc(self->children, cap * sizeof *c);
        if (!c) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return -ENOMEM;
        }
        self->children = c;
        self->cap_children = cap;
    }
    child_t *c = &self->children[self->n_children++];
    memset(c, 0, sizeof *c);
    c->inst = *inst;
    c->pid = pid;
    log_info("instance started", "name=%s pid=%d listen=%s", inst->name, (int)pid, listen);
    return pid;
}

static void s_stop_child(child_t *c)
{
    if (c->dead || c->kill_at)
        return;
    kill(c->pid, SIGTERM);
    c->kill_at = clock_mono_ms() + STOP_GRACE_MS;
}

/* Reaps exited children and escalates stops past their grace period. */
static void s_reap(fake_t *self)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        child_t *c = s_child_by_pid(self, pid);
        if (!c)
            continue;
        c->dead = true;
        c->status = status;
        log_info("instance exited", "name=%s pid=%d status=%d", c->inst.name, (int)pid,
                 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        if (c->starting && c->starting->health) {
            /* It died while its scale up waited for it: no need to wait for the timeout. */
            fake_job_t *fj = c->starting;
            snprintf(fj->error, sizeof fj->error, "instance %s exited during start (status %d)",
                     c->inst.name,
                     WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
            atomic_store(&fj->health->cancel, true);
        }
    }
    uint64_t now = clock_mono_ms();
    size_t o = 0;
    for (size_t i = 0; i < self->n_children; i++) {
        child_t *c = &self->children[i];
        if (!c->dead && c->kill_at && now >= c->kill_at) {
            kill(c->pid, SIGKILL);
            c->kill_at = now + 1000;
        }
        if (!c->dead || c->starting)
            self->children[o++] = *c; /* keep dead ones their scale up still looks at */
    }
    self->n_children = o;
}

static bool s_pid_alive(fake_t *self, pid_t pid)
{
    child_t *c = s_child_by_pid(self, pid);
    return c && !c->dead;
}

static void s_release_children(fake_t *self, fake_job_t *fj)
{
    for (size_t i = 0; i < self->n_children; i++)
        if (self->children[i].starting == fj)
            self->children[i].starting = NULL;
}

static void s_forget_job(fake_t *self, fake_job_t *fj)
{
    for (size_t i = 0; i < self->n_jobs; i++) {
        if (self->jobs[i] == fj) {
            memmove(&self->jobs[i], &self->jobs[i + 1], (self->n_jobs - i - 1) * sizeof fj);
            self->n_jobs--;
            break;
        }
    }
    s_release_children(self, fj);
    s_health_destroy(&fj->health);
    free(fj->started);
    fj->job->runner_data = NULL;
    free(fj);
}

static void s_end(fake_t *self, fake_job_t *fj, bool ok)
{
    job_t *job = fj->job;
    if (fj->crash) {
        log_warn("told to crash: exiting mid-job", "job=%s", job->id);
        _exit(3);
    }
    job_finish(job, ok ? TIDE__V1__JOB_STATE__JOB_SUCCEEDED : TIDE__V1__JOB_STATE__JOB_FAILED,
               ok ? NULL : fj->error);
    if (job->kind != TIDE__V1__JOB_KIND__JOB_LIST)
        *(ok ? &self->jobs_succeeded : &self->jobs_failed) += 1;
    s_forget_job(self, fj);
    exec_server_finished(self->server, job);
}

/* Moves one job on; called every tick. */
static void s_advance(fake_t *self, fake_job_t *fj)
{
    job_t *job = fj->job;
    uint64_t now = clock_mono_ms();
    if (fj->health && !atomic_load_explicit(&fj->health->done, memory_order_acquire))
        return;
    if (fj->stopping) {
        for (size_t i = 0; i < fj->n_started; i++)
            if (s_pid_alive(self, fj->started[i]))
                return;
        if (job->kind == TIDE__V1__JOB_KIND__JOB_SCALE_DOWN) {
            for (size_t i = 0; i < job->n_instances; i++)
                job_add_result(job, &job->instances[i], true, false, "stopped");
        } else {
            /* A failed scale up: what it started is stopped; an instance it found already
             * running (and left alone) still runs, and is reported so. */
            for (size_t i = 0; i < job->n_instances; i++) {
                child_t *c = s_child(self, job->instances[i].name);
                bool running = c && !c->kill_at;
                job_add_result(job, &job->instances[i], false, running,
                               running ? "already running; not started by this job" : fj->error);
            }
        }
        fj->stopping = false;
        fj->n_started = 0;
    }
    if (now < fj->not_before)
        return;
    if (fj->fail) {
        snprintf(fj->error, sizeof fj->error, "injected failure (fake executor told to fail)");
        for (size_t i = 0; i < job->n_instances; i++)
            job_add_result(job, &job->instances[i], false, false, "injected failure");
        s_end(self, fj, false);
        return;
    }
    switch (job->kind) {
    case TIDE__V1__JOB_KIND__JOB_SCALE_UP: {
        if (job->n_results > 0) { /* rolled back after a failure: results are in */
            s_end(self, fj, false);
            return;
        }
        health_t *h = fj->health;
        bool all = true;
        for (size_t i = 0; i < h->n; i++)
            all = all && h->ok[i];
        if (all) {
            for (size_t i = 0; i < job->n_instances; i++)
                job_add_result(job, &job->instances[i], true, true, "ready");
            s_end(self, fj, true);
            return;
        }
        if (!fj->error[0]) {
            for (size_t i = 0; i < h->n; i++) {
                if (!h->ok[i]) {
                    snprintf(fj->error, sizeof fj->error,
                             "instance %s did not answer %s with 200 within %d ms", h->inst[i].name,
                             h->path, self->cfg->app.health_timeout_ms);
                    break;
                }
            }
        }
        /* Stop what this job started, then fail: nothing of it stays running. */
        s_health_destroy(&fj->health);
        s_release_children(self, fj);
        for (size_t i = 0; i < fj->n_started; i++) {
            child_t *c = s_child_by_pid(self, fj->started[i]);
            if (c)
                s_stop_child(c);
        }
        fj->stopping = true;
        return;
    }
    case TIDE__V1__JOB_KIND__JOB_SCALE_DOWN:
        s_end(self, fj, true); /* the stop phase above added the results */
        return;
    case TIDE__V1__JOB_KIND__JOB_LIST: {
        health_t *h = fj->health;
        for (size_t i = 0; h && i < h->n; i++) {
            child_t *c = s_child(self, h->inst[i].name);
            if (c && !c->kill_at)
                job_add_result(job, &h->inst[i], h->ok[i], true,
                               h->ok[i] ? "healthy" : "not healthy");
        }
        for (size_t i = 0; i < self->n_list_extra; i++)
            job_add_result(job, &self->list_extra[i], true, true, "healthy (list-extra)");
        s_end(self, fj, true);
        return;
    }
    default:
        snprintf(fj->error, sizeof fj->error, "unsupported job kind");
        s_end(self, fj, false);
        return;
    }
}

static int s_on_tick(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    fake_t *self = arg;
    s_reap(self);
    /* s_advance may remove the job it advances: walk a snapshot. */
    size_t n = self->n_jobs;
    if (n == 0)
        return 0;
    fake_job_t **snap = malloc(n * sizeof *snap);
    if (!snap)
        return 0;
    memcpy(snap, self->jobs, n * sizeof *snap);
    for (size_t i = 0; i < n; i++)
        s_advance(self, snap[i]);
    free(snap);
    return 0;
}

/* exec_start_fn */
static int s_start(void *arg, job_t *job, char *err, size_t errlen)
{
    fake_t *self = arg;
    if (job->kind == TIDE__V1__JOB_KIND__JOB_PROFILE) {
        /* Profiles are real perf or nothing: the job fails with this reason. */
        snprintf(err, errlen, "the fake executor takes no profiles (use tide-executor)");
        return -ENOTSUP;
    }
    bool acting = job->kind == TIDE__V1__JOB_KIND__JOB_SCALE_UP ||
                  job->kind == TIDE__V1__JOB_KIND__JOB_SCALE_DOWN;
    if (acting)
        self->jobs_started++;
    else
        self->lists_started++;
    job->state = TIDE__V1__JOB_STATE__JOB_RUNNING;
    if (acting && self->stall_n > 0) {
        self->stall_n--;
        self->jobs_stalled++;
        job->holds_instances = false;
        log_warn("told to stall: this job never finishes", "job=%s", job->id);
        return 0;
    }
    fake_job_t *fj = calloc(1, sizeof *fj);
    if (fj)
        fj->started = calloc(job->n_instances ? job->n_instances : 1, sizeof *fj->started);
    if (!fj || !fj->started) {
        free(fj);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    fj->job = job;
    fj->not_before = clock_mono_ms() + (uint64_t)self->delay_ms;
    if (acting && self->fail_n > 0) {
        self->fail_n--;
        fj->fail = true;
    }
    if (acting && self->crash) {
        self->crash = false;
        fj->crash = true;
    }
    if (job->kind == TIDE__V1__JOB_KIND__JOB_SCALE_UP && !fj->fail) {
        for (size_t i = 0; i < job->n_instances; i++) {
            if (s_child(self, job->instances[i].name))
                continue; /* already running: adopted, not ours to stop on failure */
            pid_t pid = s_spawn(self, &job->instances[i]);
            if (pid < 0) {
                snprintf(err, errlen, "cannot start %s: %s", job->instances[i].name,
                         strerror((int)-pid));
                for (size_t k = 0; k < fj->n_started; k++) {
                    child_t *c = s_child_by_pid(self, fj->started[k]);
                    if (c)
                        s_stop_child(c);
                }
                free(fj->started);
                free(fj);
                return (int)pid;
            }
            fj->started[fj->n_started++] = pid;
            s_child_by_pid(self, pid)->starting = fj;
        }
        fj->health = s_health_start(job->instances, job->n_instances, self->cfg->app.health_path,
                                    self->cfg->app.health_timeout_ms, false);
    } else if (job->kind == TIDE__V1__JOB_KIND__JOB_SCALE_DOWN && !fj->fail) {
        for (size_t i = 0; i < job->n_instances; i++) {
            child_t *c = s_child(self, job->instances[i].name);
            if (c) {
                s_stop_child(c);
                fj->started[fj->n_started++] = c->pid; /* waited for in the stop phase */
            }
        }
        fj->stopping = true;
    } else if (job->kind == TIDE__V1__JOB_KIND__JOB_LIST) {
        job_instance_t *snap = calloc(self->n_children + 1, sizeof *snap);
        size_t n = 0;
        for (size_t i = 0; snap && i < self->n_children; i++)
            if (!self->children[i].dead && !self->children[i].kill_at)
                snap[n++] = self->children[i].inst;
        if (snap)
            fj->health = s_health_start(snap, n, self->cfg->app.health_path, 1000, true);
        free(snap);
    }
    if (job->kind != TIDE__V1__JOB_KIND__JOB_SCALE_DOWN && !fj->fail && !fj->health) {
        snprintf(err, errlen, "cannot start the health check thread");
        for (size_t k = 0; k < fj->n_started; k++) {
            child_t *c = s_child_by_pid(self, fj->started[k]);
            if (c) {
                c->starting = NULL;
                s_stop_child(c);
            }
        }
        free(fj->started);
        free(fj);
        return -ENOMEM;
    }
    if (self->n_jobs == self->cap_jobs) {
        size_t cap = self->cap_jobs ? self->cap_jobs * 2 : 16;
        fake_job_t **jobs = realloc(self->jobs, cap * sizeof *jobs);
        if (!jobs)
            abort(); /* a few pointers: out of memory here ends the test run anyway */
        self->jobs = jobs;
        self->cap_jobs = cap;
    }
    self->jobs[self->n_jobs++] = fj;
    job->runner_data = fj;
    return 0;
}

/* exec_admit_fn: "hang N" */
static bool s_admit(void *arg)
{
    fake_t *self = arg;
    if (self->hang_n > 0) {
        self->hang_n--;
        self->unanswered++;
        return false;
    }
    return true;
}

/* ---- the misbehaviour control socket ---------------------------------------------------- */

static void s_stats_json(fake_t *self, char *out, size_t len)
{
    exec_server_stats_t st;
    exec_server_stats(self->server, &st);
    size_t o = (size_t)snprintf(
        out, len,
        "{\"jobs_started\":%llu,\"jobs_succeeded\":%llu,\"jobs_failed\":%llu,"
        "\"jobs_stalled\":%llu,\"lists_started\":%llu,\"requests\":%llu,\"refused\":%llu,"
        "\"malformed\":%llu,"
        "\"unanswered\":%llu,\"fail\":%d,\"stall\":%d,\"hang\":%d,\"delay_ms\":%d,"
        "\"crash\":%s,\"children\":[",
        (unsigned long long)self->jobs_started, (unsigned long long)self->jobs_succeeded,
        (unsigned long long)self->jobs_failed, (unsigned long long)self->jobs_stalled,
        (unsigned long long)self->lists_started, (unsigned long long)st.requests,
        (unsigned long long)st.refused, (unsigned long long)st.malformed,
        (unsigned long long)self->unanswered, self->fail_n, self->stall_n, self->hang_n,
        self->delay_ms, self->crash ? "true" : "false");
    bool first = true;
    for (size_t i = 0; i < self->n_children && o < len; i++) {
        const child_t *c = &self->children[i];
        if (c->dead)
            continue;
        o += (size_t)snprintf(out + o, len - o, "%s\"%s\"", first ? "" : ",", c->inst.name);
        first = false;
    }
    if (o < len)
        snprintf(out + o, len - o, "]}");
}

static int s_parse_count(const char *text, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < 0 || v > 1000000000)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

/* "list-extra NAME HOST PORT": the line is parsed as a playbook's list line would be, so the
 * entry is one the real executor could report. */
static void s_list_extra(fake_t *self, const char *args, char *reply, size_t len)
{
    char line[128];
    job_result_t r;
    snprintf(line, sizeof line, "%s 1", args);
    if (self->n_list_extra == sizeof self->list_extra / sizeof self->list_extra[0]) {
        snprintf(reply, len, "error: at most 8 list-extra entries (reset clears them)");
        return;
    }
    if (jobs_parse_list_line(line, self->cfg->app.name_prefix, &r) != 0) {
        snprintf(reply, len, "error: list-extra NAME HOST PORT (NAME %s<N>, HOST numeric)",
                 self->cfg->app.name_prefix);
        return;
    }
    self->list_extra[self->n_list_extra++] = r.instance;
}

static int s_on_control(zloop_t *loop, zsock_t *sock, void *arg)
{
    (void)loop;
    fake_t *self = arg;
    zmsg_t *msg = zmsg_recv_nowait(sock);
    if (!msg)
        return 0;
    char cmd[128] = "";
    zframe_t *f = zmsg_first(msg);
    if (zmsg_size(msg) == 1 && zframe_size(f) < sizeof cmd)
        memcpy(cmd, zframe_data(f), zframe_size(f));
    zmsg_destroy(&msg);
    cmd[strcspn(cmd, "\r\n")] = '\0';
    char verb[32] = "", rest[96] = "";
    sscanf(cmd, "%31s %95[^\n]", verb, rest);
    char reply[8192] = "ok";
    int n = 0;
    if (strcmp(verb, "stats") == 0) {
        s_stats_json(self, reply, sizeof reply);
    } else if (strcmp(verb, "reset") == 0) {
        self->fail_n = self->stall_n = self->hang_n = self->delay_ms = 0;
        self->crash = false;
        self->n_list_extra = 0;
    } else if (strcmp(verb, "list-extra") == 0) {
        s_list_extra(self, rest, reply, sizeof reply);
    } else if (strcmp(verb, "crash") == 0) {
        self->crash = true;
    } else if ((strcmp(verb, "fail") == 0 || strcmp(verb, "delay") == 0 ||
                strcmp(verb, "stall") == 0 || strcmp(verb, "hang") == 0) &&
               s_parse_count(rest, &n) == 0) {
        if (verb[0] == 'f')
            self->fail_n = n;
        else if (verb[0] == 'd')
            self->delay_ms = n;
        else if (verb[0] == 's')
            self->stall_n = n;
        else
            self->hang_n = n;
    } else {
        snprintf(reply, sizeof reply,
                 "error: unknown command '%.60s' (fail N, delay MS, stall N, hang N, crash, "
                 "list-extra NAME HOST PORT, reset, stats)",
                 cmd);
    }
    if (strcmp(verb, "stats") != 0)
        log_info("control command", "cmd=\"%.60s\" reply=\"%.120s\"", cmd, reply);
    zstr_send(sock, reply);
    return 0;
}

/* ---- main -------------------------------------------------------------------------------- */

/* Takes --control ENDPOINT (or --control=ENDPOINT) out of argv, since config_from_args refuses
 * arguments it does not know. Returns the new argc. */
static int s_take_control(int argc, char **argv, const char **endpoint)
{
    int o = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--control") == 0 && i + 1 < argc) {
            *endpoint = argv[++i];
            continue;
        }
        if (strncmp(argv[i], "--control=", 10) == 0) {
            *endpoint = argv[i] + 10;
            continue;
        }
        argv[o++] = argv[i];
    }
    argv[o] = NULL;
    return o;
}

int main(int argc, char **argv)
{
    const char *control_ep = NULL;
    argc = s_take_control(argc, argv, &control_ep);
    tide_config_t cfg;
    char id[128];
    config_from_args(argc, argv, "tide-fake-executor", &cfg, id, sizeof id);
    log_init("fake-executor", LOGL_INFO);

    fake_t self = {.cfg = &cfg};
    self.server = exec_server_new(&cfg, "fake-executor", id, true);
    if (!self.server)
        return 1;
    exec_server_set_runner(self.server, s_start, s_admit, &self);
    zloop_t *loop = exec_server_loop(self.server);
    if (control_ep) {
        self.control = zsock_new(ZMQ_REP);
        if (!self.control || zsock_bind(self.control, "%s", control_ep) < 0) {
            log_error("cannot bind the --control socket", "endpoint=%s err=%s", control_ep,
                      zmq_strerror(errno));
            zsock_destroy(&self.control);
            exec_server_destroy(&self.server);
            return 1;
        }
        zsock_set_linger(self.control, 0);
        zloop_reader(loop, self.control, s_on_control, &self);
        zloop_reader_set_tolerant(loop, self.control);
    }
    zloop_timer(loop, TICK_MS, 0, s_on_tick, &self);
    log_info("fake executor started", "control=%s events=%s misbehave=%s",
             cfg.endpoints.executor_control, cfg.endpoints.executor_events,
             control_ep ? control_ep : "-");

    exec_server_run(self.server);

    /* Stop: health threads first (they read job data), then every child, SIGKILL after the
     * grace period. */
    log_info("fake executor stopping", "children=%zu", self.n_children);
    while (self.n_jobs > 0) {
        fake_job_t *fj = self.jobs[0];
        s_forget_job(&self, fj);
    }
    for (size_t i = 0; i < self.n_children; i++)
        s_stop_child(&self.children[i]);
    uint64_t until = clock_mono_ms() + STOP_GRACE_MS;
    for (;;) {
        s_reap(&self);
        bool any = false;
        for (size_t i = 0; i < self.n_children; i++)
            any = any || !self.children[i].dead;
        if (!any)
            break;
        if (clock_mono_ms() >= until) {
            for (size_t i = 0; i < self.n_children; i++)
                if (!self.children[i].dead)
                    kill(self.children[i].pid, SIGKILL);
        }
        usleep(20 * 1000);
    }
    free(self.children);
    free(self.jobs);
    zsock_destroy(&self.control);
    exec_server_destroy(&self.server);
    log_info("fake executor stopped", "%s", "");
    return 0;
}
