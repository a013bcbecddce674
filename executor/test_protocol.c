/* test_protocol.c - unit tests of executor/protocol.c over inproc sockets with a stand-in
 * runner: accept, refuse, resend (and a known id reused for another request), busy instances,
 * executor.max_jobs, status, garbage, events, and the ROUTER mode's unanswered requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"
#include "tide_log.h"
#include "tide_msg.h"

static tide_config_t s_cfg;

typedef struct {
    int started;
    job_t *last;
    bool fail_start;
    bool admit;
    zsock_t *client;
    zsock_t *sub;
    Tide__V1__ExecReply *reply;
} fixture_t;

static int s_start(void *arg, job_t *job, char *err, size_t errlen)
{
    fixture_t *fx = arg;
    fx->started++;
    fx->last = job;
    if (fx->fail_start) {
        snprintf(err, errlen, "cannot run it");
        return -EIO;
    }
    job->state = TIDE__V1__JOB_STATE__JOB_RUNNING;
    return 0;
}

static bool s_admit(void *arg)
{
    return ((fixture_t *)arg)->admit;
}

static int s_on_reply(zloop_t *loop, zsock_t *sock, void *arg)
{
    (void)loop;
    fixture_t *fx = arg;
    msg_in_t in;
    if (msg_recv(sock, &in) == 0) {
        assert_string_equal(in.topic, TOPIC_EXEC_REP);
        fx->reply = (Tide__V1__ExecReply *)in.msg;
    }
    return -1;
}

static int s_stop(zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    (void)arg;
    return -1;
}

/* Runs the server's loop until the client's reply arrives or timeout_ms passes. */
static Tide__V1__ExecReply *s_await(exec_server_t *srv, fixture_t *fx, int timeout_ms)
{
    zloop_t *loop = exec_server_loop(srv);
    fx->reply = NULL;
    zloop_reader(loop, fx->client, s_on_reply, fx);
    int t = zloop_timer(loop, (size_t)timeout_ms, 1, s_stop, NULL);
    zloop_start(loop);
    zloop_reader_end(loop, fx->client);
    zloop_timer_end(loop, t);
    return fx->reply;
}

static void s_send_frames(fixture_t *fx, const char *topic, const void *data, size_t len)
{
    zmsg_t *zm = zmsg_new();
    zmsg_addstr(zm, topic);
    zmsg_addmem(zm, data, len);
    assert_int_equal(zmsg_send(&zm, fx->client), 0);
}

static void s_send_request(fixture_t *fx, Tide__V1__JobKind kind, const char *id, const char *name,
                           uint32_t port)
{
    static msg_sender_t sender;
    if (!sender.sender[0])
        msg_sender_init(&sender, "test", "1");
    Tide__V1__ExecRequest req = TIDE__V1__EXEC_REQUEST__INIT;
    Tide__V1__Instance in = TIDE__V1__INSTANCE__INIT;
    Tide__V1__Instance *ptr = &in;
    req.header = msg_sender_next(&sender);
    req.kind = kind;
    req.job_id = (char *)id;
    if (name) {
        in.name = (char *)name;
        in.host = "127.0.0.1";
        in.port = port;
        req.instances = &ptr;
        req.n_instances = 1;
    }
    assert_int_equal(msg_send(fx->client, TOPIC_EXEC_REQ, &req.base), 0);
}

/* A PROFILE job of one instance, for reason (with pid for a crash). */
static void s_send_profile(fixture_t *fx, const char *id, const char *name, uint32_t port,
                           const char *reason, uint32_t pid)
{
    static msg_sender_t sender;
    if (!sender.sender[0])
        msg_sender_init(&sender, "test-profile", "1");
    Tide__V1__ExecRequest req = TIDE__V1__EXEC_REQUEST__INIT;
    Tide__V1__Instance in = TIDE__V1__INSTANCE__INIT;
    Tide__V1__Instance *ptr = &in;
    Tide__V1__ProfileSpec spec = TIDE__V1__PROFILE_SPEC__INIT;
    req.header = msg_sender_next(&sender);
    req.kind = TIDE__V1__JOB_KIND__JOB_PROFILE;
    req.job_id = (char *)id;
    in.name = (char *)name;
    in.host = "127.0.0.1";
    in.port = port;
    req.instances = &ptr;
    req.n_instances = 1;
    spec.reason = (char *)reason;
    spec.seconds = 3;
    spec.pid = pid;
    req.profile = &spec;
    assert_int_equal(msg_send(fx->client, TOPIC_EXEC_REQ, &req.base), 0);
}

