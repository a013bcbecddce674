/* client.c - client connections: request parsing, forwarding, responses, tunnels (see
 * client.h).
 *
 * One exchange (request + response) at a time per connection. The parser is paused at the end
 * of each request; bytes of the next pipelined request wait in `pending` until the response is
 * done, so responses leave in request order. Request bytes queue as chunks and are kept until
 * the first response byte (up to RETAIN_MAX), so a request can be replayed when a reused
 * keep-alive connection turns out closed, or when a connect fails.
 *
 * Memory: an idle connection holds no buffer. The header and URL buffers are borrowed from the
 * worker while a request head is being parsed (and, for a chunked request, until its trailers
 * are in), and the head-building scratch is the worker's, so 10,000 idle keep-alive clients
 * cost their structs and nothing more.
 *
 * Timeouts: one entry per connection in the worker's timeouts (timeouts.h: no timer handle per
 * connection), its meaning picked by s_timer_update from the state: idle keep-alive, request
 * head deadline (408), request body silence (408), a client not reading its response, a quiet
 * tunnel, the linger after our last byte, the drain grace. */
#include "client.h"

#include <errno.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "headers.h"
#include "syntax.h"
#include "retry.h"
#include "tide_hist.h"
#include "tide_log.h"
#include "timeouts.h"
#include "upstream.h"
#include "worker.h"

#define RETAIN_MAX     (64 * 1024) /* request bytes kept for a replay */
#define LINGER_MS      2000        /* after our last byte, read and drop the client's this long */
#define PENDING_MAX    (64 * 1024) /* pipelined bytes read ahead while a response is pending */
#define DRAIN_GRACE_MS 300         /* on shutdown, an idle connection may still bring a request */

typedef enum {
    TM_NONE,
    TM_IDLE,   /* keep-alive: waiting for the first byte of a request */
    TM_HEAD,   /* a request head has begun: it must be complete by the deadline (408) */
    TM_BODY,   /* reading a request body: the client must not go silent (408) */
    TM_SEND,   /* the client does not take the response: it must not stall for good */
    TM_TUNNEL, /* a tunnel: some byte must pass either way */
    TM_LINGER, /* our side is shut: drop what the client still sends, then close */
    TM_GRACE,  /* draining: an idle connection may still bring one request */
} tmode_t;

typedef struct {
    bool active;
    bool head, idempotent, keepalive, http10, req_done, trimmed, upgrade;
    bool expect_wait; /* Expect: 100-continue, no 100 and no body byte yet: the client waits */
    body_mode_t req_body;
    uint64_t body_bytes;                /* request body bytes read (for max_body_size) */
    chunk_t *q_first, *q_last, *q_next; /* request bytes; [q_first, q_next) already sent */
    size_t q_bytes, unsent;
    instance_t *inst;      /* the instance of the current attempt */
    instance_t *last_inst; /* the instance of the last attempt (for counters) */
    upstream_conn_t *up;
    int connect_retries, race_retries;
    bool counted;
    bool resp_started, resp_done;
    bool head_pending; /* the response head waits in scratch to leave with the first body bytes */
    body_mode_t resp_frame;
    uint64_t t0_us;
} exchange_t;

struct client {
    list_node_t node;
    worker_t *w;
    const tide_config_t *cfg;
    stats_worker_t *st;
    uv_tcp_t tcp;
    timeout_t to; /* in the worker's timeouts while tmode is not TM_NONE */
    uv_shutdown_t *shutdown_req;
    buf_t *scratch; /* the worker's: head building, never held across callbacks */
    http_parser parser;
    char ip[48];
    buf_t pending; /* unparsed bytes of pipelined requests (or of a tunnel, before it opens) */
    size_t pending_off;
    parse_bufs_t *pb; /* the URL and header buffers, borrowed from the worker; NULL: none */
    bool in_head;     /* a request head has begun and is not complete */
    bool reading, paused, bp, eof, closing, handles_closing, lingering, drain, up_paused;
    bool tunnel, overflow;
    int too_big;       /* 414 or 431: the target or the fields hit max_header_size */
    head_scan_t hs;    /* the syntax check of the request head being read (syntax.h) */
    chunk_scan_t cs;   /* the framing lines of a chunked request body (syntax.h) */
    const char *head_end; /* where head_scan found this read's head to end, or NULL */
    const char *exec_end; /* the end of the bytes the parser runs over, while it runs */
    tmode_t tmode;
    exchange_t x;
};

typedef struct {
    uv_write_t req;
    chunk_t *chunk;
    client_t *c;
} cwreq_t;

static void s_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);
static void s_advance(client_t *c);
static void s_up_error(void *owner, const upstream_failure_t *f);
static void s_timer_update(client_t *c, bool progress);

client_t *client_of(list_node_t *node)
{
    return list_entry(node, client_t, node);
}

/* ---- borrowed buffers ---------------------------------------------------------------------- */

/* False on OOM. */
static bool s_borrow(client_t *c)
{
    if (!c->pb)
        c->pb = worker_lend(c->w);
    return c->pb != NULL;
}

/* Gives the header and URL buffers back once nothing in them is needed: no head is half
 * parsed and no chunked request body (whose trailers would land in hdrs) is being read. */
static void s_give_back(client_t *c)
{
    if (!c->pb || c->in_head || (c->x.active && c->x.req_body == BODY_CHUNKED && !c->x.req_done))
        return;
    worker_take_back(c->w, &c->pb);
}

/* ---- closing ----------------------------------------------------------------------------- */

static void s_on_close(uv_handle_t *h)
{
    client_t *c = h->data;
    timeout_cancel(&c->to);
    buf_free(&c->pending);
    c->in_head = false;
    worker_take_back(c->w, &c->pb);
    free(c->shutdown_req);
    worker_client_gone(c->w, &c->node, c->overflow);
    free(c);
}

