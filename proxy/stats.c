/* stats.c - per-worker counters, their sum as ProxyStats, and the publisher actor. */
#include "stats.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tide_clock.h"
#include "tide_log.h"
#include "tide_curve.h"

#define LINGER_MS  10000 /* keep listing a drained instance this long */
#define LINGER_MAX 1024  /* unused records kept past that many are freed once listed idle */

typedef struct {
    char name[64];
    char addr[128];
    stats_counters_t *slots; /* one per worker */
    uint32_t users;          /* workers holding a slot (stats_instance .. stats_release) */
    uint64_t last_active_ms; /* publisher only: last time in the pool or busy; 0: never seen */
    bool told_idle;          /* publisher only: a message listed it neither in pool nor busy */
} record_t;

struct _stats_t {
    int nworkers;
    uint64_t started_ms;
    stats_worker_t *workers;
    pthread_mutex_t mu; /* guards records and nrecords */
    record_t **records;
    size_t nrecords, cap;
    bool publishing; /* a publisher tells the last counters before a record goes */
};

static void *s_aligned(size_t n, size_t size)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n * size) != 0)
        return NULL;
    memset(p, 0, n * size);
    return p;
}

stats_t *stats_new(int nworkers)
{
    stats_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->nworkers = nworkers;
    self->started_ms = clock_wall_ms();
    self->workers = s_aligned((size_t)nworkers, sizeof *self->workers);
    if (!self->workers) {
        free(self);
        return NULL;
    }
    pthread_mutex_init(&self->mu, NULL);
    return self;
}

static void s_record_free(record_t *rec)
{
    free(rec->slots);
    free(rec);
}

void stats_destroy(stats_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    stats_t *self = *self_p;
    for (size_t i = 0; i < self->nrecords; i++)
        s_record_free(self->records[i]);
    free(self->records);
    free(self->workers);
    pthread_mutex_destroy(&self->mu);
    free(self);
    *self_p = NULL;
}

stats_worker_t *stats_worker(stats_t *self, int i)
{
    return &self->workers[i];
}

stats_counters_t *stats_instance(stats_t *self, const char *name, const char *addr, int i)
{
    stats_counters_t *slot = NULL;
    pthread_mutex_lock(&self->mu);
    for (size_t r = 0; r < self->nrecords; r++) {
        record_t *rec = self->records[r];
        if (strcmp(rec->name, name) == 0 && strcmp(rec->addr, addr) == 0) {
            rec->users++;
            rec->told_idle = false;
            slot = &rec->slots[i];
            goto done;
        }
    }
    if (self->nrecords == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 16;
        record_t **v = realloc(self->records, cap * sizeof *v);
        if (!v)
            goto done;
        self->records = v;
        self->cap = cap;
    }
    record_t *rec = calloc(1, sizeof *rec);
    if (!rec)
        goto done;
    rec->slots = s_aligned((size_t)self->nworkers, sizeof *rec->slots);
    if (!rec->slots) {
        free(rec);
        goto done;
    }
    snprintf(rec->name, sizeof rec->name, "%s", name);
    snprintf(rec->addr, sizeof rec->addr, "%s", addr);
    rec->users = 1;
    self->records[self->nrecords++] = rec;
    slot = &rec->slots[i];
done:
    pthread_mutex_unlock(&self->mu);
    return slot;
}

void stats_release(stats_t *self, const char *name, const char *addr, int i)
{
    (void)i; /* the worker's slot was zeroed of gauges by the worker itself */
    pthread_mutex_lock(&self->mu);
    for (size_t r = 0; r < self->nrecords; r++) {
        record_t *rec = self->records[r];
        if (strcmp(rec->name, name) != 0 || strcmp(rec->addr, addr) != 0)
            continue;
        if (rec->users > 0)
            rec->users--;
        if (rec->users == 0)
            rec->last_active_ms = 0; /* the next message lists it, and the linger starts */
        if (rec->users == 0 && !self->publishing) {
            /* Nobody to tell its last counters to: the totals keep them. */
            s_record_free(rec);
            self->records[r] = self->records[--self->nrecords];
        }
        break;
    }
    pthread_mutex_unlock(&self->mu);
}

void stats_expect_publisher(stats_t *self)
{
    pthread_mutex_lock(&self->mu);
    self->publishing = true;
    pthread_mutex_unlock(&self->mu);
}

