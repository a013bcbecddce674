/* protocol.c - the executor's control socket, job events and request handling. */
#include "protocol.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tide_log.h"
#include "tide_curve.h"
#include "tide_profiles.h"
#include "tide_msg.h"

struct exec_server_t {
    const tide_config_t *cfg;
    zsock_t *control; /* REP, or ROUTER (the fake: may leave a request unanswered) */
    zsock_t *events;  /* PUB */
    bool router;
    zloop_t *loop;
    jobs_t *jobs;
    msg_sender_t sender;
    exec_start_fn *start;
    exec_admit_fn *admit;
    void *runner;
    exec_server_stats_t stats;
};

static int s_on_control(zloop_t *loop, zsock_t *sock, void *arg);

exec_server_t *exec_server_new(const tide_config_t *cfg, const char *program, const char *id,
                               bool router)
{
    exec_server_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = cfg;
    self->router = router;
    msg_sender_init(&self->sender, program, id);
    self->jobs = jobs_new(cfg, 0);
    self->loop = zloop_new();
    self->control = zsock_new(router ? ZMQ_ROUTER : ZMQ_REP);
    self->events = zsock_new(ZMQ_PUB);
    if (!self->jobs || !self->loop || !self->control || !self->events) {
        log_error("out of memory", "%s", "");
        exec_server_destroy(&self);
        return NULL;
    }
    zsock_set_linger(self->control, 0);
    zsock_set_linger(self->events, 200);
    msg_socket_limits(self->control);
    msg_socket_limits(self->events); /* subscriptions come in on it */
    char q[512];
    if (bus_secure_server(self->control, cfg, BUS_ROLE_EXECUTOR, cfg->endpoints.executor_control) ||
        zsock_bind(self->control, "%s", cfg->endpoints.executor_control) < 0) {
        log_error("cannot bind the control socket", "endpoint=%s err=%s",
                  log_quote(q, sizeof q, cfg->endpoints.executor_control), zmq_strerror(errno));
        exec_server_destroy(&self);
        return NULL;
    }
    if (bus_secure_server(self->events, cfg, BUS_ROLE_EXECUTOR, cfg->endpoints.executor_events) ||
        zsock_bind(self->events, "%s", cfg->endpoints.executor_events) < 0) {
        log_error("cannot bind the events socket", "endpoint=%s err=%s",
                  log_quote(q, sizeof q, cfg->endpoints.executor_events), zmq_strerror(errno));
        exec_server_destroy(&self);
        return NULL;
    }
    zloop_reader(self->loop, self->control, s_on_control, self);
    /* A handler error must not end the server: only the signal does. */
    zloop_reader_set_tolerant(self->loop, self->control);
    return self;
}

void exec_server_destroy(exec_server_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    exec_server_t *self = *self_p;
    zloop_destroy(&self->loop);
    zsock_destroy(&self->control);
    zsock_destroy(&self->events);
    jobs_destroy(&self->jobs);
    free(self);
    *self_p = NULL;
}

void exec_server_set_runner(exec_server_t *self, exec_start_fn *start, exec_admit_fn *admit,
                            void *arg)
{
    self->start = start;
    self->admit = admit;
    self->runner = arg;
}

zloop_t *exec_server_loop(exec_server_t *self)
{
    return self->loop;
}

jobs_t *exec_server_jobs(exec_server_t *self)
{
    return self->jobs;
}

int exec_server_run(exec_server_t *self)
{
    zloop_start(self->loop);
    return 0;
}

void exec_server_stats(exec_server_t *self, exec_server_stats_t *out)
{
    *out = self->stats;
}

/* ---- events ----------------------------------------------------------------------------- */

static void s_publish(exec_server_t *self, const job_t *job, Tide__V1__JobEventType type,
                      const char *line)
{
    Tide__V1__JobEvent ev = TIDE__V1__JOB_EVENT__INIT;
    job_view_t view;
    bool with_record = type != TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_OUTPUT;
    if (with_record && job_view_init(&view, job) != 0) {
        log_error("out of memory: job event not published", "job=%s", job->id);
        return;
    }
    ev.header = msg_sender_next(&self->sender);
    ev.job_id = (char *)job->id;
    ev.type = type;
    if (line)
        ev.line = (char *)line;
    if (with_record)
        ev.job = &view.record;
    if (msg_send(self->events, TOPIC_EXEC_JOB, &ev.base) != 0)
        log_warn("job event not sent", "job=%s", job->id);
    if (with_record)
        job_view_clear(&view);
}

