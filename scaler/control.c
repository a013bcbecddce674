/* control.c - scaler.control: one ControlReply for every request (see control.h). */
#include "control.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tide_curve.h"
#include "tide_log.h"

void control_status_fill(control_status_t *cs, fsm_t *fsm, const control_ctx_t *ctx)
{
    memset(cs, 0, sizeof *cs);
    Tide__V1__ScalerStatus *st = &cs->msg;
    tide__v1__scaler_status__init(st);
    fsm_status_t s;
    fsm_status(fsm, &s);
    st->state = s.state;
    st->current = s.current;
    st->desired = s.desired;
    st->min = s.min;
    st->max = s.max;
    st->paused = s.paused;
    st->job_id = (char *)s.job_id;
    st->policy = (char *)policy_kind_name(fsm_policy(fsm)->kind);
    st->pool_version = s.pool_version;
    st->backoff_until_ms =
        s.backoff_until_ms ? (uint64_t)((int64_t)s.backoff_until_ms + ctx->wall_offset_ms) : 0;
    st->last_error = (char *)s.last_error;
    st->consecutive_failures = s.failures;
    st->state_since_ms = (uint64_t)((int64_t)s.since_ms + ctx->wall_offset_ms);
    st->forced = s.pinned ? s.forced : 0;

    fsm_record_t *rec = malloc(sizeof *rec);
    if (rec) {
        fsm_record(fsm, rec);
        size_t n = rec->n_pool;
        cs->entries = calloc(n ? n : 1, sizeof *cs->entries);
        cs->ptrs = calloc(n ? n : 1, sizeof *cs->ptrs);
        cs->text = calloc(n ? n : 1, sizeof *cs->text);
        if (cs->entries && cs->ptrs && cs->text) {
            for (size_t i = 0; i < n; i++) {
                tide__v1__pool_entry__init(&cs->entries[i]);
                names_format(cs->text[i][0], sizeof cs->text[i][0], ctx->cfg->app.name_prefix,
                             rec->pool[i]);
                /* The address Redis holds: on the docker driver the host was placed by the
                 * executor and is not app.host. */
                if (ctx->store)
                    store_addr(ctx->store, rec->pool[i], cs->text[i][1], sizeof cs->text[i][1]);
                else
                    snprintf(cs->text[i][1], sizeof cs->text[i][1], "%s:%d", ctx->cfg->app.host,
                             ctx->cfg->app.base_port + rec->pool[i]);
                cs->entries[i].name = cs->text[i][0];
                cs->entries[i].addr = cs->text[i][1];
                cs->ptrs[i] = &cs->entries[i];
            }
            st->pool = cs->ptrs;
            st->n_pool = n;
        }
        free(rec);
    }
    double rs = 0, rp = 0;
    const policy_decision_t *d = fsm_decision(fsm, &rs, &rp);
    if (d) {
        tide__v1__scaler_decision__init(&cs->decision);
        cs->decision.policy = st->policy;
        cs->decision.current = s.current;
        cs->decision.desired = d->desired;
        cs->decision.rps_stable = rs;
        cs->decision.rps_panic = rp;
        cs->decision.panicking = d->panicking;
        snprintf(cs->reason, sizeof cs->reason, "%s", d->reason);
        cs->decision.reason = cs->reason;
        st->last_decision = &cs->decision;
    }
}

void control_status_free(control_status_t *cs)
{
    free(cs->entries);
    free(cs->ptrs);
    free(cs->text);
    cs->entries = NULL;
    cs->ptrs = NULL;
    cs->text = NULL;
}

static int s_reply(zsock_t *rep, const control_ctx_t *ctx, bool ok, const char *error,
                   Tide__V1__ScalerStatus *status, const char *job_id)
{
    Tide__V1__ControlReply reply = TIDE__V1__CONTROL_REPLY__INIT;
    reply.job_id = (char *)(job_id ? job_id : "");
    reply.header = msg_sender_next(ctx->sender);
    reply.ok = ok;
    reply.error = (char *)(error ? error : "");
    reply.status = status;
    return msg_send(rep, TOPIC_CONTROL_REP, &reply.base) == 0 ? 0 : -EIO;
}

