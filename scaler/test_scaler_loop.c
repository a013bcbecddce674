/* test_scaler_loop.c - tide-scaler as a process, end to end on its own: a real redis-server,
 * the real binary, and this test playing the executor (REP + exec.job events, with failures,
 * lost events and silence on demand), tide-metrics (metrics.snapshot) and tidectl (control).
 *
 * Checks: reconcile at start, scale up to min and to the policy's count, Redis contents after
 * every step (instances == pool), control replies (garbage included), a failed job with backoff
 * and retry, lost FINISHED events recovered by status polls, a SIGKILL and restart that keeps
 * the pool with no duplicate job, scale down, an unanswered request, and a clean SIGTERM.
 * No fixed sleeps: every wait polls for a condition with a deadline.
 * Ports: TIDE_TEST_PORT_BASE (else the kernel picks). Skipped without redis-server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "names.h"
#include "tide_clock.h"
#include "tide_log.h"
#include "tide_msg.h"
#include "tide_redis.h"
#include "test_fixtures.h"

#ifndef TIDE_SCALER_BIN
#error "TIDE_SCALER_BIN must name the tide-scaler binary"
#endif

#define BASE_PORT_APP 9101
#define MAX_JOBS      256
#define MAX_SEEN      1024

static char s_dir[] = "/tmp/tide-test-scaler-XXXXXX";
static char s_cfg_path[512];
static int
    s_ports[8]; /* redis, metrics, scaler_events, scaler_control, exec_control, exec_events */
static pid_t s_redis = -1, s_scaler = -1;
static char s_ep[6][64];

typedef struct {
    char id[128];
    Tide__V1__JobKind kind;
    Tide__V1__JobState state;
    char error[64];
    int n;
    int idx[NAMES_MAX];
} fjob_t;

/* The fake world. */
static struct {
    zsock_t *rep, *pub_events, *pub_metrics, *sub_scaler, *req_control;
    bool running[64];
    fjob_t jobs[MAX_JOBS];
    int njobs;
    int fail_next_up;   /* FAILED for the next N scale ups */
    bool drop_finished; /* publish no FINISHED events (status polls must find out) */
    bool silent;        /* hold every request unanswered */
    bool hold_running;  /* new scale ups stay RUNNING until s_release() */
    zmsg_t *held;       /* the request being held while silent */
    int violations;     /* requests naming a wrong host/port/name/deadline */
    bool proxy_on;      /* a fake proxy's stats are republished beside the snapshots */
    bool proxy_follow;  /* it applies every pool version from Redis, like a real one */
    uint64_t proxy_version;
    uint32_t proxy_in_flight; /* to production5 */
    double rps;               /* what metrics.snapshot says */
    bool metrics_on;
    uint64_t next_snap_ms;
    /* what the scaler asked, in order */
    Tide__V1__JobKind req_kind[MAX_SEEN];
    int nreq;
    /* scaler.state messages seen */
    Tide__V1__State st_from[MAX_SEEN], st_to[MAX_SEEN];
    char st_reason[MAX_SEEN][160];
    int nst;
    int npool_events;
} F;

/* ---- processes and ports ------------------------------------------------------------------ */

static void s_pick_ports(int n)
{
    const char *base = getenv("TIDE_TEST_PORT_BASE");
    int next = base ? atoi(base) + 300 : 0;
    int fds[8];
    for (int i = 0; i < n; i++) {
        for (;;) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in a = {.sin_family = AF_INET,
                                    .sin_port = htons((uint16_t)(next ? next++ : 0))};
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            socklen_t len = sizeof a;
            if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
                s_ports[i] = ntohs(a.sin_port);
                fds[i] = fd; /* held until all are picked, so none repeats */
                break;
            }
            close(fd);
        }
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static pid_t s_spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        setenv("ASAN_OPTIONS", "detect_leaks=1", 0);
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static redis_conn_t *s_conn(void)
{
    return redis_conn_new("127.0.0.1", s_ports[0], 200, 500);
}

static bool s_redis_up(void)
{
    return test_redis_ping(s_ports[0]);
}

