/* prom.h - the Prometheus text exposition of tide-metrics: counters from the aggregator,
 * gauges from the last snapshot, and the scaler's and executor's events (state, pool, jobs).
 *
 * Pure: rendering reads its inputs and returns text; the bus state is a plain struct updated
 * from decoded messages. */
#ifndef TIDE_METRICS_PROM_H
#define TIDE_METRICS_PROM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "aggregate.h"

#define PROM_JOB_KINDS 6 /* Tide__V1__JobKind values 0..JOB_STATUS */

/* What tide-metrics learned from scaler.* and exec.job events. */
typedef struct {
    bool state_known;
    int state; /* Tide__V1__State */
    uint32_t current, desired;
    bool paused;
    bool pool_known;
    uint32_t pool_size;
    uint64_t pool_version;
    uint32_t draining;
    uint64_t decisions;
    uint64_t transitions;
    uint64_t jobs_started[PROM_JOB_KINDS];
    uint64_t jobs_succeeded[PROM_JOB_KINDS];
    uint64_t jobs_failed[PROM_JOB_KINDS];
} bus_gauges_t;

/* Updates g from one decoded message of topic (scaler.state, scaler.decision, scaler.pool,
 * exec.job); other topics are ignored. */
void prom_on_event(bus_gauges_t *g, const char *topic, const ProtobufCMessage *msg);

/* Renders the whole exposition. snap may be NULL (no snapshot yet). Returns a NUL-terminated
 * heap string the caller frees, with its length in *len, or NULL on OOM. */
char *prom_render(const agg_t *agg, const Tide__V1__MetricsSnapshot *snap, const bus_gauges_t *g,
                  uint64_t dropped_frames, size_t *len);

#endif
