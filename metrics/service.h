/* service.h - tide-metrics' loop: the sockets, the snapshot timer, and the hand-over to HTTP. */
#ifndef TIDE_METRICS_SERVICE_H
#define TIDE_METRICS_SERVICE_H

#include "tide_config.h"
#include "tide_msg.h"

/* Binds stats (SUB) and metrics (PUB), connects to the scaler's and executor's events, serves
 * HTTP, and runs until SIGINT/SIGTERM. Returns the process exit status: 0 after a signal, 1 when
 * an endpoint or the HTTP address cannot be bound (the cause is logged). */
int service_run(const tide_config_t *cfg, msg_sender_t *sender);

#endif
