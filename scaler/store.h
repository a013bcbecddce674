/* store.h - tide-scaler's Redis writer (the only one) and the read-back at start.
 *
 * Every change is one Lua script, run only while the lease is this scaler's (the leader key
 * holds the fence, "<id> <epoch>", scaler/lease.h): the state hash, and with a pool change also
 * the whole pool hash (DEL + HSET, so a retried write is idempotent), the instances count and
 * the next pool_version. Readers (proxies, tidectl) therefore never see a pool that disagrees
 * with instances, and a scaler that lost its lease writes nothing. The read-back is one
 * MULTI/EXEC. Keys and the connection come from lib/tide_redis.h. */
#ifndef SCALER_STORE_H
#define SCALER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fsm.h"
#include "tide_config.h"

typedef struct _store_t store_t;

/* What store_load saw besides the record, for the start-up log. */
typedef struct {
    bool empty;         /* no tide key at all: a first start */
    uint64_t instances; /* the instances key as read */
    size_t foreign;     /* pool entries not named <name_prefix><N> (dropped on the next write) */
    size_t bad_fields;  /* state-hash fields that did not parse (defaults used) */
} store_info_t;

/* Creates a store for cfg's Redis and service; nothing connects until first use. The config
 * must outlive the store. NULL on OOM. */
store_t *store_new(const tide_config_t *cfg);

/* Destroys *self_p (closing the connection) and sets it to NULL; nothing on NULL. */
void store_destroy(store_t **self_p);

/* Reads the state hash, pool, pool_version and instances in one MULTI/EXEC into rec (zeroed
 * first; rec->since_ms is left 0), and keeps each pool entry's address (store_addr). Returns 0, or
 * -EIO when Redis cannot be reached or answered an error: nothing is filled in then, retry later.
 */
int store_load(store_t *self, fsm_record_t *rec, store_info_t *info);

/* Sets the fence every write checks: the lease value while leading, NULL or "" when not. */
void store_set_fence(store_t *self, const char *fence);

/* Raises the floor of pool_version to version (the highest known, e.g. read while standby):
 * the next pool write makes it at least version + 1, whatever Redis holds. Lower: no change. */
void store_note_version(store_t *self, uint64_t version);

/* The highest pool_version this store has read, written or been told of. */
uint64_t store_version_floor(const store_t *self);

/* Writes rec in one script, if the leader key still holds the fence: the state hash (since_ms =
 * since_wall_ms; "leader" = the fence), and when with_pool also the pool, instances and the
 * next pool_version (above both Redis's and the floor), which goes to *version (untouched
 * otherwise). Returns 0; -EPERM when no fence is set or Redis refused it (another scaler leads:
 * nothing was written); -EIO when the write did not happen (connection reset, a wrong-typed
 * key; retry). */
int store_write(store_t *self, const fsm_record_t *rec, bool with_pool, uint64_t since_wall_ms,
                uint64_t *version);

/* The ip:port of instance index into buf: the address set with store_set_addr (or read back
 * from the pool by store_load), else app.host:app.base_port + index. Returns buf. */
const char *store_addr(const store_t *self, int index, char *buf, size_t size);

/* Sets where instance index runs, as the executor reported it (a scale up's placement on one of
 * several hosts, or a list): host must be a numeric IPv4 or IPv6 address and port 1..65535.
 * Used for the pool from then on. Returns 0, or -EINVAL (nothing changed). */
int store_set_addr(store_t *self, int index, const char *host, uint32_t port);

#endif
