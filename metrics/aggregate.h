/* aggregate.h - tide-metrics' core: deltas of the proxies' cumulative ProxyStats, per-second
 * windows per instance and in total, and the MetricsSnapshot built from them.
 *
 * Pure: no sockets, no clock reads, no logging. The caller passes the local monotonic time in
 * milliseconds with every call, so the module is unit-tested and replayed over traces. */
#ifndef TIDE_METRICS_AGGREGATE_H
#define TIDE_METRICS_AGGREGATE_H

#include <stddef.h>
#include <stdint.h>

#include "tide.pb-c.h"
#include "tide_hist.h"

/* Layout of one counter vector (a window slot, a delta, a cumulative total). */
enum {
    AGG_REQ = 0,
    AGG_1XX,
    AGG_2XX,
    AGG_3XX,
    AGG_4XX,
    AGG_5XX,
    AGG_UPERR,
    AGG_BYTES_IN,
    AGG_BYTES_OUT,
    AGG_LAT0, /* HIST_BUCKETS latency buckets follow */
    AGG_WIDTH = AGG_LAT0 + HIST_BUCKETS
};

/* Most distinct proxies and instances tracked at once: bounds memory against a flood of
 * well-formed messages with made-up sender or instance names. */
#define AGG_MAX_SENDERS   256
#define AGG_MAX_INSTANCES 1024

typedef struct {
    unsigned stable_window_s; /* 1..3600 */
    unsigned panic_window_s;  /* 1..stable_window_s */
    uint64_t stale_after_ms;  /* a proxy silent this long is no longer live */
    uint64_t forget_after_ms; /* proxies and instances silent this long are forgotten;
                                 0 = the longer of (stable window + 2 s) and 10 x stale */
} agg_config_t;

/* What agg_on_stats did with a message. */
typedef enum {
    AGG_DELTA = 0,        /* a known proxy: differences against its previous message */
    AGG_NEW_BASELINE,     /* a proxy seen for the first time that started long ago: its counts
                             are history, this message is only the baseline */
    AGG_NEW_FULL,         /* a proxy that started recently: everything it counted is new */
    AGG_RESTART_BASELINE, /* counters went backwards under the same started_ms, or the proxy
                             restarted long ago (we missed it): baseline */
    AGG_RESTART_FULL,     /* new started_ms, recent: everything counted since is new */
    AGG_OLD_SEQ,          /* seq not newer than the last one seen: ignored */
    AGG_REJECTED          /* too many proxies tracked: ignored */
} agg_result_t;

typedef struct _agg_t agg_t;

/* Creates an aggregator. Returns NULL on bad windows (0, > 3600, panic > stable) or OOM. */
agg_t *agg_new(const agg_config_t *cfg);

/* Destroys *self_p and sets it to NULL; nothing on NULL. */
void agg_destroy(agg_t **self_p);

/* Name of a result, for logs. */
const char *agg_result_name(agg_result_t r);

/* Takes one ProxyStats (already checked by msg_recv) received at local monotonic time now_ms.
 * Reads st only; keeps copies of what it needs. Deltas go into the window slot of second
 * now_ms / 1000 (the receive time, not the sender's clock: proxies' clocks may disagree),
 * except counts that built up over more than a second (a recently started proxy's first
 * message, a known proxy's first after a gap), which are spread over that time. */
agg_result_t agg_on_stats(agg_t *self, const Tide__V1__ProxyStats *st, uint64_t now_ms);

/* Forgets proxies and instances silent for forget_after_ms. Called by agg_snapshot too. */
void agg_expire(agg_t *self, uint64_t now_ms);

/* Builds the snapshot at now_ms (expiring first). Rates use whole seconds only: see
 * aggregate.c. The header is left NULL and dropped_frames 0 for the caller to fill. Returns a
 * heap message owned by the caller (free with agg_snapshot_destroy), or NULL on OOM. */
Tide__V1__MetricsSnapshot *agg_snapshot(agg_t *self, uint64_t now_ms);

/* Frees a snapshot from agg_snapshot and sets *snap_p to NULL; nothing on NULL. The header,
 * if the caller set one, is not freed (it normally points at a msg_sender_t). */
void agg_snapshot_destroy(Tide__V1__MetricsSnapshot **snap_p);

/* Cumulative counters since this aggregator was created: all proxies' totals (including
 * requests no instance served) and, for i < agg_instance_count(), each instance still tracked
 * (in natural name order: production2 before production10). Pointers stay valid until the
 * next agg_on_stats, agg_expire or agg_snapshot. */
const uint64_t *agg_totals(const agg_t *self);
size_t agg_instance_count(const agg_t *self);
const char *agg_instance_name(const agg_t *self, size_t i);
const uint64_t *agg_instance_totals(const agg_t *self, size_t i);

/* Proxies tracked (live or not yet forgotten). */
size_t agg_sender_count(const agg_t *self);

#endif
