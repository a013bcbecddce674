/* worker.c - one libuv loop per thread: listener, pool updates, shutdown (see worker.h). */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balancer.h"
#include "client.h"
#include "tide_clock.h"
#include "tide_log.h"

#define SPARE_MAX             64 /* parsing buffers a worker keeps for its clients to borrow */
#define SPARE_KEEP_MAX        (32 * 1024) /* a larger one (a huge head went through) is freed */
#define OVERFLOW_MAX          256         /* connections being told 503 at once; past it: closed */
#define ACCEPT_BACKOFF_MIN_MS 100         /* out of descriptors: accepting pauses this long, */
#define ACCEPT_BACKOFF_MAX_MS 1000        /* doubling up to this while it stays so */

/* Client connections of every worker of the process, against proxy.max_connections: one
 * atomic add when a connection opens and one when it closes, never per request. */
static uint32_t s_clients_total;

struct worker {
    int index;
    const tide_config_t *cfg;
    stats_t *stats;
    stats_worker_t *st;
    upstream_opts_t uopts;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t async;
    timeouts_t timeouts; /* the clients' */
    uv_thread_t thread;
    bool started;

    pthread_mutex_t mu; /* guards the three requests below, posted by other threads */
    pool_t *posted_pool;
    bool posted_drain, posted_stop;

    pool_t *pool;           /* applied */
    instance_t *instances;  /* those in the pool and those draining after they left */
    size_t ninstances;      /* atomic: the length of instances (tests read it) */
    uv_timer_t sweep;       /* while some instance drains: frees it once it is done */
    instance_t **active;    /* those in the pool */
    balancer_cand_t *cands; /* scratch for worker_pick, same size as active */
    size_t n_active, cap_active;
    list_node_t clients;
    uint32_t nclients, noverflow, max_clients;
    buf_t scratch;
    parse_bufs_t *spares[SPARE_MAX];
    int nspares;
    bool draining, listening, stopping;
    /* Accepting paused (out of descriptors): the listener handle is closed, keep_fd (a dup of
     * its socket) keeps the socket and its backlog, so clients wait rather than being refused;
     * accept_timer reopens it. */
    int keep_fd;
    bool listener_closed;
    int accept_backoff_ms;
    uv_timer_t accept_timer;
    int drained; /* atomic */
    uint64_t rng;
};

static void s_on_rejected_close(uv_handle_t *h)
{
    free(h);
}

/* Past the limit with too many 503s already under way: accept and close at once. */
static void s_reject_now(worker_t *self, uv_stream_t *server)
{
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t)
        return;
    uv_tcp_init(&self->loop, t);
    uv_accept(server, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, s_on_rejected_close);
}

static void s_pause_accept(worker_t *self, int status);

static void s_on_connection(uv_stream_t *server, int status)
{
    worker_t *self = server->data;
    if (status < 0) {
        if (status == UV_EMFILE || status == UV_ENFILE) {
            /* libuv's spare descriptor is gone too (its trick closes the queued connections
             * while it has one): it would retry accept in a loop. */
            s_pause_accept(self, status);
            return;
        }
        log_once_per_kind("accept", "accept failed", uv_strerror(status));
        return;
    }
    self->accept_backoff_ms = 0;
    /* The listener keeps accepting: up to max_connections a connection is served, past it
     * it is told 503 and closed, rather than left waiting in the backlog. */
    bool over = __atomic_add_fetch(&s_clients_total, 1, __ATOMIC_RELAXED) > self->max_clients;
    if (over) {
        __atomic_sub_fetch(&s_clients_total, 1, __ATOMIC_RELAXED);
        log_once_per_kind("max-connections", "client connection refused with 503",
                          "proxy.max_connections reached");
        if (self->noverflow >= OVERFLOW_MAX) {
            s_reject_now(self, server);
            return;
        }
    }
    if (client_accept(self, server, &self->clients, over) == 0) {
        self->nclients++;
        self->noverflow += over;
        STAT_SET(self->st->connections, self->nclients);
    } else if (!over) {
        __atomic_sub_fetch(&s_clients_total, 1, __ATOMIC_RELAXED);
    }
}

