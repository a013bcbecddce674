/* main.c - tide-proxy: loads the config, starts the workers, the pool watcher and the stats
 * publisher, then waits for SIGTERM/SIGINT and drains. */
#include <errno.h>
#include <http_parser.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "pool.h"
#include "stats.h"
#include "tide_clock.h"
#include "tide_config.h"
#include "tide_log.h"
#include "tide_msg.h"
#include "tide_redis.h"
#include "worker.h"

typedef struct {
    worker_t **workers;
    int n;
} workers_t;

/* The pool watcher's sink: every worker gets the new snapshot. */
static void s_hand_pool(void *arg, pool_t *pool)
{
    workers_t *ws = arg;
    for (int i = 0; i < ws->n; i++)
        worker_set_pool(ws->workers[i], pool);
}

/* Descriptors the proxy needs besides those of clients and upstream connections: stdio, the
 * bus and Redis sockets, czmq's, the signal mask's; per worker its loop, listener (and the
 * listener's spare), async, libuv's spare. */
#define FD_FIXED      64
#define FD_PER_WORKER 8

/* Raises the soft limit of open files to the hard one, and checks what the config needs fits:
 * one per client connection (max_connections), the idle pools (workers x
 * upstream_idle_per_instance x scaler.max instances) and the fixed part. A client's own
 * upstream connection, while its request is in flight, is taken from what is left: when none
 * is left that request gets 503 (the proxy's own failure, no instance blamed). Returns 0, or
 * -EMFILE when the config cannot fit (logged). */
static int s_fd_limits(const tide_config_t *cfg, int nworkers)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        log_warn("cannot read the open files limit", "err=\"%s\"", strerror(errno));
        return 0;
    }
    rlim_t old = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            log_warn("cannot raise the open files limit", "soft=%llu hard=%llu err=\"%s\"",
                     (unsigned long long)old, (unsigned long long)rl.rlim_max, strerror(errno));
            rl.rlim_cur = old;
        }
    }
    uint64_t idle = (uint64_t)nworkers * (uint64_t)cfg->proxy.upstream_idle_per_instance *
                    (uint64_t)cfg->scaler.max;
    uint64_t fixed = FD_FIXED + (uint64_t)FD_PER_WORKER * (uint64_t)nworkers;
    uint64_t need = (uint64_t)cfg->proxy.max_connections + idle + fixed;
    uint64_t have = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    log_info("open files limit", "old=%llu new=%llu hard=%llu need=%llu", (unsigned long long)old,
             (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
             (unsigned long long)need);
    if (need > have) {
        log_error("the open files limit cannot hold proxy.max_connections",
                  "limit=%llu need=%llu max_connections=%d idle_pools=%llu fixed=%llu "
                  "hint=\"lower proxy.max_connections or proxy.upstream_idle_per_instance, or "
                  "raise the hard limit (ulimit -Hn, LimitNOFILE=)\"",
                  (unsigned long long)have, (unsigned long long)need, cfg->proxy.max_connections,
                  (unsigned long long)idle, (unsigned long long)fixed);
        return -EMFILE;
    }
    uint64_t busy = (have - need) < (uint64_t)cfg->proxy.max_connections
                        ? have - need
                        : (uint64_t)cfg->proxy.max_connections;
    if (busy < (uint64_t)cfg->proxy.max_connections)
        log_warn("not every client can have a request in flight at once",
                 "limit=%llu in_flight_max=%llu max_connections=%d past_it=503",
                 (unsigned long long)have, (unsigned long long)busy, cfg->proxy.max_connections);
    return 0;
}

/* Waits up to ms for a signal in set; returns it, or 0 on timeout. */
static int s_wait_signal(const sigset_t *set, int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    int sig = sigtimedwait(set, NULL, ms < 0 ? NULL : &ts);
    return sig > 0 ? sig : 0;
}