void exec_server_output(void *arg, job_t *job, const char *line)
{
    exec_server_t *self = arg;
    char clean[JOB_LINE_MAX + 1], q[JOB_LINE_MAX + 64];
    job_output(job, line, clean);
    log_debug("job output", "job=%s line=%s", job->id, log_quote(q, sizeof q, clean));
    s_publish(self, job, TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_OUTPUT, clean);
}

/* Announces a profile the job wrote: its record, read back from the store. */
static void s_publish_profile(exec_server_t *self, const char *id)
{
    char root[CFG_PATH + 16], dir[CFG_PATH + PROFILE_ID_MAX + 24], err[CFG_PATH + 128];
    profiles_root(self->cfg, root, sizeof root);
    snprintf(dir, sizeof dir, "%s/%s", root, id);
    profile_rec_t *rec = malloc(sizeof *rec);
    if (!rec || profile_rec_read(dir, rec, err, sizeof err) != 0) {
        log_warn("profile written but not announced", "id=%s err=\"%.300s\"", id,
                 rec ? err : "out of memory");
        free(rec);
        return;
    }
    Tide__V1__Profile msg;
    profile_rec_msg(rec, &msg);
    msg.dir = dir;
    msg.header = msg_sender_next(&self->sender);
    if (msg_send(self->events, TOPIC_PROFILE, &msg.base) != 0)
        log_warn("profile event not sent", "id=%s", id);
    free(rec);
}

void exec_server_finished(void *arg, job_t *job)
{
    exec_server_t *self = arg;
    char q[JOB_TEXT_MAX + 64];
    uint64_t took = job->finished_ms >= job->started_ms ? job->finished_ms - job->started_ms : 0;
    if (job->state == TIDE__V1__JOB_STATE__JOB_SUCCEEDED)
        log_info("job succeeded", "job=%s kind=%s ms=%llu", job->id, msg_job_kind_name(job->kind),
                 (unsigned long long)took);
    else
        log_warn("job failed", "job=%s kind=%s ms=%llu error=%s", job->id,
                 msg_job_kind_name(job->kind), (unsigned long long)took,
                 log_quote(q, sizeof q, job->error));
    s_publish(self, job, TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_FINISHED, NULL);
    if (job->kind == TIDE__V1__JOB_KIND__JOB_PROFILE && job->profile.id[0])
        s_publish_profile(self, job->profile.id);
}

/* ---- requests --------------------------------------------------------------------------- */

/* Sends an ExecReply, behind the envelope on a ROUTER socket. */
static void s_reply(exec_server_t *self, zmsg_t **envelope_p, bool accepted, const char *reason,
                    const job_t *job)
{
    Tide__V1__ExecReply rep = TIDE__V1__EXEC_REPLY__INIT;
    job_view_t view;
    bool with_record = job && job_view_init(&view, job) == 0;
    rep.header = msg_sender_next(&self->sender);
    rep.accepted = accepted;
    if (reason)
        rep.reason = (char *)reason;
    if (with_record)
        rep.job = &view.record;
    size_t len = protobuf_c_message_get_packed_size(&rep.base);
    zframe_t *payload = zframe_new(NULL, len);
    if (payload) {
        protobuf_c_message_pack(&rep.base, zframe_data(payload));
        zmsg_t *zm = envelope_p && *envelope_p ? *envelope_p : zmsg_new();
        if (envelope_p)
            *envelope_p = NULL;
        zmsg_addstr(zm, TOPIC_EXEC_REP);
        zmsg_append(zm, &payload);
        if (zmsg_send(&zm, self->control) != 0) {
            log_warn("reply not sent", "err=%s", zmq_strerror(errno));
            zmsg_destroy(&zm);
        }
    } else {
        log_error("out of memory: reply not sent", "%s", "");
    }
    if (with_record)
        job_view_clear(&view);
    if (accepted)
        self->stats.accepted++;
    else
        self->stats.refused++;
}

