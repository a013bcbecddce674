/* drain.c - per-proxy pool version and in-flight requests, for observed draining. */
#include "drain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DRAIN_MAX_PROXIES 256

typedef struct {
    char name[64];
    uint32_t in_flight;
} busy_t;

typedef struct {
    char sender[96];
    uint64_t started_ms;
    uint64_t seq;
    uint64_t last_ms;
    uint64_t pool_version;
    busy_t *busy; /* instances with requests in flight (only those) */
    size_t n_busy;
} proxy_t;

struct _drain_t {
    uint64_t stale_ms;
    proxy_t proxies[DRAIN_MAX_PROXIES];
    size_t n;
    uint64_t ignored;
};

drain_t *drain_new(uint64_t stale_ms)
{
    drain_t *self = calloc(1, sizeof *self);
    if (self)
        self->stale_ms = stale_ms;
    return self;
}

void drain_destroy(drain_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    drain_t *self = *self_p;
    for (size_t i = 0; i < self->n; i++)
        free(self->proxies[i].busy);
    free(self);
    *self_p = NULL;
}

static bool s_live(const drain_t *self, const proxy_t *p, uint64_t now_ms)
{
    return now_ms < p->last_ms || now_ms - p->last_ms <= self->stale_ms;
}

/* Forgets proxies silent for longer than stale_ms, so a dead one does not block draining and
 * its slot is reused. */
static void s_prune(drain_t *self, uint64_t now_ms)
{
    size_t w = 0;
    for (size_t i = 0; i < self->n; i++) {
        if (s_live(self, &self->proxies[i], now_ms)) {
            if (w != i)
                self->proxies[w] = self->proxies[i];
            w++;
        } else {
            free(self->proxies[i].busy);
        }
    }
    self->n = w;
}

void drain_on_stats(drain_t *self, const Tide__V1__ProxyStats *stats, uint64_t now_ms)
{
    if (!stats || !stats->header || !stats->header->sender)
        return;
    s_prune(self, now_ms);
    const char *sender = stats->header->sender;
    proxy_t *p = NULL;
    for (size_t i = 0; i < self->n && !p; i++)
        if (strcmp(self->proxies[i].sender, sender) == 0)
            p = &self->proxies[i];
    if (!p) {
        if (self->n == DRAIN_MAX_PROXIES) {
            self->ignored++;
            return;
        }
        p = &self->proxies[self->n++];
        memset(p, 0, sizeof *p);
        snprintf(p->sender, sizeof p->sender, "%s", sender);
    } else if (stats->started_ms == p->started_ms && stats->header->seq <= p->seq) {
        return; /* reordered or repeated: keep the newer report */
    }
    size_t n = 0;
    for (size_t i = 0; i < stats->n_instances; i++)
        if (stats->instances[i]->in_flight > 0)
            n++;
    busy_t *busy = n ? calloc(n, sizeof *busy) : NULL;
    if (n && !busy) {
        /* Out of memory: keep the old report rather than claim nothing is in flight. */
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < stats->n_instances; i++) {
        const Tide__V1__InstanceStats *in = stats->instances[i];
        if (in->in_flight == 0)
            continue;
        snprintf(busy[k].name, sizeof busy[k].name, "%s", in->name ? in->name : "");
        busy[k].in_flight = in->in_flight;
        k++;
    }
    free(p->busy);
    p->busy = busy;
    p->n_busy = n;
    p->started_ms = stats->started_ms;
    p->seq = stats->header->seq;
    p->last_ms = now_ms;
    p->pool_version = stats->pool_version;
}

bool drain_drained(drain_t *self, const char *const *names, size_t n, uint64_t version,
                   uint64_t now_ms)
{
    s_prune(self, now_ms);
    for (size_t i = 0; i < self->n; i++) {
        const proxy_t *p = &self->proxies[i];
        if (p->pool_version < version)
            return false;
        for (size_t b = 0; b < p->n_busy; b++)
            for (size_t k = 0; k < n; k++)
                if (strcmp(p->busy[b].name, names[k]) == 0)
                    return false;
    }
    return true;
}

size_t drain_live(drain_t *self, uint64_t now_ms)
{
    s_prune(self, now_ms);
    return self->n;
}

uint64_t drain_ignored(const drain_t *self)
{
    return self->ignored;
}
