/* app_server.h - the sample app's HTTP/1.1 server: one epoll loop per thread, all sharing one
 * listening socket, with keep-alive, pipelining, the per-request cost and a graceful drain. */
#ifndef APP_SERVER_H
#define APP_SERVER_H

#include "app_config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct server server_t;

/* Opens a non-blocking listening socket on cfg->addr and writes the bound address (with the
 * real port when port 0 was asked for) into bound. Returns the descriptor, or a negative errno
 * after writing nothing. */
int server_listen(const app_config_t *cfg, char *bound, size_t bound_size);

/* Starts nloops event loop threads serving listen_fd, plus nworkers threads that burn
 * --cpu-us when it is set. The server takes listen_fd over (and closes it, on failure too).
 * cfg is copied. Returns NULL with errno set when memory, descriptors or threads run out. */
server_t *server_new(const app_config_t *cfg, int listen_fd, int nloops, int nworkers);

/* Stops accepting: every loop drops the listening socket, which is then closed so that new
 * connections are refused rather than queued. Idle connections close; busy ones answer their
 * current request with Connection: close. Returns once the socket is closed, or at
 * deadline_ns (CLOCK_MONOTONIC), when it is left for server_destroy to close. */
void server_drain(server_t *self, uint64_t deadline_ns);

/* Waits until every connection has closed after server_drain, or until deadline_ns
 * (CLOCK_MONOTONIC). Returns true when all are gone, false at the deadline. */
bool server_wait(server_t *self, uint64_t deadline_ns);

/* Responses sent so far (health checks included) and requests refused as malformed. */
uint64_t server_requests(server_t *self);
uint64_t server_rejected(server_t *self);

/* Stops the loops and workers wherever they are, joins them, closes every connection still
 * open (cutting off requests in flight) and frees everything. Does nothing when *self_p is
 * NULL; sets it to NULL. */
void server_destroy(server_t **self_p);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t server_now_ns(void);

#endif