/* Jobs come from the scaler, and from tidectl (list, profiles); any other key is refused. */
static bool s_may_control(exec_server_t *self, const char *peer)
{
    if (bus_peer_is(peer, self->cfg, BUS_ROLE_SCALER) ||
        bus_peer_is(peer, self->cfg, BUS_ROLE_TIDECTL))
        return true;
    log_once_per_kind("exec-not-allowed", "refused a request from a key not allowed to control",
                      "allowed: scaler, tidectl");
    return false;
}

/* Reads one request. Returns 1 with *req set (caller frees), 0 for a malformed one and 2 for
 * one from a key not allowed to control (answer both), -1 when nothing was read. On a ROUTER socket
 * *envelope_p receives the routing frames. */
static int s_recv(exec_server_t *self, zmsg_t **envelope_p, Tide__V1__ExecRequest **req)
{
    *req = NULL;
    if (!self->router) {
        msg_in_t in;
        int rc = msg_recv(self->control, &in);
        if (rc == -EAGAIN)
            return -1;
        if (rc != 0)
            return 0;
        if (!s_may_control(self, in.peer)) {
            msg_in_free(&in);
            return 2;
        }
        if (strcmp(in.topic, TOPIC_EXEC_REQ) != 0) {
            log_once_per_kind("exec-wrong-topic", "dropped a message with the wrong topic",
                              "expected exec.request");
            msg_in_free(&in);
            return 0;
        }
        *req = (Tide__V1__ExecRequest *)in.msg;
        return 1;
    }
    /* ROUTER: [identity...][empty][topic][payload]. msg_recv expects the bare two frames, so
     * peel the envelope here and decode with the same table. */
    zmsg_t *zm = zmsg_recv_nowait(self->control);
    if (!zm)
        return -1;
    zmsg_t *env = zmsg_new();
    zframe_t *f;
    while ((f = zmsg_pop(zm))) {
        size_t size = zframe_size(f);
        zmsg_append(env, &f);
        if (size == 0)
            break;
    }
    *envelope_p = env;
    int rc = 0;
    if (zmsg_size(zm) != 2) {
        log_once_per_kind("frame-count", "dropped a malformed message",
                          "expected [topic][payload]");
        goto done;
    }
    zframe_t *tf = zmsg_first(zm), *pf = zmsg_next(zm);
    char topic[64];
    size_t tl = zframe_size(tf);
    if (tl == 0 || tl >= sizeof topic || memchr(zframe_data(tf), 0, tl)) {
        log_once_per_kind("topic", "dropped a malformed message", "bad topic frame");
        goto done;
    }
    memcpy(topic, zframe_data(tf), tl);
    topic[tl] = '\0';
    if (!s_may_control(self, zframe_meta(tf, "User-Id"))) {
        rc = 2;
        goto done;
    }
    if (strcmp(topic, TOPIC_EXEC_REQ) != 0) {
        log_once_per_kind("exec-wrong-topic", "dropped a message with the wrong topic",
                          "expected exec.request");
        goto done;
    }
    const char *why = NULL;
    *req = (Tide__V1__ExecRequest *)msg_decode(topic, zframe_data(pf), zframe_size(pf), &why);
    if (!*req)
        log_once_per_kind("exec-request", "dropped a malformed message", why);
    else
        rc = 1;
done:
    zmsg_destroy(&zm);
    return rc;
}

