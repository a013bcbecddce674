/* main.c - tide-proxy: loads the config, starts the workers, the pool watcher and the stats
 * publisher, then waits for SIGTERM/SIGINT and drains. */
#include <errno.h>
#include <http_parser.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool.h"
#include "stats.h"
#include "tide_clock.h"
#include "tide_config.h"
#include "tide_log.h"
#include "tide_msg.h"
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
    log_info("started", "listen=%s workers=%d stats=%s scaler_events=%s redis=%s:%d service=%s",
             cfg.proxy.listen, n, publish ? cfg.endpoints.stats : "off",
             cfg.endpoints.scaler_events, cfg.redis.host, cfg.redis.port, cfg.service);

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
