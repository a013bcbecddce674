/* upstream.c - connections to instances, response parsing, tunnels, idle keep-alive pools,
 * and the probes of instances marked down (see upstream.h). */
#include "upstream.h"

#include <errno.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>

#include "tide_config.h"
#include "tide_log.h"

typedef enum { UP_CONNECTING, UP_ACTIVE, UP_TUNNEL, UP_IDLE, UP_CLOSED } up_state_t;

struct upstream_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_timer_t timer;
    uint64_t deadline; /* loop time the timer is for (it may be set to fire earlier) */
    uv_shutdown_t shutdown_req;
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
    size_t head_hdrs; /* headers of the final head; trailer fields follow them in hdrs */
    bool reused, head_only, upgrade, got_bytes, wrote, head_done, msg_done, req_done;
    bool paused, reading, keepalive, above_high, to_tunnel, shut;
    int pending_err; /* a failure found inside an owner's call, reported from the timer */
    upstream_conn_t *idle_next, *idle_prev;
};

typedef struct {
    uv_write_t req;
    chunk_t *chunk;
    upstream_conn_t *conn;
} wreq_t;

/* A probe of an instance marked down: its timer waits out the backoff, then bounds a bare TCP
 * connect (conn). */
struct probe {
    uv_timer_t timer;
    instance_t *inst;
    struct probe_conn *conn;
};

typedef struct probe_conn {
    uv_tcp_t tcp;
    uv_connect_t req;
    probe_t *probe; /* NULL once given up: the connect's result no longer matters */
} probe_conn_t;

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

/* ---- probes of instances marked down ---------------------------------------------------- */

/* Close callback of the probe's handles (its timer, its connections): frees their record. */
static void s_free_data_on_close(uv_handle_t *h)
{
    free(h->data);
}

/* Gives up on the probe's connect in progress, if any. */
static void s_probe_drop_conn(probe_t *p)
{
    if (!p->conn)
        return;
    p->conn->probe = NULL;
    uv_close((uv_handle_t *)&p->conn->tcp, s_free_data_on_close);
    p->conn = NULL;
}

static void s_probe_fire(uv_timer_t *t);

/* Waits the current backoff, then probes. Only while down and in the pool. */
static void s_probe_schedule(instance_t *self)
{
    if (!self->down || !self->in_pool)
        return;
    if (!self->probe) {
        probe_t *p = calloc(1, sizeof *p);
        if (!p)
            return; /* no probe: the instance comes back when a request's connect works */
        uv_timer_init(self->loop, &p->timer);
        p->timer.data = p;
        p->inst = self;
        self->probe = p;
    }
    s_probe_drop_conn(self->probe);
    uv_timer_start(&self->probe->timer, s_probe_fire, (uint64_t)self->backoff_ms, 0);
}

static void s_probe_failed(instance_t *self, int status)
{
    if (retry_local_error(status)) {
        /* No descriptor (or memory) for the probe: the proxy's failure, not the instance's.
         * Try again after the same wait, charging nothing. */
        log_once_per_kind("probe-local", "cannot probe an instance", uv_strerror(status));
        s_probe_schedule(self);
        return;
    }
    /* A failed probe is a failed attempt to reach the instance: it counts as an upstream error
     * so that its error rate stays visible while no request is sent to it. The scaler notices
     * a dead instance through that rate (scaler/fsm.c: fsm_note_errors). */
    if (self->stats)
        STAT_ADD(self->stats->upstream_errors, 1);
    int next = self->backoff_ms * 2;
    self->backoff_ms =
        next > self->opts->down_backoff_max_ms ? self->opts->down_backoff_max_ms : next;
    log_debug("probe failed", "instance=%s addr=%s err=%s next_ms=%d", self->name, self->addr,
              uv_err_name(status), self->backoff_ms);
    s_probe_schedule(self);
}

static void s_probe_on_connect(uv_connect_t *req, int status)
{
    probe_conn_t *pc = req->data;
    probe_t *p = pc->probe;
    if (!p)
        return; /* given up: s_probe_drop_conn closes the handle */
    p->conn = NULL;
    uv_close((uv_handle_t *)&pc->tcp, s_free_data_on_close);
    uv_timer_stop(&p->timer);
    if (status == 0)
        instance_connect_ok(p->inst);
    else
        s_probe_failed(p->inst, status);
}

static void s_probe_timeout(uv_timer_t *t)
{
    probe_t *p = t->data;
    s_probe_drop_conn(p);
    s_probe_failed(p->inst, UV_ETIMEDOUT);
}

