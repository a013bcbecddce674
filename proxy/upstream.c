/* upstream.c - connections to instances, response parsing, idle keep-alive pools. */
#include "upstream.h"

#include <errno.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>

#include "tide_config.h"
#include "tide_log.h"

typedef enum { UP_CONNECTING, UP_ACTIVE, UP_IDLE, UP_CLOSED } up_state_t;

struct upstream_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_timer_t timer;
    int open_handles;
    instance_t *inst;
    up_state_t state;
    http_parser parser;
    hdrs_t hdrs;
    buf_t reason;
    void *owner;
    const upstream_cb_t *cb;
    uint16_t status;
    body_mode_t body;
    bool reused, head_only, got_bytes, head_done, msg_done, req_done;
    bool paused, reading, keepalive, above_high;
    int pending_err; /* a failure found inside an owner's call, reported from the timer */
    upstream_conn_t *idle_next, *idle_prev;
};

typedef struct {
    uv_write_t req;
    chunk_t *chunk;
    upstream_conn_t *conn;
} wreq_t;

/* One read buffer per worker thread: every read is handled before the next one starts, and
 * nobody keeps a pointer into it past the read callback. */
static __thread char s_rbuf[64 * 1024];

static void s_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    b->base = s_rbuf;
    b->len = sizeof s_rbuf;
}

instance_t *instance_new(uv_loop_t *loop, const upstream_opts_t *opts, const char *name,
                         const char *addr, stats_counters_t *stats)
{
    char host[CFG_STR];
    int port;
    if (config_split_addr(addr, host, sizeof host, &port) != 0)
        return NULL;
    instance_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&self->sa) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&self->sa) != 0) {
        free(self);
        return NULL;
    }
    snprintf(self->name, sizeof self->name, "%s", name);
    snprintf(self->addr, sizeof self->addr, "%s", addr);
    self->stats = stats;
    self->loop = loop;
    self->opts = opts;
    return self;
}

void instance_destroy(instance_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free(*self_p);
    *self_p = NULL;
}

static void s_on_close(uv_handle_t *h)
{
    upstream_conn_t *self = h->data;
    if (--self->open_handles > 0)
        return;
    self->inst->conns--;
    hdrs_free(&self->hdrs);
    buf_free(&self->reason);
    free(self);
}

static void s_idle_unlink(upstream_conn_t *self)
{
    instance_t *inst = self->inst;
    if (self->idle_prev)
        self->idle_prev->idle_next = self->idle_next;
    else
        inst->idle = self->idle_next;
    if (self->idle_next)
        self->idle_next->idle_prev = self->idle_prev;
    self->idle_next = self->idle_prev = NULL;
    inst->idle_count--;
}

static void s_close(upstream_conn_t *self)
{
    if (self->state == UP_CLOSED)
        return;
    if (self->state == UP_IDLE)
        s_idle_unlink(self);
    self->state = UP_CLOSED;
    self->owner = NULL;
    uv_timer_stop(&self->timer);
    uv_close((uv_handle_t *)&self->tcp, s_on_close);
    uv_close((uv_handle_t *)&self->timer, s_on_close);
}

void instance_close_idle(instance_t *self)
{
    while (self->idle)
        s_close(self->idle);
}

static void s_on_timer(uv_timer_t *t);

static void s_arm(upstream_conn_t *self, int ms)
{
    uv_timer_start(&self->timer, s_on_timer, (uint64_t)ms, 0);
}

/* Ends the exchange with a failure: the connection closes, the owner hears once. */
static void s_fail(upstream_conn_t *self, upstream_err_t err, int uv_status)
{
    void *owner = self->owner;
    const upstream_cb_t *cb = self->cb;
    upstream_failure_t f = {.err = err,
                            .reused = self->reused,
                            .got_bytes = self->got_bytes,
                            .head_done = self->head_done,
                            .uv_status = uv_status};
    s_close(self);
    if (owner)
        cb->on_error(owner, &f);
}

static void s_start_reading(upstream_conn_t *self);

