/* app_server.c - epoll HTTP/1.1 server of the sample app: connections, cost, drain. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, sched_getaffinity */
#endif
#include "app_server.h"
#include "app_misbehave.h"

#include "app_cost.h"
#include "app_http.h"
#include "app_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_MS      1000000ull
#define NS_PER_S       1000000000ull
#define OUT_HIGH_WATER (64 * 1024) /* stop parsing pipelined requests past this much output */
#define SMALL_BODY_MAX 4096        /* /bytes bodies up to this are copied, larger ones streamed */
#define FILL_CHUNK     (64 * 1024)
#define IDLE_NS        (60 * NS_PER_S) /* keep-alive connections idle longer are closed */
#define LINGER_NS      (2 * NS_PER_S)  /* how long to wait for a client to close after us */
#define SWEEP_MS       1000
#define ACCEPT_BATCH   64
#define MAX_EVENTS     256
#define LINGER_READS   16

typedef struct loop loop_t;
typedef struct conn conn_t;

struct conn {
    cost_job_t job;      /* first member: the cost module hands the job back as the conn */
    loop_t *loop;        /* owner; only its thread touches the fields below */
    conn_t *prev, *next; /* the owner's open connections */
    conn_t *qnext;       /* mailbox, timer list or graveyard */
    int fd;
    bool busy;       /* a request is in the cost pipeline, so the conn must stay allocated */
    bool dead;       /* failed while busy: closed when the request comes back */
    bool closed;     /* in the graveyard, freed at the end of the loop iteration */
    bool want_close; /* close once the queued output is out */
    bool lingering;  /* write side shut, reading until the client closes */
    bool in_body;    /* discarding body_left bytes of a request body */
    uint64_t body_left;
    size_t in_r, in_w, scan; /* unparsed input is in[in_r..in_w); scan: see http_head_end */
    /* The request being served, copied out of in[] because in[] moves. */
    http_route_t route;
    sample_route_t sample; /* a /_sample switch, answered at once */
    uint32_t share_ppm, fail_cpu_us;
    uint64_t arg;
    int minor;
    bool head, keep_alive;
    char *out; /* queued response bytes out[out_r..out_w), then fill bytes of /bytes body */
    size_t out_r, out_w, out_cap;
    uint64_t fill;
    uint64_t last_ns; /* last progress, for the idle and linger timeouts */
    uint64_t due_ns;  /* when the --delay-ms wait ends */
    char in[HTTP_MAX_HEAD];
};

struct loop {
    server_t *server;
    pthread_t thread;
    bool started;
    int epfd, evfd, tfd, spare_fd;
    conn_t *conns;
    int nconns;
    conn_t *grave;                   /* closed conns, freed once no event can point at them */
    conn_t *timer_head, *timer_tail; /* delays; FIFO is deadline order as delays are equal */
    uint64_t now_ns, next_sweep_ns;
    bool drained; /* has dropped the listening socket */
    atomic_uint_fast64_t requests, rejected;
    pthread_mutex_t mail_mu; /* guards the mailbox: conns back from other threads */
    conn_t *mail_head, *mail_tail;
};

struct server {
    app_config_t cfg;
    int listen_fd;
    uint64_t delay_ns;
    bool costly; /* any per-request cost configured; else requests skip the cost module */
    cost_t *cost;
    char hello[128];
    size_t hello_len;
    atomic_bool draining, stopping;
    pthread_mutex_t mu; /* guards acks and running, signalled on cv */
    pthread_cond_t cv;
    int acks;    /* loops that dropped the listening socket */
    int running; /* loops still running */
    int nloops;
    loop_t *loops;
};

/* epoll tags for the descriptors that are not connections. */
static char s_tag_listen, s_tag_wake, s_tag_timer;
/* Body bytes for /bytes/N, sent straight from here so a 10 MiB answer costs no memory. */
static char s_fill[FILL_CHUNK];
/* The loop this thread runs, so a cost callback knows whether it is on the conn's owner. */
static __thread loop_t *s_self;

