/* stats.h - the proxy's counters and the actor that publishes them as ProxyStats.
 *
 * Every worker thread writes only its own slots (per-worker totals, and per instance one slot
 * per worker), with relaxed atomic stores and no lock; the publisher thread sums the slots with
 * relaxed loads. The only lock guards the list of instance records, which changes when the
 * pool changes, never per request.
 *
 * An instance record lives while a worker holds its slot (stats_instance .. stats_release), so
 * its counters stay cumulative while it is in the pool or draining, and for a while after: the
 * publisher frees an unused record once a message has listed it idle (its final counters) and
 * it has lingered LINGER_MS, or sooner when more than LINGER_MAX unused records are waiting
 * (pool churn must not grow memory). An instance that comes back in time gets its record back. */
#ifndef PROXY_STATS_H
#define PROXY_STATS_H

#include <czmq.h>
#include <stdint.h>

#include "tide_config.h"
#include "tide_hist.h"
#include "tide_msg.h"

/* One writer (a worker thread), one reader (the publisher). */
typedef struct {
    uint64_t requests;
    uint64_t status[5]; /* responses sent to clients: 1xx .. 5xx */
    uint64_t upstream_errors;
    uint64_t bytes_in, bytes_out;
    uint64_t in_flight; /* gauge */
    uint64_t in_pool;   /* gauge, instances only: 1 while this worker routes to it */
    uint64_t buckets[HIST_BUCKETS];
} __attribute__((aligned(64))) stats_counters_t;

typedef struct {
    stats_counters_t c;    /* totals, including tide's own 400/502/503/504 */
    uint64_t connections;  /* gauge: open client connections */
    uint64_t pool_version; /* gauge: the pool version this worker has applied */
    uint64_t pool_applied; /* 1 once this worker has applied any pool */
} __attribute__((aligned(64))) stats_worker_t;

/* For the owning worker thread only. */
#define STAT_ADD(field, n) __atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)
#define STAT_SUB(field, n) __atomic_store_n(&(field), (field) - (n), __ATOMIC_RELAXED)
#define STAT_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)

typedef struct _stats_t stats_t;

/* Counters for nworkers worker threads. NULL on OOM. */
stats_t *stats_new(int nworkers);

/* Frees everything; nothing on NULL. No worker or publisher may use it any more. */
void stats_destroy(stats_t **self_p);

/* Worker i's totals (0 <= i < nworkers). Owned by self. */
stats_worker_t *stats_worker(stats_t *self, int i);

/* Worker i's slot for the instance (name, addr), creating the record on first use. Takes a
 * lock: call when the pool changes, not per request. The slot lives until worker i gives it
 * back with stats_release. NULL on OOM. */
stats_counters_t *stats_instance(stats_t *self, const char *name, const char *addr, int i);

/* Worker i is done with its slot for (name, addr): it no longer writes to it (its in_pool and
 * in_flight gauges are 0). Takes the lock. Nothing when there is no such record. */
void stats_release(stats_t *self, const char *name, const char *addr, int i);

/* Unused records are to wait until stats_message has listed their last counters (without a
 * publisher they go at once). stats_publisher_new calls it; tests may. */
void stats_expect_publisher(stats_t *self);

/* Instance records held (for tests). Takes the lock. */
size_t stats_record_count(stats_t *self);

/* Builds a ProxyStats from every slot (header left NULL). An instance is listed while any worker
 * has it in the pool, while requests to it are in flight, and for 10 s after both stopped, so
 * the scaler can see a drain finish. Caller frees with stats_message_free. NULL on OOM. */
Tide__V1__ProxyStats *stats_message(stats_t *self, uint64_t now_ms);
void stats_message_free(Tide__V1__ProxyStats **msg_p);

/* Starts the publisher actor: a PUB socket connected to cfg->endpoints.stats that sends topic
 * "stats" every cfg->proxy.stats_interval_ms. sender is used only by the actor from then on.
 * Stop it with zactor_destroy. NULL when the thread or socket could not be created. */
zactor_t *stats_publisher_new(stats_t *self, const tide_config_t *cfg, msg_sender_t *sender);

#endif