static void s_make_idle(upstream_conn_t *self)
{
    instance_t *inst = self->inst;
    self->state = UP_IDLE;
    self->owner = NULL;
    self->paused = false;
    http_parser_init(&self->parser, HTTP_RESPONSE);
    self->parser.data = self;
    self->idle_prev = NULL;
    self->idle_next = inst->idle;
    if (inst->idle)
        inst->idle->idle_prev = self;
    inst->idle = self;
    inst->idle_count++;
    s_start_reading(self); /* an idle connection reads only to notice the instance closing */
    s_arm(self, inst->opts->idle_timeout_ms);
}

/* The response ended: reuse or close the connection, then tell the owner. */
static void s_finish(upstream_conn_t *self)
{
    void *owner = self->owner;
    const upstream_cb_t *cb = self->cb;
    instance_t *inst = self->inst;
    self->owner = NULL;
    bool reuse = self->keepalive && self->req_done && inst->in_pool &&
                 inst->idle_count < (uint32_t)inst->opts->idle_max;
    if (reuse)
        s_make_idle(self);
    else
        s_close(self);
    if (owner)
        cb->on_complete(owner);
}

static void s_on_timer(uv_timer_t *t)
{
    upstream_conn_t *self = t->data;
    switch (self->state) {
    case UP_CONNECTING:
        s_fail(self, UP_ERR_CONNECT_TIMEOUT, UV_ETIMEDOUT);
        break;
    case UP_ACTIVE:
        if (self->pending_err)
            s_fail(self, UP_ERR_CLOSED, self->pending_err);
        else
            s_fail(self, UP_ERR_TIMEOUT, UV_ETIMEDOUT);
        break;
    case UP_IDLE:
        s_close(self);
        break;
    case UP_CLOSED:
        break;
    }
}

/* ---- response parsing ---------------------------------------------------------------- */

static int s_on_message_begin(http_parser *p)
{
    upstream_conn_t *self = p->data;
    hdrs_reset(&self->hdrs);
    buf_reset(&self->reason);
    return 0;
}

static int s_on_status(http_parser *p, const char *at, size_t len)
{
    upstream_conn_t *self = p->data;
    if (self->reason.len + len > 512)
        return -1;
    return buf_append(&self->reason, at, len) ? -1 : 0;
}

static int s_on_header_field(http_parser *p, const char *at, size_t len)
{
    upstream_conn_t *self = p->data;
    return hdrs_on_field(&self->hdrs, at, len) ? -1 : 0;
}

static int s_on_header_value(http_parser *p, const char *at, size_t len)
{
    upstream_conn_t *self = p->data;
    return hdrs_on_value(&self->hdrs, at, len) ? -1 : 0;
}

static int s_on_headers_complete(http_parser *p)
{
    upstream_conn_t *self = p->data;
    if (self->state != UP_ACTIVE || !self->owner)
        return -1;
    uint16_t status = (uint16_t)p->status_code;
    if (status == 101)
        return -1; /* tide never forwards Upgrade, so a switch is a broken instance */
    self->status = status;
    bool no_body = status < 200 || status == 204 || status == 304 || self->head_only;
    if (no_body)
        self->body = BODY_NONE;
    else if (p->flags & F_CHUNKED)
        self->body = BODY_CHUNKED;
    else if (p->flags & F_CONTENTLENGTH)
        self->body = BODY_LENGTH;
    else
        self->body = BODY_EOF;
    self->keepalive = http_should_keep_alive(p) && self->body != BODY_EOF;
    if (status >= 200)
        self->head_done = true;
    upstream_head_t h = {.status = status,
                         .reason = self->reason.data,
                         .reason_len = self->reason.len,
                         .hdrs = &self->hdrs,
                         .body = self->body,
                         .keepalive = self->keepalive};
    self->cb->on_head(self->owner, &h);
    if (self->state != UP_ACTIVE)
        return -1;
    return self->head_only && status >= 200 ? 1 : 0; /* 1: a HEAD response has no body */
}