static void s_start_scaler(void)
{
    char log[600];
    snprintf(log, sizeof log, "%s/scaler.log", s_dir);
    char *argv[] = {TIDE_SCALER_BIN, "-c", s_cfg_path, "--id", "loop", NULL};
    s_scaler = s_spawn(argv, log);
    assert_true(s_scaler > 0);
}

static int s_stop(pid_t *pid, int sig)
{
    if (*pid <= 0)
        return -1;
    kill(*pid, sig);
    int status = 0;
    uint64_t until = clock_mono_ms() + 10000;
    while (waitpid(*pid, &status, WNOHANG) == 0) {
        if (clock_mono_ms() > until) {
            kill(*pid, SIGKILL);
            waitpid(*pid, &status, 0);
            break;
        }
        zclock_sleep(10);
    }
    *pid = -1;
    return status;
}

/* ---- the fake executor, metrics and observer ---------------------------------------------- */

static fjob_t *s_find(const char *id)
{
    for (int i = 0; i < F.njobs; i++)
        if (strcmp(F.jobs[i].id, id) == 0)
            return &F.jobs[i];
    return NULL;
}

/* Fills rec from job j (results: for LIST every running instance, else the job's). */
static void s_record(const fjob_t *j, Tide__V1__JobState state, Tide__V1__JobRecord *rec,
                     Tide__V1__InstanceResult *res, Tide__V1__InstanceResult **resp,
                     Tide__V1__Instance *inst, Tide__V1__Instance **instp,
                     Tide__V1__Instance *rinst, char (*names)[32])
{
    tide__v1__job_record__init(rec);
    rec->job_id = (char *)j->id;
    rec->kind = j->kind;
    rec->state = state;
    rec->error = (char *)j->error;
    size_t nr = 0;
    if (j->kind == TIDE__V1__JOB_KIND__JOB_LIST) {
        for (int i = 0; i < 64; i++)
            if (F.running[i]) {
                tide__v1__instance_result__init(&res[nr]);
                tide__v1__instance__init(&rinst[nr]);
                snprintf(names[nr], 32, "production%d", i);
                rinst[nr].name = names[nr];
                rinst[nr].host = "127.0.0.1";
                rinst[nr].port = (uint32_t)(BASE_PORT_APP + i);
                res[nr].instance = &rinst[nr];
                res[nr].ok = true;
                res[nr].running = true;
                resp[nr] = &res[nr];
                nr++;
            }
    } else {
        for (int k = 0; k < j->n; k++) {
            int i = j->idx[k];
            tide__v1__instance_result__init(&res[nr]);
            tide__v1__instance__init(&rinst[nr]);
            snprintf(names[nr], 32, "production%d", i);
            rinst[nr].name = names[nr];
            rinst[nr].host = "127.0.0.1";
            rinst[nr].port = (uint32_t)(BASE_PORT_APP + i);
            res[nr].instance = &rinst[nr];
            res[nr].ok = state == TIDE__V1__JOB_STATE__JOB_SUCCEEDED;
            res[nr].running = i < 64 && F.running[i];
            resp[nr] = &res[nr];
            inst[k] = rinst[nr];
            instp[k] = &inst[k];
            nr++;
        }
        rec->instances = instp;
        rec->n_instances = (size_t)j->n;
    }
    rec->results = resp;
    rec->n_results = nr;
}

static void s_send_record(zsock_t *sock, bool event, const fjob_t *j, Tide__V1__JobState state,
                          bool accepted, const char *reason)
{
    static Tide__V1__InstanceResult res[64], *resp[64];
    static Tide__V1__Instance inst[64], *instp[64], rinst[64];
    static char names[64][32];
    static msg_sender_t sender;
    if (!sender.sender[0])
        msg_sender_init(&sender, "executor", "fake");
    Tide__V1__JobRecord rec;
    if (j)
        s_record(j, state, &rec, res, resp, inst, instp, rinst, names);
    if (event) {
        Tide__V1__JobEvent ev = TIDE__V1__JOB_EVENT__INIT;
        ev.header = msg_sender_next(&sender);
        ev.job_id = (char *)j->id;
        ev.type = TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_FINISHED;
        ev.job = &rec;
        msg_send(sock, TOPIC_EXEC_JOB, &ev.base);
    } else {
        Tide__V1__ExecReply rep = TIDE__V1__EXEC_REPLY__INIT;
        rep.header = msg_sender_next(&sender);
        rep.accepted = accepted;
        rep.reason = (char *)(reason ? reason : "");
        rep.job = j ? &rec : NULL;
        msg_send(sock, TOPIC_EXEC_REP, &rep.base);
    }
}

