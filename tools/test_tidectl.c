/* test_tidectl.c - unit tests of tidectl: printing, watch against real PUB sockets, the
 * requests against a REP responder that answers, refuses, answers garbage or never answers,
 * and the built binary's command line (exit statuses and messages). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tide_clock.h"
#include "tide_log.h"
#include "tidectl.h"

extern char **environ;

static char s_dir[] = "/tmp/tide-test-tidectl-XXXXXX";

/* ---- helpers ---------------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t size;
    FILE *f;
} capture_t;

static void s_cap_open(capture_t *c)
{
    c->buf = NULL;
    c->size = 0;
    c->f = open_memstream(&c->buf, &c->size);
    assert_non_null(c->f);
}

static void s_cap_close(capture_t *c)
{
    fclose(c->f);
    c->f = NULL;
}

static void s_cap_free(capture_t *c)
{
    free(c->buf);
    c->buf = NULL;
}

static void s_contains(const char *text, const char *want)
{
    if (!strstr(text, want))
        fail_msg("missing '%s' in:\n%s", want, text);
}

static void s_endpoint(char *buf, size_t size, int port)
{
    snprintf(buf, size, "tcp://127.0.0.1:%d", port);
}

/* A loopback TCP port the kernel just handed out and released. */
static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static Tide__V1__ScalerStatus *s_status(void)
{
    static Tide__V1__ScalerStatus st = TIDE__V1__SCALER_STATUS__INIT;
    static Tide__V1__ScalerDecision d = TIDE__V1__SCALER_DECISION__INIT;
    static Tide__V1__PoolEntry e0 = TIDE__V1__POOL_ENTRY__INIT, e1 = TIDE__V1__POOL_ENTRY__INIT;
    static Tide__V1__PoolEntry *pool[] = {&e0, &e1};
    st.state = TIDE__V1__STATE__STATE_UP;
    st.current = 2;
    st.desired = 3;
    st.min = 1;
    st.max = 10;
    st.policy = "target";
    st.job_id = "";
    st.pool = pool;
    st.n_pool = 2;
    st.pool_version = 7;
    st.state_since_ms = 1000000;
    st.last_error = "";
    d.policy = "target";
    d.current = 2;
    d.desired = 3;
    d.rps_stable = 250;
    d.rps_panic = 260.5;
    d.reason = "ceil(250 / 100)";
    st.last_decision = &d;
    e0.name = "production0";
    e0.addr = "127.0.0.1:9101";
    e1.name = "production1";
    e1.addr = "127.0.0.1:9102";
    return &st;
}

/* ---- printing --------------------------------------------------------------------------- */

