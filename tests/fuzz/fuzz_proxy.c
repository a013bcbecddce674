/* fuzz_proxy.c - libFuzzer target: arbitrary bytes into tide-proxy's request handling.
 *
 * One real worker (proxy/worker.c: listener, client.c, upstream.c, headers.c) runs on this
 * thread's loop, with no thread of its own, and an in-process instance listens on the same
 * loop. Each input is sent by a client connection on that loop, in two writes (the split point
 * comes from the input, so heads and bodies get cut anywhere), followed by its EOF; the loop
 * then runs until the client has read everything up to the proxy's close and every connection
 * of the exchange is closed again, so nothing carries over to the next input. An input that
 * leaves a connection open for 10 s of wall time is a hang and aborts.
 *
 * Input: byte 0 picks the instance's behaviour (0: a Content-Length answer, 1: a chunked
 * answer with trailers, 2: 101 and then an echo tunnel, 3: the bytes after "@@@@" in the
 * input, raw), byte 1 the split point, the rest is what the client sends. */
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "pool.h"
#include "stats.h"
#include "tide_config.h"
#include "tide_log.h"
#include "worker.h"

static tide_config_t s_cfg;
static stats_t *s_stats;
static worker_t *s_worker;
static uv_loop_t *s_loop;
static uv_tcp_t s_up_listener;
static struct sockaddr_in s_proxy_addr;
static int s_up_conns; /* the instance's open connections */

/* What the instance answers for the current input. */
static int s_mode;
static const uint8_t *s_resp;
static size_t s_resp_len;

static const char s_resp_length[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
static const char s_resp_chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                     "Trailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
static const char s_resp_switch[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                    "Connection: Upgrade\r\n\r\n";

/* ---- the instance ------------------------------------------------------------------------- */

typedef struct {
    uv_tcp_t tcp;
    uv_shutdown_t shut;
    bool answered, shutting;
} up_conn_t;

typedef struct {
    uv_write_t req;
    char data[];
} wbuf_t;

static char s_rbuf[65536];

static void s_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    (void)h;
    (void)n;
    b->base = s_rbuf;
    b->len = sizeof s_rbuf;
}

static void s_free_on_write(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void s_send(uv_stream_t *s, const void *data, size_t len)
{
    if (len == 0)
        return;
    wbuf_t *w = malloc(sizeof *w + len);
    if (!w)
        abort();
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, s, &b, 1, s_free_on_write) != 0)
        free(w);
}

static void s_up_closed(uv_handle_t *h)
{
    free(h->data);
    s_up_conns--;
}

static void s_up_close(up_conn_t *u)
{
    if (!uv_is_closing((uv_handle_t *)&u->tcp))
        uv_close((uv_handle_t *)&u->tcp, s_up_closed);
}

static void s_up_shut(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

static void s_up_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    up_conn_t *u = s->data;
    if (n < 0) {
        s_up_close(u);
        return;
    }
    if (n == 0)
        return;
    if (u->answered) {
        if (s_mode == 2 && !u->shutting)
            s_send(s, b->base, (size_t)n); /* the tunnel echoes */
        return;
    }
    /* The first bytes of a request: answer (the rest of the request may still come; an early
     * answer is one more path to exercise). Then, except in a tunnel, say no more. */
    u->answered = true;
    switch (s_mode) {
    case 0:
        s_send(s, s_resp_length, sizeof s_resp_length - 1);
        break;
    case 1:
        s_send(s, s_resp_chunked, sizeof s_resp_chunked - 1);
        break;
    case 2:
        s_send(s, s_resp_switch, sizeof s_resp_switch - 1);
        return;
    default:
        s_send(s, s_resp, s_resp_len);
        break;
    }
    u->shutting = true;
    uv_shutdown(&u->shut, s, s_up_shut);
}

static void s_up_accept(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    up_conn_t *u = calloc(1, sizeof *u);
    if (!u)
        abort();
    uv_tcp_init(s_loop, &u->tcp);
    u->tcp.data = u;
    s_up_conns++;
    if (uv_accept(server, (uv_stream_t *)&u->tcp) != 0) {
        s_up_close(u);
        return;
    }
    uv_tcp_nodelay(&u->tcp, 1); /* no Nagle + delayed-ACK stalls: inputs run at loop speed */
    uv_read_start((uv_stream_t *)&u->tcp, s_alloc, s_up_read);
}

/* ---- the client --------------------------------------------------------------------------- */

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_shutdown_t shut;
    const uint8_t *data;
    size_t len, split;
    bool closed;
    int phase; /* 0 connecting, 1 first part sent, 2 all sent */
} client_t;

static void s_cl_closed(uv_handle_t *h)
{
    ((client_t *)h->data)->closed = true;
}

static void s_cl_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    client_t *c = s->data;
    if (n < 0 && !uv_is_closing((uv_handle_t *)s))
        uv_close((uv_handle_t *)s, s_cl_closed);
    (void)c;
}

static void s_cl_connected(uv_connect_t *req, int status)
{
    client_t *c = req->data;
    if (status < 0) {
        uv_close((uv_handle_t *)&c->tcp, s_cl_closed);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, s_alloc, s_cl_read);
    s_send((uv_stream_t *)&c->tcp, c->data, c->split);
    c->phase = 1;
}