static void s_queue_free(client_t *c)
{
    while (c->x.q_first) {
        chunk_t *next = c->x.q_first->next;
        chunk_unref(&c->x.q_first);
        c->x.q_first = next;
    }
    c->x.q_last = c->x.q_next = NULL;
    c->x.q_bytes = c->x.unsent = 0;
}

/* The current attempt is over (success or not): the instance has one request less. */
static void s_attempt_end(client_t *c)
{
    instance_t *inst = c->x.inst;
    if (!inst)
        return;
    inst->in_flight--;
    STAT_SET(inst->stats->in_flight, inst->in_flight);
    /* last_inst is still counted against (latency, a status of tide's own): while it points
     * at the instance, the worker does not free it (held, upstream.h). */
    if (c->x.last_inst)
        c->x.last_inst->held--;
    inst->held++;
    c->x.last_inst = inst;
    c->x.inst = NULL;
}

/* Ends the exchange: releases its upstream connection, attempt and queued request bytes
 * (after its response, or without one when the connection is going away). */
static void s_exchange_drop(client_t *c)
{
    if (!c->x.active)
        return;
    upstream_abort(&c->x.up);
    s_attempt_end(c);
    if (c->x.last_inst)
        c->x.last_inst->held--;
    s_queue_free(c);
    STAT_SUB(c->st->c.in_flight, 1);
    memset(&c->x, 0, sizeof c->x);
}

static void s_close_handles(client_t *c)
{
    c->closing = true;
    s_exchange_drop(c);
    if (c->handles_closing)
        return;
    c->handles_closing = true;
    timeout_cancel(&c->to);
    c->tmode = TM_NONE;
    uv_close((uv_handle_t *)&c->tcp, s_on_close);
}

void client_abort(client_t *self)
{
    s_close_handles(self);
}

static void s_on_shutdown(uv_shutdown_t *req, int status)
{
    client_t *c = req->data;
    if (status < 0 || c->handles_closing) {
        s_close_handles(c);
        return;
    }
    /* Read and drop what the client still sends for a moment, so closing with unread bytes
     * does not reset the connection and destroy our last response before the client reads
     * it. */
    c->lingering = true;
    if (uv_read_start((uv_stream_t *)&c->tcp, buf_read_alloc, s_on_read) != 0) {
        s_close_handles(c);
        return;
    }
    c->reading = true;
    s_timer_update(c, false);
}

/* Close once everything written has left: the usual end of a connection. */
static void s_close_graceful(client_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    s_exchange_drop(c);
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    timeout_cancel(&c->to);
    c->tmode = TM_NONE;
    c->shutdown_req = malloc(sizeof *c->shutdown_req);
    if (!c->shutdown_req) {
        s_close_handles(c);
        return;
    }
    c->shutdown_req->data = c;
    if (uv_shutdown(c->shutdown_req, (uv_stream_t *)&c->tcp, s_on_shutdown) != 0)
        s_close_handles(c);
}

void client_drain(client_t *self)
{
    self->drain = true;
    /* An exchange under way: its response says Connection: close, then the connection closes.
     * An idle keep-alive connection may have a request on the wire right now: closing at once
     * would drop it unanswered, so it gets a moment (TM_GRACE), and a request arriving in it
     * is answered with Connection: close. */
    if (!self->closing)
        s_timer_update(self, false);
}

/* ---- the timer ----------------------------------------------------------------------------- */

/* What the timer should watch now. */
static tmode_t s_want_timer(const client_t *c)
{
    if (c->lingering)
        return TM_LINGER;
    if (c->closing)
        return TM_NONE;
    if (c->tunnel)
        return TM_TUNNEL;
    if (c->up_paused)
        return TM_SEND;
    if (c->x.active)
        return !c->x.req_done && c->x.req_body != BODY_NONE && !c->bp && !c->x.expect_wait
                   ? TM_BODY
                   : TM_NONE;
    if (c->in_head)
        return TM_HEAD;
    return c->drain ? TM_GRACE : TM_IDLE;
}

/* The worker's timeout classes (client_timeouts_init gives their lengths). */
enum { TC_IDLE, TC_HEAD, TC_BODY, TC_LINGER, TC_GRACE, TC_COUNT };

static void s_on_timeout(timeouts_t *tos, timeout_t *t);

void client_timeouts_init(timeouts_t *tos, uv_loop_t *loop, const tide_config_t *cfg)
{
    int drain_ms = cfg->proxy.drain_timeout_ms;
    uint64_t len[TC_COUNT] = {
        [TC_IDLE] = (uint64_t)cfg->proxy.idle_timeout_ms,
        [TC_HEAD] = (uint64_t)cfg->proxy.client_header_timeout_ms,
        [TC_BODY] = (uint64_t)cfg->proxy.client_body_timeout_ms,
        [TC_LINGER] = LINGER_MS,
        [TC_GRACE] = (uint64_t)(drain_ms < DRAIN_GRACE_MS ? drain_ms : DRAIN_GRACE_MS),
    };
    timeouts_init(tos, loop, len, TC_COUNT, s_on_timeout);
}

/* Points the connection's timeout at what matters now; progress: something moved (restarts a
 * silence timeout). The usual request (TM_IDLE -> TM_NONE -> TM_IDLE) costs two list
 * updates and no timer operation. */
static void s_timer_update(client_t *c, bool progress)
{
    tmode_t m = s_want_timer(c);
    if (m == c->tmode && !(progress && (m == TM_BODY || m == TM_SEND || m == TM_TUNNEL)))
        return;
    c->tmode = m;
    int cls = TC_IDLE;
    switch (m) {
    case TM_NONE:
        timeout_cancel(&c->to);
        return;
    case TM_IDLE:
    case TM_SEND:
    case TM_TUNNEL:
        cls = TC_IDLE;
        break;
    case TM_HEAD:
        cls = TC_HEAD;
        break;
    case TM_BODY:
        cls = TC_BODY;
        break;
    case TM_LINGER:
        cls = TC_LINGER;
        break;
    case TM_GRACE:
        cls = TC_GRACE;
        break;
    }
    timeouts_set(worker_timeouts(c->w), &c->to, cls);
}