static void s_conn_drive(conn_t *c);
static int s_conn_flush(conn_t *c);

uint64_t server_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void s_loop_wake(loop_t *loop)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero, so the loop will wake anyway. */
    ssize_t w = write(loop->evfd, &one, sizeof one);
    (void)w;
}

/* Frees connections closed during this iteration; none of the events still pending can
 * name them, because an iteration handles every event it fetched. */
static void s_loop_bury(loop_t *loop)
{
    while (loop->grave) {
        conn_t *c = loop->grave;
        loop->grave = c->qnext;
        free(c->out);
        free(c);
    }
}

/* Closes the socket and moves the conn to the graveyard. A busy conn is only marked dead:
 * the cost module or a timer still holds it, and it is closed when it comes back. */
static void s_conn_close(conn_t *c)
{
    if (c->closed)
        return;
    if (c->busy) {
        c->dead = true;
        return;
    }
    loop_t *loop = c->loop;
    close(c->fd);
    c->fd = -1;
    c->closed = true;
    if (c->prev)
        c->prev->next = c->next;
    else
        loop->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    loop->nconns--;
    c->qnext = loop->grave;
    loop->grave = c;
}

/* Makes room for need more output bytes. Returns 0, or -ENOMEM. */
static int s_out_reserve(conn_t *c, size_t need)
{
    if (c->out_r == c->out_w)
        c->out_r = c->out_w = 0;
    if (c->out_cap - c->out_w >= need)
        return 0;
    if (c->out_r > 0) {
        memmove(c->out, c->out + c->out_r, c->out_w - c->out_r);
        c->out_w -= c->out_r;
        c->out_r = 0;
        if (c->out_cap - c->out_w >= need)
            return 0;
    }
    size_t cap = c->out_cap ? c->out_cap : 1024;
    while (cap - c->out_w < need)
        cap *= 2;
    char *out = realloc(c->out, cap);
    if (!out)
        return -ENOMEM;
    c->out = out;
    c->out_cap = cap;
    return 0;
}

/* Queues a whole response. On failure to get memory the conn is closed instead, as a
 * response cut in the middle would corrupt the stream. */
static void s_conn_queue(conn_t *c, int status, const char *type, const char *body, size_t body_len,
                         uint64_t fill, bool keep_alive)
{
    server_t *s = c->loop->server;
    if (!http_status_has_body(status))
        body_len = fill = 0;
    bool small = fill <= SMALL_BODY_MAX;
    size_t send_body = c->head ? 0 : body_len + (small ? (size_t)fill : 0);
    if (s_out_reserve(c, 512 + send_body) != 0) {
        app_log_rare("out_of_memory", "no memory for a response, closing", ENOMEM);
        c->want_close = true;
        return;
    }
    size_t n = http_response_head(c->out + c->out_w, c->out_cap - c->out_w, status, s->cfg.name,
                                  type, body_len + fill, keep_alive, c->minor);
    if (n == 0) {
        c->want_close = true;
        return;
    }
    c->out_w += n;
    if (!c->head) {
        memcpy(c->out + c->out_w, body, body_len);
        c->out_w += body_len;
        if (small) {
            memcpy(c->out + c->out_w, s_fill, (size_t)fill);
            c->out_w += (size_t)fill;
        } else {
            c->fill = fill;
        }
    }
    if (!keep_alive)
        c->want_close = true;
}

/* Answers a request the app cannot parse and closes, since the stream is out of step. */
static void s_conn_fail(conn_t *c, int status)
{
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", status, http_reason(status));
    c->head = false;
    c->minor = 1;
    s_conn_queue(c, status, "text/plain; charset=utf-8", body, (size_t)n, 0, false);
    atomic_fetch_add_explicit(&c->loop->rejected, 1, memory_order_relaxed);
    app_debug("rejected request", "status=%d fd=%d", status, c->fd);
}

