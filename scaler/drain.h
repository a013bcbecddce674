/* drain.h - observes draining: which live proxies have applied a pool version and still have
 * requests in flight to given instances, from the ProxyStats that tide-metrics republishes.
 *
 * A scale down removes instances from the pool, then waits until drain_drained() says every
 * live proxy reports that pool version (or newer) and no request in flight to them. A proxy
 * silent for stale_ms no longer counts (it died, or it restarted under a new id). Pure state:
 * the caller passes the time in. */
#ifndef SCALER_DRAIN_H
#define SCALER_DRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tide.pb-c.h"

typedef struct _drain_t drain_t;

/* Creates an empty tracker. Proxies silent for stale_ms are forgotten. NULL on OOM. */
drain_t *drain_new(uint64_t stale_ms);

/* Destroys *self_p and sets it to NULL; nothing on NULL. */
void drain_destroy(drain_t **self_p);

/* Records one ProxyStats (the caller keeps ownership of stats). A message older than the last
 * one seen from the same sender (lower seq, same started_ms) is ignored. At most 256 proxies are
 * tracked; beyond that new senders are ignored (and counted in drain_ignored). */
void drain_on_stats(drain_t *self, const Tide__V1__ProxyStats *stats, uint64_t now_ms);

/* True when every live proxy has applied pool version >= version and reports zero requests in
 * flight to each of names[0..n). With no live proxy at all, nothing can route to them: true. */
bool drain_drained(drain_t *self, const char *const *names, size_t n, uint64_t version,
                   uint64_t now_ms);

/* Live proxies (heard from within stale_ms). */
size_t drain_live(drain_t *self, uint64_t now_ms);

/* Stats messages ignored because the table was full. */
uint64_t drain_ignored(const drain_t *self);

#endif
