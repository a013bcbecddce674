/* client.h - one client connection: parses its requests with http-parser, forwards each to an
 * instance through upstream.c and streams the response back, one request at a time, so
 * pipelined requests are answered in order; after a 101 it is a tunnel to the instance. It
 * enforces the client-side limits (head and body size and time, idle time) and answers the
 * proxy's own errors. Runs on its worker's loop only. */
#ifndef PROXY_CLIENT_H
#define PROXY_CLIENT_H

#include <stdbool.h>
#include <uv.h>

#include "list.h"
#include "tide_config.h"
#include "timeouts.h"

typedef struct client client_t;
typedef struct worker worker_t;

/* Sets up a worker's timeouts with the client timeout lengths of cfg (the worker's loop). */
void client_timeouts_init(timeouts_t *tos, uv_loop_t *loop, const tide_config_t *cfg);

/* Accepts one connection from server into a new client linked into list (the worker's). With
 * over_limit the client gets a 503 and is closed. Returns 0 or a negative errno (nothing was
 * accepted, or the accepted socket was closed). */
int client_accept(worker_t *w, uv_stream_t *server, list_node_t *list, bool over_limit);

/* The client of a list node. */
client_t *client_of(list_node_t *node);

/* Shutting down: close now if idle, else after the current response. */
void client_drain(client_t *self);

/* Close now, dropping whatever is in flight. */
void client_abort(client_t *self);

#endif