static void s_local(client_t *c, int status);

static void s_on_timeout(timeouts_t *tos, timeout_t *t)
{
    (void)tos;
    client_t *c = list_entry(t, client_t, to);
    tmode_t m = c->tmode;
    c->tmode = TM_NONE;
    switch (m) {
    case TM_IDLE:
    case TM_GRACE:
        if (!c->x.active && !c->in_head)
            s_close_graceful(c);
        break;
    case TM_HEAD:
        log_debug("request head timeout", "client=%s", c->ip);
        s_local(c, 408); /* no exchange yet: the connection closes after it */
        break;
    case TM_BODY:
        log_debug("request body timeout", "client=%s", c->ip);
        if (c->x.resp_started) {
            s_close_handles(c);
            break;
        }
        /* The instance has part of the body: that exchange is lost. */
        upstream_abort(&c->x.up);
        s_attempt_end(c);
        s_local(c, 408);
        s_advance(c);
        break;
    case TM_SEND:
    case TM_TUNNEL:
    case TM_LINGER:
        s_close_handles(c);
        break;
    case TM_NONE:
        break;
    }
}

/* ---- writing to the client ----------------------------------------------------------------- */

static void s_on_write(uv_write_t *req, int status)
{
    cwreq_t *w = (cwreq_t *)req;
    client_t *c = w->c;
    chunk_unref(&w->chunk);
    free(w);
    if (status < 0) {
        if (!c->handles_closing)
            s_close_handles(c);
        return;
    }
    if (c->closing)
        return;
    if (c->up_paused && c->tcp.write_queue_size < PROXY_WQ_LOW) {
        c->up_paused = false;
        if (c->x.up)
            upstream_resume(c->x.up);
    }
    s_timer_update(c, true);
}

/* Writes bufs to the client: at once when the socket takes them, else queued in one chunk.
 * On failure the connection closes (check c->closing after). */
static void s_write(client_t *c, uv_buf_t *bufs, unsigned n)
{
    if (c->closing)
        return;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    STAT_ADD(c->st->c.bytes_out, total);
    if (c->x.inst)
        STAT_ADD(c->x.inst->stats->bytes_out, total);
    size_t done = 0;
    if (c->tcp.write_queue_size == 0) {
        int rc = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (rc >= 0)
            done = (size_t)rc;
        else if (rc != UV_EAGAIN) {
            s_close_handles(c);
            return;
        }
    }
    if (done == total)
        return;
    chunk_t *ch = chunk_new(total - done);
    cwreq_t *w = malloc(sizeof *w);
    if (!ch || !w) {
        chunk_unref(&ch);
        free(w);
        s_close_handles(c);
        return;
    }
    size_t off = 0, skip = done;
    for (unsigned i = 0; i < n; i++) {
        size_t len = bufs[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(ch->data + off, bufs[i].base + skip, len - skip);
        off += len - skip;
        skip = 0;
    }
    w->chunk = ch;
    w->c = c;
    uv_buf_t b = uv_buf_init(ch->data, (unsigned)ch->len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, s_on_write) != 0) {
        chunk_unref(&w->chunk);
        free(w);
        s_close_handles(c);
        return;
    }
    if (c->tcp.write_queue_size > PROXY_WQ_HIGH && c->x.up && !c->up_paused) {
        c->up_paused = true; /* the client reads slower than the instance writes */
        upstream_pause(c->x.up);
        s_timer_update(c, false);
    }
}

static void s_write1(client_t *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    s_write(c, &b, 1);
}

static void s_count_status(client_t *c, int status, instance_t *inst)
{
    int k = status / 100 - 1;
    if (k < 0 || k > 4)
        k = 4;
    STAT_ADD(c->st->c.status[k], 1);
    if (inst)
        STAT_ADD(inst->stats->status[k], 1);
}

static void s_count_latency(client_t *c)
{
    exchange_t *x = &c->x;
    instance_t *inst = x->inst ? x->inst : x->last_inst;
    int b = hist_bucket(uv_hrtime() / 1000 - x->t0_us);
    STAT_ADD(c->st->c.buckets[b], 1);
    if (inst)
        STAT_ADD(inst->stats->buckets[b], 1);
}

/* One of tide's own responses. Closes the connection after it unless the request was read
 * whole and the client keeps the connection. */
static void s_local(client_t *c, int status)
{
    exchange_t *x = &c->x;
    /* A body not read yet is not read at all: tide does not read what it will not forward. */
    bool close = !x->active || !x->keepalive || x->http10 || c->drain || status == 400 ||
                 status == 408 || status == 413 || status == 431 || status == 405 ||
                 status == 501 || (!x->req_done && x->req_body != BODY_NONE);
    buf_t *s = c->scratch;
    buf_reset(s);
    if (head_build_error(s, status, close) != 0) {
        s_close_handles(c);
        return;
    }
    s_count_status(c, status, x->inst ? x->inst : x->last_inst);
    s_write1(c, s->data, s->len);
    if (x->active) {
        x->resp_started = x->resp_done = true;
        if (close)
            x->keepalive = false;
    }
    if (close && !x->active)
        s_close_graceful(c);
}

/* ---- the request queue towards the instance ------------------------------------------------ */

