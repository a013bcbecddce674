/* control.c - tidectl's requests: the scaler's control socket (status, pause, resume, scale,
 * bounds) and the executor's job status, each one REQ with a deadline. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "tide_clock.h"
#include "tide_curve.h"
#include "tidectl.h"

int ctl_request(const ctl_t *ctl, const char *peer, const char *endpoint, const char *topic,
                const ProtobufCMessage *req, const char *reply_topic, msg_in_t *reply)
{
    int timeout = ctl->timeout_ms >= 0 ? ctl->timeout_ms : CTL_REQ_TIMEOUT_MS;
    reply->msg = NULL;
    zsock_t *sock = zsock_new(ZMQ_REQ);
    if (!sock) {
        fprintf(ctl->err, "tidectl: cannot create a socket\n");
        return CTL_FAIL;
    }
    /* linger 0: with no answer, exit at once instead of waiting to deliver the request */
    zsock_set_linger(sock, 0);
    msg_socket_limits(sock);
    zsock_set_sndtimeo(sock, timeout);
    int status = CTL_FAIL;
    zpoller_t *poller = NULL;
    if (bus_secure_client(sock, ctl->cfg, BUS_ROLE_TIDECTL, peer) ||
        zsock_connect(sock, "%s", endpoint) != 0) {
        fprintf(ctl->err, "tidectl: cannot connect to %s at %s: %s\n", peer, endpoint,
                zmq_strerror(zmq_errno()));
        goto done;
    }
    if (msg_send(sock, topic, req) != 0) {
        fprintf(ctl->err, "tidectl: could not send to %s at %s\n", peer, endpoint);
        goto done;
    }
    poller = zpoller_new(sock, NULL);
    if (!poller)
        goto done;
    if (!zpoller_wait(poller, timeout)) {
        if (zpoller_terminated(poller))
            fprintf(ctl->err, "tidectl: interrupted\n");
        else
            fprintf(ctl->err, "tidectl: %s did not answer within %d ms at %s\n", peer, timeout,
                    endpoint);
        goto done;
    }
    int rc = msg_recv(sock, reply);
    if (rc != 0) {
        fprintf(ctl->err, "tidectl: malformed reply from %s at %s\n", peer, endpoint);
        goto done;
    }
    if (strcmp(reply->topic, reply_topic) != 0) {
        fprintf(ctl->err, "tidectl: %s at %s answered with topic '%s', expected '%s'\n", peer,
                endpoint, reply->topic, reply_topic);
        msg_in_free(reply);
        goto done;
    }
    status = CTL_OK;
done:
    zpoller_destroy(&poller);
    zsock_destroy(&sock);
    return status;
}

/* ---- printing the status --------------------------------------------------------------- */