/* Answers the current request, its cost paid. */
static void s_conn_respond(conn_t *c)
{
    server_t *s = c->loop->server;
    bool keep_alive = c->keep_alive && !atomic_load(&s->draining);
    const char *text = "text/plain; charset=utf-8";
    char body[96];
    int n;
    switch (c->route) {
    case ROUTE_HEALTH:
        s_conn_queue(c, 200, text, "ok\n", 3, 0, keep_alive);
        break;
    case ROUTE_HELLO:
        if (misbehave_fail_now()) {
            static const char failing[] = "failing on purpose (POST /_sample/fail?share=0)\n";
            s_conn_queue(c, 500, text, failing, sizeof failing - 1, 0, keep_alive);
            break;
        }
        s_conn_queue(c, 200, text, s->hello, s->hello_len, 0, keep_alive);
        break;
    case ROUTE_STATUS:
        n = snprintf(body, sizeof body, "%d %s\n", (int)c->arg, http_reason((int)c->arg));
        s_conn_queue(c, (int)c->arg, text, body, (size_t)n, 0, keep_alive);
        break;
    case ROUTE_BYTES:
        s_conn_queue(c, 200, "application/octet-stream", "", 0, c->arg, keep_alive);
        break;
    case ROUTE_BAD:
        n = snprintf(body, sizeof body, "bad argument: want /status/200..599 or /bytes/0..%u\n",
                     HTTP_BYTES_MAX);
        s_conn_queue(c, 400, text, body, (size_t)n, 0, keep_alive);
        break;
    }
    atomic_fetch_add_explicit(&c->loop->requests, 1, memory_order_relaxed);
}