/* Drops request bytes already sent once they can no longer be replayed. */
static void s_trim(client_t *c)
{
    exchange_t *x = &c->x;
    if (!x->resp_started && x->q_bytes <= RETAIN_MAX)
        return;
    while (x->q_first && x->q_first != x->q_next) {
        chunk_t *next = x->q_first->next;
        x->q_bytes -= x->q_first->len;
        chunk_unref(&x->q_first);
        x->q_first = next;
        x->trimmed = true;
    }
    if (!x->q_first)
        x->q_last = NULL;
}

static void s_check_bp(client_t *c)
{
    exchange_t *x = &c->x;
    size_t waiting = x->unsent + (x->up ? upstream_write_queue(x->up) : 0);
    if (!c->bp && waiting > PROXY_WQ_HIGH)
        c->bp = true; /* the instance takes the body slower than the client sends it */
    else if (c->bp && waiting < PROXY_WQ_LOW)
        c->bp = false;
}

static void s_update_reading(client_t *c)
{
    /* While a response is pending the connection keeps reading into `pending` (up to
     * PENDING_MAX), so a keep-alive connection does not stop and restart its read (two
     * epoll_ctl calls) around every request. A tunnel reads unless the instance lags. */
    bool want;
    if (c->tunnel)
        want = !c->closing && !c->eof && !c->bp;
    else
        want = !c->closing && !c->eof && !c->bp &&
               (!c->paused || c->pending.len - c->pending_off < PENDING_MAX);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, buf_read_alloc, s_on_read) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* Sends every queued chunk not yet sent, once connected. */
static void s_flush(client_t *c)
{
    exchange_t *x = &c->x;
    if (!x->up || !upstream_connected(x->up))
        return;
    while (x->q_next) {
        upstream_send(x->up, x->q_next);
        STAT_ADD(x->inst->stats->bytes_in, x->q_next->len);
        x->unsent -= x->q_next->len;
        x->q_next = x->q_next->next;
    }
    if (x->req_done)
        upstream_request_done(x->up);
    s_trim(c);
    s_check_bp(c);
}

static int s_queue(client_t *c, chunk_t *ch)
{
    exchange_t *x = &c->x;
    if (!ch)
        return -ENOMEM;
    ch->next = NULL;
    if (x->q_last)
        x->q_last->next = ch;
    else
        x->q_first = ch;
    x->q_last = ch;
    if (!x->q_next)
        x->q_next = ch;
    x->q_bytes += ch->len;
    x->unsent += ch->len;
    s_flush(c);
    s_check_bp(c);
    return 0;
}

/* ---- the exchange with the instance --------------------------------------------------------- */

static void s_up_connect(void *owner)
{
    client_t *c = owner;
    s_flush(c);
    s_update_reading(c);
    s_timer_update(c, false);
}

/* The instance switched protocols: the 101 goes out, then bytes pass both ways untouched. */
static void s_tunnel_open(client_t *c, const upstream_head_t *h)
{
    exchange_t *x = &c->x;
    x->resp_started = true;
    x->keepalive = false;
    s_count_status(c, 101, x->inst);
    s_count_latency(c);
    s_trim(c);
    resp_head_t r = {.status = 101,
                     .reason = h->reason,
                     .reason_len = h->reason_len,
                     .frame = BODY_NONE,
                     .upgrade = true};
    buf_t *s = c->scratch;
    buf_reset(s);
    if (head_build_response(s, &r, h->hdrs) != 0) {
        s_close_handles(c);
        return;
    }
    s_write1(c, s->data, s->len);
    if (c->closing)
        return;
    c->tunnel = true;
    /* Bytes the client sent after its request, before the switch, belong to the tunnel. */
    if (c->pending_off < c->pending.len) {
        chunk_t *ch = chunk_copy(c->pending.data + c->pending_off, c->pending.len - c->pending_off);
        if (!ch) {
            s_close_handles(c);
            return;
        }
        upstream_send(x->up, ch);
        STAT_ADD(x->inst->stats->bytes_in, ch->len);
        chunk_unref(&ch);
    }
    buf_free(&c->pending);
    c->pending_off = 0;
    c->paused = false;
    if (c->eof)
        upstream_shutdown(x->up); /* the client finished sending before the switch */
    s_give_back(c);
    s_update_reading(c);
    s_timer_update(c, true);
}

static void s_up_head(void *owner, const upstream_head_t *h)
{
    client_t *c = owner;
    exchange_t *x = &c->x;
    if (h->upgrade) {
        s_tunnel_open(c, h);
        return;
    }
    resp_head_t r = {.status = h->status, .reason = h->reason, .reason_len = h->reason_len};
    buf_t *s = c->scratch;
    buf_reset(s);
    if (h->status < 200) {
        /* Interim (100 Continue, 103 Early Hints): forward to HTTP/1.1 clients only. */
        if (h->status == 100 && x->expect_wait) {
            x->expect_wait = false; /* now the client sends its body: watch it */
            s_timer_update(c, false);
        }
        if (x->http10)
            return;
        r.frame = BODY_NONE;
        if (head_build_response(s, &r, h->hdrs) == 0)
            s_write1(c, s->data, s->len);
        return;
    }
    x->resp_started = true;
    s_count_status(c, h->status, x->inst);
    s_trim(c); /* no replay once the instance has answered */
    switch (h->body) {
    case BODY_NONE:
    case BODY_LENGTH:
        x->resp_frame = h->body;
        break;
    case BODY_CHUNKED:
    case BODY_EOF:
        /* HTTP/1.0 clients know no chunked encoding: the end of the body is the close. */
        x->resp_frame = x->http10 ? BODY_EOF : BODY_CHUNKED;
        break;
    }
    if (x->resp_frame == BODY_EOF || c->drain)
        x->keepalive = false;
    r.frame = x->resp_frame;
    r.close = !x->keepalive;
    r.keepalive_10 = x->http10 && x->keepalive;
    if (head_build_response(s, &r, h->hdrs) != 0) {
        s_close_handles(c);
        return;
    }
    /* Held back so that head and body usually leave in one write. */
    x->head_pending = true;
}