static int s_listen(worker_t *self)
{
    char host[CFG_STR];
    int port;
    struct sockaddr_storage sa;
    if (config_split_addr(self->cfg->proxy.listen, host, sizeof host, &port) != 0)
        return -EINVAL;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&sa) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa) != 0)
        return -EINVAL;
    /* libuv 1.44 has no UV_TCP_REUSEPORT: make the socket ourselves and hand it over. */
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa,
             sa.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) !=
            0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    int rc = uv_tcp_init(&self->loop, &self->listener);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    self->listener.data = self;
    self->listening = true;
    rc = uv_tcp_open(&self->listener, fd);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    self->keep_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0); /* -1: accepting cannot pause */
    return uv_listen((uv_stream_t *)&self->listener, 1024, s_on_connection);
}

static void s_on_listener_closed(uv_handle_t *h)
{
    worker_t *self = h->data;
    self->listener_closed = true;
}

static void s_on_accept_timer(uv_timer_t *t)
{
    worker_t *self = t->data;
    if (self->draining || self->keep_fd < 0)
        return;
    if (!self->listener_closed) {
        uv_timer_start(&self->accept_timer, s_on_accept_timer, 10, 0);
        return;
    }
    int fd = fcntl(self->keep_fd, F_DUPFD_CLOEXEC, 0);
    int rc = fd < 0 ? -errno : uv_tcp_init(&self->loop, &self->listener);
    if (rc == 0) {
        self->listener.data = self;
        self->listener_closed = false;
        self->listening = true;
        rc = uv_tcp_open(&self->listener, fd);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&self->listener, 1024, s_on_connection);
        if (rc != 0) {
            self->listening = false;
            uv_close((uv_handle_t *)&self->listener, s_on_listener_closed);
        }
    } else if (fd >= 0) {
        close(fd);
    }
    if (rc != 0) {
        int next = self->accept_backoff_ms * 2;
        self->accept_backoff_ms = next > ACCEPT_BACKOFF_MAX_MS ? ACCEPT_BACKOFF_MAX_MS : next;
        uv_timer_start(&self->accept_timer, s_on_accept_timer, (uint64_t)self->accept_backoff_ms,
                       0);
        return;
    }
    log_info("accepting again", "worker=%d", self->index);
}

/* Out of descriptors: stop accepting for a while (the backlog keeps the clients waiting). */
static void s_pause_accept(worker_t *self, int status)
{
    if (!self->listening || self->keep_fd < 0 || self->draining)
        return;
    log_warn("accepting paused: out of file descriptors", "worker=%d err=%s backoff_ms=%d",
             self->index, uv_err_name(status),
             self->accept_backoff_ms ? self->accept_backoff_ms : ACCEPT_BACKOFF_MIN_MS);
    self->listening = false;
    uv_close((uv_handle_t *)&self->listener, s_on_listener_closed);
    int next = self->accept_backoff_ms ? self->accept_backoff_ms * 2 : ACCEPT_BACKOFF_MIN_MS;
    self->accept_backoff_ms = next > ACCEPT_BACKOFF_MAX_MS ? ACCEPT_BACKOFF_MAX_MS : next;
    uv_timer_start(&self->accept_timer, s_on_accept_timer, (uint64_t)self->accept_backoff_ms, 0);
}

/* ---- pool --------------------------------------------------------------------------- */

static instance_t *s_find(worker_t *self, const pool_entry_t *e)
{
    for (instance_t *i = self->instances; i; i = i->next)
        if (strcmp(i->name, e->name) == 0 && strcmp(i->addr, e->addr) == 0)
            return i;
    return NULL;
}

static void s_sweep(worker_t *self);

static void s_on_sweep(uv_timer_t *t)
{
    s_sweep(t->data);
}

/* Frees the instances that left the pool and have nothing left (instance_drained), and gives
 * their stats slots back; checks again in a second while some still drain. */