int main(int argc, char **argv)
{
    tide_config_t cfg;
    char id[128];
    config_from_args(argc, argv, "tide-proxy", &cfg, id, sizeof id);
    log_init("proxy", LOGL_INFO);
    char err[1024];
    if (redis_auth_load(&cfg, REDIS_ROLE_READER, err, sizeof err) != 0) {
        fprintf(stderr, "tide-proxy: %s\n", err);
        return 2;
    }
    msg_sender_t sender;
    msg_sender_init(&sender, "proxy", id);

    /* Signals are taken by sigtimedwait on this thread only: block them before any thread
     * starts (so every thread inherits the mask) and keep czmq's handler out of the way. */
    zsys_handler_set(NULL);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    http_parser_set_max_header_size((uint32_t)cfg.proxy.max_header_size);

    int n = cfg.proxy.workers;
    if (n <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (int)cpus : 1;
    }
    if (s_fd_limits(&cfg, n) != 0)
        return 1;
    stats_t *stats = stats_new(n);
    worker_t **workers = calloc((size_t)n, sizeof *workers);
    if (!stats || !workers) {
        log_error("out of memory", "%s", "");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        int err = 0;
        workers[i] = worker_new(i, n, &cfg, stats, &err);
        if (!workers[i]) {
            log_error("cannot listen", "addr=%s err=\"%s\"", cfg.proxy.listen, uv_strerror(err));
            return 1;
        }
    }
    workers_t ws = {.workers = workers, .n = n};
    zactor_t *watcher = pool_watcher_new(&cfg, s_hand_pool, &ws);
    /* proxy.stats: off keeps the counters (they cost a few stores per request) but opens no
     * stats socket and builds no message: the benchmark's baseline for the publishing cost. */
    bool publish = strcmp(cfg.proxy.stats, "off") != 0;
    zactor_t *publisher = publish ? stats_publisher_new(stats, &cfg, &sender) : NULL;
    if (!watcher || (publish && !publisher)) {
        log_error("cannot start the pool watcher or the stats publisher", "%s", "");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        int rc = worker_start(workers[i]);
        if (rc != 0) {
            log_error("cannot start a worker thread", "err=\"%s\"", uv_strerror(rc));
            return 1;
        }
    }
    log_info("started",
             "listen=%s workers=%d stats=%s scaler_events=%s redis=%s:%d redis_user=%s service=%s",
             cfg.proxy.listen, n, publish ? cfg.endpoints.stats : "off",
             cfg.endpoints.scaler_events, cfg.redis.host, cfg.redis.port,
             cfg.redis.auth_password[0] ? (cfg.redis.auth_user[0] ? cfg.redis.auth_user : "default")
                                        : "none",
             cfg.service);

    int sig;
    while ((sig = s_wait_signal(&sigs, -1)) == 0)
        ; /* EINTR (a debugger attaching, a signal outside the set): keep waiting */
    log_info("draining", "signal=%d in_flight_deadline_ms=%d", sig, cfg.proxy.drain_timeout_ms);
    for (int i = 0; i < n; i++)
        worker_drain(workers[i]);
    uint64_t deadline = clock_mono_ms() + (uint64_t)cfg.proxy.drain_timeout_ms;
    bool forced = false;
    while (true) {
        bool all = true;
        for (int i = 0; i < n; i++)
            all = all && worker_drained(workers[i]);
        if (all)
            break;
        if (clock_mono_ms() >= deadline) {
            forced = true;
            break;
        }
        if (s_wait_signal(&sigs, 20)) {
            forced = true; /* a second signal: stop now */
            break;
        }
    }
    /* No pool may reach a worker once it stops: the watcher goes first. */
    zactor_destroy(&watcher);
    for (int i = 0; i < n; i++)
        worker_stop(workers[i]);
    for (int i = 0; i < n; i++)
        worker_destroy(&workers[i]);
    zactor_destroy(&publisher);
    free(workers);
    stats_destroy(&stats);
    log_info("stopped", "forced=%d", forced);
    return 0;
}