static void s_free_reply(fixture_t *fx)
{
    if (fx->reply)
        tide__v1__exec_reply__free_unpacked(fx->reply, NULL);
    fx->reply = NULL;
}

/* Next exec.job event on the SUB socket, or NULL within 1 s. */
static Tide__V1__JobEvent *s_event(fixture_t *fx)
{
    zpoller_t *p = zpoller_new(fx->sub, NULL);
    void *which = zpoller_wait(p, 1000);
    zpoller_destroy(&p);
    if (!which)
        return NULL;
    msg_in_t in;
    if (msg_recv(fx->sub, &in) != 0)
        return NULL;
    return (Tide__V1__JobEvent *)in.msg;
}

static void s_config(const char *tag)
{
    config_defaults(&s_cfg);
    snprintf(s_cfg.bus.curve, sizeof s_cfg.bus.curve, "off"); /* the protocol, not the keys */
    s_cfg.scaler.max = 4;
    snprintf(s_cfg.endpoints.executor_control, CFG_STR, "inproc://ctl-%s", tag);
    snprintf(s_cfg.endpoints.executor_events, CFG_STR, "inproc://ev-%s", tag);
}

static void test_rep_server(void **state)
{
    (void)state;
    s_config("rep");
    fixture_t fx = {0};
    exec_server_t *srv = exec_server_new(&s_cfg, "executor", "t", false);
    assert_non_null(srv);
    exec_server_set_runner(srv, s_start, NULL, &fx);
    fx.client = zsock_new_req(s_cfg.endpoints.executor_control);
    fx.sub = zsock_new_sub(s_cfg.endpoints.executor_events, TOPIC_EXEC_JOB);
    assert_non_null(fx.client);
    assert_non_null(fx.sub);
    zclock_sleep(50); /* let the subscription reach the publisher */

    /* Garbage: answered, so the REP socket is not stuck. */
    s_send_frames(&fx, TOPIC_EXEC_REQ, "\xff\xff\xff", 3);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_false(fx.reply->accepted);
    assert_string_equal(fx.reply->reason, "malformed request");
    s_free_reply(&fx);
    s_send_frames(&fx, "scaler.control", "", 0);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_string_equal(fx.reply->reason, "malformed request");
    s_free_reply(&fx);

    /* Status of an unknown job. */
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_STATUS, "nope", NULL, 0);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_false(fx.reply->accepted);
    assert_string_equal(fx.reply->reason, "unknown job");
    s_free_reply(&fx);

    /* A bad instance is refused with the reason; nothing starts. */
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_SCALE_UP, "bad", "production1", 9999);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_false(fx.reply->accepted);
    assert_non_null(strstr(fx.reply->reason, "port 9999"));
    assert_int_equal(fx.started, 0);
    s_free_reply(&fx);

    /* Accepted: the record comes back RUNNING and STARTED is published. */
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_SCALE_UP, "up-1", "production1", 9102);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_true(fx.reply->accepted);
    assert_non_null(fx.reply->job);
    assert_string_equal(fx.reply->job->job_id, "up-1");
    assert_int_equal(fx.reply->job->state, TIDE__V1__JOB_STATE__JOB_RUNNING);
    assert_int_equal(fx.reply->job->n_instances, 1);
    assert_int_equal(fx.started, 1);
    job_t *up_job = fx.last;
    s_free_reply(&fx);
    Tide__V1__JobEvent *ev = s_event(&fx);
    assert_non_null(ev);
    assert_int_equal(ev->type, TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_STARTED);
    assert_string_equal(ev->job_id, "up-1");
    tide__v1__job_event__free_unpacked(ev, NULL);

    /* A resend gets the same record and starts nothing. */
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_SCALE_UP, "up-1", "production1", 9102);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_true(fx.reply->accepted);
    assert_string_equal(fx.reply->job->job_id, "up-1");
    assert_int_equal(fx.started, 1);
    s_free_reply(&fx);

    /* The same id for anything else is refused: another kind (a LIST under a scale up's id
     * must not pass for it), or other instances. The job is untouched. */
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_LIST, "up-1", NULL, 0);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_false(fx.reply->accepted);
    assert_null(fx.reply->job);
    assert_string_equal(fx.reply->reason, "job id up-1 is a scale up job; this request is a list");
    s_free_reply(&fx);
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_SCALE_UP, "up-1", "production2", 9103);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_false(fx.reply->accepted);
    assert_non_null(strstr(fx.reply->reason, "job id up-1 was given other instances"));
    assert_int_equal(fx.started, 1);
    assert_int_equal(up_job->state, TIDE__V1__JOB_STATE__JOB_RUNNING);
    s_free_reply(&fx);

    /* Another job on the same instance is refused while the first runs. */
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_SCALE_DOWN, "down-1", "production1", 9102);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_false(fx.reply->accepted);
    assert_non_null(strstr(fx.reply->reason, "busy with job up-1"));
    s_free_reply(&fx);
    /* So is a manual profile of it; a crash profile, of a process that has died, is not: the
     * scale up may be the instance's replacement. */
    s_send_profile(&fx, "profile-1", "production1", 9102, "manual", 0);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_false(fx.reply->accepted);
    assert_non_null(strstr(fx.reply->reason, "busy with job up-1"));
    s_free_reply(&fx);
    s_send_profile(&fx, "profile-2", "production1", 9102, "crash", 4242);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_true(fx.reply->accepted);
    assert_int_equal(fx.started, 2);
    s_free_reply(&fx);
    ev = s_event(&fx);
    assert_non_null(ev);
    assert_string_equal(ev->job_id, "profile-2");
    tide__v1__job_event__free_unpacked(ev, NULL);
    job_t *crash_job = fx.last;

    job_finish(crash_job, TIDE__V1__JOB_STATE__JOB_FAILED, "test");
    exec_server_finished(srv, crash_job);
    ev = s_event(&fx);
    assert_non_null(ev);
    assert_string_equal(ev->job_id, "profile-2");
    tide__v1__job_event__free_unpacked(ev, NULL);

    /* Output and the end are published; status then reports the end. */
    job_t *job = up_job;
    exec_server_output(srv, job, "hello\n");
    ev = s_event(&fx);
    assert_non_null(ev);
    assert_int_equal(ev->type, TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_OUTPUT);
    assert_string_equal(ev->line, "hello");
    tide__v1__job_event__free_unpacked(ev, NULL);
    job_add_result(job, &job->instances[0], true, true, "ready");
    job_finish(job, TIDE__V1__JOB_STATE__JOB_SUCCEEDED, NULL);
    exec_server_finished(srv, job);
    ev = s_event(&fx);
    assert_non_null(ev);
    assert_int_equal(ev->type, TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_FINISHED);
    assert_int_equal(ev->job->state, TIDE__V1__JOB_STATE__JOB_SUCCEEDED);
    assert_int_equal(ev->job->n_results, 1);
    assert_int_equal(ev->job->n_output_tail, 1);
    tide__v1__job_event__free_unpacked(ev, NULL);
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_STATUS, "up-1", NULL, 0);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_true(fx.reply->accepted);
    assert_int_equal(fx.reply->job->state, TIDE__V1__JOB_STATE__JOB_SUCCEEDED);
    s_free_reply(&fx);

    /* A runner that cannot start: accepted, FAILED with the reason, FINISHED published. */
    fx.fail_start = true;
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_SCALE_DOWN, "down-2", "production1", 9102);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_true(fx.reply->accepted);
    assert_int_equal(fx.reply->job->state, TIDE__V1__JOB_STATE__JOB_FAILED);
    assert_string_equal(fx.reply->job->error, "cannot run it");
    s_free_reply(&fx);
    ev = s_event(&fx);
    assert_non_null(ev);
    assert_int_equal(ev->type, TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_STARTED);
    tide__v1__job_event__free_unpacked(ev, NULL);
    ev = s_event(&fx);
    assert_non_null(ev);
    assert_int_equal(ev->type, TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_FINISHED);
    tide__v1__job_event__free_unpacked(ev, NULL);

    exec_server_stats_t st;
    exec_server_stats(srv, &st);
    assert_int_equal(st.malformed, 2);
    assert_int_equal(st.requests, 13);
    zsock_destroy(&fx.client);
    zsock_destroy(&fx.sub);
    exec_server_destroy(&srv);
    assert_null(srv);
}