static void s_loop_arm(loop_t *loop)
{
    if (!loop->timer_head)
        return;
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(loop->timer_head->due_ns / NS_PER_S);
    its.it_value.tv_nsec = (long)(loop->timer_head->due_ns % NS_PER_S);
    if (timerfd_settime(loop->tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
        app_log_rare("timerfd_settime", "cannot arm the delay timer", errno);
}

/* The request has paid its cost: frees the slot for the next one and answers. */
static void s_conn_finish(conn_t *c)
{
    server_t *s = c->loop->server;
    cost_release(s->cost);
    c->busy = false;
    c->last_ns = c->loop->now_ns;
    if (c->dead) {
        s_conn_close(c);
        return;
    }
    s_conn_respond(c);
    s_conn_drive(c);
}

/* On the owner's thread, after the slot and the CPU: waits --delay-ms, or answers now. */
static void s_conn_costed(conn_t *c)
{
    loop_t *loop = c->loop;
    server_t *s = loop->server;
    if (s->delay_ns == 0) {
        s_conn_finish(c);
        return;
    }
    c->due_ns = server_now_ns() + s->delay_ns;
    c->qnext = NULL;
    if (loop->timer_tail) {
        loop->timer_tail->qnext = c;
        loop->timer_tail = c;
    } else {
        loop->timer_head = loop->timer_tail = c;
        s_loop_arm(loop);
    }
}

/* Cost module callback, on any thread: back to the owner loop, through its mailbox unless
 * this already is the owner. */
static void s_cost_ready(cost_job_t *job, void *arg)
{
    (void)arg;
    conn_t *c = (conn_t *)job;
    loop_t *loop = c->loop;
    if (s_self == loop) {
        s_conn_costed(c);
        return;
    }
    pthread_mutex_lock(&loop->mail_mu);
    bool was_empty = loop->mail_head == NULL;
    c->qnext = NULL;
    if (loop->mail_tail)
        loop->mail_tail->qnext = c;
    else
        loop->mail_head = c;
    loop->mail_tail = c;
    pthread_mutex_unlock(&loop->mail_mu);
    /* Only the first letter needs a wake-up; the loop takes the whole list at once. */
    if (was_empty)
        s_loop_wake(loop);
}

/* A /_sample switch: answered at once, outside the cost and the limit, like the health path. */
static void s_conn_sample(conn_t *c)
{
    bool keep_alive = c->keep_alive && !atomic_load(&c->loop->server->draining);
    const char *text = "text/plain; charset=utf-8";
    char body[160];
    size_t n = 0;
    int status = 200;
    switch (c->sample) {
    case SAMPLE_FAIL:
        misbehave_set_fail(c->share_ppm, c->fail_cpu_us);
        app_info("told to fail", "share_ppm=%u cpu_us=%u", c->share_ppm, c->fail_cpu_us);
        __attribute__((fallthrough)); /* answer with the new switches */
    case SAMPLE_SHOW:
        n = misbehave_describe(body, sizeof body);
        break;
    case SAMPLE_CRASH:
        status = 202;
        n = (size_t)snprintf(body, sizeof body, "crashing now (SIGSEGV)\n");
        break;
    case SAMPLE_BAD_ARG:
        status = 400;
        n = (size_t)snprintf(body, sizeof body,
                             "want POST /_sample/fail?share=S (0 <= S <= 1, up to 6 decimals)"
                             "[&cpu_us=0..%d]\n",
                             MISBEHAVE_CPU_US_MAX);
        break;
    case SAMPLE_METHOD:
        status = 405;
        n = (size_t)snprintf(body, sizeof body, "this switch takes POST\n");
        break;
    default:
        status = 404;
        n = (size_t)snprintf(body, sizeof body, "the switches are /_sample/fail, /_sample/crash\n");
        break;
    }
    s_conn_queue(c, status, text, body, n, 0, keep_alive);
    atomic_fetch_add_explicit(&c->loop->requests, 1, memory_order_relaxed);
    if (c->sample == SAMPLE_CRASH) {
        app_info("told to crash", "%s", "");
        s_conn_flush(c); /* the 202 goes out first, as far as the socket takes it */
        sample_crash_now();
    }
}

/* A whole request (head and body) is in: answer it now or send it through the cost. */
static void s_conn_dispatch(conn_t *c)
{
    server_t *s = c->loop->server;
    if (c->sample != SAMPLE_NONE) {
        s_conn_sample(c);
        return;
    }
    if (c->route == ROUTE_HEALTH || !s->costly) {
        s_conn_respond(c);
        return;
    }
    /* With a cost configured, ready never runs s_conn_finish inside this call (there is a
     * delay timer or a worker in between), so the caller's parse loop is not re-entered. */
    c->busy = true;
    cost_submit(s->cost, &c->job);
}

/* Turns buffered input into responses until a request waits for its cost, enough output is
 * queued, the conn is to close, or more input is needed. Returns true only in the last case. */
static bool s_conn_process(conn_t *c)
{
    server_t *s = c->loop->server;
    while (!c->busy && !c->want_close && c->fill == 0 && c->out_w - c->out_r < OUT_HIGH_WATER) {
        size_t avail = c->in_w - c->in_r;
        if (c->in_body) {
            size_t take = avail < c->body_left ? avail : (size_t)c->body_left;
            c->in_r += take;
            c->body_left -= take;
            if (c->body_left > 0)
                return true;
            c->in_body = false;
            s_conn_dispatch(c);
            continue;
        }
        if (c->scan == 0) {
            size_t skip = http_skip_blank(c->in + c->in_r, avail);
            c->in_r += skip;
            avail -= skip;
        }
        size_t n = http_head_end(c->in + c->in_r, avail, &c->scan);
        if (n == 0) {
            if (avail >= sizeof c->in) {
                s_conn_fail(c, 431);
                return false;
            }
            return true;
        }
        http_req_t req;
        int status = http_parse(c->in + c->in_r, n, &req);
        if (status == 0) {
            c->route = http_route(req.path, req.path_len, s->cfg.health_path, &c->arg);
            c->sample = c->route == ROUTE_HEALTH
                            ? SAMPLE_NONE
                            : misbehave_route(&req, &c->share_ppm, &c->fail_cpu_us);
            c->minor = req.minor;
            c->head = req.head;
            c->keep_alive = req.keep_alive;
        }
        c->in_r += n;
        c->scan = 0;
        if (status != 0) {
            s_conn_fail(c, status);
            return false;
        }
        if (req.content_length > 0) {
            /* Without the 100, curl and others hold the body back for a second. */
            if (req.expect_continue && s_out_reserve(c, 32) == 0) {
                memcpy(c->out + c->out_w, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                c->out_w += 25;
            }
            c->in_body = true;
            c->body_left = req.content_length;
            continue;
        }
        s_conn_dispatch(c);
    }
    return false;
}

/* Sends queued output. Returns 0 when all of it went out, 1 when the socket is full (EPOLLOUT
 * will drive the conn again), -1 when the connection is broken. */
static int s_conn_flush(conn_t *c)
{
    while (c->out_r < c->out_w || c->fill > 0) {
        ssize_t n;
        if (c->out_r < c->out_w) {
            n = send(c->fd, c->out + c->out_r, c->out_w - c->out_r, MSG_NOSIGNAL);
        } else {
            size_t len = c->fill < sizeof s_fill ? (size_t)c->fill : sizeof s_fill;
            n = send(c->fd, s_fill, len, MSG_NOSIGNAL);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 1;
            app_debug("send failed", "fd=%d errno=%d", c->fd, errno);
            return -1;
        }
        c->last_ns = c->loop->now_ns;
        if (c->out_r < c->out_w)
            c->out_r += (size_t)n;
        else
            c->fill -= (uint64_t)n;
    }
    c->out_r = c->out_w = 0;
    return 0;
}

/* Reads what the socket has into in[]. Returns 1 when bytes came, 0 when none are there yet,
 * -1 at end of stream or on error. */
static int s_conn_read(conn_t *c)
{
    if (c->in_r == c->in_w) {
        c->in_r = c->in_w = 0;
    } else if (c->in_r > 0) {
        memmove(c->in, c->in + c->in_r, c->in_w - c->in_r);
        c->in_w -= c->in_r;
        c->in_r = 0;
    }
    /* Cannot happen (a full buffer without a head is answered 431), but a zero-length read
     * would look like end of stream. */
    if (c->in_w == sizeof c->in)
        return -1;
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_w, sizeof c->in - c->in_w, 0);
        if (n > 0) {
            c->in_w += (size_t)n;
            c->last_ns = c->loop->now_ns;
            return 1;
        }
        if (n == 0)
            return -1;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        app_debug("recv failed", "fd=%d errno=%d", c->fd, errno);
        return -1;
    }
}

/* Drops what the client still sends after our last response, until it closes. Closing with
 * unread bytes would make the kernel send a reset, which can destroy that response before
 * the client has read it. */
static void s_conn_linger(conn_t *c)
{
    for (int i = 0; i < LINGER_READS; i++) {
        ssize_t n = recv(c->fd, c->in, sizeof c->in, 0);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        break;
    }
    s_conn_close(c);
}

/* All output is out and the conn was to close. */
static void s_conn_shut(conn_t *c)
{
    if (atomic_load(&c->loop->server->draining)) {
        s_conn_close(c);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->lingering = true;
    c->last_ns = c->loop->now_ns;
    s_conn_linger(c);
}

/* Moves a connection as far as it can go without blocking: parse, answer, write, read. Called
 * for every epoll event (edge-triggered, so it reads and writes until EAGAIN) and whenever a
 * request comes back from its cost. */
static void s_conn_drive(conn_t *c)
{
    server_t *s = c->loop->server;
    while (!c->closed && !c->dead) {
        if (c->lingering) {
            s_conn_linger(c);
            return;
        }
        bool need_input = s_conn_process(c);
        int rc = s_conn_flush(c);
        if (rc < 0) {
            s_conn_close(c);
            return;
        }
        if (rc > 0 || c->busy)
            return;
        if (c->want_close) {
            s_conn_shut(c);
            return;
        }
        if (!need_input)
            continue;
        rc = s_conn_read(c);
        if (rc < 0) {
            s_conn_close(c);
            return;
        }
        if (rc == 0) {
            /* Draining: a connection between requests closes; one in the middle of a request
             * gets to finish it. */
            if (atomic_load(&s->draining) && c->in_r == c->in_w && !c->in_body)
                s_conn_close(c);
            return;
        }
    }
}

/* A descriptor kept in reserve for EMFILE: without it a pending connection could be neither
 * accepted nor refused, and the listening socket would wake the loops forever. */
static int s_spare_open(void)
{
    return eventfd(0, EFD_CLOEXEC);
}

static void s_loop_accept(loop_t *loop)
{
    server_t *s = loop->server;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK)
                return;
            if (err == EINTR || err == ECONNABORTED || err == EPROTO)
                continue;
            if ((err == EMFILE || err == ENFILE) && loop->spare_fd >= 0) {
                close(loop->spare_fd);
                int victim = accept(s->listen_fd, NULL, NULL);
                if (victim >= 0)
                    close(victim);
                loop->spare_fd = s_spare_open();
                app_log_rare("accept_fd_limit", "out of file descriptors, refusing connections",
                             err);
                continue;
            }
            app_log_rare("accept", "accept failed", err);
            return;
        }
        conn_t *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            app_log_rare("accept_memory", "no memory for a connection, refusing it", ENOMEM);
            continue;
        }
        /* Each response goes out in one send; Nagle would only hold the last one back. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = fd;
        c->loop = loop;
        c->last_ns = loop->now_ns;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            app_log_rare("epoll_add", "cannot watch a connection, closing it", errno);
            close(fd);
            free(c);
            continue;
        }
        c->next = loop->conns;
        if (loop->conns)
            loop->conns->prev = c;
        loop->conns = c;
        loop->nconns++;
    }
}

/* Requests that came back from the cost module on other threads. */
static void s_loop_mail(loop_t *loop)
{
    uint64_t count;
    ssize_t r = read(loop->evfd, &count, sizeof count);
    (void)r;
    pthread_mutex_lock(&loop->mail_mu);
    conn_t *c = loop->mail_head;
    loop->mail_head = loop->mail_tail = NULL;
    pthread_mutex_unlock(&loop->mail_mu);
    while (c) {
        conn_t *next = c->qnext;
        s_conn_costed(c);
        c = next;
    }
}