/* Writes the held-back head (if any) followed by bufs, in one call. */
static void s_write_after_head(client_t *c, uv_buf_t *bufs, unsigned n)
{
    uv_buf_t all[4];
    unsigned k = 0;
    if (c->x.head_pending) {
        c->x.head_pending = false;
        all[k++] = uv_buf_init(c->scratch->data, (unsigned)c->scratch->len);
    }
    for (unsigned i = 0; i < n && k < 4; i++)
        all[k++] = bufs[i];
    if (k)
        s_write(c, all, k);
}

static void s_up_body(void *owner, const char *data, size_t len)
{
    client_t *c = owner;
    if (c->x.resp_frame == BODY_CHUNKED) {
        char line[24];
        int n = snprintf(line, sizeof line, "%zx\r\n", len);
        uv_buf_t b[3] = {uv_buf_init(line, (unsigned)n), uv_buf_init((char *)data, (unsigned)len),
                         uv_buf_init("\r\n", 2)};
        s_write_after_head(c, b, 3);
    } else {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        s_write_after_head(c, &b, 1);
    }
}

static void s_up_flush(void *owner)
{
    s_write_after_head(owner, NULL, 0);
}

static void s_up_complete(void *owner, const hdrs_t *trailers, size_t first)
{
    client_t *c = owner;
    exchange_t *x = &c->x;
    x->up = NULL;
    c->up_paused = false;
    if (x->resp_frame == BODY_CHUNKED) {
        /* The last chunk and the trailers, after the held-back head if it is still there. */
        buf_t *s = c->scratch;
        if (!x->head_pending)
            buf_reset(s);
        x->head_pending = false;
        if (head_build_trailers(s, trailers, first) != 0) {
            s_close_handles(c);
            return;
        }
        s_write1(c, s->data, s->len);
    } else {
        s_write_after_head(c, NULL, 0);
    }
    s_attempt_end(c);
    x->resp_done = true;
    if (!x->req_done)
        x->keepalive = false; /* answered before the whole body came: do not read the rest */
    s_advance(c);
}

static void s_up_drain(void *owner)
{
    client_t *c = owner;
    s_check_bp(c); /* in a tunnel nothing is unsent: only the instance's queue counts */
    s_update_reading(c);
    s_timer_update(c, false);
}

static void s_up_tunnel_data(void *owner, const char *data, size_t len)
{
    client_t *c = owner;
    s_write1(c, data, len);
    if (!c->closing)
        s_timer_update(c, true);
}

static void s_up_tunnel_end(void *owner)
{
    client_t *c = owner;
    c->x.up = NULL;
    s_close_graceful(c); /* what the instance sent still reaches the client */
}

static const upstream_cb_t s_up_cb = {
    .on_connect = s_up_connect,
    .on_head = s_up_head,
    .on_body = s_up_body,
    .on_complete = s_up_complete,
    .on_error = s_up_error,
    .on_drain = s_up_drain,
    .on_flush = s_up_flush,
    .on_tunnel_data = s_up_tunnel_data,
    .on_tunnel_end = s_up_tunnel_end,
};

/* Sends the queued request to inst (allow_idle: on an idle keep-alive connection if any). */
static void s_attempt(client_t *c, instance_t *inst, bool allow_idle)
{
    exchange_t *x = &c->x;
    x->inst = inst;
    inst->in_flight++;
    STAT_SET(inst->stats->in_flight, inst->in_flight);
    if (!x->counted) {
        STAT_ADD(inst->stats->requests, 1);
        x->counted = true;
    }
    x->q_next = x->q_first; /* a replay sends everything again */
    x->unsent = x->q_bytes;
    unsigned flags = (allow_idle ? UP_OPEN_IDLE : 0) | (x->head ? UP_OPEN_HEAD : 0) |
                     (x->upgrade ? UP_OPEN_UPGRADE : 0);
    int rc = upstream_open(inst, flags, c, &s_up_cb, &x->up);
    if (rc < 0) {
        x->up = NULL;
        /* Out of descriptors (or memory, or local ports) is the proxy's failure, not the
         * instance's: it must not be marked down or charged an error for it. */
        upstream_failure_t f = {.err = retry_local_error(rc) ? UP_ERR_LOCAL : UP_ERR_CONNECT,
                                .uv_status = rc};
        s_up_error(c, &f);
        return;
    }
    if (upstream_connected(x->up))
        s_flush(c);
}

static void s_up_error(void *owner, const upstream_failure_t *f)
{
    client_t *c = owner;
    exchange_t *x = &c->x;
    x->up = NULL;
    c->up_paused = false;
    instance_t *failed = x->inst;
    retry_facts_t facts = {
        .err = f->err,
        .reused = f->reused,
        .got_bytes = f->got_bytes,
        .wrote = f->wrote,
        .resp_started = x->resp_started,
        .idempotent = x->idempotent,
        .replayable = !x->trimmed,
        .other_retries = x->connect_retries,
        .race_retries = x->race_retries,
        .retry_non_idempotent = strcmp(c->cfg->proxy.retry_non_idempotent, "on") == 0,
    };
    retry_decision_t d = retry_decide(&facts);
    if (d.charge) {
        STAT_ADD(c->st->c.upstream_errors, 1);
        if (failed)
            STAT_ADD(failed->stats->upstream_errors, 1);
    } else {
        log_once_per_kind("local-upstream", "request answered 503: the proxy's own failure",
                          uv_strerror(f->uv_status));
    }
    s_attempt_end(c);
    log_debug("instance failed", "instance=%s err=%d uv=%s reused=%d bytes=%d wrote=%d action=%d",
              failed ? failed->name : "-", (int)f->err,
              f->uv_status ? uv_err_name(f->uv_status) : "-", f->reused, f->got_bytes, f->wrote,
              (int)d.action);
    if (d.mark_down && failed)
        instance_connect_failed(failed); /* down until a probe finds it back */
    if (d.action == RETRY_NONE && d.status == 0) {
        s_close_handles(c); /* part of the response is out: only the close can tell */
        return;
    }
    if (d.action == RETRY_SAME) {
        instance_t *next = failed && failed->in_pool ? failed : worker_pick(c->w, NULL);
        if (next) {
            x->race_retries++;
            s_attempt(c, next, false);
            return;
        }
    } else if (d.action == RETRY_OTHER) {
        instance_t *next = worker_pick(c->w, failed);
        if (next) {
            x->connect_retries++;
            s_attempt(c, next, true);
            return;
        }
    }
    s_local(c, d.status);
    if (!c->closing)
        s_advance(c);
}