static const char *s_command_name(Tide__V1__Command c)
{
    switch (c) {
    case TIDE__V1__COMMAND__CMD_STATUS:
        return "status";
    case TIDE__V1__COMMAND__CMD_PAUSE:
        return "pause";
    case TIDE__V1__COMMAND__CMD_RESUME:
        return "resume";
    case TIDE__V1__COMMAND__CMD_SCALE:
        return "scale";
    case TIDE__V1__COMMAND__CMD_BOUNDS:
        return "bounds";
    case TIDE__V1__COMMAND__CMD_PROFILE:
        return "profile";
    default:
        return "?";
    }
}

int control_serve(zsock_t *rep, fsm_t *fsm, const control_ctx_t *ctx, uint64_t now_ms,
                  fsm_actions_t *acts)
{
    memset(acts, 0, sizeof *acts);
    msg_in_t in;
    int rc = msg_recv(rep, &in);
    if (rc == -EAGAIN)
        return -EAGAIN;
    /* Anything consumed gets an answer, or the REP socket is stuck for good. */
    if (rc != 0 || strcmp(in.topic, TOPIC_CONTROL_REQ) != 0) {
        msg_in_free(&in);
        return s_reply(rep, ctx, false, "malformed request", NULL, NULL);
    }
    if (!bus_peer_is(in.peer, ctx->cfg, BUS_ROLE_TIDECTL)) {
        msg_in_free(&in);
        log_once_per_kind("control-not-allowed", "refused a control request",
                          "the sender's key is not tidectl's");
        return s_reply(rep, ctx, false, "not allowed to control: only tidectl's key", NULL, NULL);
    }
    const Tide__V1__ControlRequest *req = (const Tide__V1__ControlRequest *)in.msg;
    if (!fsm) {
        msg_in_free(&in);
        return s_reply(rep, ctx, false, ctx->not_ready ? ctx->not_ready : "starting", NULL, NULL);
    }
    char err[256] = "", job_id[128] = "";
    int res = 0;
    switch (req->command) {
    case TIDE__V1__COMMAND__CMD_STATUS:
        break;
    case TIDE__V1__COMMAND__CMD_PAUSE:
        res = fsm_pause(fsm, now_ms, acts);
        break;
    case TIDE__V1__COMMAND__CMD_RESUME:
        res = fsm_resume(fsm, now_ms, acts);
        break;
    case TIDE__V1__COMMAND__CMD_SCALE:
        res = fsm_scale(fsm, req->count, now_ms, err, sizeof err, acts);
        break;
    case TIDE__V1__COMMAND__CMD_BOUNDS:
        res = fsm_bounds(fsm, req->min, req->max, now_ms, err, sizeof err, acts);
        break;
    case TIDE__V1__COMMAND__CMD_PROFILE:
        res = -ENOTSUP;
        snprintf(err, sizeof err, "profiles are not available");
        if (ctx->profile)
            res = ctx->profile(ctx->profile_arg, req->instance ? req->instance : "", req->seconds,
                               now_ms, job_id, sizeof job_id, err, sizeof err);
        break;
    default:
        res = -EINVAL;
        snprintf(err, sizeof err, "unknown command");
        break;
    }
    if (req->command != TIDE__V1__COMMAND__CMD_STATUS) {
        char q[300];
        char qi[80];
        log_info("control",
                 "command=%s count=%u min=%u max=%u instance=%s ok=%d error=%s job_id=%s from=%s",
                 s_command_name(req->command), req->count, req->min, req->max,
                 log_quote(qi, sizeof qi, req->instance ? req->instance : ""), res == 0,
                 log_quote(q, sizeof q, err), job_id, req->header->sender);
    }
    msg_in_free(&in);
    control_status_t status;
    control_status_fill(&status, fsm, ctx);
    rc = s_reply(rep, ctx, res == 0, res == 0 ? "" : err, &status.msg, job_id);
    control_status_free(&status);
    return rc;
}