static void s_handle(exec_server_t *self, zmsg_t **envelope_p, const Tide__V1__ExecRequest *req)
{
    char reason[JOB_TEXT_MAX];
    char q[JOB_TEXT_MAX + 64];
    if (req->kind == TIDE__V1__JOB_KIND__JOB_STATUS) {
        job_t *job = jobs_find(self->jobs, req->job_id);
        s_reply(self, envelope_p, job != NULL, job ? NULL : "unknown job", job);
        return;
    }
    job_t *known = jobs_find(self->jobs, req->job_id);
    if (known && jobs_same_request(known, req, reason, sizeof reason) != 0) {
        log_warn("job refused", "job=%s reason=%s", known->id, log_quote(q, sizeof q, reason));
        s_reply(self, envelope_p, false, reason, NULL);
        return;
    }
    if (known) {
        /* A lazy-pirate resend: the same job, never a second run. */
        log_info("job resent", "job=%s state=%s", known->id, msg_job_state_name(known->state));
        s_reply(self, envelope_p, true, NULL, known);
        return;
    }
    if (jobs_validate(self->cfg, req, reason, sizeof reason) != 0) {
        log_warn("job refused", "job=%s reason=%s", log_quote(q, 200, req->job_id),
                 log_quote(q + 200, sizeof q - 200, reason));
        s_reply(self, envelope_p, false, reason, NULL);
        return;
    }
    /* A crash profile reads a process that has died: the instance's name may already be in a
     * scale up that replaces it, and nothing it does touches that. */
    bool of_the_dead = req->kind == TIDE__V1__JOB_KIND__JOB_PROFILE && req->profile &&
                       req->profile->reason && strcmp(req->profile->reason, "crash") == 0;
    for (size_t i = 0; i < req->n_instances && !of_the_dead; i++) {
        job_t *busy = jobs_busy(self->jobs, req->instances[i]->name);
        if (busy) {
            snprintf(reason, sizeof reason, "instance %s is busy with job %s",
                     req->instances[i]->name, busy->id);
            log_warn("job refused", "job=%s reason=%s", req->job_id,
                     log_quote(q, sizeof q, reason));
            s_reply(self, envelope_p, false, reason, NULL);
            return;
        }
    }
    /* Each job is a playbook run (a process tree): a burst of requests must not become a burst
     * of processes. A profile may not take the last slot, so profiles never keep a scale job
     * out (the scaler runs one scale job at a time). */
    size_t running = jobs_running(self->jobs);
    size_t limit = (size_t)self->cfg->executor.max_jobs;
    if (req->kind == TIDE__V1__JOB_KIND__JOB_PROFILE && limit > 1)
        limit--;
    if (running >= limit) {
        snprintf(reason, sizeof reason,
                 "busy: %zu jobs running, at most %d at once (executor.max_jobs%s)", running,
                 self->cfg->executor.max_jobs,
                 req->kind == TIDE__V1__JOB_KIND__JOB_PROFILE ? "; the last is kept for scaling"
                                                              : "");
        log_warn("job refused", "job=%s reason=%s", req->job_id, log_quote(q, sizeof q, reason));
        s_reply(self, envelope_p, false, reason, NULL);
        return;
    }
    job_t *job = jobs_add(self->jobs, req);
    if (!job) {
        s_reply(self, envelope_p, false, "out of memory", NULL);
        return;
    }
    log_info("job accepted", "job=%s kind=%s instances=%zu", job->id, msg_job_kind_name(job->kind),
             job->n_instances);
    int rc = self->start ? self->start(self->runner, job, reason, sizeof reason) : -ENOSYS;
    if (rc != 0) {
        if (!self->start)
            snprintf(reason, sizeof reason, "no runner");
        job_finish(job, TIDE__V1__JOB_STATE__JOB_FAILED, reason);
        for (size_t i = 0; i < job->n_instances; i++)
            job_add_result(job, &job->instances[i], false, false, "not started");
        s_reply(self, envelope_p, true, NULL, job);
        s_publish(self, job, TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_STARTED, NULL);
        exec_server_finished(self, job);
        return;
    }
    s_reply(self, envelope_p, true, NULL, job);
    s_publish(self, job, TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_STARTED, NULL);
}

static int s_on_control(zloop_t *loop, zsock_t *sock, void *arg)
{
    (void)loop;
    (void)sock;
    exec_server_t *self = arg;
    /* Drain what is queued: a ROUTER may hold several requests at once. */
    for (int round = 0; round < 64; round++) {
        zmsg_t *envelope = NULL;
        Tide__V1__ExecRequest *req = NULL;
        int rc = s_recv(self, &envelope, &req);
        if (rc < 0)
            break;
        self->stats.requests++;
        if (self->admit && self->router && !self->admit(self->runner)) {
            self->stats.dropped_unanswered++;
            log_info("request dropped without a reply (told to hang)", "%s", "");
        } else if (rc == 2) {
            self->stats.refused++;
            s_reply(self, &envelope, false,
                    "not allowed to control: only the scaler's and "
                    "tidectl's keys",
                    NULL);
        } else if (rc == 0) {
            self->stats.malformed++;
            s_reply(self, &envelope, false, "malformed request", NULL);
        } else {
            s_handle(self, &envelope, req);
        }
        if (req)
            protobuf_c_message_free_unpacked(&req->base, NULL);
        zmsg_destroy(&envelope);
        if (!self->router)
            break; /* REP: one request, one reply, then back to the poller */
    }
    return 0;
}