/* ---- request parsing ---------------------------------------------------------------------- */

static int s_on_message_begin(http_parser *p)
{
    client_t *c = p->data;
    hdrs_reset(&c->pb->hdrs);
    buf_reset(&c->pb->url);
    c->in_head = true;
    return 0;
}

/* http-parser counts the head against max_header_size too, but may hand a piece to a
 * callback before it counts it: either limit means 431, or 414 for the target alone (RFC 9112
 * 3: a target longer than the server parses). */
static int s_head_rc(client_t *c, int rc, int status)
{
    if (rc == -E2BIG)
        c->too_big = status;
    return rc ? -1 : 0;
}

static int s_on_url(http_parser *p, const char *at, size_t len)
{
    client_t *c = p->data;
    if (c->pb->url.len + len > (size_t)c->cfg->proxy.max_header_size)
        return s_head_rc(c, -E2BIG, 414);
    return buf_append(&c->pb->url, at, len) ? -1 : 0;
}

static int s_on_header_field(http_parser *p, const char *at, size_t len)
{
    client_t *c = p->data;
    return s_head_rc(c, hdrs_on_field(&c->pb->hdrs, at, len), 431);
}

static int s_on_header_value(http_parser *p, const char *at, size_t len)
{
    client_t *c = p->data;
    return s_head_rc(c, hdrs_on_value(&c->pb->hdrs, at, len), 431);
}

static bool s_idempotent(unsigned m)
{
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_TRACE ||
           m == HTTP_PUT || m == HTTP_DELETE;
}

/* Answers the request at once with status (the parser goes on over its body, dropping it,
 * unless the connection closes). */
static int s_refuse(client_t *c, int status)
{
    s_local(c, status);
    return c->closing ? -1 : 0;
}

/* Checks a chunked body's framing lines from at to the end of what the parser runs over
 * (chunk_scan carries on at the next read). */
static bool s_chunk_lines(client_t *c, const char *at)
{
    return at && at <= c->exec_end && chunk_scan(&c->cs, at, (size_t)(c->exec_end - at));
}

/* The request rules of RFC 9112 that need the whole head; r's target and Host are turned into
 * what goes upstream. Returns 0, or the status to refuse the request with. */
static int s_check_head(const http_parser *p, const hdrs_t *h, req_head_t *r)
{
    bool http10 = p->http_minor == 0;
    /* 3.2: exactly one Host in HTTP/1.1, at most one in 1.0, a valid uri-host [":" port] */
    size_t hosts = hdrs_count(h, "host"), hl = 0;
    const char *host = hdrs_get(h, "host", &hl);
    if (hosts > 1 || (hosts == 0 && !http10) || (host && !host_is_valid(host, hl)))
        return 400;
    /* 3.2.2: an absolute-form target's authority is the Host; the instance gets origin-form */
    const char *auth, *path;
    size_t al, pl;
    int form = target_absolute(r->url, r->url_len, &auth, &al, &path, &pl);
    if (form < 0)
        return 400;
    if (form == 1) {
        if (!host_is_valid(auth, al))
            return 400;
        r->host = auth;
        r->host_len = al;
        r->url = path;
        r->url_len = pl;
    } else if (r->url_len == 1 && r->url[0] == '*' && p->method != HTTP_OPTIONS) {
        return 400; /* 3.2.4: asterisk-form is for OPTIONS only */
    }
    /* 6.1: Transfer-Encoding in an HTTP/1.0 message means its framing is faulty; in 1.1,
     * chunked exactly once and last (6.3), nothing before it tide would drop (501). */
    if (p->uses_transfer_encoding) {
        if (http10)
            return 400;
        int te = hdrs_te_check(h);
        if (te)
            return te;
    }
    return 0;
}