static void s_loop_timers(loop_t *loop)
{
    uint64_t expirations;
    ssize_t r = read(loop->tfd, &expirations, sizeof expirations);
    (void)r;
    uint64_t now = server_now_ns();
    while (loop->timer_head && loop->timer_head->due_ns <= now) {
        conn_t *c = loop->timer_head;
        loop->timer_head = c->qnext;
        if (!loop->timer_head)
            loop->timer_tail = NULL;
        s_conn_finish(c);
    }
    s_loop_arm(loop);
}

static void s_loop_sweep(loop_t *loop)
{
    for (conn_t *c = loop->conns, *next; c; c = next) {
        next = c->next;
        if (c->busy)
            continue;
        uint64_t idle = loop->now_ns - c->last_ns;
        if (idle > IDLE_NS || (c->lingering && idle > LINGER_NS))
            s_conn_close(c);
    }
}

static void s_loop_drain(loop_t *loop)
{
    server_t *s = loop->server;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, s->listen_fd, NULL);
    loop->drained = true;
    pthread_mutex_lock(&s->mu);
    s->acks++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    /* Driving each conn reads what has already arrived, so a request in the socket buffer is
     * still answered; a conn with nothing to do closes. */
    for (conn_t *c = loop->conns, *next; c; c = next) {
        next = c->next;
        if (c->lingering)
            s_conn_close(c);
        else if (!c->busy)
            s_conn_drive(c);
    }
}

