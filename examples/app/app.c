/* app.c - tide-sample-app: the demo HTTP service tide scales; parses arguments, starts the
 * server, waits for SIGTERM or SIGINT and drains. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, sched_getaffinity */
#endif
#include "app_config.h"
#include "app_log.h"
#include "app_server.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define DRAIN_NS   (5ull * 1000000000ull) /* in-flight requests get this long after SIGTERM */
#define MAX_LOOPS  8
#define MAX_WORKER 64

/* CPUs this process may run on, which in a container can be fewer than the machine has. */
static int s_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Thousands of keep-alive connections need more descriptors than the usual soft limit of
 * 1024; the hard limit is ours to take. Returns the soft limit now in force. */
static long s_raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? -1 : (long)rl.rlim_cur;
}

int main(int argc, char **argv)
{
    app_config_t cfg;
    int rc = app_config_parse(&cfg, argc, argv, stdout, stderr);
    if (rc > 0)
        return 0;
    if (rc < 0)
        return 2;
    if (app_log_init() != 0)
        app_warn("ignoring TIDE_LOG_LEVEL", "want=%s", "debug|info|warn|error");

    /* Signals are taken by sigwait in this thread only, so they are blocked before any other
     * thread exists to inherit the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    long fd_limit = s_raise_fd_limit();
    /* A crash leaves a core where the host's core_pattern allows one: the soft limit up to
     * the hard one (never past it; no sysctl is touched). */
    struct rlimit core;
    if (getrlimit(RLIMIT_CORE, &core) == 0 && core.rlim_cur != core.rlim_max) {
        core.rlim_cur = core.rlim_max;
        if (setrlimit(RLIMIT_CORE, &core) != 0)
            app_warn("core dumps stay limited", "err=\"%s\"", strerror(errno));
    }
    char bound[96];
    int fd = server_listen(&cfg, bound, sizeof bound);
    if (fd < 0) {
        app_error("cannot listen", "addr=%s err=\"%s\"", cfg.listen, strerror(-fd));
        return 1;
    }
    int cpus = s_cpus();
    int loops = cpus < MAX_LOOPS ? cpus : MAX_LOOPS;
    int workers = cpus < MAX_WORKER ? cpus : MAX_WORKER;
    server_t *server = server_new(&cfg, fd, loops, workers);
    if (!server) {
        app_error("cannot start", "err=\"%s\"", strerror(errno));
        return 1;
    }
    app_info("listening",
             "addr=%s name=%s health_path=%s delay_ms=%ld cpu_us=%ld concurrency=%ld loops=%d "
             "fd_limit=%ld pid=%ld",
             bound, cfg.name, cfg.health_path, cfg.delay_ms, cfg.cpu_us, cfg.concurrency, loops,
             fd_limit, (long)getpid());

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    app_info("draining", "signal=%s name=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg.name);
    uint64_t deadline = server_now_ns() + DRAIN_NS;
    server_drain(server, deadline);
    bool clean = server_wait(server, deadline);
    uint64_t requests = server_requests(server);
    uint64_t rejected = server_rejected(server);
    server_destroy(&server);
    if (clean)
        app_info("exiting", "name=%s requests=%llu rejected=%llu", cfg.name,
                 (unsigned long long)requests, (unsigned long long)rejected);
    else
        app_warn("exiting", "name=%s requests=%llu rejected=%llu drain=timeout", cfg.name,
                 (unsigned long long)requests, (unsigned long long)rejected);
    return 0;
}
