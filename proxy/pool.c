/* pool.c - pool snapshots and the watcher actor (see pool.h). */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tide_clock.h"
#include "tide_log.h"
#include "tide_curve.h"
#include "tide_msg.h"

pool_t *pool_new(uint64_t version, const pool_entry_t *entries, size_t n)
{
    pool_t *self = malloc(sizeof *self + n * sizeof *entries);
    if (!self)
        return NULL;
    self->refs = 1;
    self->version = version;
    self->n = n;
    if (n)
        memcpy(self->entries, entries, n * sizeof *entries);
    return self;
}

pool_t *pool_ref(pool_t *self)
{
    __atomic_add_fetch(&self->refs, 1, __ATOMIC_RELAXED);
    return self;
}

void pool_unref(pool_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    if (__atomic_sub_fetch(&(*self_p)->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(*self_p);
    *self_p = NULL;
}

bool pool_equal(const pool_t *a, const pool_t *b)
{
    if (a->version != b->version || a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->entries[i].name, b->entries[i].name) != 0 ||
            strcmp(a->entries[i].addr, b->entries[i].addr) != 0)
            return false;
    return true;
}

typedef struct {
    const tide_config_t *cfg;
    pool_sink_fn *sink;
    void *arg;
    redis_conn_t *redis;
    pool_t *current; /* last pool handed to the sink */
    bool stale;      /* the last read failed: read again at the next poll */
    /* A version below the current one: Redis lost data (the scaler rewrites it above every
     * version it knew) or it is a replica that missed writes. Such a pool is not trusted until
     * it has stayed that long, in case no scaler is left that knows better. */
    uint64_t back_version, back_since_ms;
    pool_entry_t *buf; /* POOL_MAX entries */
} watcher_t;

/* Reads the whole pool; hands it on when it differs from the current one. */
static void s_read(watcher_t *self, const char *why)
{
    uint64_t version = 0;
    int n = redis_read_pool(self->redis, self->cfg->service, &version, self->buf, POOL_MAX);
    if (n < 0) {
        if (!self->stale)
            log_warn("cannot read the pool; keeping the last one", "why=%s err=%s version=%llu",
                     why, n == -EBADMSG ? "malformed" : "redis",
                     (unsigned long long)(self->current ? self->current->version : 0));
        self->stale = true;
        return;
    }
    if (version == 0 && self->current && self->current->version > 0) {
        /* pool_version is gone: Redis lost tide's keys (restarted without persistence, or
         * flushed). An empty pool would fail every request; keep routing to the last one
         * until the scaler writes the pool again. */
        if (!self->stale)
            log_warn("pool_version missing in Redis; keeping the last pool", "version=%llu",
                     (unsigned long long)self->current->version);
        self->stale = true;
        return;
    }
    if (version > 0 && self->current && version < self->current->version) {
        uint64_t now = clock_mono_ms();
        uint64_t confirm =
            (uint64_t)self->cfg->scaler.lease_ms + 2 * (uint64_t)self->cfg->proxy.pool_poll_ms;
        if (self->back_version != version) {
            self->back_version = version;
            self->back_since_ms = now;
            log_warn("pool_version went backwards in Redis; keeping the last pool and reading "
                     "again",
                     "version=%llu current=%llu", (unsigned long long)version,
                     (unsigned long long)self->current->version);
        }
        if (now - self->back_since_ms < confirm) {
            self->stale = true; /* read the whole pool again at the next poll */
            return;
        }
        log_warn("pool_version stayed below the last one; taking it", "version=%llu current=%llu",
                 (unsigned long long)version, (unsigned long long)self->current->version);
    }
    self->back_version = 0;
    if (self->stale)
        log_info("pool read again", "version=%llu", (unsigned long long)version);
    self->stale = false;
    pool_t *pool = pool_new(version, self->buf, (size_t)n);
    if (!pool) {
        self->stale = true;
        return;
    }
    if (self->current && pool_equal(self->current, pool)) {
        pool_unref(&pool);
        return;
    }
    log_info("pool changed", "version=%llu instances=%d why=%s", (unsigned long long)version, n,
             why);
    pool_unref(&self->current);
    self->current = pool;
    self->sink(self->arg, pool);
}

static void s_poll(watcher_t *self)
{
    if (self->stale || !self->current) {
        s_read(self, "retry");
        return;
    }
    uint64_t version;
    if (redis_read_pool_version(self->redis, self->cfg->service, &version) != 0) {
        if (!self->stale)
            log_warn("cannot read pool_version; keeping the last pool", "version=%llu",
                     (unsigned long long)self->current->version);
        self->stale = true;
        return;
    }
    if (version != self->current->version)
        s_read(self, "poll");
}

static void s_watcher(zsock_t *pipe, void *arg)
{
    watcher_t *self = arg;
    const tide_config_t *cfg = self->cfg;
    pthread_setname_np(pthread_self(), "tide-pool"); /* as top -H and perf show it */
    zsock_t *sub = zsock_new(ZMQ_SUB);
    if (sub) {
        msg_socket_limits(sub);
        zsock_set_subscribe(sub, TOPIC_SCALER_POOL);
        /* Every scaler's events (config scalers:): whichever leads is heard. The keys apply
         * to every connect after them (all scalers share the scaler's key). */
        const char *events[CFG_SCALERS_MAX];
        size_t n = config_scaler_list(cfg, true, events);
        if (sub && bus_secure_client(sub, cfg, BUS_ROLE_PROXY, BUS_ROLE_SCALER) != 0) {
            log_error("cannot use the bus keys for scaler events; polling Redis only",
                      "endpoint=%s", events[0]);
            zsock_destroy(&sub);
        }
        for (size_t i = 0; i < n && sub; i++) {
            if (zsock_connect(sub, "%s", events[i]) != 0) {
                log_error("cannot connect to scaler events; polling Redis only", "endpoint=%s",
                          events[i]);
                zsock_destroy(&sub);
            }
        }
    }
    s_read(self, "start");
    zsock_signal(pipe, 0);

    zpoller_t *poller = zpoller_new(pipe, NULL);
    if (sub)
        zpoller_add(poller, sub);
    uint64_t next = clock_mono_ms() + (uint64_t)cfg->proxy.pool_poll_ms;
    while (true) {
        uint64_t now = clock_mono_ms();
        void *which = zpoller_wait(poller, next > now ? (int)(next - now) : 0);
        if (which == pipe) {
            char *cmd = zstr_recv(pipe);
            bool term = !cmd || strcmp(cmd, "$TERM") == 0;
            zstr_free(&cmd);
            if (term)
                break;
        } else if (which && which == sub) {
            msg_in_t in;
            if (msg_recv(sub, &in) == 0) {
                if (strcmp(in.topic, TOPIC_SCALER_POOL) == 0) {
                    const Tide__V1__ScalerPool *ev = (const void *)in.msg;
                    /* The event only says when to look: Redis holds the pool. */
                    log_debug("scaler.pool event", "version=%llu", (unsigned long long)ev->version);
                    s_read(self, "event");
                }
                msg_in_free(&in);
            }
        } else if (!which && zpoller_terminated(poller)) {
            break;
        }
        now = clock_mono_ms();
        if (now >= next) {
            next = now + (uint64_t)cfg->proxy.pool_poll_ms;
            s_poll(self);
        }
    }
    zpoller_destroy(&poller);
    zsock_destroy(&sub);
    pool_unref(&self->current);
    redis_conn_destroy(&self->redis);
    free(self->buf);
    free(self);
}

zactor_t *pool_watcher_new(const tide_config_t *cfg, pool_sink_fn *sink, void *arg)
{
    watcher_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = cfg;
    self->sink = sink;
    self->arg = arg;
    self->buf = calloc(POOL_MAX, sizeof *self->buf);
    self->redis = redis_conn_from_config(cfg);
    if (!self->buf || !self->redis) {
        free(self->buf);
        redis_conn_destroy(&self->redis);
        free(self);
        return NULL;
    }
    /* From here the actor owns self and frees it when it ends. */
    return zactor_new(s_watcher, self);
}