static void s_run_once(void)
{
    uv_run(s_loop, UV_RUN_NOWAIT);
}

static uint64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs the loop until done() or the hang deadline. */
static void s_run_until(bool (*done)(void *), void *arg, const char *what)
{
    uint64_t deadline = s_now_ms() + 10000;
    while (!done(arg)) {
        uv_run(s_loop, UV_RUN_ONCE);
        if (s_now_ms() > deadline) {
            fprintf(stderr,
                    "fuzz_proxy: hang: %s (client closed=%d, proxy clients=%u, "
                    "instance conns=%d)\n",
                    what, ((client_t *)arg)->closed, worker_client_count(s_worker), s_up_conns);
            abort();
        }
    }
}

static bool s_settled(void *arg)
{
    client_t *c = arg;
    return c->closed && worker_client_count(s_worker) == 0 && s_up_conns == 0;
}

/* ---- setup -------------------------------------------------------------------------------- */

static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        abort();
    close(fd);
    return ntohs(sa.sin_port);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_init("fuzz", LOGL_ERROR);
    config_defaults(&s_cfg);
    s_cfg.proxy.workers = 1;
    s_cfg.proxy.max_header_size = 8192;
    s_cfg.proxy.max_body_size = 100000;
    /* Short: an input that waits on a timer (a tunnel left quiet, an answer that never
     * ends) costs little, and the timer paths are fuzzed too. */
    s_cfg.proxy.client_header_timeout_ms = 300;
    s_cfg.proxy.client_body_timeout_ms = 300;
    s_cfg.proxy.response_timeout_ms = 300;
    s_cfg.proxy.idle_timeout_ms = 300;
    s_cfg.proxy.connect_timeout_ms = 300;
    s_cfg.proxy.drain_timeout_ms = 300;
    http_parser_set_max_header_size((uint32_t)s_cfg.proxy.max_header_size);
    int proxy_port = s_free_port();
    snprintf(s_cfg.proxy.listen, sizeof s_cfg.proxy.listen, "127.0.0.1:%d", proxy_port);
    uv_ip4_addr("127.0.0.1", proxy_port, &s_proxy_addr);

    s_stats = stats_new(1);
    int err = 0;
    s_worker = worker_new(0, 1, &s_cfg, s_stats, &err);
    if (!s_stats || !s_worker) {
        fprintf(stderr, "fuzz_proxy: cannot start a worker: %s\n", uv_strerror(err));
        abort();
    }
    s_loop = worker_loop(s_worker);

    struct sockaddr_in up;
    uv_ip4_addr("127.0.0.1", 0, &up);
    uv_tcp_init(s_loop, &s_up_listener);
    if (uv_tcp_bind(&s_up_listener, (struct sockaddr *)&up, 0) != 0 ||
        uv_listen((uv_stream_t *)&s_up_listener, 128, s_up_accept) != 0)
        abort();
    int len = sizeof up;
    uv_tcp_getsockname(&s_up_listener, (struct sockaddr *)&up, &len);
    pool_entry_t e;
    snprintf(e.name, sizeof e.name, "production0");
    snprintf(e.addr, sizeof e.addr, "127.0.0.1:%d", ntohs(up.sin_port));
    pool_t *pool = pool_new(1, &e, 1);
    worker_set_pool(s_worker, pool);
    pool_unref(&pool);
    for (int i = 0; i < 10; i++)
        s_run_once();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    s_mode = data[0] & 3;
    size_t split_byte = data[1];
    data += 2;
    size -= 2;
    size_t req_len = size;
    s_resp = NULL;
    s_resp_len = 0;
    if (s_mode == 3) {
        const uint8_t *sep = memmem(data, size, "@@@@", 4);
        if (sep) {
            req_len = (size_t)(sep - data);
            s_resp = sep + 4;
            s_resp_len = size - req_len - 4;
        }
    }
    client_t *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->data = data;
    c->len = req_len;
    c->split = req_len * split_byte / 255;
    uv_tcp_init(s_loop, &c->tcp);
    uv_tcp_nodelay(&c->tcp, 1);
    c->tcp.data = c->conn.data = c->shut.data = c;
    if (uv_tcp_connect(&c->conn, &c->tcp, (struct sockaddr *)&s_proxy_addr, s_cl_connected) != 0)
        abort();
    /* The first part, a few turns of the loop (the proxy parses it alone), then the rest and
     * the EOF. */
    uint64_t deadline = s_now_ms() + 10000;
    while (c->phase < 1 && !c->closed) {
        uv_run(s_loop, UV_RUN_ONCE);
        if (s_now_ms() > deadline)
            abort();
    }
    for (int i = 0; i < 3; i++)
        s_run_once();
    if (!c->closed && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        s_send((uv_stream_t *)&c->tcp, c->data + c->split, c->len - c->split);
        uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, s_up_shut);
    }
    c->phase = 2;
    s_run_until(s_settled, c, "the exchange does not end");
    free(c);
    return 0;
}
