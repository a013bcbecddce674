/* pool.h - the instance pool: immutable refcounted snapshots, and the watcher thread that
 * reads them from Redis.
 *
 * The watcher is an actor with its own hiredis connection and a SUB socket on
 * endpoints.scaler_events ("scaler.pool"). It reads the pool at start, on every scaler.pool
 * event, and whenever pool_version in Redis moves (polled every proxy.pool_poll_ms); each new
 * pool goes to the sink, which hands it to the workers. Redis is never touched from an event
 * loop. When Redis fails the last pool stays in force and the read is retried at each poll.
 * A pool_version below the current one (Redis lost data, a stale replica) is not trusted: the
 * last pool stays and the pool is read again at each poll, until a version at least the
 * current one appears (the scaler rewrites above every version it knew) or the lower one has
 * stayed for scaler.lease_ms + 2 polls. */
#ifndef PROXY_POOL_H
#define PROXY_POOL_H

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tide_config.h"
#include "tide_redis.h"

typedef struct {
    int refs; /* atomic: snapshots cross threads */
    uint64_t version;
    size_t n;
    pool_entry_t entries[];
} pool_t;

/* A snapshot with one reference holding a copy of entries. NULL on OOM. */
pool_t *pool_new(uint64_t version, const pool_entry_t *entries, size_t n);
pool_t *pool_ref(pool_t *self);
/* Drops a reference (freeing on the last) and sets *self_p to NULL; nothing on NULL. */
void pool_unref(pool_t **self_p);
/* Same version and same entries. */
bool pool_equal(const pool_t *a, const pool_t *b);

/* Receives each new pool on the watcher thread; takes its own references if it keeps it. */
typedef void(pool_sink_fn)(void *arg, pool_t *pool);

/* Starts the watcher; the first read is done before this returns (a Redis outage only delays
 * it). Stop with zactor_destroy. NULL when the thread could not start. */
zactor_t *pool_watcher_new(const tide_config_t *cfg, pool_sink_fn *sink, void *arg);

#endif
