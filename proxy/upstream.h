/* upstream.h - connections to instances, each instance's pool of idle keep-alive ones, and its
 * up/down state.
 *
 * An instance_t is one pool entry as one worker sees it: its address, the requests this worker
 * has in flight to it, its idle connections (LIFO: the most recently used is the least likely
 * to have been closed by the instance) and whether it is down. An instance whose connect fails
 * is marked down: no request goes to it (unless every instance is down) and after a backoff a
 * probe (a bare TCP connect) checks it; a failed probe doubles the backoff, a successful one (or
 * any successful connect, or the entry joining the pool anew) brings it back up. Once it has
 * left the pool and nothing points at it (instance_drained) the worker frees it.
 *
 * An upstream_conn_t carries one request at a time for one owner (a client connection): it
 * writes what the owner sends, parses the response and reports it through callbacks. When the
 * response ends the connection goes back to the idle list by itself if it can be reused, or
 * closes. After a 101 answer to an upgrade request it becomes a tunnel: bytes both ways, no
 * parsing, until either side closes. Everything runs on one worker's loop. */
#ifndef PROXY_UPSTREAM_H
#define PROXY_UPSTREAM_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "headers.h"
#include "retry.h"
#include "stats.h"

typedef struct upstream_conn upstream_conn_t;
typedef struct probe probe_t;

typedef struct {
    int connect_timeout_ms;
    int response_timeout_ms; /* the response head must come this long after the request's last
                                byte was written; then the longest silence within its body */
    int idle_timeout_ms;     /* an idle connection is closed after this */
    int idle_max;            /* idle connections kept per instance */
    size_t max_header_size;
    int down_backoff_ms;     /* first wait before probing an instance marked down */
    int down_backoff_max_ms; /* the wait doubles on each failed probe up to this */
} upstream_opts_t;

/* A plain record: the worker, the balancer and the client read its fields. */
typedef struct instance {
    char name[64];
    char addr[128];
    struct sockaddr_storage sa;
    stats_counters_t *stats; /* this worker's slot for the instance */
    uint32_t in_flight;      /* requests of this worker sent to it, response not finished */
    uint32_t held;           /* clients whose exchange still points at it (client.c) */
    uint32_t conns;          /* its connections not yet closed (close callback not run) */
    bool in_pool;            /* false while draining after leaving the pool */
    bool listed;             /* the worker's mark while it applies a new pool */
    bool down;               /* a connect failed: no request until a probe succeeds */
    int backoff_ms;          /* while down: the current wait between probes */
    probe_t *probe;          /* while down (or after): the probe's timer and connection */
    upstream_conn_t *idle;   /* idle connections, most recent first */
    uint32_t idle_count;
    uv_loop_t *loop;
    const upstream_opts_t *opts;
    struct instance *next; /* the worker's list */
} instance_t;

/* An instance for addr ("ip:port", numeric). NULL when addr is not numeric ip:port or on OOM. */
instance_t *instance_new(uv_loop_t *loop, const upstream_opts_t *opts, const char *name,
                         const char *addr, stats_counters_t *stats);

/* The instance entered (true) or left (false) the pool. Leaving closes its idle connections
 * (in-flight requests finish) and stops probing it. Entering clears a down mark: the entry is
 * new (a replacement at the address, or the instance back after it left), and what an earlier
 * one did says nothing of it; a failed connect marks it down again. */
void instance_set_in_pool(instance_t *self, bool in_pool);

/* Out of the pool and nothing left of it: no request in flight or pointing at it, no
 * connection open or closing. It may then be shut down and destroyed at once. */
bool instance_drained(const instance_t *self);

/* A connect to the instance failed: mark it down and schedule a probe (nothing if it is down
 * already: the probes go on at their pace). */
void instance_connect_failed(instance_t *self);

/* A connect to the instance succeeded: it is up. */
void instance_connect_ok(instance_t *self);

/* The worker stops: close the idle connections and the probe's handles. The loop must then run
 * until they are closed, before instance_destroy. */
void instance_shutdown(instance_t *self);