static void *s_loop_run(void *arg)
{
    loop_t *loop = arg;
    server_t *s = loop->server;
    struct epoll_event events[MAX_EVENTS];
    s_self = loop;
    loop->now_ns = server_now_ns();
    loop->next_sweep_ns = loop->now_ns + SWEEP_MS * NS_PER_MS;
    while (!atomic_load(&s->stopping)) {
        if (!loop->drained && atomic_load(&s->draining))
            s_loop_drain(loop);
        s_loop_bury(loop);
        if (loop->drained && loop->nconns == 0)
            break;
        int n = epoll_wait(loop->epfd, events, MAX_EVENTS, SWEEP_MS);
        if (n < 0) {
            if (errno != EINTR)
                app_log_rare("epoll_wait", "epoll_wait failed", errno);
            n = 0;
        }
        loop->now_ns = server_now_ns();
        for (int i = 0; i < n; i++) {
            void *p = events[i].data.ptr;
            if (p == &s_tag_listen) {
                if (!loop->drained)
                    s_loop_accept(loop);
            } else if (p == &s_tag_wake) {
                s_loop_mail(loop);
            } else if (p == &s_tag_timer) {
                s_loop_timers(loop);
            } else {
                conn_t *c = p;
                if (!c->closed)
                    s_conn_drive(c);
            }
        }
        if (loop->now_ns >= loop->next_sweep_ns) {
            s_loop_sweep(loop);
            loop->next_sweep_ns = loop->now_ns + SWEEP_MS * NS_PER_MS;
        }
        s_loop_bury(loop);
    }
    pthread_mutex_lock(&s->mu);
    s->running--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int server_listen(const app_config_t *cfg, char *bound, size_t bound_size)
{
    int fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    /* A restarted instance must be able to bind while old connections sit in TIME_WAIT. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&cfg->addr, cfg->addr_len) != 0 ||
        listen(fd, 4096) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) == 0) {
        if (addr.ss_family == AF_INET6) {
            struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
            inet_ntop(AF_INET6, &a6->sin6_addr, host, sizeof host);
            port = ntohs(a6->sin6_port);
        } else {
            struct sockaddr_in *a4 = (struct sockaddr_in *)&addr;
            inet_ntop(AF_INET, &a4->sin_addr, host, sizeof host);
            port = ntohs(a4->sin_port);
        }
    }
    snprintf(bound, bound_size, addr.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
    return fd;
}

static int s_loop_init(loop_t *loop, server_t *s)
{
    loop->server = s;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loop->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    loop->spare_fd = s_spare_open();
    if (loop->epfd < 0 || loop->evfd < 0 || loop->tfd < 0 || loop->spare_fd < 0)
        return -errno;
    /* EPOLLEXCLUSIVE: a new connection wakes one loop, not all of them. */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &s_tag_listen};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, s->listen_fd, &ev) != 0)
        return -errno;
    ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = &s_tag_wake};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->evfd, &ev) != 0)
        return -errno;
    ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = &s_tag_timer};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->tfd, &ev) != 0)
        return -errno;
    return 0;
}