static void s_probe_fire(uv_timer_t *t)
{
    probe_t *p = t->data;
    instance_t *inst = p->inst;
    if (!inst->down || !inst->in_pool)
        return;
    probe_conn_t *pc = calloc(1, sizeof *pc);
    if (!pc) {
        s_probe_failed(inst, UV_ENOMEM);
        return;
    }
    pc->tcp.data = pc->req.data = pc;
    pc->probe = p;
    int rc = uv_tcp_init(inst->loop, &pc->tcp);
    if (rc != 0) {
        free(pc);
        s_probe_failed(inst, rc);
        return;
    }
    rc = uv_tcp_connect(&pc->req, &pc->tcp, (const struct sockaddr *)&inst->sa, s_probe_on_connect);
    if (rc != 0) {
        uv_close((uv_handle_t *)&pc->tcp, s_free_data_on_close);
        s_probe_failed(inst, rc);
        return;
    }
    p->conn = pc;
    uv_timer_start(&p->timer, s_probe_timeout, (uint64_t)inst->opts->connect_timeout_ms, 0);
}

void instance_connect_failed(instance_t *self)
{
    if (self->down)
        return;
    self->down = true;
    self->backoff_ms = self->opts->down_backoff_ms;
    log_warn("instance down", "instance=%s addr=%s probe_in_ms=%d", self->name, self->addr,
             self->backoff_ms);
    s_probe_schedule(self);
}

void instance_connect_ok(instance_t *self)
{
    if (!self->down)
        return;
    self->down = false;
    if (self->probe) {
        uv_timer_stop(&self->probe->timer);
        s_probe_drop_conn(self->probe);
    }
    log_info("instance up", "instance=%s addr=%s", self->name, self->addr);
}

static void s_close(upstream_conn_t *self);

static void s_close_idle(instance_t *self)
{
    while (self->idle)
        s_close(self->idle);
}

void instance_set_in_pool(instance_t *self, bool in_pool)
{
    if (self->in_pool == in_pool)
        return;
    self->in_pool = in_pool;
    if (in_pool) {
        if (self->down) {
            self->down = false;
            if (self->probe) {
                uv_timer_stop(&self->probe->timer);
                s_probe_drop_conn(self->probe);
            }
            log_info("instance up", "instance=%s addr=%s why=joined", self->name, self->addr);
        }
        return;
    }
    s_close_idle(self); /* draining: in-flight requests finish, nothing new */
    if (self->probe) {
        uv_timer_stop(&self->probe->timer);
        s_probe_drop_conn(self->probe);
    }
}

bool instance_drained(const instance_t *self)
{
    return !self->in_pool && self->in_flight == 0 && self->held == 0 && self->conns == 0 &&
           !self->idle;
}

void instance_shutdown(instance_t *self)
{
    self->in_pool = false;
    s_close_idle(self);
    if (self->probe) {
        s_probe_drop_conn(self->probe);
        uv_close((uv_handle_t *)&self->probe->timer, s_free_data_on_close);
        self->probe = NULL;
    }
}

/* ---- connections ---------------------------------------------------------------------- */

static void s_on_close(uv_handle_t *h)
{
    upstream_conn_t *self = h->data;
    if (--self->open_handles > 0)
        return;
    self->inst->conns--; /* the last touch of the instance: it may be freed from now on */
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

static void s_on_timer(uv_timer_t *t);

/* The timer is lazy: arming records the deadline and restarts the libuv timer only when it
 * is not running or would fire too late; firing early, it re-arms for the rest. Moving the
 * deadline later, as every request does, so costs no timer heap operation. */
static void s_arm(upstream_conn_t *self, int ms)
{
    if (self->pending_err)
        return; /* an error waits to be reported at once */
    self->deadline = uv_now(self->inst->loop) + (uint64_t)ms;
    if (!uv_is_active((uv_handle_t *)&self->timer) ||
        uv_timer_get_due_in(&self->timer) > (uint64_t)ms)
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
                            .wrote = self->wrote,
                            .uv_status = uv_status};
    s_close(self);
    if (owner)
        cb->on_error(owner, &f);
}

/* Ends a tunnel: the connection closes, the owner hears once. */
static void s_tunnel_end(upstream_conn_t *self)
{
    void *owner = self->owner;
    const upstream_cb_t *cb = self->cb;
    s_close(self);
    if (owner)
        cb->on_tunnel_end(owner);
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
    bool reuse = self->keepalive && self->req_done && !self->pending_err && inst->in_pool &&
                 inst->idle_count < (uint32_t)inst->opts->idle_max;
    if (reuse)
        s_make_idle(self);
    else
        s_close(self);
    /* The headers stay in memory until the next exchange or the close callback. */
    if (owner)
        cb->on_complete(owner, &self->hdrs, self->head_hdrs);
}

