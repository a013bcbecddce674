/* store.h - tide-scaler's Redis writer (the only one) and the read-back at start.
 *
 * Every change is one MULTI/EXEC: the state hash, and with a pool change also the whole pool
 * hash (DEL + HSET, so a retried write is idempotent), the instances count and INCR
 * pool_version. Readers (proxies, tidectl) therefore never see a pool that disagrees with
 * instances. Keys and the connection come from lib/tide_redis.h. */
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

/* Writes rec in one MULTI/EXEC: the state hash (since_ms = since_wall_ms), and when with_pool
 * also the pool, instances and INCR pool_version, whose new value goes to *version (untouched
 * otherwise). Returns 0, or -EIO when the transaction did not happen (connection reset; retry). */
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