/* executor.max_jobs: past it a job is refused as busy, whatever its kind; a resend of a
 * running job is still answered with its record; a profile leaves the last slot free. */
static void test_max_jobs(void **state)
{
    (void)state;
    s_config("max");
    s_cfg.executor.max_jobs = 3;
    fixture_t fx = {0};
    exec_server_t *srv = exec_server_new(&s_cfg, "executor", "t", false);
    assert_non_null(srv);
    exec_server_set_runner(srv, s_start, NULL, &fx);
    fx.client = zsock_new_req(s_cfg.endpoints.executor_control);
    fx.sub = zsock_new_sub(s_cfg.endpoints.executor_events, TOPIC_EXEC_JOB);
    job_t *first = NULL;
    const char *ids[] = {"l1", "l2"};
    for (int i = 0; i < 2; i++) {
        s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_LIST, ids[i], NULL, 0);
        assert_non_null(s_await(srv, &fx, 2000));
        assert_true(fx.reply->accepted);
        s_free_reply(&fx);
        if (!first)
            first = fx.last;
    }
    /* Two run: a profile would take the last slot, so it is refused; a list is not. */
    s_send_profile(&fx, "profile-1", "production1", 9102, "manual", 0);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_false(fx.reply->accepted);
    assert_non_null(strstr(fx.reply->reason, "busy: 2 jobs running, at most 3 at once"));
    s_free_reply(&fx);
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_LIST, "l3", NULL, 0);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_true(fx.reply->accepted);
    s_free_reply(&fx);
    assert_int_equal(fx.started, 3);
    /* Full: a scale up is refused with the reason, nothing starts. */
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_SCALE_UP, "up-1", "production1", 9102);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_false(fx.reply->accepted);
    assert_string_equal(fx.reply->reason,
                        "busy: 3 jobs running, at most 3 at once (executor.max_jobs)");
    assert_null(fx.reply->job);
    s_free_reply(&fx);
    assert_int_equal(fx.started, 3);
    /* A resend of a running job is not a new job: answered with its record. */
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_LIST, "l2", NULL, 0);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_true(fx.reply->accepted);
    assert_string_equal(fx.reply->job->job_id, "l2");
    s_free_reply(&fx);
    /* One ends: the refused scale up now runs under the same id. */
    job_finish(first, TIDE__V1__JOB_STATE__JOB_SUCCEEDED, NULL);
    exec_server_finished(srv, first);
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_SCALE_UP, "up-1", "production1", 9102);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_true(fx.reply->accepted);
    assert_int_equal(fx.reply->job->state, TIDE__V1__JOB_STATE__JOB_RUNNING);
    s_free_reply(&fx);
    assert_int_equal(fx.started, 4);
    assert_int_equal(jobs_running(exec_server_jobs(srv)), 3);
    zsock_destroy(&fx.client);
    zsock_destroy(&fx.sub);
    exec_server_destroy(&srv);
}