static void s_on_timer(uv_timer_t *t)
{
    upstream_conn_t *self = t->data;
    uint64_t now = uv_now(self->inst->loop);
    if (!self->pending_err && now < self->deadline) {
        uv_timer_start(t, s_on_timer, self->deadline - now, 0); /* moved since it was set */
        return;
    }
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
    case UP_TUNNEL:
        if (self->pending_err)
            s_tunnel_end(self);
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
    bool upgrade = false;
    if (status == 101) {
        /* A switch only answers a request that asked for one, sent whole. */
        if (!self->upgrade || !self->req_done)
            return -1;
        upgrade = true;
    }
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
    if (status >= 200 || upgrade)
        self->head_done = true;
    self->to_tunnel = upgrade; /* before on_head: the owner may already send or shut down */
    self->head_hdrs = self->hdrs.n;
    upstream_head_t h = {.status = status,
                         .reason = self->reason.data,
                         .reason_len = self->reason.len,
                         .hdrs = &self->hdrs,
                         .body = self->body,
                         .upgrade = upgrade};
    self->cb->on_head(self->owner, &h);
    if (self->state != UP_ACTIVE)
        return -1;
    if (upgrade)
        return 2; /* no body, and what follows is the new protocol's */
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
    if (self->status < 200 && !self->to_tunnel)
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
    if (self->state == UP_TUNNEL) {
        if (nread < 0)
            s_tunnel_end(self);
        else if (self->owner)
            self->cb->on_tunnel_data(self->owner, b->base, (size_t)nread);
        return;
    }
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
            if (self->msg_done && !self->to_tunnel) {
                self->keepalive = false;
                s_finish(self);
                return;
            }
        }
        s_fail(self, UP_ERR_CLOSED, (int)nread);
        return;
    }
    self->got_bytes = true;
    size_t n = http_parser_execute(&self->parser, &s_settings, b->base, (size_t)nread);
    if (self->state != UP_ACTIVE)
        return; /* the owner gave up from a callback */
    if (self->to_tunnel) {
        /* 101: from here on bytes pass through untouched, both ways. The client side watches
         * the tunnel's inactivity; this side has no timer. */
        self->state = UP_TUNNEL;
        uv_timer_stop(&self->timer);
        if (n < (size_t)nread && self->owner)
            self->cb->on_tunnel_data(self->owner, b->base + n, (size_t)nread - n);
        return;
    }
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
    /* Before the head the deadline counts from the request's last byte (set on write); once
     * the body flows it is the longest silence allowed. */
    if (self->head_done && !self->paused)
        s_arm(self, self->inst->opts->response_timeout_ms);
    if (self->owner)
        self->cb->on_flush(self->owner);
}

static void s_start_reading(upstream_conn_t *self)
{
    if (!self->reading && uv_read_start((uv_stream_t *)&self->tcp, buf_read_alloc, s_on_read) == 0)
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
    instance_connect_ok(self->inst);
    s_start_reading(self);
    s_arm(self, self->inst->opts->response_timeout_ms);
    if (self->owner)
        self->cb->on_connect(self->owner);
}

static void s_reset_exchange(upstream_conn_t *self, void *owner, const upstream_cb_t *cb,
                             unsigned flags)
{
    self->owner = owner;
    self->cb = cb;
    self->head_only = (flags & UP_OPEN_HEAD) != 0;
    self->upgrade = (flags & UP_OPEN_UPGRADE) != 0;
    self->got_bytes = self->wrote = self->head_done = self->msg_done = self->req_done = false;
    self->paused = self->above_high = self->keepalive = self->to_tunnel = false;
    self->pending_err = 0;
    self->status = 0;
    self->head_hdrs = 0;
}

