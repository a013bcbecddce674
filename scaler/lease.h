/* lease.h - tide-scaler's leadership: a lease in Redis with a fencing epoch, and the check that
 * Redis still holds tide's data.
 *
 * Keys (lib/tide_redis.h): tide:<service>:leader = "<scaler id> <epoch>" with an expiry of
 * scaler.lease_ms, and tide:<service>:epoch = the epoch last granted (no expiry). Whoever
 * holds the leader key is the only scaler that writes: every store write checks "<id> <epoch>"
 * in the same script (store.c), so a leader that lost its lease (it hung past the expiry and a
 * standby took over) has its writes refused. A standby takes the lease once the key is gone,
 * with an epoch above every one it has seen.
 *
 * The leader renews every lease_ms / 3. A renew that finds the epoch key gone, or lower than
 * its own, means Redis lost data (restarted empty, FLUSHALL, a failover to a replica that missed
 * writes): the leader takes the lease again under a new epoch and reports LEASE_WIPED, and the
 * caller rewrites everything it knows. A standby finding an empty Redis waits lease_ms before
 * taking it, so that a live leader, which notices within a renew period, gets there first. */
#ifndef SCALER_LEASE_H
#define SCALER_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "tide_config.h"

typedef struct _lease_t lease_t;

typedef enum {
    LEASE_NONE,     /* nothing changed: still standby, or still leading */
    LEASE_ACQUIRED, /* this scaler leads from now on (read Redis, reconcile) */
    LEASE_LOST,     /* this scaler no longer leads (another took over, or renewals failed for
                       a whole lease_ms): stop writing and acting at once */
    LEASE_WIPED,    /* still leading, but Redis had lost tide's data: rewrite it */
} lease_event_t;

/* Creates the lease of scaler id for cfg's Redis and service (its own connection; nothing
 * connects until lease_step). cfg must outlive it. NULL on OOM. */
lease_t *lease_new(const tide_config_t *cfg, const char *id);

/* Closes the connection, frees *self_p, sets it to NULL; nothing on NULL. The lease itself is
 * not given up: it runs out after lease_ms (a kill -9 cannot give it up either). */
void lease_destroy(lease_t **self_p);

/* Renews or tries to take the lease when that is due (call it often: every loop turn; it talks
 * to Redis only every lease_ms / 3 when leading, lease_ms / 6 when standby). Redis unreachable
 * is no event, except that a leader which could not renew for lease_ms reports LEASE_LOST.
 * seen_version is set to the highest pool_version a standby has read (0 if none). */
lease_event_t lease_step(lease_t *self, uint64_t now_ms);

/* Gives the lease up if it is still this scaler's (a clean stop: a standby takes over at its
 * next try instead of after lease_ms). Returns 0, or -EIO when Redis did not answer (the lease
 * then runs out by itself). Leads no more either way. */
int lease_release(lease_t *self);

/* The caller's write was refused by the fencing: the next lease_step renews at once, and tells
 * whether the lease is another's (LEASE_LOST) or Redis lost its data (LEASE_WIPED). */
void lease_recheck(lease_t *self);

/* Leads no more (logged), whatever Redis says. */
void lease_lost(lease_t *self);

bool lease_leading(const lease_t *self);

/* "<id> <epoch>" while leading, the value every write checks; "" otherwise. */
const char *lease_fence(const lease_t *self);

uint64_t lease_epoch(const lease_t *self);

/* The leader as last seen by a standby ("<id> <epoch>"), "" when unknown. */
const char *lease_holder(const lease_t *self);

/* The highest pool_version read while standby (0: none), so a new leader never goes below it. */
uint64_t lease_seen_version(const lease_t *self);

#endif
