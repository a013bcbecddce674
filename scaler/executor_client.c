/* executor_client.c - lazy-pirate REQ client for executor.control, driven by the caller's
 * poll loop (see executor_client.h). */
#include "executor_client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tide_curve.h"
#include "tide_log.h"

typedef struct {
    Tide__V1__JobKind kind;
    char job_id[128];
    uint8_t *bytes; /* the packed ExecRequest: a resend is the same request */
    size_t len;
} req_t;

struct _exec_client_t {
    char endpoint[256];
    int timeout_ms, max_tries;
    msg_sender_t *sender;
    const tide_config_t *cfg; /* the bus keys */
    zsock_t *sock;
    req_t queue[EXEC_CLIENT_QUEUE];
    size_t head, n; /* ring buffer; queue[head] is in flight once sent */
    bool in_flight;
    int tries;
    uint64_t sent_ms;
};

exec_client_t *exec_client_new(const char *endpoint, int timeout_ms, int max_tries,
                               msg_sender_t *sender, const tide_config_t *cfg)
{
    exec_client_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    snprintf(self->endpoint, sizeof self->endpoint, "%s", endpoint);
    self->timeout_ms = timeout_ms;
    self->max_tries = max_tries < 1 ? 1 : max_tries;
    self->sender = sender;
    self->cfg = cfg;
    return self;
}

static void s_close(exec_client_t *self)
{
    if (self->sock)
        zsock_destroy(&self->sock);
}

static int s_open(exec_client_t *self)
{
    s_close(self);
    self->sock = zsock_new(ZMQ_REQ);
    if (!self->sock)
        return -ENOMEM;
    /* Unsent requests must not keep the process alive at exit or pile up across reopens. */
    zsock_set_linger(self->sock, 0);
    msg_socket_limits(self->sock);
    if (bus_secure_client(self->sock, self->cfg, BUS_ROLE_SCALER, BUS_ROLE_EXECUTOR) ||
        zsock_connect(self->sock, "%s", self->endpoint) != 0) {
        log_error("cannot connect to the executor", "endpoint=%s", self->endpoint);
        s_close(self);
        return -EINVAL;
    }
    return 0;
}

void exec_client_destroy(exec_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    exec_client_t *self = *self_p;
    s_close(self);
    for (size_t i = 0; i < self->n; i++)
        free(self->queue[(self->head + i) % EXEC_CLIENT_QUEUE].bytes);
    free(self);
    *self_p = NULL;
}

/* Sends the request at the head (first try or a resend on a fresh socket). */
static void s_send_head(exec_client_t *self, uint64_t now_ms)
{
    req_t *r = &self->queue[self->head];
    self->in_flight = true;
    self->sent_ms = now_ms;
    if (!self->sock && s_open(self) != 0)
        return; /* the tick retries: counts as a try */
    zmsg_t *zm = zmsg_new();
    zmsg_addstr(zm, TOPIC_EXEC_REQ);
    zmsg_addmem(zm, r->bytes, r->len);
    if (zmsg_send(&zm, self->sock) != 0) {
        zmsg_destroy(&zm);
        log_warn("executor request not sent", "job_id=%s", r->job_id);
    }
}

static void s_pop(exec_client_t *self)
{
    free(self->queue[self->head].bytes);
    memset(&self->queue[self->head], 0, sizeof self->queue[self->head]);
    self->head = (self->head + 1) % EXEC_CLIENT_QUEUE;
    self->n--;
    self->in_flight = false;
    self->tries = 0;
}

static void s_next(exec_client_t *self, uint64_t now_ms)
{
    if (self->n > 0 && !self->in_flight) {
        self->tries = 1;
        s_send_head(self, now_ms);
    }
}

/* Queues req (packed now; its pointers need not outlive the call). */
static int s_queue(exec_client_t *self, Tide__V1__ExecRequest *req, uint64_t now_ms)
{
    if (req->kind == TIDE__V1__JOB_KIND__JOB_STATUS)
        for (size_t i = 0; i < self->n; i++) {
            const req_t *q = &self->queue[(self->head + i) % EXEC_CLIENT_QUEUE];
            if (q->kind == req->kind && strcmp(q->job_id, req->job_id) == 0)
                return -EALREADY;
        }
    if (self->n == EXEC_CLIENT_QUEUE)
        return -ENOSPC;
    req->header = msg_sender_next(self->sender);
    size_t len = tide__v1__exec_request__get_packed_size(req);
    uint8_t *bytes = malloc(len ? len : 1);
    if (!bytes)
        return -ENOMEM;
    tide__v1__exec_request__pack(req, bytes);
    req_t *r = &self->queue[(self->head + self->n) % EXEC_CLIENT_QUEUE];
    r->kind = req->kind;
    snprintf(r->job_id, sizeof r->job_id, "%s", req->job_id);
    r->bytes = bytes;
    r->len = len;
    self->n++;
    s_next(self, now_ms);
    return 0;
}

