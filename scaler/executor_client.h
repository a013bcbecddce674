/* executor_client.h - tide-scaler's REQ side of executor.control, lazy pirate, without blocking.
 *
 * Requests are queued and sent one at a time (a REQ socket allows one outstanding request). A
 * request unanswered for timeout_ms is sent again, byte for byte, on a fresh socket (a REQ
 * socket that lost its reply is stuck, so it is closed and reopened); the executor treats a
 * repeated job_id as the same job. After max_tries the request is given up and reported with no
 * reply. The caller polls exec_client_handle() with its other sockets and calls
 * exec_client_tick() at least every exec_client_wake_ms(). */
#ifndef SCALER_EXECUTOR_CLIENT_H
#define SCALER_EXECUTOR_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "tide_config.h"
#include "tide_msg.h"

#define EXEC_CLIENT_QUEUE 8

typedef struct _exec_client_t exec_client_t;

typedef struct {
    Tide__V1__JobKind kind; /* what was asked: the job's kind, or JOB_STATUS for a poll */
    char job_id[128];
    Tide__V1__ExecReply *reply; /* owned by the result (exec_result_free); NULL: given up */
    int tries;
} exec_result_t;

/* Creates a client for endpoint. sender stamps the headers and must outlive the client. NULL on
 * OOM. Nothing connects until the first request. */
exec_client_t *exec_client_new(const char *endpoint, int timeout_ms, int max_tries,
                               msg_sender_t *sender, const tide_config_t *cfg);

/* Closes the socket, drops queued requests, frees *self_p and sets it to NULL; NULL is fine. */
void exec_client_destroy(exec_client_t **self_p);

/* Queues a request: a job (instances[0..n) are copied) or, with kind JOB_STATUS, a status
 * query for job_id. Returns 0; -EALREADY when the same status query is already queued (nothing
 * to do); -ENOSPC when the queue is full; -ENOMEM. */
int exec_client_submit(exec_client_t *self, Tide__V1__JobKind kind, const char *job_id,
                       Tide__V1__Instance *const *instances, size_t n, uint32_t deadline_ms,
                       uint64_t now_ms);

/* Queues a PROFILE job (spec is copied), as exec_client_submit does. */
int exec_client_submit_profile(exec_client_t *self, const char *job_id,
                               Tide__V1__Instance *const *instances, size_t n,
                               const Tide__V1__ProfileSpec *spec, uint32_t deadline_ms,
                               uint64_t now_ms);

/* The ZeroMQ socket handle to poll for input (ZMQ_POLLIN), or NULL when nothing is in flight.
 * It changes when the socket is reopened: fetch it before each poll. */
void *exec_client_handle(exec_client_t *self);

/* Reads the reply when the handle is readable. Returns 1 with *out filled (the request is
 * done and the next one sent), or 0 when nothing usable was read (a malformed reply counts as
 * a failed try). */
int exec_client_on_readable(exec_client_t *self, uint64_t now_ms, exec_result_t *out);

/* Retries or gives up a request whose reply is overdue. Returns 1 with *out filled (reply
 * NULL) when a request was given up, else 0. */
int exec_client_tick(exec_client_t *self, uint64_t now_ms, exec_result_t *out);

/* When exec_client_tick next has work (UINT64_MAX when idle). */
uint64_t exec_client_wake_ms(const exec_client_t *self);

/* Requests queued or in flight. */
size_t exec_client_pending(const exec_client_t *self);

/* Frees out->reply; nothing on NULL. */
void exec_result_free(exec_result_t *out);

#endif