server_t *server_new(const app_config_t *cfg, int listen_fd, int nloops, int nworkers)
{
    server_t *self = calloc(1, sizeof *self);
    if (!self) {
        close(listen_fd);
        errno = ENOMEM;
        return NULL;
    }
    self->cfg = *cfg;
    self->listen_fd = listen_fd;
    self->delay_ns = (uint64_t)cfg->delay_ms * NS_PER_MS;
    self->costly = cfg->delay_ms > 0 || cfg->cpu_us > 0;
    self->hello_len =
        (size_t)snprintf(self->hello, sizeof self->hello, "hello from %s\n", cfg->name);
    pthread_mutex_init(&self->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&self->cv, &attr);
    pthread_condattr_destroy(&attr);
    memset(s_fill, 'x', sizeof s_fill);

    int err = 0;
    self->cost = cost_new(cfg->concurrency, cfg->cpu_us, nworkers, s_cost_ready, self);
    self->loops = calloc((size_t)nloops, sizeof *self->loops);
    if (!self->cost || !self->loops) {
        err = self->cost ? ENOMEM : errno;
        goto fail;
    }
    self->nloops = nloops;
    /* Everything server_destroy looks at is set before anything can fail. */
    for (int i = 0; i < nloops; i++) {
        loop_t *loop = &self->loops[i];
        loop->epfd = loop->evfd = loop->tfd = loop->spare_fd = -1;
        pthread_mutex_init(&loop->mail_mu, NULL);
    }
    for (int i = 0; i < nloops; i++) {
        int rc = s_loop_init(&self->loops[i], self);
        if (rc < 0) {
            err = -rc;
            goto fail;
        }
    }
    for (int i = 0; i < nloops; i++) {
        pthread_mutex_lock(&self->mu);
        self->running++;
        pthread_mutex_unlock(&self->mu);
        int rc = pthread_create(&self->loops[i].thread, NULL, s_loop_run, &self->loops[i]);
        if (rc != 0) {
            pthread_mutex_lock(&self->mu);
            self->running--;
            pthread_mutex_unlock(&self->mu);
            err = rc;
            goto fail;
        }
        self->loops[i].started = true;
    }
    return self;
fail:
    server_destroy(&self);
    errno = err;
    return NULL;
}