static void s_sweep(worker_t *self)
{
    bool draining = false;
    instance_t **pp = &self->instances;
    while (*pp) {
        instance_t *i = *pp;
        if (i->in_pool || !instance_drained(i)) {
            draining = draining || !i->in_pool;
            pp = &i->next;
            continue;
        }
        *pp = i->next;
        instance_shutdown(i); /* closes the probe's timer; nothing else is open */
        stats_release(self->stats, i->name, i->addr, self->index);
        instance_destroy(&i);
        __atomic_store_n(&self->ninstances, self->ninstances - 1, __ATOMIC_RELAXED);
    }
    if (!draining)
        uv_timer_stop(&self->sweep);
    else if (!uv_is_active((uv_handle_t *)&self->sweep) && !self->stopping)
        uv_timer_start(&self->sweep, s_on_sweep, 1000, 1000);
}

static void s_apply(worker_t *self, pool_t *pool)
{
    if (pool->n > self->cap_active) {
        instance_t **a = realloc(self->active, pool->n * sizeof *a);
        if (a)
            self->active = a;
        balancer_cand_t *c = realloc(self->cands, pool->n * sizeof *c);
        if (c)
            self->cands = c;
        if (!a || !c) {
            log_error("out of memory applying the pool", "version=%llu",
                      (unsigned long long)pool->version);
            return;
        }
        self->cap_active = pool->n;
    }
    for (instance_t *i = self->instances; i; i = i->next)
        i->listed = false;
    size_t n = 0;
    for (size_t k = 0; k < pool->n; k++) {
        const pool_entry_t *e = &pool->entries[k];
        instance_t *inst = s_find(self, e);
        if (!inst) {
            stats_counters_t *slot = stats_instance(self->stats, e->name, e->addr, self->index);
            inst = slot ? instance_new(&self->loop, &self->uopts, e->name, e->addr, slot) : NULL;
            if (!inst) {
                log_once_per_kind("pool-entry", "cannot use a pool entry", e->addr);
                continue;
            }
            inst->next = self->instances;
            self->instances = inst;
            __atomic_store_n(&self->ninstances, self->ninstances + 1, __ATOMIC_RELAXED);
        }
        inst->listed = true;
        self->active[n++] = inst;
    }
    self->n_active = n;
    for (instance_t *i = self->instances; i; i = i->next) {
        /* Leaving: in-flight requests finish, idle connections close, nothing new. */
        instance_set_in_pool(i, i->listed);
        STAT_SET(i->stats->in_pool, i->in_pool ? 1 : 0);
    }
    s_sweep(self); /* before the version shows: the pool is applied once it is done */
    pool_unref(&self->pool);
    self->pool = pool_ref(pool);
    STAT_SET(self->st->pool_version, pool->version);
    STAT_SET(self->st->pool_applied, 1);
}

static void s_check_drained(worker_t *self)
{
    if (self->draining && self->nclients == 0)
        __atomic_store_n(&self->drained, 1, __ATOMIC_RELEASE);
}

static void s_close_listener(worker_t *self)
{
    if (self->listening) {
        self->listening = false;
        uv_close((uv_handle_t *)&self->listener, NULL);
    }
    uv_timer_stop(&self->accept_timer);
    if (self->keep_fd >= 0) {
        close(self->keep_fd); /* the socket itself closes: nothing queues there any more */
        self->keep_fd = -1;
    }
}

static void s_on_async(uv_async_t *a)
{
    worker_t *self = a->data;
    pthread_mutex_lock(&self->mu);
    pool_t *pool = self->posted_pool;
    self->posted_pool = NULL;
    bool drain = self->posted_drain, stop = self->posted_stop;
    pthread_mutex_unlock(&self->mu);

    if (pool) {
        s_apply(self, pool);
        pool_unref(&pool);
    }
    if ((drain || stop) && !self->draining) {
        self->draining = true;
        s_close_listener(self);
        list_node_t *n = self->clients.next;
        while (n != &self->clients) {
            list_node_t *next = n->next; /* client_drain may unlink n */
            client_drain(client_of(n));
            n = next;
        }
        s_check_drained(self);
    }
    if (stop) {
        list_node_t *n = self->clients.next;
        while (n != &self->clients) {
            list_node_t *next = n->next;
            client_abort(client_of(n));
            n = next;
        }
        for (instance_t *i = self->instances; i; i = i->next)
            instance_shutdown(i);
        self->stopping = true;
        uv_close((uv_handle_t *)&self->sweep, NULL);
        uv_close((uv_handle_t *)&self->accept_timer, NULL);
        timeouts_close(&self->timeouts, NULL); /* every client is closing: none is set */
        uv_close((uv_handle_t *)&self->async, NULL);
    }
}

