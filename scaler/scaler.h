/* scaler.h - tide-scaler's runtime: the sockets, the poll loop, and the edges of the pure core.
 *
 * It feeds bus messages, control requests, executor replies and the clock to the state machine
 * (fsm.c) and performs the actions it answers with: Redis writes (store.c), scaler.* events,
 * executor requests (executor_client.c). main.c only parses arguments and runs this. */
#ifndef SCALER_SCALER_H
#define SCALER_SCALER_H

#include "tide_config.h"

typedef struct _scaler_t scaler_t;

/* Binds scaler_events (PUB) and scaler_control (REP), connects to metrics and executor_events
 * (SUB). id is the process id used in message headers and job ids. cfg must outlive the
 * scaler. Returns NULL (with the cause logged) when a socket cannot be bound or on OOM. */
scaler_t *scaler_new(const tide_config_t *cfg, const char *id);

/* Closes every socket and the Redis connection, frees *self_p, sets it to NULL; NULL is fine. */
void scaler_destroy(scaler_t **self_p);

/* Runs until SIGINT/SIGTERM (czmq's zsys_interrupted). Reads Redis (retrying until it
 * answers), reconciles with the executor, then scales. Returns 0 on a clean stop, -EIO when
 * polling failed. */
int scaler_run(scaler_t *self);

#endif