void server_drain(server_t *self, uint64_t deadline_ns)
{
    atomic_store(&self->draining, true);
    for (int i = 0; i < self->nloops; i++)
        s_loop_wake(&self->loops[i]);
    struct timespec deadline = {.tv_sec = (time_t)(deadline_ns / NS_PER_S),
                                .tv_nsec = (long)(deadline_ns % NS_PER_S)};
    pthread_mutex_lock(&self->mu);
    int started = 0;
    for (int i = 0; i < self->nloops; i++)
        started += self->loops[i].started;
    while (self->acks < started) {
        if (pthread_cond_timedwait(&self->cv, &self->mu, &deadline) == ETIMEDOUT)
            break;
    }
    bool all = self->acks >= started;
    pthread_mutex_unlock(&self->mu);
    /* Only once no loop can call accept on it, or the number could be reused under it. */
    if (all && self->listen_fd >= 0) {
        close(self->listen_fd);
        self->listen_fd = -1;
    }
}

bool server_wait(server_t *self, uint64_t deadline_ns)
{
    struct timespec deadline = {.tv_sec = (time_t)(deadline_ns / NS_PER_S),
                                .tv_nsec = (long)(deadline_ns % NS_PER_S)};
    pthread_mutex_lock(&self->mu);
    while (self->running > 0) {
        if (pthread_cond_timedwait(&self->cv, &self->mu, &deadline) == ETIMEDOUT)
            break;
    }
    bool done = self->running == 0;
    pthread_mutex_unlock(&self->mu);
    return done;
}

uint64_t server_requests(server_t *self)
{
    uint64_t n = 0;
    for (int i = 0; i < self->nloops; i++)
        n += atomic_load_explicit(&self->loops[i].requests, memory_order_relaxed);
    return n;
}

uint64_t server_rejected(server_t *self)
{
    uint64_t n = 0;
    for (int i = 0; i < self->nloops; i++)
        n += atomic_load_explicit(&self->loops[i].rejected, memory_order_relaxed);
    return n;
}

void server_destroy(server_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    server_t *self = *self_p;
    atomic_store(&self->stopping, true);
    /* Workers first: once they are joined no thread can post a conn to a loop's mailbox. */
    if (self->cost)
        cost_stop(self->cost);
    for (int i = 0; i < self->nloops; i++)
        if (self->loops[i].started)
            s_loop_wake(&self->loops[i]);
    for (int i = 0; i < self->nloops; i++)
        if (self->loops[i].started)
            pthread_join(self->loops[i].thread, NULL);
    for (int i = 0; i < self->nloops; i++) {
        loop_t *loop = &self->loops[i];
        s_loop_bury(loop);
        while (loop->conns) {
            conn_t *c = loop->conns;
            loop->conns = c->next;
            close(c->fd);
            free(c->out);
            free(c);
        }
        if (loop->epfd >= 0)
            close(loop->epfd);
        if (loop->evfd >= 0)
            close(loop->evfd);
        if (loop->tfd >= 0)
            close(loop->tfd);
        if (loop->spare_fd >= 0)
            close(loop->spare_fd);
        pthread_mutex_destroy(&loop->mail_mu);
    }
    cost_destroy(&self->cost);
    if (self->listen_fd >= 0)
        close(self->listen_fd);
    free(self->loops);
    pthread_cond_destroy(&self->cv);
    pthread_mutex_destroy(&self->mu);
    free(self);
    *self_p = NULL;
}