static void s_wall(FILE *out, uint64_t wall_ms)
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    localtime_r(&secs, &tm);
    fprintf(out, "%02d:%02d:%02d", tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static const char *s_or_dash(const char *s)
{
    return s && *s ? s : "-";
}

void ctl_print_status_line(FILE *out, const Tide__V1__ScalerStatus *st)
{
    fprintf(out,
            "state=%s current=%" PRIu32 " desired=%" PRIu32 " min=%" PRIu32 " max=%" PRIu32
            " paused=%s forced=%" PRIu32 " job=%s",
            msg_state_name(st->state), st->current, st->desired, st->min, st->max,
            st->paused ? "yes" : "no", st->forced, s_or_dash(st->job_id));
}

void ctl_print_status(FILE *out, const Tide__V1__ScalerStatus *st, uint64_t now_wall_ms)
{
    fprintf(out, "state:         %s", msg_state_name(st->state));
    if (st->state_since_ms) {
        fputs(" since ", out);
        s_wall(out, st->state_since_ms);
        if (now_wall_ms >= st->state_since_ms)
            fprintf(out, " (%" PRIu64 " s ago)", (now_wall_ms - st->state_since_ms) / 1000);
    }
    fprintf(out,
            "\ninstances:     %" PRIu32 " current, %" PRIu32 " desired (min %" PRIu32
            ", max %" PRIu32 ")\n",
            st->current, st->desired, st->min, st->max);
    if (st->forced)
        fprintf(out,
                "forced:        %" PRIu32 " (set by tidectl scale; 0 hands back to the "
                "policy)\n",
                st->forced);
    else
        fputs("forced:        no (the policy decides)\n", out);
    fprintf(out, "paused:        %s\n", st->paused ? "yes" : "no");
    fprintf(out, "job:           %s\n", s_or_dash(st->job_id));
    fprintf(out, "policy:        %s\n", s_or_dash(st->policy));
    const Tide__V1__ScalerDecision *d = st->last_decision;
    if (d) {
        fprintf(out,
                "last decision: desired %" PRIu32 " (current %" PRIu32
                ") from rps_stable=%.1f rps_panic=%.1f%s",
                d->desired, d->current, d->rps_stable, d->rps_panic,
                d->panicking ? " panicking" : "");
        if (d->reason && *d->reason)
            fprintf(out, ": %s", d->reason);
        fputc('\n', out);
    } else {
        fputs("last decision: -\n", out);
    }
    fprintf(out, "pool:          version %" PRIu64 ", %zu entr%s", st->pool_version, st->n_pool,
            st->n_pool == 1 ? "y" : "ies");
    for (size_t i = 0; i < st->n_pool; i++)
        fprintf(out, "%s%s=%s", i ? " " : ": ", s_or_dash(st->pool[i]->name),
                s_or_dash(st->pool[i]->addr));
    fprintf(out, "\nlast error:    %s\n", s_or_dash(st->last_error));
    if (st->backoff_until_ms > now_wall_ms) {
        fputs("backoff:       until ", out);
        s_wall(out, st->backoff_until_ms);
        fprintf(out, " (%" PRIu64 " s more), %" PRIu32 " failure%s in a row\n",
                (st->backoff_until_ms - now_wall_ms + 999) / 1000, st->consecutive_failures,
                st->consecutive_failures == 1 ? "" : "s");
    } else if (st->consecutive_failures) {
        fprintf(out, "backoff:       none (%" PRIu32 " failure%s in a row)\n",
                st->consecutive_failures, st->consecutive_failures == 1 ? "" : "s");
    } else {
        fputs("backoff:       none\n", out);
    }
}

/* ---- commands --------------------------------------------------------------------------- */

int ctl_scaler_request(const ctl_t *ctl, Tide__V1__ControlRequest *req, msg_in_t *reply)
{
    /* Several scalers (config scalers:): the one that leads acts, a standby says so. Ask each
     * in turn until one that is not standby answers; else the last answer stands. */
    const char *eps[CFG_SCALERS_MAX];
    size_t n = config_scaler_list(ctl->cfg, false, eps);
    int status = CTL_FAIL;
    reply->msg = NULL;
    for (size_t i = 0; i < n; i++) {
        msg_in_t in;
        req->header = msg_sender_next(ctl->sender);
        int rc = ctl_request(ctl, "scaler", eps[i], TOPIC_CONTROL_REQ, &req->base,
                             TOPIC_CONTROL_REP, &in);
        if (rc != CTL_OK)
            continue;
        const Tide__V1__ControlReply *rep = (const void *)in.msg;
        bool standby = !rep->ok && rep->error && strncmp(rep->error, "standby", 7) == 0;
        if (reply->msg)
            msg_in_free(reply);
        *reply = in;
        status = CTL_OK;
        if (!standby)
            break;
    }
    return status;
}

int ctl_control(const ctl_t *ctl, Tide__V1__Command command, uint32_t count, uint32_t min,
                uint32_t max)
{
    Tide__V1__ControlRequest req = TIDE__V1__CONTROL_REQUEST__INIT;
    req.command = command;
    req.count = count;
    req.min = min;
    req.max = max;
    msg_in_t in;
    int status = ctl_scaler_request(ctl, &req, &in);
    if (status != CTL_OK)
        return status;
    const Tide__V1__ControlReply *rep = (const void *)in.msg;
    if (!rep->ok) {
        fprintf(ctl->err, "tidectl: scaler refused: %s\n", s_or_dash(rep->error));
        status = CTL_FAIL;
    } else if (command == TIDE__V1__COMMAND__CMD_STATUS) {
        if (!rep->status) {
            fprintf(ctl->err, "tidectl: the scaler's answer has no status\n");
            status = CTL_FAIL;
        } else if (ctl->json) {
            msg_print_json(ctl->out, &rep->status->base);
            fputc('\n', ctl->out);
        } else {
            ctl_print_status(ctl->out, rep->status, clock_wall_ms());
        }
    } else if (ctl->json) {
        msg_print_json(ctl->out, &rep->base);
        fputc('\n', ctl->out);
    } else {
        fputs("ok\n", ctl->out);
        if (rep->status) {
            ctl_print_status_line(ctl->out, rep->status);
            fputc('\n', ctl->out);
        }
    }
    fflush(ctl->out);
    msg_in_free(&in);
    return status;
}

int ctl_job_status(const ctl_t *ctl, const char *job_id)
{
    Tide__V1__ExecRequest req = TIDE__V1__EXEC_REQUEST__INIT;
    req.header = msg_sender_next(ctl->sender);
    req.kind = TIDE__V1__JOB_KIND__JOB_STATUS;
    req.job_id = (char *)job_id;
    msg_in_t in;
    int status = ctl_request(ctl, "executor", ctl->cfg->endpoints.executor_control, TOPIC_EXEC_REQ,
                             &req.base, TOPIC_EXEC_REP, &in);
    if (status != CTL_OK)
        return status;
    const Tide__V1__ExecReply *rep = (const void *)in.msg;
    if (!rep->accepted) {
        fprintf(ctl->err, "tidectl: executor refused: %s\n", s_or_dash(rep->reason));
        status = CTL_FAIL;
    } else if (!rep->job) {
        fprintf(ctl->err, "tidectl: the executor's answer has no job record\n");
        status = CTL_FAIL;
    } else if (ctl->json) {
        msg_print_json(ctl->out, &rep->job->base);
        fputc('\n', ctl->out);
    } else {
        ctl_print_record(ctl->out, rep->job);
        ctl_print_tail(ctl->out, rep->job);
        fputc('\n', ctl->out);
    }
    fflush(ctl->out);
    msg_in_free(&in);
    return status;
}