static int s_on_body(http_parser *p, const char *at, size_t len)
{
    upstream_conn_t *self = p->data;
    if (self->state != UP_ACTIVE || !self->owner)
        return -1;
    self->cb->on_body(self->owner, at, len);
    return self->state == UP_ACTIVE ? 0 : -1;
}

static int s_on_message_complete(http_parser *p)
{
    upstream_conn_t *self = p->data;
    if (self->status < 200)
        return 0; /* an interim response: the final one follows on the same parser */
    self->msg_done = true;
    http_parser_pause(p, 1); /* anything after the response is not ours to parse */
    return 0;
}

static const http_parser_settings s_settings = {
    .on_message_begin = s_on_message_begin,
    .on_status = s_on_status,
    .on_header_field = s_on_header_field,
    .on_header_value = s_on_header_value,
    .on_headers_complete = s_on_headers_complete,
    .on_body = s_on_body,
    .on_message_complete = s_on_message_complete,
};

/* ---- I/O ------------------------------------------------------------------------------ */

static void s_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    upstream_conn_t *self = s->data;
    if (nread == 0)
        return;
    if (self->state == UP_IDLE) {
        /* EOF, an error, or bytes nobody asked for: this connection cannot be reused. */
        s_close(self);
        return;
    }
    if (self->state != UP_ACTIVE)
        return;
    if (nread < 0) {
        if (nread == UV_EOF && self->got_bytes) {
            /* EOF ends a body delimited by the connection's close. */
            http_parser_execute(&self->parser, &s_settings, NULL, 0);
            if (self->state != UP_ACTIVE)
                return;
            if (self->msg_done) {
                self->keepalive = false;
                s_finish(self);
                return;
            }
        }
        s_fail(self, UP_ERR_CLOSED, (int)nread);
        return;
    }
    self->got_bytes = true;
    s_arm(self, self->inst->opts->response_timeout_ms);
    size_t n = http_parser_execute(&self->parser, &s_settings, b->base, (size_t)nread);
    if (self->state != UP_ACTIVE)
        return; /* the owner gave up from a callback */
    if (self->msg_done) {
        if (n < (size_t)nread)
            self->keepalive = false; /* bytes past the response: do not trust the connection */
        s_finish(self);
        return;
    }
    if (HTTP_PARSER_ERRNO(&self->parser) != HPE_OK) {
        log_debug("bad response from instance", "instance=%s err=%s", self->inst->name,
                  http_errno_name(HTTP_PARSER_ERRNO(&self->parser)));
        s_fail(self, UP_ERR_PROTOCOL, 0);
        return;
    }
    if (self->owner)
        self->cb->on_flush(self->owner);
}

static void s_start_reading(upstream_conn_t *self)
{
    if (!self->reading && uv_read_start((uv_stream_t *)&self->tcp, s_alloc, s_on_read) == 0)
        self->reading = true;
}

static void s_stop_reading(upstream_conn_t *self)
{
    if (self->reading) {
        uv_read_stop((uv_stream_t *)&self->tcp);
        self->reading = false;
    }
}

static void s_on_connect(uv_connect_t *req, int status)
{
    upstream_conn_t *self = req->data;
    if (status == UV_ECANCELED || self->state != UP_CONNECTING)
        return;
    if (status < 0) {
        s_fail(self, UP_ERR_CONNECT, status);
        return;
    }
    self->state = UP_ACTIVE;
    s_start_reading(self);
    s_arm(self, self->inst->opts->response_timeout_ms);
    if (self->owner)
        self->cb->on_connect(self->owner);
}

static void s_reset_exchange(upstream_conn_t *self, void *owner, const upstream_cb_t *cb,
                             bool head_only)
{
    self->owner = owner;
    self->cb = cb;
    self->head_only = head_only;
    self->got_bytes = self->head_done = self->msg_done = self->req_done = false;
    self->paused = self->above_high = self->keepalive = false;
    self->pending_err = 0;
    self->status = 0;
}