size_t stats_record_count(stats_t *self)
{
    pthread_mutex_lock(&self->mu);
    size_t n = self->nrecords;
    pthread_mutex_unlock(&self->mu);
    return n;
}

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* Adds slot s into the message counters c and buckets b. */
static void s_sum(Tide__V1__Counters *c, uint64_t *b, const stats_counters_t *s)
{
    c->requests += LOAD(s->requests);
    c->status_1xx += LOAD(s->status[0]);
    c->status_2xx += LOAD(s->status[1]);
    c->status_3xx += LOAD(s->status[2]);
    c->status_4xx += LOAD(s->status[3]);
    c->status_5xx += LOAD(s->status[4]);
    c->upstream_errors += LOAD(s->upstream_errors);
    c->bytes_in += LOAD(s->bytes_in);
    c->bytes_out += LOAD(s->bytes_out);
    for (int k = 0; k < HIST_BUCKETS; k++)
        b[k] += LOAD(s->buckets[k]);
}

/* Everything one message points to, allocated at once so freeing is one walk. */
typedef struct {
    Tide__V1__ProxyStats msg;
    Tide__V1__Counters totals;
    uint64_t buckets[HIST_BUCKETS];
    Tide__V1__InstanceStats *inst;
    Tide__V1__InstanceStats **inst_p;
    Tide__V1__Counters *inst_counters;
    uint64_t *inst_buckets;
    char (*names)[64];
    char (*addrs)[128];
} built_t;

Tide__V1__ProxyStats *stats_message(stats_t *self, uint64_t now_ms)
{
    built_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    tide__v1__proxy_stats__init(&b->msg);
    tide__v1__counters__init(&b->totals);
    b->msg.started_ms = self->started_ms;
    b->msg.totals = &b->totals;
    b->msg.latency_buckets = b->buckets;
    b->msg.n_latency_buckets = HIST_BUCKETS;

    uint64_t version = UINT64_MAX;
    uint64_t in_flight = 0, conns = 0;
    for (int w = 0; w < self->nworkers; w++) {
        stats_worker_t *sw = &self->workers[w];
        s_sum(&b->totals, b->buckets, &sw->c);
        in_flight += LOAD(sw->c.in_flight);
        conns += LOAD(sw->connections);
        uint64_t v = LOAD(sw->pool_applied) ? LOAD(sw->pool_version) : 0;
        if (v < version)
            version = v; /* the pool every worker has applied */
    }
    b->msg.pool_version = version == UINT64_MAX ? 0 : version;
    b->msg.in_flight = (uint32_t)in_flight;
    b->msg.connections = (uint32_t)conns;

    pthread_mutex_lock(&self->mu);
    size_t n = self->nrecords;
    if (n) {
        b->inst = calloc(n, sizeof *b->inst);
        b->inst_p = calloc(n, sizeof *b->inst_p);
        b->inst_counters = calloc(n, sizeof *b->inst_counters);
        b->inst_buckets = calloc(n * HIST_BUCKETS, sizeof *b->inst_buckets);
        b->names = calloc(n, sizeof *b->names);
        b->addrs = calloc(n, sizeof *b->addrs);
        if (!b->inst || !b->inst_p || !b->inst_counters || !b->inst_buckets || !b->names ||
            !b->addrs) {
            pthread_mutex_unlock(&self->mu);
            Tide__V1__ProxyStats *m = &b->msg;
            stats_message_free(&m);
            return NULL;
        }
    }
    size_t unused = 0;
    for (size_t r = 0; r < n; r++)
        unused += self->records[r]->users == 0;
    size_t k = 0, kept = 0;
    for (size_t r = 0; r < n; r++) {
        record_t *rec = self->records[r];
        uint64_t fl = 0, in_pool = 0;
        for (int w = 0; w < self->nworkers; w++) {
            fl += LOAD(rec->slots[w].in_flight);
            in_pool |= LOAD(rec->slots[w].in_pool);
        }
        if (in_pool || fl || rec->last_active_ms == 0)
            rec->last_active_ms = now_ms;
        bool idle = !in_pool && !fl;
        bool listed = !idle || now_ms - rec->last_active_ms <= LINGER_MS;
        /* Unused and its last counters told: freed once it stops being listed, or at once
         * when too many wait (the oldest first: records are in creation order). */
        if (rec->users == 0 && rec->told_idle && (!listed || unused > LINGER_MAX)) {
            s_record_free(rec);
            unused--;
            continue;
        }
        self->records[kept++] = rec;
        if (!listed)
            continue;
        if (idle && rec->users == 0)
            rec->told_idle = true; /* no worker writes to it any more: these are final */
        Tide__V1__InstanceStats *is = &b->inst[k];
        tide__v1__instance_stats__init(is);
        tide__v1__counters__init(&b->inst_counters[k]);
        uint64_t *bk = &b->inst_buckets[k * HIST_BUCKETS];
        for (int w = 0; w < self->nworkers; w++)
            s_sum(&b->inst_counters[k], bk, &rec->slots[w]);
        memcpy(b->names[k], rec->name, sizeof b->names[k]);
        memcpy(b->addrs[k], rec->addr, sizeof b->addrs[k]);
        is->name = b->names[k];
        is->addr = b->addrs[k];
        is->counters = &b->inst_counters[k];
        is->in_flight = (uint32_t)fl;
        is->latency_buckets = bk;
        is->n_latency_buckets = HIST_BUCKETS;
        is->in_pool = in_pool != 0;
        b->inst_p[k] = is;
        k++;
    }
    self->nrecords = kept;
    pthread_mutex_unlock(&self->mu);
    b->msg.instances = b->inst_p;
    b->msg.n_instances = k;
    return &b->msg;
}

