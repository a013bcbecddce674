/* http.h - tide-metrics' HTTP side (libmicrohttpd): GET /metrics (Prometheus text),
 * GET /api/snapshot (the last MetricsSnapshot as JSON), GET /api/profiles and
 * /profiles/ID/FILE (the executor's profiles, http_profiles.h); anything else is 404.
 *
 * MHD serves from its own thread. It never sees the aggregator or a ZeroMQ socket: the main
 * thread renders both bodies and hands copies over with http_publish, under a mutex. */
#ifndef TIDE_METRICS_HTTP_H
#define TIDE_METRICS_HTTP_H

#include <stddef.h>

typedef struct _http_t http_t;

/* Starts serving on listen ("host:port"; host a numeric IPv4/IPv6 address or a name). Until
 * the first http_publish both paths answer 503. profiles_root (NULL: no profile pages) is
 * where the profiles are. Returns NULL with the reason in err when the
 * address is bad or cannot be bound. */
http_t *http_new(const char *listen, const char *profiles_root, char *err, size_t errlen);

/* Stops the server (waits for its thread) and frees everything; sets *self_p to NULL. */
void http_destroy(http_t **self_p);

/* Replaces the bodies served from now on with copies of metrics[0..mlen) and
 * snapshot_json[0..jlen). Returns 0, or -ENOMEM (the old bodies stay). */
int http_publish(http_t *self, const char *metrics, size_t mlen, const char *snapshot_json,
                 size_t jlen);

/* Requests answered so far (all paths), for logs and tests. */
unsigned long http_requests(const http_t *self);

#endif
