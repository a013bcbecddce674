/* retry.h - what to do after a failed attempt to reach an instance: send the request again (to
 * the same instance or another) or answer the client, and whether the instance is to blame.
 *
 * Pure: the client (client.c s_up_error) gathers the facts of the failure and acts on the
 * decision. The rule for requests that are not idempotent (POST, PATCH...): they are sent again
 * only when they cannot have reached the instance (the connect failed, or not one byte of the
 * request was written), unless proxy.retry_non_idempotent says otherwise (nginx's
 * `proxy_next_upstream non_idempotent`). */
#ifndef PROXY_RETRY_H
#define PROXY_RETRY_H

#include <stdbool.h>

/* How an attempt failed (upstream.c reports it). */
typedef enum {
    UP_ERR_CONNECT,         /* the connect failed: nothing was sent */
    UP_ERR_CONNECT_TIMEOUT, /* the connect took too long: nothing was sent */
    UP_ERR_TIMEOUT,         /* the instance went silent past response_timeout_ms */
    UP_ERR_CLOSED,          /* EOF or reset before the response ended */
    UP_ERR_PROTOCOL,        /* the response is not valid HTTP/1.x */
    UP_ERR_LOCAL,           /* the proxy's own: no file descriptor, no memory, no port */
} upstream_err_t;

typedef struct {
    upstream_err_t err;
    bool reused;               /* the connection had served a request before (keep-alive) */
    bool got_bytes;            /* any response byte had arrived */
    bool wrote;                /* any request byte was handed to the socket */
    bool resp_started;         /* part of the response already went to the client */
    bool idempotent;           /* the method (RFC 9110 9.2.2) */
    bool replayable;           /* every request byte is still held (nothing trimmed) */
    int other_retries;         /* retries on another instance so far */
    int race_retries;          /* keep-alive race retries so far */
    bool retry_non_idempotent; /* proxy.retry_non_idempotent */
} retry_facts_t;

typedef enum {
    RETRY_NONE,  /* answer the client with status (or close, when status is 0) */
    RETRY_SAME,  /* again on a fresh connection to the same instance (if still in the pool) */
    RETRY_OTHER, /* again on another instance */
} retry_action_t;

typedef struct {
    retry_action_t action;
    int status;     /* RETRY_NONE: 502, 503 or 504; 0: only closing can tell the client */
    bool mark_down; /* the connect failed: the instance is down until a probe succeeds */
    bool charge;    /* counts as the instance's upstream error (the scaler watches those) */
} retry_decision_t;

retry_decision_t retry_decide(const retry_facts_t *f);

/* True for a libuv error that is the proxy's own (EMFILE, ENFILE, ENOMEM, ENOBUFS,
 * EADDRNOTAVAIL: no descriptor, memory or local port), not the instance's. */
bool retry_local_error(int uv_status);

#endif