static void s_run(void *arg)
{
    worker_t *self = arg;
    char name[16];
    snprintf(name, sizeof name, "tide-w%d", self->index);
    pthread_setname_np(pthread_self(), name); /* as top -H and perf show it */
    uv_run(&self->loop, UV_RUN_DEFAULT);
}

worker_t *worker_new(int index, int nworkers, const tide_config_t *cfg, stats_t *stats, int *err)
{
    worker_t *self = calloc(1, sizeof *self);
    if (!self) {
        *err = -ENOMEM;
        return NULL;
    }
    self->index = index;
    self->cfg = cfg;
    self->stats = stats;
    self->st = stats_worker(stats, index);
    self->uopts = (upstream_opts_t){
        .connect_timeout_ms = cfg->proxy.connect_timeout_ms,
        .response_timeout_ms = cfg->proxy.response_timeout_ms,
        /* Below the usual server keep-alive timeouts (5 s and up), so tide closes an idle
         * connection before the instance does and the keep-alive race stays rare. */
        .idle_timeout_ms = cfg->proxy.idle_timeout_ms < 4000 ? cfg->proxy.idle_timeout_ms : 4000,
        .idle_max = cfg->proxy.upstream_idle_per_instance,
        .max_header_size = (size_t)cfg->proxy.max_header_size,
        .down_backoff_ms = cfg->proxy.down_backoff_ms,
        .down_backoff_max_ms = cfg->proxy.down_backoff_max_ms < cfg->proxy.down_backoff_ms
                                   ? cfg->proxy.down_backoff_ms
                                   : cfg->proxy.down_backoff_max_ms,
    };
    (void)nworkers; /* the limit is the process's: every worker counts against it */
    self->max_clients = (uint32_t)cfg->proxy.max_connections;
    self->rng = 0x9E3779B97F4A7C15ULL ^ (clock_mono_us() << 8) ^ (uint64_t)index;
    list_init(&self->clients);
    pthread_mutex_init(&self->mu, NULL);
    int rc = uv_loop_init(&self->loop);
    if (rc != 0) {
        pthread_mutex_destroy(&self->mu);
        free(self);
        *err = rc;
        return NULL;
    }
    uv_async_init(&self->loop, &self->async, s_on_async);
    self->async.data = self;
    uv_timer_init(&self->loop, &self->sweep);
    self->sweep.data = self;
    uv_timer_init(&self->loop, &self->accept_timer);
    self->accept_timer.data = self;
    self->keep_fd = -1;
    client_timeouts_init(&self->timeouts, &self->loop, cfg);
    rc = s_listen(self);
    if (rc != 0) {
        *err = rc;
        s_close_listener(self);
        timeouts_close(&self->timeouts, NULL);
        uv_close((uv_handle_t *)&self->async, NULL);
        uv_close((uv_handle_t *)&self->sweep, NULL);
        uv_close((uv_handle_t *)&self->accept_timer, NULL);
        uv_run(&self->loop, UV_RUN_DEFAULT);
        uv_loop_close(&self->loop);
        pthread_mutex_destroy(&self->mu);
        free(self);
        return NULL;
    }
    return self;
}

int worker_start(worker_t *self)
{
    int rc = uv_thread_create(&self->thread, s_run, self);
    if (rc == 0)
        self->started = true;
    return rc;
}

void worker_set_pool(worker_t *self, pool_t *pool)
{
    pthread_mutex_lock(&self->mu);
    pool_unref(&self->posted_pool); /* only the newest matters */
    self->posted_pool = pool_ref(pool);
    pthread_mutex_unlock(&self->mu);
    uv_async_send(&self->async);
}

