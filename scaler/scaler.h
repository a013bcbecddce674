/* scaler.h - tide-scaler's runtime: the sockets, the poll loop, and the edges of the pure core.
 *
 * It feeds bus messages, control requests, executor replies and the clock to the state machine
 * (fsm.c) and performs the actions it answers with: Redis writes (store.c), scaler.* events,
 * executor requests (executor_client.c). main.c only parses arguments and runs this. */
#ifndef SCALER_SCALER_H
#define SCALER_SCALER_H

#include "tide_config.h"

typedef struct _scaler_t scaler_t;

/* Binds its events (PUB) and control (REP) endpoints (its entry in cfg's scalers list, found
 * by id, else endpoints.scaler_*), connects to metrics and executor_events (SUB). id is the
 * process id used in message headers, job ids and the lease. cfg must outlive the scaler.
 * Returns NULL (with the cause logged) when a socket cannot be bound, id is not in a non-empty
 * scalers list, or on OOM. */
scaler_t *scaler_new(const tide_config_t *cfg, const char *id);

/* Closes every socket and the Redis connection, frees *self_p, sets it to NULL; NULL is fine. */
void scaler_destroy(scaler_t **self_p);

/* Runs until SIGINT/SIGTERM (czmq's zsys_interrupted). Stands by until it holds the lease
 * (scaler/lease.h), then reads Redis (retrying until it answers), reconciles with the executor
 * and scales; steps down to standby when the lease is lost. Returns 0 on a clean stop, -EIO when
 * polling failed. */
int scaler_run(scaler_t *self);

#endif