int upstream_open(instance_t *inst, unsigned flags, void *owner, const upstream_cb_t *cb,
                  upstream_conn_t **out)
{
    upstream_conn_t *self;
    if ((flags & UP_OPEN_IDLE) && inst->idle) {
        self = inst->idle;
        s_idle_unlink(self);
        self->state = UP_ACTIVE;
        self->reused = true;
        s_reset_exchange(self, owner, cb, flags);
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
    inst->conns++;
    self->tcp.data = self->timer.data = self->connect_req.data = self;
    self->shutdown_req.data = self;
    self->open_handles = 2;
    self->inst = inst;
    hdrs_init(&self->hdrs, inst->opts->max_header_size);
    http_parser_init(&self->parser, HTTP_RESPONSE);
    self->parser.data = self;
    s_reset_exchange(self, owner, cb, flags);
    self->state = UP_CONNECTING;
    uv_tcp_nodelay(&self->tcp, 1); /* applied by libuv to the socket the connect creates */
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
    return self->state == UP_ACTIVE || self->state == UP_TUNNEL;
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
        else if (self->state == UP_TUNNEL)
            s_tunnel_end(self);
        else if (self->state == UP_IDLE)
            s_close(self);
        return;
    }
    if (self->state != UP_ACTIVE && self->state != UP_TUNNEL)
        return;
    if (self->state == UP_ACTIVE && !self->paused && !self->head_done)
        s_arm(self, self->inst->opts->response_timeout_ms); /* the request is moving */
    if (self->above_high && self->tcp.write_queue_size < PROXY_WQ_LOW) {
        self->above_high = false;
        if (self->owner)
            self->cb->on_drain(self->owner);
    }
}

/* A failure inside an owner's call: reported from the timer, since the owner must not be
 * called back from inside its own call. */
static void s_defer_error(upstream_conn_t *self, int err)
{
    self->pending_err = err;
    uv_timer_start(&self->timer, s_on_timer, 0, 0);
}

void upstream_send(upstream_conn_t *self, chunk_t *chunk)
{
    if ((self->state != UP_ACTIVE && self->state != UP_TUNNEL) || self->pending_err || self->shut)
        return;
    size_t off = 0;
    if (self->tcp.write_queue_size == 0) {
        /* Usually the socket takes it all at once: no request to allocate, no callback. */
        uv_buf_t b = uv_buf_init(chunk->data, (unsigned)chunk->len);
        int rc = uv_try_write((uv_stream_t *)&self->tcp, &b, 1);
        if (rc >= 0) {
            off = (size_t)rc;
            self->wrote = self->wrote || rc > 0;
        } else if (rc != UV_EAGAIN) {
            s_defer_error(self, rc);
            return;
        }
        if (off == chunk->len) {
            if (self->state == UP_ACTIVE && !self->paused && !self->head_done)
                s_arm(self, self->inst->opts->response_timeout_ms);
            return;
        }
    }
    wreq_t *w = malloc(sizeof *w);
    if (!w) {
        s_defer_error(self, UV_ENOMEM);
        return;
    }
    w->chunk = chunk_ref(chunk);
    w->conn = self;
    uv_buf_t b = uv_buf_init(chunk->data + off, (unsigned)(chunk->len - off));
    int rc = uv_write(&w->req, (uv_stream_t *)&self->tcp, &b, 1, s_on_write);
    if (rc < 0) {
        chunk_unref(&w->chunk);
        free(w);
        s_defer_error(self, rc);
        return;
    }
    self->wrote = true; /* queued: some of it may reach the instance */
    if (self->tcp.write_queue_size > PROXY_WQ_HIGH)
        self->above_high = true;
}

void upstream_request_done(upstream_conn_t *self)
{
    self->req_done = true;
}

static void s_on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status; /* a failed shutdown shows on the read side too */
}

void upstream_shutdown(upstream_conn_t *self)
{
    if ((self->state != UP_TUNNEL && !(self->state == UP_ACTIVE && self->to_tunnel)) || self->shut)
        return;
    self->shut = true;
    if (uv_shutdown(&self->shutdown_req, (uv_stream_t *)&self->tcp, s_on_shutdown) != 0)
        s_defer_error(self, UV_EPIPE);
}

size_t upstream_write_queue(const upstream_conn_t *self)
{
    return self->tcp.write_queue_size;
}

void upstream_pause(upstream_conn_t *self)
{
    if ((self->state != UP_ACTIVE && self->state != UP_TUNNEL) || self->paused)
        return;
    self->paused = true;
    s_stop_reading(self);
    /* tide holds the response back, the instance is not late; but a send error waiting on the
     * timer to be reported must still be reported. */
    if (self->state == UP_ACTIVE && !self->pending_err)
        uv_timer_stop(&self->timer);
}

void upstream_resume(upstream_conn_t *self)
{
    if ((self->state != UP_ACTIVE && self->state != UP_TUNNEL) || !self->paused)
        return;
    self->paused = false;
    s_start_reading(self);
    if (self->state == UP_ACTIVE)
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