/* A request for a job (spec only for PROFILE) queued by s_queue. */
static int s_submit(exec_client_t *self, Tide__V1__JobKind kind, const char *job_id,
                    Tide__V1__Instance *const *instances, size_t n, uint32_t deadline_ms,
                    const Tide__V1__ProfileSpec *spec, uint64_t now_ms)
{
    Tide__V1__ExecRequest req = TIDE__V1__EXEC_REQUEST__INIT;
    req.kind = kind;
    req.job_id = (char *)job_id;
    req.instances = (Tide__V1__Instance **)instances;
    req.n_instances = n;
    req.deadline_ms = deadline_ms;
    req.profile = (Tide__V1__ProfileSpec *)spec;
    return s_queue(self, &req, now_ms);
}

int exec_client_submit(exec_client_t *self, Tide__V1__JobKind kind, const char *job_id,
                       Tide__V1__Instance *const *instances, size_t n, uint32_t deadline_ms,
                       uint64_t now_ms)
{
    return s_submit(self, kind, job_id, instances, n, deadline_ms, NULL, now_ms);
}

int exec_client_submit_profile(exec_client_t *self, const char *job_id,
                               Tide__V1__Instance *const *instances, size_t n,
                               const Tide__V1__ProfileSpec *spec, uint32_t deadline_ms,
                               uint64_t now_ms)
{
    return s_submit(self, TIDE__V1__JOB_KIND__JOB_PROFILE, job_id, instances, n, deadline_ms, spec,
                    now_ms);
}

void *exec_client_handle(exec_client_t *self)
{
    return self->in_flight && self->sock ? zsock_resolve(self->sock) : NULL;
}

static void s_fill(const exec_client_t *self, exec_result_t *out, Tide__V1__ExecReply *reply)
{
    const req_t *r = &self->queue[self->head];
    out->kind = r->kind;
    snprintf(out->job_id, sizeof out->job_id, "%s", r->job_id);
    out->reply = reply;
    out->tries = self->tries;
}

/* A failed try: resend on a fresh socket, or give up after max_tries. */
static int s_retry(exec_client_t *self, uint64_t now_ms, exec_result_t *out, const char *why)
{
    const req_t *r = &self->queue[self->head];
    s_close(self);
    if (self->tries >= self->max_tries) {
        log_warn("executor request given up", "job_id=%s kind=%s tries=%d why=\"%s\"", r->job_id,
                 msg_job_kind_name(r->kind), self->tries, why);
        s_fill(self, out, NULL);
        s_pop(self);
        s_next(self, now_ms);
        return 1;
    }
    self->tries++;
    log_info("executor request resent on a new socket", "job_id=%s kind=%s try=%d why=\"%s\"",
             r->job_id, msg_job_kind_name(r->kind), self->tries, why);
    s_send_head(self, now_ms);
    return 0;
}

int exec_client_on_readable(exec_client_t *self, uint64_t now_ms, exec_result_t *out)
{
    memset(out, 0, sizeof *out);
    if (!self->in_flight || !self->sock)
        return 0;
    msg_in_t in;
    int rc = msg_recv(self->sock, &in);
    if (rc == -EAGAIN)
        return 0;
    if (rc != 0 || strcmp(in.topic, TOPIC_EXEC_REP) != 0) {
        msg_in_free(&in);
        return s_retry(self, now_ms, out, "malformed reply");
    }
    s_fill(self, out, (Tide__V1__ExecReply *)in.msg);
    s_pop(self);
    s_next(self, now_ms);
    return 1;
}

int exec_client_tick(exec_client_t *self, uint64_t now_ms, exec_result_t *out)
{
    memset(out, 0, sizeof *out);
    if (!self->in_flight || now_ms < self->sent_ms + (uint64_t)self->timeout_ms)
        return 0;
    return s_retry(self, now_ms, out, "no reply in time");
}

uint64_t exec_client_wake_ms(const exec_client_t *self)
{
    return self->in_flight ? self->sent_ms + (uint64_t)self->timeout_ms : UINT64_MAX;
}

size_t exec_client_pending(const exec_client_t *self)
{
    return self->n;
}

void exec_result_free(exec_result_t *out)
{
    if (out && out->reply) {
        protobuf_c_message_free_unpacked(&out->reply->base, NULL);
        out->reply = NULL;
    }
}