static int s_on_headers_complete(http_parser *p)
{
    client_t *c = p->data;
    exchange_t *x = &c->x;
    if (c->closing || x->active)
        return -1;
    c->in_head = false;
    memset(x, 0, sizeof *x);
    x->active = true;
    x->t0_us = uv_hrtime() / 1000;
    STAT_ADD(c->st->c.requests, 1);
    STAT_ADD(c->st->c.in_flight, 1);
    x->head = p->method == HTTP_HEAD;
    x->idempotent = s_idempotent(p->method);
    x->http10 = p->http_major == 0 || (p->http_major == 1 && p->http_minor == 0);
    /* An upgrade request (Connection: upgrade + Upgrade) goes on with both; a 101 turns the
     * connection into a tunnel, any other answer ends it (the client may already be sending
     * the new protocol, which must not be read as HTTP). */
    x->upgrade = p->upgrade && p->method != HTTP_CONNECT;
    x->keepalive = http_should_keep_alive(p) && !p->upgrade && !c->drain;
    if (p->flags & F_CHUNKED)
        x->req_body = BODY_CHUNKED;
    else if ((p->flags & F_CONTENTLENGTH) && p->content_length > 0)
        x->req_body = BODY_LENGTH;
    else
        x->req_body = BODY_NONE;
    /* Before anything is sent (the line and field syntax was checked by head_scan): the rules
     * on Host, the target and the framing, each a way to make tide and the instance read one
     * message two ways. */
    hdrs_t *h = &c->pb->hdrs;
    if (p->method == HTTP_CONNECT)
        return s_refuse(c, 405);
    req_head_t r = {.method = http_method_str(p->method),
                    .url = c->pb->url.data,
                    .url_len = c->pb->url.len,
                    .body = x->req_body,
                    .client_ip = c->ip,
                    .has_length = (p->flags & F_CONTENTLENGTH) != 0,
                    .content_length = (p->flags & F_CONTENTLENGTH) ? p->content_length : 0};
    int status = s_check_head(p, h, &r);
    if (status)
        return s_refuse(c, status);
    if (x->req_body == BODY_CHUNKED) {
        /* The first chunk-size line follows the head: as much of it as this read holds is
         * checked before the head goes anywhere. */
        chunk_scan_arm(&c->cs, false);
        if (!s_chunk_lines(c, c->head_end))
            return s_refuse(c, 400);
    }
    int64_t max_body = c->cfg->proxy.max_body_size;
    if (max_body > 0 && x->req_body == BODY_LENGTH && p->content_length > (uint64_t)max_body)
        return s_refuse(c, 413);
    if (x->req_body != BODY_NONE) {
        size_t len;
        const char *e = hdrs_get(&c->pb->hdrs, "expect", &len);
        x->expect_wait = e && len == 12 && strncasecmp(e, "100-continue", 12) == 0;
    }
    instance_t *inst = worker_pick(c->w, NULL);
    if (!inst)
        return s_refuse(c, 503);
    buf_t *s = c->scratch;
    buf_reset(s);
    r.default_host = inst->addr;
    r.upgrade = x->upgrade;
    if (head_build_request(s, &r, h) != 0 ||
        s_queue(c, chunk_copy(s->data, s->len)) != 0) {
        s_close_handles(c);
        return -1;
    }
    /* Trailer fields of a chunked body are collected from an empty list. */
    hdrs_reset(&c->pb->hdrs);
    s_attempt(c, inst, true);
    return c->closing ? -1 : 0;
}

static int s_on_body(http_parser *p, const char *at, size_t len)
{
    client_t *c = p->data;
    exchange_t *x = &c->x;
    if (c->closing || !x->active)
        return -1;
    if ((p->flags & F_CHUNKED) && p->content_length == 0) {
        chunk_scan_arm(&c->cs, true); /* this chunk's data ends here: CRLF, the next size */
        if (!s_chunk_lines(c, at + len))
            return -1;
    }
    if (x->resp_done)
        return 0; /* answered already (the connection will close): drop the rest */
    x->expect_wait = false;
    x->body_bytes += len;
    int64_t max_body = c->cfg->proxy.max_body_size;
    if (max_body > 0 && x->body_bytes > (uint64_t)max_body) {
        /* A chunked body past the limit: what the instance got of it is lost. */
        if (x->resp_started) {
            s_close_handles(c);
            return -1;
        }
        upstream_abort(&x->up);
        s_attempt_end(c);
        return s_refuse(c, 413);
    }
    chunk_t *ch;
    if (x->req_body == BODY_CHUNKED) {
        char line[24];
        int n = snprintf(line, sizeof line, "%zx\r\n", len);
        ch = chunk_new((size_t)n + len + 2);
        if (ch) {
            memcpy(ch->data, line, (size_t)n);
            memcpy(ch->data + n, at, len);
            memcpy(ch->data + n + len, "\r\n", 2);
        }
    } else {
        ch = chunk_copy(at, len);
    }
    if (s_queue(c, ch) != 0) {
        s_close_handles(c);
        return -1;
    }
    return c->closing ? -1 : 0;
}