int upstream_open(instance_t *inst, bool allow_idle, bool head_only, void *owner,
                  const upstream_cb_t *cb, upstream_conn_t **out)
{
    upstream_conn_t *self;
    if (allow_idle && inst->idle) {
        self = inst->idle;
        s_idle_unlink(self);
        self->state = UP_ACTIVE;
        self->reused = true;
        s_reset_exchange(self, owner, cb, head_only);
        s_arm(self, inst->opts->response_timeout_ms);
        *out = self;
        return 0;
    }
    self = calloc(1, sizeof *self);
    if (!self)
        return -ENOMEM;
    int rc = uv_tcp_init(inst->loop, &self->tcp);
    if (rc < 0) {
        free(self);
        return rc;
    }
    uv_timer_init(inst->loop, &self->timer);
    self->tcp.data = self->timer.data = self->connect_req.data = self;
    self->open_handles = 2;
    self->inst = inst;
    inst->conns++;
    hdrs_init(&self->hdrs, inst->opts->max_header_size);
    http_parser_init(&self->parser, HTTP_RESPONSE);
    self->parser.data = self;
    s_reset_exchange(self, owner, cb, head_only);
    self->state = UP_CONNECTING;
    uv_tcp_nodelay(&self->tcp, 1);
    rc = uv_tcp_connect(&self->connect_req, &self->tcp, (const struct sockaddr *)&inst->sa,
                        s_on_connect);
    if (rc < 0) {
        self->owner = NULL;
        s_close(self);
        return rc;
    }
    s_arm(self, inst->opts->connect_timeout_ms);
    *out = self;
    return 0;
}

bool upstream_connected(const upstream_conn_t *self)
{
    return self->state == UP_ACTIVE;
}

bool upstream_reused(const upstream_conn_t *self)
{
    return self->reused;
}

static void s_on_write(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    upstream_conn_t *self = w->conn;
    chunk_unref(&w->chunk);
    free(w);
    if (status < 0) {
        if (self->state == UP_ACTIVE)
            s_fail(self, UP_ERR_CLOSED, status);
        else if (self->state == UP_IDLE)
            s_close(self);
        return;
    }
    if (self->state != UP_ACTIVE)
        return;
    if (!self->paused)
        s_arm(self, self->inst->opts->response_timeout_ms); /* the request is moving */
    if (self->above_high && self->tcp.write_queue_size < PROXY_WQ_LOW) {
        self->above_high = false;
        if (self->owner)
            self->cb->on_drain(self->owner);
    }
}

void upstream_send(upstream_conn_t *self, chunk_t *chunk)
{
    if (self->state != UP_ACTIVE || self->pending_err)
        return;
    wreq_t *w = malloc(sizeof *w);
    if (!w) {
        self->pending_err = UV_ENOMEM;
        s_arm(self, 0);
        return;
    }
    w->chunk = chunk_ref(chunk);
    w->conn = self;
    uv_buf_t b = uv_buf_init(chunk->data, (unsigned)chunk->len);
    int rc = uv_write(&w->req, (uv_stream_t *)&self->tcp, &b, 1, s_on_write);
    if (rc < 0) {
        chunk_unref(&w->chunk);
        free(w);
        /* Report from the timer: the owner must not be called back from inside its call. */
        self->pending_err = rc;
        s_arm(self, 0);
        return;
    }
    if (self->tcp.write_queue_size > PROXY_WQ_HIGH)
        self->above_high = true;
}

void upstream_request_done(upstream_conn_t *self)
{
    self->req_done = true;
}

size_t upstream_write_queue(const upstream_conn_t *self)
{
    return self->tcp.write_queue_size;
}

void upstream_pause(upstream_conn_t *self)
{
    if (self->state != UP_ACTIVE || self->paused)
        return;
    self->paused = true;
    s_stop_reading(self);
    uv_timer_stop(&self->timer); /* tide holds the response back, the instance is not late */
}

void upstream_resume(upstream_conn_t *self)
{
    if (self->state != UP_ACTIVE || !self->paused)
        return;
    self->paused = false;
    s_start_reading(self);
    s_arm(self, self->inst->opts->response_timeout_ms);
}

void upstream_abort(upstream_conn_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    upstream_conn_t *self = *self_p;
    self->owner = NULL;
    s_close(self);
    *self_p = NULL;
}