static void s_handle_request(zmsg_t *zm)
{
    /* decode the way msg_recv would */
    zframe_t *tf = zmsg_first(zm), *pf = zmsg_next(zm);
    const char *why = NULL;
    Tide__V1__ExecRequest *req = NULL;
    if (tf && pf && zframe_streq(tf, TOPIC_EXEC_REQ))
        req = (Tide__V1__ExecRequest *)msg_decode(TOPIC_EXEC_REQ, zframe_data(pf), zframe_size(pf),
                                                  &why);
    if (!req) {
        s_send_record(F.rep, false, NULL, 0, false, "malformed request");
        return;
    }
    if (F.nreq < MAX_SEEN)
        F.req_kind[F.nreq++] = req->kind;
    fjob_t *j = s_find(req->job_id);
    if (req->kind == TIDE__V1__JOB_KIND__JOB_STATUS) {
        if (j)
            s_send_record(F.rep, false, j, j->state, true, NULL);
        else
            s_send_record(F.rep, false, NULL, 0, false, "unknown job");
        protobuf_c_message_free_unpacked(&req->base, NULL);
        return;
    }
    if (j) { /* a resend: the same record, nothing started twice */
        s_send_record(F.rep, false, j, j->state, true, NULL);
        protobuf_c_message_free_unpacked(&req->base, NULL);
        return;
    }
    assert_true(F.njobs < MAX_JOBS);
    j = &F.jobs[F.njobs++];
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", req->job_id);
    j->kind = req->kind;
    if (req->deadline_ms != 1500 && req->kind != TIDE__V1__JOB_KIND__JOB_LIST)
        F.violations++;
    for (size_t i = 0; i < req->n_instances && j->n < NAMES_MAX; i++) {
        const Tide__V1__Instance *in = req->instances[i];
        int idx = names_index("production", in->name);
        if (idx < 0 || idx >= 64 || strcmp(in->host, "127.0.0.1") != 0 ||
            in->port != (uint32_t)(BASE_PORT_APP + idx))
            F.violations++;
        else
            j->idx[j->n++] = idx;
    }
    j->state = TIDE__V1__JOB_STATE__JOB_SUCCEEDED;
    if (req->kind == TIDE__V1__JOB_KIND__JOB_SCALE_UP && F.hold_running) {
        j->state = TIDE__V1__JOB_STATE__JOB_RUNNING;
    } else if (req->kind == TIDE__V1__JOB_KIND__JOB_SCALE_UP) {
        if (F.fail_next_up > 0) {
            F.fail_next_up--;
            j->state = TIDE__V1__JOB_STATE__JOB_FAILED;
            snprintf(j->error, sizeof j->error, "told to fail");
        } else {
            for (int k = 0; k < j->n; k++) {
                if (F.running[j->idx[k]])
                    F.violations++; /* a duplicate: it already runs */
                F.running[j->idx[k]] = true;
            }
        }
    } else if (req->kind == TIDE__V1__JOB_KIND__JOB_SCALE_DOWN) {
        for (int k = 0; k < j->n; k++)
            F.running[j->idx[k]] = false;
    }
    s_send_record(F.rep, false, j, TIDE__V1__JOB_STATE__JOB_RUNNING, true, NULL);
    if (!F.drop_finished && j->state != TIDE__V1__JOB_STATE__JOB_RUNNING)
        s_send_record(F.pub_events, true, j, j->state, true, NULL);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* Finishes every held scale up: its instances start, FINISHED is published. */
static void s_release(void)
{
    F.hold_running = false;
    for (int i = 0; i < F.njobs; i++) {
        fjob_t *j = &F.jobs[i];
        if (j->state != TIDE__V1__JOB_STATE__JOB_RUNNING)
            continue;
        for (int k = 0; k < j->n; k++)
            F.running[j->idx[k]] = true;
        j->state = TIDE__V1__JOB_STATE__JOB_SUCCEEDED;
        s_send_record(F.pub_events, true, j, j->state, true, NULL);
    }
}

static uint64_t s_pool_version(void);

static void s_snapshot(void)
{
    static msg_sender_t sender;
    if (!sender.sender[0])
        msg_sender_init(&sender, "metrics", "fake");
    Tide__V1__MetricsSnapshot m = TIDE__V1__METRICS_SNAPSHOT__INIT;
    m.header = msg_sender_next(&sender);
    m.stable_window_s = 2;
    m.panic_window_s = 1;
    m.rps_stable = F.rps;
    m.rps_panic = F.rps;
    m.proxies = F.proxy_on ? 1 : 0;
    msg_send(F.pub_metrics, TOPIC_SNAPSHOT, &m.base);
    if (!F.proxy_on)
        return;
    if (F.proxy_follow)
        F.proxy_version = s_pool_version();
    static msg_sender_t proxy;
    if (!proxy.sender[0])
        msg_sender_init(&proxy, "proxy", "fake");
    Tide__V1__ProxyStats ps = TIDE__V1__PROXY_STATS__INIT;
    ps.header = msg_sender_next(&proxy);
    ps.started_ms = 1;
    ps.pool_version = F.proxy_version;
    Tide__V1__InstanceStats is = TIDE__V1__INSTANCE_STATS__INIT, *isp = &is;
    is.name = "production5";
    is.in_flight = F.proxy_in_flight;
    ps.instances = &isp;
    ps.n_instances = 1;
    msg_send(F.pub_metrics, TOPIC_STATS, &ps.base);
}

static uint64_t s_pool_version(void)
{
    redis_conn_t *c = s_conn();
    uint64_t v = 0;
    redis_read_pool_version(c, "loop", &v);
    redis_conn_destroy(&c);
    return v;
}

/* Serves the fake world for up to ms milliseconds. */
static void s_pump(int ms)
{
    uint64_t until = clock_mono_ms() + (uint64_t)ms;
    do {
        uint64_t now = clock_mono_ms();
        if (F.metrics_on && now >= F.next_snap_ms) {
            s_snapshot();
            F.next_snap_ms = now + 200;
        }
        zmq_pollitem_t items[] = {{zsock_resolve(F.rep), 0, ZMQ_POLLIN, 0},
                                  {zsock_resolve(F.sub_scaler), 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, 10) < 0)
            continue;
        if ((items[0].revents & ZMQ_POLLIN) && !F.held) {
            zmsg_t *zm = zmsg_recv(F.rep);
            if (F.silent) {
                F.held = zm; /* answered (to nobody) once we speak again */
            } else {
                s_handle_request(zm);
                zmsg_destroy(&zm);
            }
        }
        if (F.held && !F.silent) {
            s_handle_request(F.held); /* the scaler has moved on: this reply is dropped */
            zmsg_destroy(&F.held);
        }
        if (items[1].revents & ZMQ_POLLIN) {
            msg_in_t in;
            if (msg_recv(F.sub_scaler, &in) == 0) {
                if (strcmp(in.topic, TOPIC_SCALER_STATE) == 0 && F.nst < MAX_SEEN) {
                    const Tide__V1__ScalerState *s = (const void *)in.msg;
                    F.st_from[F.nst] = s->previous;
                    F.st_to[F.nst] = s->state;
                    snprintf(F.st_reason[F.nst], sizeof F.st_reason[F.nst], "%s", s->reason);
                    F.nst++;
                } else if (strcmp(in.topic, TOPIC_SCALER_POOL) == 0) {
                    F.npool_events++;
                }
                msg_in_free(&in);
            }
        }
    } while (clock_mono_ms() < until);
}

/* ---- Redis observations ------------------------------------------------------------------- */

static int s_instances(void)
{
    redis_conn_t *c = s_conn();
    const char *argv[] = {"GET", "tide:loop:instances"};
    redisReply *r = redis_conn_command(c, 2, argv);
    int n = r && r->type == REDIS_REPLY_STRING ? atoi(r->str) : -1;
    if (r)
        freeReplyObject(r);
    redis_conn_destroy(&c);
    return n;
}

static int s_pool(pool_entry_t *e)
{
    redis_conn_t *c = s_conn();
    uint64_t v;
    int n = redis_read_pool(c, "loop", &v, e, 64);
    redis_conn_destroy(&c);
    return n;
}

static char *s_state_field(const char *field)
{
    redis_conn_t *c = s_conn();
    const char *argv[] = {"HGET", "tide:loop:state", field};
    redisReply *r = redis_conn_command(c, 3, argv);
    char *v = r && r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
    if (r)
        freeReplyObject(r);
    redis_conn_destroy(&c);
    return v;
}

static bool s_state_is(const char *want)
{
    char *v = s_state_field("state");
    bool ok = v && strcmp(v, want) == 0;
    free(v);
    return ok;
}

/* The pool is production0..n-1 with the right addresses, and instances says n. */
static bool s_pool_is(int n)
{
    pool_entry_t e[64];
    if (s_instances() != n || s_pool(e) != n)
        return false;
    for (int i = 0; i < n; i++) {
        char name[32], addr[32];
        snprintf(name, sizeof name, "production%d", i);
        snprintf(addr, sizeof addr, "127.0.0.1:%d", BASE_PORT_APP + i);
        if (strcmp(e[i].name, name) != 0 || strcmp(e[i].addr, addr) != 0)
            return false;
    }
    return true;
}

static int s_running_count(void)
{
    int n = 0;
    for (int i = 0; i < 64; i++)
        n += F.running[i];
    return n;
}

#define WAIT_FOR(cond, ms)                                                                         \
    do {                                                                                           \
        uint64_t until_ = clock_mono_ms() + (ms);                                                  \
        while (!(cond) && clock_mono_ms() < until_)                                                \
            s_pump(50);                                                                            \
        if (!(cond))                                                                               \
            fail_msg("timed out after %d ms waiting for: %s (see %s/scaler.log)", (int)(ms),       \
                     #cond, s_dir);                                                                \
    } while (0)

static bool s_seen_reason(const char *text)
{
    for (int i = 0; i < F.nst; i++)
        if (strstr(F.st_reason[i], text))
            return true;
    return false;
}

static int s_count_kind(Tide__V1__JobKind kind, int from)
{
    int n = 0;
    for (int i = from; i < F.nreq; i++)
        n += F.req_kind[i] == kind;
    return n;
}

/* ---- control client ----------------------------------------------------------------------- */

static Tide__V1__ControlReply *s_control(Tide__V1__Command cmd, uint32_t count, uint32_t min,
                                         uint32_t max)
{
    static msg_sender_t sender;
    if (!sender.sender[0])
        msg_sender_init(&sender, "tidectl", "test");
    Tide__V1__ControlRequest req = TIDE__V1__CONTROL_REQUEST__INIT;
    req.header = msg_sender_next(&sender);
    req.command = cmd;
    req.count = count;
    req.min = min;
    req.max = max;
    assert_int_equal(msg_send(F.req_control, TOPIC_CONTROL_REQ, &req.base), 0);
    uint64_t until = clock_mono_ms() + 3000;
    while (clock_mono_ms() < until) {
        s_pump(20);
        if (zsock_events(F.req_control) & ZMQ_POLLIN) {
            msg_in_t in;
            assert_int_equal(msg_recv(F.req_control, &in), 0);
            assert_string_equal(in.topic, TOPIC_CONTROL_REP);
            return (Tide__V1__ControlReply *)in.msg;
        }
    }
    fail_msg("no control reply");
    return NULL;
}

/* ---- setup -------------------------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    log_init("test-loop", LOGL_ERROR);
    if (system("command -v redis-server >/dev/null 2>&1") != 0)
        return 0;
    if (!mkdtemp(s_dir))
        return -1;
    s_pick_ports(6);
    for (int i = 1; i < 6; i++)
        snprintf(s_ep[i], sizeof s_ep[i], "tcp://127.0.0.1:%d", s_ports[i]);
    snprintf(s_cfg_path, sizeof s_cfg_path, "%s/tide.yml", s_dir);
    FILE *f = fopen(s_cfg_path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "service: loop\n"
            "bus:\n  curve: off\n" /* the fixtures' sockets are plain */
            "redis:\n  port: %d\n  connect_timeout_ms: 200\n  command_timeout_ms: 500\n"
            "endpoints:\n  metrics: %s\n  scaler_events: %s\n  scaler_control: %s\n"
            "  executor_control: %s\n  executor_events: %s\n"
            "app:\n  host: 127.0.0.1\n  base_port: %d\n"
            "metrics:\n  stable_window_s: 2\n  panic_window_s: 1\n  snapshot_interval_ms: 200\n"
            "scaler:\n  min: 1\n  max: 6\n  target_rps: 10\n  max_step: 5\n"
            "  scale_down_delay_s: 1\n  settle_ms: 200\n  tick_ms: 50\n"
            "  job_deadline_ms: 1500\n  backoff_initial_ms: 300\n  backoff_max_ms: 1000\n"
            "  drain_deadline_ms: 8000\n  request_timeout_ms: 300\n",
            s_ports[0], s_ep[1], s_ep[2], s_ep[3], s_ep[4], s_ep[5], BASE_PORT_APP);
    fclose(f);

    char port[16], log[600];
    snprintf(port, sizeof port, "%d", s_ports[0]);
    snprintf(log, sizeof log, "%s/redis.log", s_dir);
    char *rargv[] = {"redis-server", "--port", port,           "--bind", "127.0.0.1",
                     "--save",       "",       "--appendonly", "no",     "--daemonize",
                     "no",           "--dir",  s_dir,          NULL};
    s_redis = s_spawn(rargv, log);
    uint64_t until = clock_mono_ms() + 10000;
    while (!s_redis_up() && clock_mono_ms() < until)
        zclock_sleep(20);
    if (!s_redis_up())
        return -1;

    zsys_handler_set(NULL);
    F.rep = zsock_new(ZMQ_REP);
    F.pub_events = zsock_new(ZMQ_PUB);
    F.pub_metrics = zsock_new(ZMQ_PUB);
    F.sub_scaler = zsock_new(ZMQ_SUB);
    F.req_control = zsock_new(ZMQ_REQ);
    if (zsock_bind(F.rep, "%s", s_ep[4]) < 0 || zsock_bind(F.pub_events, "%s", s_ep[5]) < 0 ||
        zsock_bind(F.pub_metrics, "%s", s_ep[1]) < 0)
        return -1;
    zsock_set_subscribe(F.sub_scaler, "scaler.");
    zsock_connect(F.sub_scaler, "%s", s_ep[2]);
    zsock_set_linger(F.req_control, 0);
    zsock_connect(F.req_control, "%s", s_ep[3]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    s_stop(&s_scaler, SIGKILL);
    s_stop(&s_redis, SIGTERM);
    zmsg_destroy(&F.held);
    zsock_destroy(&F.rep);
    zsock_destroy(&F.pub_events);
    zsock_destroy(&F.pub_metrics);
    zsock_destroy(&F.sub_scaler);
    zsock_destroy(&F.req_control);
    if (strstr(s_dir, "XXXXXX") == NULL && !getenv("TIDE_TEST_KEEP")) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

/* ---- the run ------------------------------------------------------------------------------ */

static void test_scaler_loop(void **state)
{
    (void)state;
    if (s_redis <= 0)
        fail_msg("redis-server did not start: run scripts/setup-deps");
    s_start_scaler();

    /* 1. start: a LIST, then min=1 reached without any metrics */
    WAIT_FOR(s_pool_is(1), 8000);
    assert_int_equal(F.req_kind[0], TIDE__V1__JOB_KIND__JOB_LIST);
    assert_int_equal(s_count_kind(TIDE__V1__JOB_KIND__JOB_SCALE_UP, 0), 1);
    WAIT_FOR(s_state_is("IDLE"), 3000);

    /* 2. control: status, garbage, refusals */
    Tide__V1__ControlReply *r = s_control(TIDE__V1__COMMAND__CMD_STATUS, 0, 0, 0);
    assert_true(r->ok);
    assert_non_null(r->status);
    assert_int_equal(r->status->current, 1);
    assert_int_equal(r->status->n_pool, 1);
    assert_string_equal(r->status->pool[0]->addr, "127.0.0.1:9101");
    assert_string_equal(r->status->policy, "target");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    zstr_send(F.req_control, "garbage");
    uint64_t until = clock_mono_ms() + 3000;
    msg_in_t in = {0};
    while (clock_mono_ms() < until && !(zsock_events(F.req_control) & ZMQ_POLLIN))
        s_pump(20);
    assert_int_equal(msg_recv(F.req_control, &in), 0);
    r = (Tide__V1__ControlReply *)in.msg;
    assert_false(r->ok);
    assert_string_equal(r->error, "malformed request");
    msg_in_free(&in);
    /* garbage on both subscriptions: dropped and counted, nothing breaks */
    for (int i = 0; i < 3; i++) {
        zstr_sendm(F.pub_metrics, TOPIC_SNAPSHOT);
        zstr_send(F.pub_metrics, "\xff\xff\xff not protobuf");
        zstr_sendm(F.pub_metrics, TOPIC_STATS);
        zstr_send(F.pub_metrics, "\x0a\x05");
        zstr_send(F.pub_metrics, "metrics.snapshot"); /* one frame */
        zstr_sendm(F.pub_events, TOPIC_EXEC_JOB);
        zstr_sendm(F.pub_events, "\x12\x01x");
        zstr_send(F.pub_events, "a third frame");
    }
    s_pump(300);
    r = s_control(TIDE__V1__COMMAND__CMD_SCALE, 9, 0, 0);
    assert_false(r->ok);
    assert_non_null(strstr(r->error, "outside the bounds"));
    protobuf_c_message_free_unpacked(&r->base, NULL);
    r = s_control(TIDE__V1__COMMAND__CMD_BOUNDS, 0, 5, 2);
    assert_false(r->ok);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* 3. load: 35 rps at 10 per instance wants 4; the first scale up fails (backoff, retry) */
    F.fail_next_up = 1;
    F.metrics_on = true;
    F.rps = 35;
    WAIT_FOR(s_pool_is(4), 10000);
    assert_true(s_seen_reason("scale up failed"));
    assert_int_equal(s_running_count(), 4);
    WAIT_FOR(s_state_is("UP"), 3000);

    /* 4. pause: no new job on more load; resume: it goes */
    r = s_control(TIDE__V1__COMMAND__CMD_PAUSE, 0, 0, 0);
    assert_true(r->ok && r->status->paused);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    char *paused = s_state_field("paused");
    assert_string_equal(paused, "1");
    free(paused);
    int before = F.nreq;
    F.rps = 55;
    s_pump(1500);
    assert_int_equal(s_count_kind(TIDE__V1__JOB_KIND__JOB_SCALE_UP, before), 0);
    /* lost FINISHED events from here: the scaler must poll the job's status */
    F.drop_finished = true;
    r = s_control(TIDE__V1__COMMAND__CMD_RESUME, 0, 0, 0);
    assert_true(r->ok && !r->status->paused);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    WAIT_FOR(s_pool_is(6), 10000);
    assert_true(s_count_kind(TIDE__V1__JOB_KIND__JOB_STATUS, before) >= 1);
    F.drop_finished = false;
    WAIT_FOR(s_state_is("UP"), 3000);

    /* 5. kill -9 mid-run and start again: same pool, a LIST, and no scale job at all */
    assert_int_equal(s_stop(&s_scaler, SIGKILL), SIGKILL);
    before = F.nreq;
    s_start_scaler();
    /* the state is BUSY in Redis before the LIST is sent, so UP after it means reconciled */
    WAIT_FOR(s_count_kind(TIDE__V1__JOB_KIND__JOB_LIST, before) == 1, 8000);
    WAIT_FOR(s_state_is("UP"), 3000);
    assert_true(s_pool_is(6));
    assert_int_equal(s_count_kind(TIDE__V1__JOB_KIND__JOB_LIST, before), 1);
    assert_int_equal(s_count_kind(TIDE__V1__JOB_KIND__JOB_SCALE_UP, before), 0);
    assert_int_equal(s_count_kind(TIDE__V1__JOB_KIND__JOB_SCALE_DOWN, before), 0);
    assert_int_equal(s_running_count(), 6);

    /* 6. the load falls: after the delay, out of the pool first; the stop waits until the
     *    proxy has applied the new pool version and has nothing in flight to the victims */
    F.proxy_version = s_pool_version();
    F.proxy_in_flight = 2;
    F.proxy_on = true;
    s_pump(600); /* the scaler hears the proxy */
    before = F.nreq;
    F.rps = 12; /* wants 2 */
    WAIT_FOR(s_pool_is(2), 15000);
    uint64_t removed_version = s_pool_version();
    assert_true(removed_version > F.proxy_version);
    s_pump(1000);
    assert_int_equal(s_count_kind(TIDE__V1__JOB_KIND__JOB_SCALE_DOWN, before), 0);
    F.proxy_version = removed_version; /* applied, but a request is still in flight */
    s_pump(1000);
    assert_int_equal(s_count_kind(TIDE__V1__JOB_KIND__JOB_SCALE_DOWN, before), 0);
    F.proxy_in_flight = 0;
    WAIT_FOR(s_count_kind(TIDE__V1__JOB_KIND__JOB_SCALE_DOWN, before) == 1, 2000);
    WAIT_FOR(s_running_count() == 2, 5000);
    assert_true(s_seen_reason("drained: stopping"));
    F.proxy_follow = true;
    WAIT_FOR(s_state_is("UP"), 3000);
    char *stopping = s_state_field("stopping");
    assert_string_equal(stopping, "");
    free(stopping);

    /* 7. the executor goes silent during a scale up: the request is retried, then given up;
     *    the instance it may have started is stopped once the executor is back */
    before = F.nreq;
    F.silent = true;
    F.rps = 25; /* wants 3 */
    WAIT_FOR(s_seen_reason("executor unreachable"), 10000);
    assert_true(s_pool_is(2));
    F.silent = false;
    WAIT_FOR(s_pool_is(3), 15000);
    WAIT_FOR(s_running_count() == 3, 5000);
    /* the leftover of the unanswered scale up was stopped (a SCALE_DOWN) before the retry */
    assert_true(s_count_kind(TIDE__V1__JOB_KIND__JOB_SCALE_DOWN, before) >= 1);

    /* 8. kill -9 while a scale up runs: the restart asks the executor about that job, waits
     *    for it (polling), applies it, lists, and ends with the pool the job made: no second
     *    scale up, nothing orphaned */
    WAIT_FOR(s_state_is("UP"), 3000);
    F.hold_running = true;
    before = F.nreq;
    F.rps = 45; /* wants 5 */
    WAIT_FOR(s_count_kind(TIDE__V1__JOB_KIND__JOB_SCALE_UP, before) == 1, 5000);
    WAIT_FOR(s_state_is("BUSY"), 3000);
    char *job_id = s_state_field("job_id");
    assert_non_null(job_id);
    assert_non_null(s_find(job_id));
    assert_int_equal(s_stop(&s_scaler, SIGKILL), SIGKILL);
    before = F.nreq;
    s_start_scaler();
    WAIT_FOR(s_count_kind(TIDE__V1__JOB_KIND__JOB_STATUS, before) >= 2, 8000); /* still polling */
    assert_int_equal(s_count_kind(TIDE__V1__JOB_KIND__JOB_LIST, before), 0);
    assert_true(s_pool_is(3));
    s_release();
    WAIT_FOR(s_pool_is(5), 8000);
    WAIT_FOR(s_state_is("UP"), 3000);
    assert_int_equal(s_count_kind(TIDE__V1__JOB_KIND__JOB_LIST, before), 1);
    assert_int_equal(s_count_kind(TIDE__V1__JOB_KIND__JOB_SCALE_UP, before), 0);
    assert_int_equal(s_count_kind(TIDE__V1__JOB_KIND__JOB_SCALE_DOWN, before), 0);
    assert_int_equal(s_running_count(), 5);
    free(job_id);

    /* 9. SIGTERM: a clean exit, status 0 (and no leak under the sanitizers) */
    int status = s_stop(&s_scaler, SIGTERM);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(F.violations, 0);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "grep -q 'dropped a malformed message' '%s/scaler.log'", s_dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scaler_loop),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