static void test_router_hang(void **state)
{
    (void)state;
    s_config("router");
    fixture_t fx = {0};
    exec_server_t *srv = exec_server_new(&s_cfg, "fake-executor", "t", true);
    assert_non_null(srv);
    exec_server_set_runner(srv, s_start, s_admit, &fx);
    fx.client = zsock_new_req(s_cfg.endpoints.executor_control);
    fx.sub = zsock_new_sub(s_cfg.endpoints.executor_events, TOPIC_EXEC_JOB);
    /* Told to hang: no reply at all. */
    fx.admit = false;
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_LIST, "l1", NULL, 0);
    assert_null(s_await(srv, &fx, 300));
    assert_int_equal(fx.started, 0);
    /* The client does what a lazy pirate does: a new socket, the same request. */
    zsock_destroy(&fx.client);
    fx.client = zsock_new_req(s_cfg.endpoints.executor_control);
    fx.admit = true;
    s_send_request(&fx, TIDE__V1__JOB_KIND__JOB_LIST, "l1", NULL, 0);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_true(fx.reply->accepted);
    assert_int_equal(fx.started, 1);
    s_free_reply(&fx);
    s_send_frames(&fx, "garbage", "x", 1);
    assert_non_null(s_await(srv, &fx, 2000));
    assert_string_equal(fx.reply->reason, "malformed request");
    s_free_reply(&fx);
    exec_server_stats_t st;
    exec_server_stats(srv, &st);
    assert_int_equal(st.dropped_unanswered, 1);
    zsock_destroy(&fx.client);
    zsock_destroy(&fx.sub);
    exec_server_destroy(&srv);
}

int main(void)
{
    log_init("test", LOGL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rep_server),
        cmocka_unit_test(test_max_jobs),
        cmocka_unit_test(test_router_hang),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