void stats_message_free(Tide__V1__ProxyStats **msg_p)
{
    if (!msg_p || !*msg_p)
        return;
    built_t *b = (built_t *)*msg_p; /* msg is the first member */
    free(b->inst);
    free(b->inst_p);
    free(b->inst_counters);
    free(b->inst_buckets);
    free(b->names);
    free(b->addrs);
    free(b);
    *msg_p = NULL;
}

typedef struct {
    stats_t *stats;
    const tide_config_t *cfg;
    msg_sender_t *sender;
} publisher_args_t;

static void s_publisher(zsock_t *pipe, void *arg)
{
    publisher_args_t *a = arg;
    pthread_setname_np(pthread_self(), "tide-stats"); /* as top -H and perf show it */
    zsock_t *pub = zsock_new(ZMQ_PUB);
    if (pub) {
        /* Stats are only worth their newest value: queue nothing for a subscriber that is
         * not there yet (it would get a burst of stale in_flight values), and little for a
         * slow one. */
        zsock_set_immediate(pub, 1);
        zsock_set_sndhwm(pub, 16);
        msg_socket_limits(pub); /* subscriptions come in on it */
    }
    if (!pub || bus_secure_client(pub, a->cfg, BUS_ROLE_PROXY, BUS_ROLE_METRICS) ||
        zsock_connect(pub, "%s", a->cfg->endpoints.stats) != 0) {
        log_error("cannot connect the stats socket", "endpoint=%s", a->cfg->endpoints.stats);
        zsock_destroy(&pub);
        zsock_signal(pipe, 1);
        free(a);
        return;
    }
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, NULL);
    int interval = a->cfg->proxy.stats_interval_ms;
    uint64_t next = clock_mono_ms() + (uint64_t)interval;
    while (true) {
        uint64_t now = clock_mono_ms();
        int wait = next > now ? (int)(next - now) : 0;
        void *which = zpoller_wait(poller, wait);
        if (which == pipe) {
            char *cmd = zstr_recv(pipe);
            bool term = !cmd || strcmp(cmd, "$TERM") == 0;
            zstr_free(&cmd);
            if (term)
                break;
            continue;
        }
        if (!which && zpoller_terminated(poller))
            break;
        now = clock_mono_ms();
        if (now < next)
            continue;
        next += (uint64_t)interval;
        if (next <= now)
            next = now + (uint64_t)interval; /* fell behind: skip, do not burst */
        Tide__V1__ProxyStats *msg = stats_message(a->stats, clock_wall_ms());
        if (!msg) {
            log_once_per_kind("stats-oom", "cannot build ProxyStats", "out of memory");
            continue;
        }
        msg->header = msg_sender_next(a->sender);
        if (msg_send(pub, TOPIC_STATS, &msg->base) != 0)
            log_once_per_kind("stats-send", "cannot send ProxyStats", "zmq refused");
        stats_message_free(&msg);
    }
    zpoller_destroy(&poller);
    zsock_destroy(&pub);
    free(a);
}

zactor_t *stats_publisher_new(stats_t *self, const tide_config_t *cfg, msg_sender_t *sender)
{
    /* The actor frees its args when it ends. */
    publisher_args_t *args = malloc(sizeof *args);
    if (!args)
        return NULL;
    *args = (publisher_args_t){.stats = self, .cfg = cfg, .sender = sender};
    stats_expect_publisher(self); /* before any record can be released unseen */
    zactor_t *actor = zactor_new(s_publisher, args);
    if (!actor)
        free(args);
    return actor;
}