/* Frees the record. Every connection and handle must be closed and its close callback run. */
void instance_destroy(instance_t **self_p);

/* upstream_err_t, the kinds of failure, is in retry.h. */

typedef struct {
    upstream_err_t err;
    bool reused;    /* the connection had served a request before (keep-alive) */
    bool got_bytes; /* any response byte had arrived */
    bool wrote;     /* any request byte was handed to the socket */
    int uv_status;  /* the libuv error, when there was one */
} upstream_failure_t;

typedef struct {
    uint16_t status;
    const char *reason;
    size_t reason_len;
    const hdrs_t *hdrs;
    body_mode_t body; /* how the instance frames the body */
    bool upgrade;     /* 101 to an upgrade request: the connection becomes a tunnel */
} upstream_head_t;

/* Callbacks to the owner. None is called from inside an upstream_* call made by the owner. */
typedef struct {
    /* Connected: send the request now. */
    void (*on_connect)(void *owner);
    /* A response head; 1xx interim heads come first (status < 200), then the final one (or a
     * 101 with head->upgrade, after which only on_tunnel_data / on_tunnel_end follow). */
    void (*on_head)(void *owner, const upstream_head_t *head);
    void (*on_body)(void *owner, const char *data, size_t len);
    /* The response ended. trailers holds the chunked body's trailer fields from index first
     * on (none when first == trailers->n); valid during the call only. The connection no
     * longer belongs to the owner (it is idle or closing). */
    void (*on_complete)(void *owner, const hdrs_t *trailers, size_t first);
    /* The exchange failed. The connection is closing and no longer belongs to the owner. */
    void (*on_error)(void *owner, const upstream_failure_t *failure);
    /* The write queue fell below the low watermark after being above the high one. */
    void (*on_drain)(void *owner);
    /* Everything one read brought has been reported and more is to come: a good moment to
     * write out what the owner held back to coalesce (the response head). */
    void (*on_flush)(void *owner);
    /* Tunnel bytes from the instance. */
    void (*on_tunnel_data)(void *owner, const char *data, size_t len);
    /* The instance closed its side of the tunnel (or it failed). The connection is closing and
     * no longer belongs to the owner. */
    void (*on_tunnel_end)(void *owner);
} upstream_cb_t;

/* upstream_open flags */
#define UP_OPEN_IDLE    1u /* take an idle keep-alive connection when there is one */
#define UP_OPEN_HEAD    2u /* the request is HEAD: the response has no body whatever it says */
#define UP_OPEN_UPGRADE 4u /* the request asks for an upgrade: a 101 turns it into a tunnel */

/* Starts an exchange with inst for owner: takes an idle connection (UP_OPEN_IDLE, when there
 * is one; upstream_connected is then true at once), else connects. Returns 0 with *out set,
 * or a negative errno when a connect could not even start (no callback is then called). */
int upstream_open(instance_t *inst, unsigned flags, void *owner, const upstream_cb_t *cb,
                  upstream_conn_t **out);

bool upstream_connected(const upstream_conn_t *self);

/* Queues chunk for writing (takes its own reference while it is queued). Only once connected
 * (or in a tunnel). */
void upstream_send(upstream_conn_t *self, chunk_t *chunk);

/* The owner has sent the whole request: the connection may be reused after the response. */
void upstream_request_done(upstream_conn_t *self);

/* Tunnel: the client closed its side; closes ours towards the instance once the queue is out
 * (the instance may still answer). */
void upstream_shutdown(upstream_conn_t *self);

/* Bytes queued in libuv for the instance. */
size_t upstream_write_queue(const upstream_conn_t *self);

/* Stop / restart reading the response (the client is slow to take it). */
void upstream_pause(upstream_conn_t *self);
void upstream_resume(upstream_conn_t *self);

/* The owner gives up on the exchange (its client went away): the connection closes. Sets
 * *self_p to NULL; nothing on NULL. No callback follows. */
void upstream_abort(upstream_conn_t **self_p);

/* Watermarks for the write queues on both sides. */
#define PROXY_WQ_HIGH (256 * 1024)
#define PROXY_WQ_LOW  (64 * 1024)

#endif