static void test_print_status(void **state)
{
    (void)state;
    Tide__V1__ScalerStatus *st = s_status();
    capture_t c;
    s_cap_open(&c);
    ctl_print_status(c.f, st, 1035000);
    s_cap_close(&c);
    static const char *want[] = {
        "state:         UP since ",
        "(35 s ago)\n",
        "instances:     2 current, 3 desired (min 1, max 10)\n",
        "forced:        no",
        "paused:        no\n",
        "job:           -\n",
        "policy:        target\n",
        "last decision: desired 3 (current 2) from rps_stable=250.0 rps_panic=260.5: "
        "ceil(250 / 100)\n",
        "pool:          version 7, 2 entries: production0=127.0.0.1:9101 "
        "production1=127.0.0.1:9102\n",
        "last error:    -\n",
        "backoff:       none\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        s_contains(c.buf, want[i]);
    s_cap_free(&c);

    /* in backoff after failures, paused, forced, a job in flight */
    st->backoff_until_ms = 1040000;
    st->consecutive_failures = 2;
    st->last_error = "scale up failed: production2 not healthy";
    st->paused = 1;
    st->forced = 4;
    st->job_id = "up-17";
    s_cap_open(&c);
    ctl_print_status(c.f, st, 1035000);
    s_cap_close(&c);
    s_contains(c.buf, "(5 s more), 2 failures in a row\n");
    s_contains(c.buf, "last error:    scale up failed: production2 not healthy\n");
    s_contains(c.buf, "paused:        yes\n");
    s_contains(c.buf, "forced:        4 ");
    s_contains(c.buf, "job:           up-17\n");
    s_cap_free(&c);

    s_cap_open(&c);
    ctl_print_status_line(c.f, st);
    s_cap_close(&c);
    assert_string_equal(c.buf,
                        "state=UP current=2 desired=3 min=1 max=10 paused=yes forced=4 job=up-17");
    s_cap_free(&c);
    st->backoff_until_ms = 0;
    st->consecutive_failures = 0;
    st->last_error = "";
    st->paused = 0;
    st->forced = 0;
    st->job_id = "";
}

static void test_print_message(void **state)
{
    (void)state;
    Tide__V1__Header h = TIDE__V1__HEADER__INIT;
    h.sender = "scaler/host-1";
    h.seq = 42;
    h.ts_ms = 1700000000123ULL;
    Tide__V1__ScalerState ss = TIDE__V1__SCALER_STATE__INIT;
    ss.header = &h;
    ss.state = TIDE__V1__STATE__STATE_BUSY;
    ss.previous = TIDE__V1__STATE__STATE_IDLE;
    ss.reason = "desired 3 > current 1";
    ss.current = 1;
    ss.desired = 3;

    capture_t c;
    s_cap_open(&c);
    ctl_print_message(c.f, TOPIC_SCALER_STATE, &ss.base, false);
    s_cap_close(&c);
    /* HH:MM:SS.mmm, then the rest */
    assert_true(strlen(c.buf) > 13);
    assert_int_equal(c.buf[2], ':');
    assert_int_equal(c.buf[5], ':');
    assert_int_equal(c.buf[8], '.');
    assert_string_equal(c.buf + 9, "123 scaler.state scaler/host-1#42 state=STATE_BUSY "
                                   "previous=STATE_IDLE reason=\"desired 3 > current 1\" current=1 "
                                   "desired=3 paused=false");
    assert_ptr_equal(ss.header, &h); /* put back */
    s_cap_free(&c);

    s_cap_open(&c);
    ctl_print_message(c.f, TOPIC_SCALER_STATE, &ss.base, true);
    s_cap_close(&c);
    s_contains(c.buf, "{\"topic\":\"scaler.state\",\"msg\":{\"header\":{\"sender\":"
                      "\"scaler/host-1\",\"seq\":42,\"ts_ms\":1700000000123},"
                      "\"state\":\"STATE_BUSY\"");
    assert_int_equal(c.buf[strlen(c.buf) - 1], '}');
    s_cap_free(&c);
}

/* A failed job's output tail follows its watch line, one line each; a succeeded job's is left
 * out (its OUTPUT events carried it); JSON keeps everything in the one object. */
static void test_print_failed_job(void **state)
{
    (void)state;
    Tide__V1__Header h = TIDE__V1__HEADER__INIT;
    h.sender = "executor/host-1";
    h.seq = 7;
    h.ts_ms = 1700000000456ULL;
    char *tail[] = {"TASK [Start each container] ***",
                    "fatal: [h1]: FAILED! => {\"msg\": \"image x:none is not on h1\"}",
                    "PLAY RECAP ***"};
    Tide__V1__JobRecord rec = TIDE__V1__JOB_RECORD__INIT;
    rec.job_id = "scaler-a-3";
    rec.kind = TIDE__V1__JOB_KIND__JOB_SCALE_UP;
    rec.state = TIDE__V1__JOB_STATE__JOB_FAILED;
    rec.error = "ansible-playbook exited 2";
    rec.output_tail = tail;
    rec.n_output_tail = 3;
    Tide__V1__JobEvent ev = TIDE__V1__JOB_EVENT__INIT;
    ev.header = &h;
    ev.job_id = "scaler-a-3";
    ev.type = TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_FINISHED;
    ev.job = &rec;

    capture_t c;
    s_cap_open(&c);
    ctl_print_message(c.f, TOPIC_EXEC_JOB, &ev.base, false);
    s_cap_close(&c);
    assert_string_equal(c.buf + 9,
                        "456 exec.job executor/host-1#7 job_id=scaler-a-3 "
                        "type=JOB_EVENT_FINISHED job={job_id=scaler-a-3 kind=JOB_SCALE_UP "
                        "state=JOB_FAILED started_ms=0 finished_ms=0 "
                        "error=\"ansible-playbook exited 2\"}\n"
                        "    | TASK [Start each container] ***\n"
                        "    | fatal: [h1]: FAILED! => {\"msg\": \"image x:none is not on h1\"}\n"
                        "    | PLAY RECAP ***");
    assert_ptr_equal(ev.job, &rec); /* put back */
    assert_int_equal(rec.n_output_tail, 3);
    s_cap_free(&c);

    rec.state = TIDE__V1__JOB_STATE__JOB_SUCCEEDED;
    rec.error = "";
    s_cap_open(&c);
    ctl_print_message(c.f, TOPIC_EXEC_JOB, &ev.base, false);
    s_cap_close(&c);
    assert_null(strchr(c.buf, '\n'));
    assert_null(strstr(c.buf, "TASK"));
    s_cap_free(&c);

    s_cap_open(&c);
    ctl_print_message(c.f, TOPIC_EXEC_JOB, &ev.base, true);
    s_cap_close(&c);
    s_contains(c.buf, "\"output_tail\":[\"TASK [Start each container] ***\"");
    assert_null(strchr(c.buf, '\n'));
    s_cap_free(&c);
}

/* ---- a REP responder -------------------------------------------------------------------- */

typedef enum { R_ANSWER, R_REFUSE, R_GARBAGE, R_WRONG_TOPIC, R_SILENT } rmode_t;

typedef struct {
    zsock_t *rep;
    rmode_t mode;
    int requests; /* read by the test after the actor ended */
} responder_t;

static void s_answer(responder_t *r, msg_sender_t *me, msg_in_t *in)
{
    if (!in) { /* an undecodable request still gets an answer, or REP is stuck */
        Tide__V1__ControlReply rep = TIDE__V1__CONTROL_REPLY__INIT;
        rep.header = msg_sender_next(me);
        rep.error = "malformed request";
        msg_send(r->rep, TOPIC_CONTROL_REP, &rep.base);
        return;
    }
    if (r->mode == R_GARBAGE) {
        zstr_sendm(r->rep, TOPIC_CONTROL_REP);
        zstr_send(r->rep, "\xff\xff\xff garbage");
        return;
    }
    if (strcmp(in->topic, TOPIC_EXEC_REQ) == 0 || r->mode == R_WRONG_TOPIC) {
        const Tide__V1__ExecRequest *q = (const void *)in->msg;
        Tide__V1__ExecReply rep = TIDE__V1__EXEC_REPLY__INIT;
        Tide__V1__JobRecord rec = TIDE__V1__JOB_RECORD__INIT;
        rep.header = msg_sender_next(me);
        rep.accepted = r->mode != R_REFUSE;
        rep.reason = r->mode != R_REFUSE ? "" : "unknown job";
        rec.job_id = strcmp(in->topic, TOPIC_EXEC_REQ) == 0 ? q->job_id : "x";
        rec.kind = TIDE__V1__JOB_KIND__JOB_SCALE_UP;
        rec.state = TIDE__V1__JOB_STATE__JOB_SUCCEEDED;
        rep.job = r->mode != R_REFUSE ? &rec : NULL;
        msg_send(r->rep, TOPIC_EXEC_REP, &rep.base);
        return;
    }
    const Tide__V1__ControlRequest *q = (const void *)in->msg;
    Tide__V1__ControlReply rep = TIDE__V1__CONTROL_REPLY__INIT;
    Tide__V1__ScalerStatus *st = s_status();
    rep.header = msg_sender_next(me);
    if (r->mode == R_REFUSE) {
        rep.ok = false;
        rep.error = "count 50 is above max 10";
    } else {
        rep.ok = true;
        rep.status = st;
        st->paused = q->command == TIDE__V1__COMMAND__CMD_PAUSE;
        st->forced = q->command == TIDE__V1__COMMAND__CMD_SCALE ? q->count : 0;
        if (q->command == TIDE__V1__COMMAND__CMD_BOUNDS) {
            st->min = q->min;
            st->max = q->max;
        } else {
            st->min = 1;
            st->max = 10;
        }
    }
    msg_send(r->rep, TOPIC_CONTROL_REP, &rep.base);
}

static void s_responder(zsock_t *pipe, void *arg)
{
    responder_t *r = arg;
    msg_sender_t me;
    msg_sender_init(&me, "scaler", "test");
    zpoller_t *poller = zpoller_new(pipe, r->rep, NULL);
    zsock_signal(pipe, 0);
    while (true) {
        zsock_t *which = zpoller_wait(poller, -1);
        if (!which || which == pipe)
            break; /* $TERM */
        msg_in_t in;
        int rc = msg_recv(r->rep, &in);
        if (rc == -EAGAIN)
            continue;
        r->requests++;
        if (r->mode != R_SILENT)
            s_answer(r, &me, rc == 0 ? &in : NULL);
        msg_in_free(&in);
    }
    zpoller_destroy(&poller);
}

static void test_requests(void **state)
{
    (void)state;
    static const struct {
        rmode_t mode;
        int command; /* -1: jobs status */
        uint32_t count, min, max;
        bool json;
        int want;
        const char *out, *err;
    } cases[] = {
        {R_ANSWER, TIDE__V1__COMMAND__CMD_STATUS, 0, 0, 0, false, CTL_OK,
         "instances:     2 current, 3 desired (min 1, max 10)\n", ""},
        {R_ANSWER, TIDE__V1__COMMAND__CMD_STATUS, 0, 0, 0, true, CTL_OK,
         "{\"state\":\"STATE_UP\",\"current\":2,\"desired\":3,\"min\":1,\"max\":10,", ""},
        {R_ANSWER, TIDE__V1__COMMAND__CMD_PAUSE, 0, 0, 0, false, CTL_OK,
         "ok\nstate=UP current=2 desired=3 min=1 max=10 paused=yes forced=0 job=-\n", ""},
        {R_ANSWER, TIDE__V1__COMMAND__CMD_RESUME, 0, 0, 0, false, CTL_OK,
         "ok\nstate=UP current=2 desired=3 min=1 max=10 paused=no forced=0 job=-\n", ""},
        {R_ANSWER, TIDE__V1__COMMAND__CMD_SCALE, 5, 0, 0, false, CTL_OK, "forced=5", ""},
        {R_ANSWER, TIDE__V1__COMMAND__CMD_BOUNDS, 0, 2, 6, false, CTL_OK, "min=2 max=6", ""},
        {R_ANSWER, TIDE__V1__COMMAND__CMD_SCALE, 3, 0, 0, true, CTL_OK,
         "\"ok\":true,\"error\":\"\",\"status\":{", ""},
        {R_REFUSE, TIDE__V1__COMMAND__CMD_SCALE, 50, 0, 0, false, CTL_FAIL, "",
         "tidectl: scaler refused: count 50 is above max 10\n"},
        {R_GARBAGE, TIDE__V1__COMMAND__CMD_STATUS, 0, 0, 0, false, CTL_FAIL, "",
         "tidectl: malformed reply from scaler at tcp://127.0.0.1:"},
        {R_WRONG_TOPIC, TIDE__V1__COMMAND__CMD_STATUS, 0, 0, 0, false, CTL_FAIL, "",
         "answered with topic 'exec.reply', expected 'scaler.control.reply'"},
        {R_SILENT, TIDE__V1__COMMAND__CMD_PAUSE, 0, 0, 0, false, CTL_FAIL, "",
         "tidectl: scaler did not answer within 300 ms at tcp://127.0.0.1:"},
        {R_ANSWER, -1, 0, 0, 0, false, CTL_OK, "job_id=up-1 kind=JOB_SCALE_UP", ""},
        {R_ANSWER, -1, 0, 0, 0, true, CTL_OK, "{\"job_id\":\"up-1\",", ""},
        {R_REFUSE, -1, 0, 0, 0, false, CTL_FAIL, "", "tidectl: executor refused: unknown job\n"},
        {R_SILENT, -1, 0, 0, 0, false, CTL_FAIL, "",
         "tidectl: executor did not answer within 300 ms at tcp://127.0.0.1:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        responder_t r = {.rep = zsock_new(ZMQ_REP), .mode = cases[i].mode};
        assert_non_null(r.rep);
        int port = zsock_bind(r.rep, "tcp://127.0.0.1:*");
        assert_true(port > 0);
        zactor_t *actor = zactor_new(s_responder, &r);
        assert_non_null(actor);

        tide_config_t cfg;
        config_defaults(&cfg);
        snprintf(cfg.bus.curve, sizeof cfg.bus.curve, "off"); /* plain fake peers */
        s_endpoint(cfg.endpoints.scaler_control, sizeof cfg.endpoints.scaler_control, port);
        s_endpoint(cfg.endpoints.executor_control, sizeof cfg.endpoints.executor_control, port);
        msg_sender_t sender;
        msg_sender_init(&sender, "tidectl", "test");
        capture_t out, err;
        s_cap_open(&out);
        s_cap_open(&err);
        ctl_t ctl = {.cfg = &cfg,
                     .sender = &sender,
                     .timeout_ms = 300,
                     .json = cases[i].json,
                     .out = out.f,
                     .err = err.f};
        uint64_t t0 = clock_mono_ms();
        int rc = cases[i].command < 0 ? ctl_job_status(&ctl, "up-1")
                                      : ctl_control(&ctl, (Tide__V1__Command)cases[i].command,
                                                    cases[i].count, cases[i].min, cases[i].max);
        uint64_t took = clock_mono_ms() - t0;
        s_cap_close(&out);
        s_cap_close(&err);
        zactor_destroy(&actor);
        zsock_destroy(&r.rep);
        if (rc != cases[i].want || !strstr(out.buf, cases[i].out) ||
            !strstr(err.buf, cases[i].err) || (cases[i].err[0] == '\0' && err.buf[0]) ||
            (cases[i].out[0] == '\0' && out.buf[0]))
            fail_msg("case %zu: rc %d (want %d)\nout: %s\nerr: %s", i, rc, cases[i].want, out.buf,
                     err.buf);
        assert_int_equal(r.requests, 1);
        /* a silent peer costs the timeout, not more (linger 0) */
        assert_true(took < 300 + 1000);
        s_cap_free(&out);
        s_cap_free(&err);
    }
}

/* ---- watch against real publishers ------------------------------------------------------ */

typedef struct {
    zsock_t *metrics, *scaler, *executor;
} publishers_t;

static void s_publisher(zsock_t *pipe, void *arg)
{
    publishers_t *p = arg;
    msg_sender_t proxy, metrics, scaler, executor;
    msg_sender_init(&proxy, "proxy", "t");
    msg_sender_init(&metrics, "metrics", "t");
    msg_sender_init(&scaler, "scaler", "t");
    msg_sender_init(&executor, "executor", "t");
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, NULL);
    /* Again and again until told to stop: subscribers join whenever they connect. */
    while (!zpoller_wait(poller, 20) && zpoller_expired(poller)) {
        Tide__V1__ProxyStats st = TIDE__V1__PROXY_STATS__INIT;
        st.header = msg_sender_next(&proxy);
        st.started_ms = 1;
        st.in_flight = 4;
        msg_send(p->metrics, TOPIC_STATS, &st.base);
        Tide__V1__MetricsSnapshot snap = TIDE__V1__METRICS_SNAPSHOT__INIT;
        snap.header = msg_sender_next(&metrics);
        snap.rps_stable = 12.5;
        msg_send(p->metrics, TOPIC_SNAPSHOT, &snap.base);
        /* garbage: a bad payload, a lone frame, an unknown topic */
        zstr_sendm(p->scaler, TOPIC_SCALER_STATE);
        zstr_send(p->scaler, "\xff\xff garbage");
        zstr_send(p->scaler, TOPIC_SCALER_STATE);
        zstr_sendm(p->scaler, "scaler.nonsense");
        zstr_send(p->scaler, "");
        Tide__V1__ScalerState ss = TIDE__V1__SCALER_STATE__INIT;
        ss.header = msg_sender_next(&scaler);
        ss.state = TIDE__V1__STATE__STATE_UP;
        msg_send(p->scaler, TOPIC_SCALER_STATE, &ss.base);
        Tide__V1__JobEvent ev = TIDE__V1__JOB_EVENT__INIT;
        ev.header = msg_sender_next(&executor);
        ev.job_id = "up-1";
        ev.type = TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_OUTPUT;
        ev.line = "TASK [start]";
        msg_send(p->executor, TOPIC_EXEC_JOB, &ev.base);
    }
    zpoller_destroy(&poller);
}

static void test_watch(void **state)
{
    (void)state;
    publishers_t p = {zsock_new(ZMQ_PUB), zsock_new(ZMQ_PUB), zsock_new(ZMQ_PUB)};
    tide_config_t cfg;
    config_defaults(&cfg);
    snprintf(cfg.bus.curve, sizeof cfg.bus.curve, "off"); /* plain fake peers */
    s_endpoint(cfg.endpoints.metrics, CFG_STR, zsock_bind(p.metrics, "tcp://127.0.0.1:*"));
    s_endpoint(cfg.endpoints.scaler_events, CFG_STR, zsock_bind(p.scaler, "tcp://127.0.0.1:*"));
    s_endpoint(cfg.endpoints.executor_events, CFG_STR, zsock_bind(p.executor, "tcp://127.0.0.1:*"));
    zactor_t *actor = zactor_new(s_publisher, &p);
    msg_sender_t sender;
    msg_sender_init(&sender, "tidectl", "test");

    static const struct {
        const char *topics[2];
        size_t n_topics;
        bool json;
        const char *want[4]; /* each must appear; lines must all start as line_start */
        const char *line_start;
    } cases[] = {
        {{NULL},
         0,
         false,
         {" stats proxy/t#", " metrics.snapshot metrics/t#", " scaler.state scaler/t#",
          " exec.job executor/t#"},
         NULL},
        {{"scaler."}, 1, false, {" scaler.state scaler/t#", "state=STATE_UP"}, NULL},
        {{"exec.", "stats"},
         2,
         true,
         {"{\"topic\":\"exec.job\",\"msg\":{\"header\":{\"sender\":\"executor/t\"",
          "\"line\":\"TASK [start]\"", "{\"topic\":\"stats\""},
         "{\"topic\":\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t dropped = msg_dropped_total();
        capture_t out, err;
        s_cap_open(&out);
        s_cap_open(&err);
        ctl_t ctl = {.cfg = &cfg,
                     .sender = &sender,
                     .timeout_ms = 10000,
                     .json = cases[i].json,
                     .out = out.f,
                     .err = err.f};
        int rc = ctl_watch(&ctl, cases[i].topics, cases[i].n_topics, 40);
        s_cap_close(&out);
        s_cap_close(&err);
        assert_int_equal(rc, CTL_OK);
        for (size_t k = 0; k < 4 && cases[i].want[k]; k++)
            s_contains(out.buf, cases[i].want[k]);
        size_t lines = 0;
        for (char *save = NULL, *line = strtok_r(out.buf, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save), lines++) {
            if (cases[i].line_start)
                assert_true(strncmp(line, cases[i].line_start, strlen(cases[i].line_start)) == 0);
            else
                assert_true(line[2] == ':' && line[8] == '.');
            if (cases[i].n_topics == 1)
                assert_non_null(strstr(line, " scaler.state "));
            if (cases[i].json)
                assert_null(strstr(line, "scaler.state"));
        }
        assert_int_equal(lines, 40);
        /* garbage reaches watch only when it subscribes to scaler.* */
        if (cases[i].n_topics != 2)
            assert_true(msg_dropped_total() > dropped);
        s_cap_free(&out);
        s_cap_free(&err);
    }
    zactor_destroy(&actor);

    /* nobody publishing: --timeout-ms ends it, status 0, nothing printed */
    capture_t out;
    s_cap_open(&out);
    ctl_t ctl = {.cfg = &cfg, .sender = &sender, .timeout_ms = 200, .out = out.f, .err = stderr};
    uint64_t t0 = clock_mono_ms();
    assert_int_equal(ctl_watch(&ctl, NULL, 0, 0), CTL_OK);
    uint64_t took = clock_mono_ms() - t0;
    assert_true(took >= 200 && took < 1500);
    s_cap_close(&out);
    assert_int_equal(out.size, 0);
    s_cap_free(&out);
    zsock_destroy(&p.metrics);
    zsock_destroy(&p.scaler);
    zsock_destroy(&p.executor);
}

/* ---- the binary's command line ---------------------------------------------------------- */

/* Runs tidectl with args; returns its exit status, stdout and stderr in out/err (freed by
 * the caller). */
static int s_run(const char *const *args, char **out, char **err, uint64_t *took_ms)
{
    char opath[300], epath[300];
    snprintf(opath, sizeof opath, "%s/out", s_dir);
    snprintf(epath, sizeof epath, "%s/err", s_dir);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, opath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, epath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char *argv[16];
    size_t n = 0;
    argv[n++] = TIDECTL_PATH;
    for (; args[n - 1] && n < 15; n++)
        argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    pid_t pid;
    uint64_t t0 = clock_mono_ms();
    assert_int_equal(posix_spawn(&pid, TIDECTL_PATH, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    *took_ms = clock_mono_ms() - t0;
    const char *paths[2] = {opath, epath};
    char **bufs[2] = {out, err};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(paths[i], "r");
        assert_non_null(f);
        *bufs[i] = calloc(1, 65536);
        size_t got = fread(*bufs[i], 1, 65535, f);
        (*bufs[i])[got] = '\0';
        fclose(f);
    }
    assert_true(WIFEXITED(ws));
    return WEXITSTATUS(ws);
}

static void test_command_line(void **state)
{
    (void)state;
    char good[300], bad[300], nowhere[64], answer_at[300];
    snprintf(good, sizeof good, "%s/tide.yml", s_dir);
    snprintf(bad, sizeof bad, "%s/bad.yml", s_dir);
    int port = s_free_port();
    s_endpoint(nowhere, sizeof nowhere, port);
    FILE *f = fopen(good, "w");
    fprintf(f, "bus:\n  curve: off\nendpoints:\n  scaler_control: %s\n  metrics: %s\n", nowhere,
            nowhere);
    fclose(f);
    f = fopen(bad, "w");
    fputs("metrics:\n  stable_window: 60\n", f);
    fclose(f);
    snprintf(answer_at, sizeof answer_at, "scaler did not answer within 300 ms at %s\n", nowhere);

    static const struct {
        const char *args[12]; /* "GOOD"/"BAD" stand for the config files */
        int want;
        const char *out, *err;
    } cases[] = {
        {{NULL}, 2, "", "tidectl: no command given"},
        {{"frobnicate"}, 2, "", "unknown command 'frobnicate'"},
        {{"--bogus", "status"}, 2, "", "unknown option"},
        {{"scale"}, 2, "", "scale takes 1 argument"},
        {{"scale", "three"}, 2, "", "scale wants a count"},
        {{"scale", "-1"}, 2, "", "unknown option"},
        {{"bounds", "5", "2"}, 2, "", "MIN is greater than MAX"},
        {{"bounds", "5"}, 2, "", "bounds takes 2 arguments"},
        {{"pause", "now"}, 2, "", "pause takes 0 arguments"},
        {{"--timeout-ms", "0", "status"}, 2, "", "--timeout-ms wants"},
        {{"status", "--count", "3"}, 2, "", "--topic and --count belong to watch"},
        {{"jobs", "list"}, 2, "", "jobs knows one subcommand"},
        {{"-h"}, 0, "usage: tidectl", ""},
        {{"config-default"}, 0, "metrics:\n", ""},
        {{"config-default"}, 0, "  stable_window_s: 60\n", ""},
        {{"-c", "/nonexistent/tide.yml", "status"},
         2,
         "",
         "cannot open config file '/nonexistent/tide.yml'"},
        {{"-c", "BAD", "check-config"}, 2, "", "metrics.stable_window: unknown key"},
        {{"-c", "GOOD", "check-config"}, 0, "ok: ", ""},
        {{"-c", "GOOD", "status", "--timeout-ms", "300"}, 1, "", "ANSWER"},
        {{"--timeout-ms", "300", "-c", "GOOD", "scale", "2"}, 1, "", "ANSWER"},
        {{"-c", "GOOD", "watch", "--timeout-ms", "200"}, 0, "", ""},
        {{"-c", "GOOD", "watch", "--json", "--topic", "stats", "--count", "1", "--timeout-ms",
          "200"},
         0,
         "",
         ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[12] = {NULL};
        for (size_t k = 0; k < 12 && cases[i].args[k]; k++)
            args[k] = strcmp(cases[i].args[k], "GOOD") == 0  ? good
                      : strcmp(cases[i].args[k], "BAD") == 0 ? bad
                                                             : cases[i].args[k];
        const char *want_err = strcmp(cases[i].err, "ANSWER") == 0 ? answer_at : cases[i].err;
        char *out, *err;
        uint64_t took;
        int rc = s_run(args, &out, &err, &took);
        if (rc != cases[i].want || !strstr(out, cases[i].out) || !strstr(err, want_err) ||
            (!want_err[0] && err[0]))
            fail_msg("case %zu (%s ...): exit %d (want %d)\nout: %.300s\nerr: %s", i,
                     args[0] ? args[0] : "", rc, cases[i].want, out, err);
        assert_true(took < 3000); /* the no-answer cases end at their 300 ms */
        free(out);
        free(err);
    }
}

static int s_setup(void **state)
{
    (void)state;
    return mkdtemp(s_dir) ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    log_init("test", LOGL_ERROR); /* the garbage in test_watch would log warnings */
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_print_status),
        cmocka_unit_test(test_print_message),
        cmocka_unit_test(test_print_failed_job),
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_watch),
        cmocka_unit_test(test_command_line),
    };
    /* clang-format on */
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