static int s_on_message_complete(http_parser *p)
{
    client_t *c = p->data;
    exchange_t *x = &c->x;
    if (c->closing || !x->active)
        return -1;
    x->req_done = true;
    head_scan_init(&c->hs); /* the next bytes start a new request */
    if (!x->resp_done) {
        if (x->req_body == BODY_CHUNKED) {
            buf_t *s = c->scratch;
            buf_reset(s);
            if (head_build_trailers(s, &c->pb->hdrs, 0) != 0 ||
                s_queue(c, chunk_copy(s->data, s->len)) != 0) {
                s_close_handles(c);
                return -1;
            }
        }
        s_flush(c);
    }
    /* Hold the next pipelined request (or an upgrade's first tunnel bytes) until this
     * response is out. */
    c->paused = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings s_settings = {
    .on_message_begin = s_on_message_begin,
    .on_url = s_on_url,
    .on_header_field = s_on_header_field,
    .on_header_value = s_on_header_value,
    .on_headers_complete = s_on_headers_complete,
    .on_body = s_on_body,
    .on_message_complete = s_on_message_complete,
};

/* A request the parser or head_scan refused: status, then the close. */
static void s_bad_request(client_t *c, int status, const char *why)
{
    log_debug("bad request", "client=%s status=%d why=%s", c->ip, status, why);
    c->in_head = false;
    if (c->x.active && c->x.resp_started) {
        s_close_handles(c);
        return;
    }
    s_exchange_drop(c);
    s_local(c, status);
}

static void s_parse_error(client_t *c, enum http_errno err)
{
    int status = c->too_big ? c->too_big : 400;
    if (err == HPE_HEADER_OVERFLOW) /* before any field: the request line is too long */
        status = c->in_head && c->pb && c->pb->hdrs.n == 0 ? 414 : 431;
    s_bad_request(c, status, http_errno_name(err));
}

/* Runs the parser over data; from_pending: data is c->pending past pending_off. */
static void s_execute(client_t *c, const char *data, size_t len, bool from_pending)
{
    if (!s_borrow(c)) {
        s_close_handles(c);
        return;
    }
    /* The stricter checks first, over the same bytes: a head that breaks RFC 9112's grammar,
     * or a chunk not closed by CRLF, is refused before the parser acts on any of it. */
    size_t used;
    head_rc_t hrc = head_scan(&c->hs, data, len, &used);
    if (hrc == HEAD_BAD) {
        s_bad_request(c, c->hs.status, c->hs.reason);
        return;
    }
    c->head_end = hrc == HEAD_DONE && used > 0 ? data + used : NULL;
    c->exec_end = data + len;
    if (!s_chunk_lines(c, data)) {
        s_bad_request(c, 400, "chunk framing");
        return;
    }
    size_t n = http_parser_execute(&c->parser, &s_settings, data, len);
    c->exec_end = c->head_end = NULL;
    if (c->closing)
        return;
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (err == HPE_PAUSED) {
        if (from_pending) {
            c->pending_off += n;
        } else if (n < len && buf_append(&c->pending, data + n, len - n) != 0) {
            s_close_handles(c);
            return;
        }
        s_give_back(c);
        return;
    }
    if (err != HPE_OK) {
        s_parse_error(c, err);
        return;
    }
    if (from_pending)
        c->pending_off = c->pending.len;
    s_give_back(c);
}

static void s_end_exchange(client_t *c)
{
    s_count_latency(c);
    bool keep = c->x.keepalive && !c->drain;
    s_exchange_drop(c);
    if (!keep)
        s_close_graceful(c);
}

/* Moves the connection on after any change: ends a finished exchange, then parses what is
 * pending, repeating while requests complete at once (tide's own answers). */
static void s_advance(client_t *c)
{
    while (!c->closing && !c->tunnel) {
        exchange_t *x = &c->x;
        if (x->active) {
            if (!(x->resp_done && (x->req_done || !x->keepalive)))
                break;
            s_end_exchange(c);
            continue;
        }
        if (c->paused) {
            c->paused = false;
            http_parser_pause(&c->parser, 0);
        }
        if (c->pending_off < c->pending.len) {
            s_execute(c, c->pending.data + c->pending_off, c->pending.len - c->pending_off, true);
            continue;
        }
        /* Nothing left: an idle connection keeps no buffer. */
        buf_free(&c->pending);
        c->pending_off = 0;
        if (c->eof)
            s_close_graceful(c); /* the client has said all it will: answered, now close */
        break;
    }
    s_update_reading(c);
    s_timer_update(c, false);
}

/* Tunnel: the client's bytes go to the instance as they come. */
static void s_tunnel_read(client_t *c, ssize_t nread, const uv_buf_t *b)
{
    exchange_t *x = &c->x;
    if (nread < 0) {
        if (nread != UV_EOF || !x->up) {
            s_close_handles(c);
            return;
        }
        /* The client is done sending: the instance hears it, and may still answer. */
        c->eof = true;
        upstream_shutdown(x->up);
        s_update_reading(c);
        return;
    }
    if (!x->up)
        return;
    STAT_ADD(c->st->c.bytes_in, (uint64_t)nread);
    STAT_ADD(x->inst->stats->bytes_in, (uint64_t)nread);
    chunk_t *ch = chunk_copy(b->base, (size_t)nread);
    if (!ch) {
        s_close_handles(c);
        return;
    }
    upstream_send(x->up, ch);
    chunk_unref(&ch);
    s_check_bp(c);
    s_update_reading(c);
    s_timer_update(c, true);
}

static void s_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    client_t *c = s->data;
    if (c->lingering) {
        if (nread < 0)
            s_close_handles(c);
        return;
    }
    if (nread == 0 || c->closing)
        return;
    if (c->tunnel) {
        s_tunnel_read(c, nread, b);
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF || (c->x.active && !c->x.req_done)) {
            s_close_handles(c); /* reset, or gone in the middle of a request */
            return;
        }
        c->eof = true;
        s_advance(c);
        return;
    }
    STAT_ADD(c->st->c.bytes_in, (uint64_t)nread);
    if (c->paused) {
        /* The next request came before this response went out: keep it for later. */
        if (buf_append(&c->pending, b->base, (size_t)nread) != 0)
            s_close_handles(c);
        else
            s_update_reading(c);
        return;
    }
    bool body = c->x.active && !c->x.req_done;
    s_execute(c, b->base, (size_t)nread, false);
    if (c->closing)
        return;
    s_advance(c);
    if (body && !c->closing)
        s_timer_update(c, true); /* the body moved: its silence timeout starts over */
}

/* ---- accept -------------------------------------------------------------------------------- */

int client_accept(worker_t *w, uv_stream_t *server, list_node_t *list, bool over_limit)
{
    client_t *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->w = w;
    c->cfg = worker_cfg(w);
    c->st = worker_stats(w);
    c->scratch = worker_scratch(w);
    c->overflow = over_limit;
    uv_tcp_init(worker_loop(w), &c->tcp);
    c->tcp.data = c;
    timeout_init(&c->to);
    list_init(&c->node);
    list_push(list, &c->node);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    head_scan_init(&c->hs);
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc != 0) {
        c->handles_closing = true;
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, s_on_close);
        return 0; /* linked: s_on_close unlinks and counts it gone */
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage sa;
    int len = sizeof sa;
    snprintf(c->ip, sizeof c->ip, "unknown");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len) == 0) {
        if (sa.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&sa, c->ip, sizeof c->ip);
        else if (sa.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&sa, c->ip, sizeof c->ip);
    }
    if (over_limit) {
        /* Past proxy.max_connections: a 503 and the close, so the client knows at once
         * rather than waiting in the listen backlog. */
        s_local(c, 503);
        return 0;
    }
    s_update_reading(c);
    s_timer_update(c, false);
    return 0;
}