void worker_drain(worker_t *self)
{
    pthread_mutex_lock(&self->mu);
    self->posted_drain = true;
    pthread_mutex_unlock(&self->mu);
    uv_async_send(&self->async);
}

bool worker_drained(worker_t *self)
{
    return __atomic_load_n(&self->drained, __ATOMIC_ACQUIRE) != 0;
}

void worker_stop(worker_t *self)
{
    pthread_mutex_lock(&self->mu);
    self->posted_stop = true;
    pthread_mutex_unlock(&self->mu);
    uv_async_send(&self->async);
}

void worker_destroy(worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    worker_t *self = *self_p;
    if (self->started)
        uv_thread_join(&self->thread);
    /* The loop has ended: every connection and its close callback are done. */
    while (self->instances) {
        instance_t *next = self->instances->next;
        instance_destroy(&self->instances);
        self->instances = next;
    }
    if (uv_loop_close(&self->loop) != 0)
        log_warn("worker loop closed with open handles", "worker=%d", self->index);
    pool_unref(&self->pool);
    pool_unref(&self->posted_pool);
    buf_free(&self->scratch);
    while (self->nspares > 0) {
        parse_bufs_t *pb = self->spares[--self->nspares];
        hdrs_free(&pb->hdrs);
        buf_free(&pb->url);
        free(pb);
    }
    free(self->active);
    free(self->cands);
    pthread_mutex_destroy(&self->mu);
    free(self);
    *self_p = NULL;
}

uv_loop_t *worker_loop(worker_t *self)
{
    return &self->loop;
}

const tide_config_t *worker_cfg(worker_t *self)
{
    return self->cfg;
}

stats_worker_t *worker_stats(worker_t *self)
{
    return self->st;
}

instance_t *worker_pick(worker_t *self, const instance_t *exclude)
{
    if (self->n_active == 0)
        return NULL;
    for (size_t i = 0; i < self->n_active; i++) {
        instance_t *inst = self->active[i];
        self->cands[i] = (balancer_cand_t){
            .in_flight = inst->in_flight, .excluded = inst == exclude, .down = inst->down};
    }
    int k = balancer_pick(self->cands, self->n_active, balancer_random(&self->rng));
    return k < 0 ? NULL : self->active[k];
}

void worker_client_gone(worker_t *self, list_node_t *node, bool overflow)
{
    list_remove(node);
    self->nclients--;
    if (overflow)
        self->noverflow--;
    else
        __atomic_sub_fetch(&s_clients_total, 1, __ATOMIC_RELAXED);
    STAT_SET(self->st->connections, self->nclients);
    s_check_drained(self);
}

timeouts_t *worker_timeouts(worker_t *self)
{
    return &self->timeouts;
}

buf_t *worker_scratch(worker_t *self)
{
    return &self->scratch;
}

parse_bufs_t *worker_lend(worker_t *self)
{
    if (self->nspares > 0)
        return self->spares[--self->nspares];
    parse_bufs_t *pb = calloc(1, sizeof *pb);
    if (pb)
        hdrs_init(&pb->hdrs, (size_t)self->cfg->proxy.max_header_size);
    return pb;
}

void worker_take_back(worker_t *self, parse_bufs_t **pb_p)
{
    parse_bufs_t *pb = *pb_p;
    if (!pb)
        return;
    *pb_p = NULL;
    if (self->nspares < SPARE_MAX && pb->hdrs.buf.cap <= SPARE_KEEP_MAX &&
        pb->url.cap <= SPARE_KEEP_MAX) {
        hdrs_reset(&pb->hdrs);
        buf_reset(&pb->url);
        self->spares[self->nspares++] = pb;
        return;
    }
    hdrs_free(&pb->hdrs);
    buf_free(&pb->url);
    free(pb);
}

uint32_t worker_client_count(worker_t *self)
{
    return self->nclients;
}

size_t worker_instance_count(worker_t *self)
{
    return __atomic_load_n(&self->ninstances, __ATOMIC_RELAXED);
}

uint64_t worker_pool_version(worker_t *self)
{
    return __atomic_load_n(&self->st->pool_version, __ATOMIC_RELAXED);
}
