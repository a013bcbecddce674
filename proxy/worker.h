/* worker.h - one event loop thread: its listener (SO_REUSEPORT), its client connections, its
 * view of the pool (instances, idle upstream connections) and its counters.
 *
 * Other threads talk to a worker only through worker_set_pool, worker_drain and worker_stop,
 * which post to its loop with uv_async_send. The rest is for the worker's own thread (the
 * client and upstream code running on its loop). */
#ifndef PROXY_WORKER_H
#define PROXY_WORKER_H

#include <stdbool.h>
#include <uv.h>

#include "list.h"
#include "pool.h"
#include "stats.h"
#include "tide_config.h"
#include "timeouts.h"
#include "upstream.h"

typedef struct worker worker_t;

/* Creates worker index with its loop and binds its listener on cfg->proxy.listen (SO_REUSEPORT,
 * so every worker binds the same address). Returns NULL with *err set to a negative errno when
 * the address cannot be bound or on OOM. cfg and stats must outlive the worker. */
worker_t *worker_new(int index, int nworkers, const tide_config_t *cfg, stats_t *stats, int *err);

/* Starts the worker's thread. Returns 0 or a negative errno. */
int worker_start(worker_t *self);

/* Hands the worker a new pool (any thread; it takes its own reference). Instances that left it
 * drain: their requests finish, their idle connections close, no new request goes to them. */
void worker_set_pool(worker_t *self, pool_t *pool);

/* Any thread: stop accepting, close idle clients, let the active requests finish. */
void worker_drain(worker_t *self);

/* Any thread: true once draining and no client connection is left. */
bool worker_drained(worker_t *self);

/* Any thread: close everything now; the thread ends. No worker_set_pool may follow. */
void worker_stop(worker_t *self);

/* Joins the thread (after worker_stop) and frees everything; nothing on NULL. */
void worker_destroy(worker_t **self_p);

/* ---- for code running on the worker's loop ---- */
uv_loop_t *worker_loop(worker_t *self);
const tide_config_t *worker_cfg(worker_t *self);
stats_worker_t *worker_stats(worker_t *self);

/* The instance for the next request: the less loaded of two drawn at random (balancer.h),
 * never exclude, and instances marked down only when nothing else is left. NULL when the pool
 * is empty (or holds only exclude). */
instance_t *worker_pick(worker_t *self, const instance_t *exclude);

/* A client connection closed (its memory is being freed); overflow: it was one accepted past
 * proxy.max_connections to be told 503. */
void worker_client_gone(worker_t *self, list_node_t *node, bool overflow);

/* The worker's client timeouts (timeouts.h). */
timeouts_t *worker_timeouts(worker_t *self);

/* The worker's head-building buffer: for use within one callback, never held across. */
buf_t *worker_scratch(worker_t *self);

/* The buffers a client parses a request head into. */
typedef struct {
    hdrs_t hdrs;
    buf_t url;
} parse_bufs_t;

/* Lends parse buffers (empty, with memory kept from earlier use) to a client parsing a request
 * head; NULL on OOM. take_back returns them (or frees them) and sets *pb_p to NULL; nothing on
 * NULL. An idle connection so holds no parsing memory, not even the buffers' structs. */
parse_bufs_t *worker_lend(worker_t *self);
void worker_take_back(worker_t *self, parse_bufs_t **pb_p);

/* Client connections open on this worker (its loop's thread; tests and the fuzzer). */
uint32_t worker_client_count(worker_t *self);

/* Any thread (tests): the instances the worker holds (in its pool, or draining), and the
 * version of the last pool it applied. */
size_t worker_instance_count(worker_t *self);
uint64_t worker_pool_version(worker_t *self);

#endif
