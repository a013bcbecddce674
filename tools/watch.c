/* watch.c - `tidectl watch`: every message on the bus, decoded, one line each. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "tide_clock.h"
#include "tide_curve.h"
#include "tide_log.h"
#include "tidectl.h"

/* The header every bus message starts with, found through the descriptor so one printer
 * serves every type. Returns the field's slot in msg, or NULL when the type has none. */
static Tide__V1__Header **s_header_slot(ProtobufCMessage *msg)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, "header");
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED ||
        f->descriptor != &tide__v1__header__descriptor)
        return NULL;
    return (Tide__V1__Header **)((char *)msg + f->offset);
}

static void s_clock(FILE *out, uint64_t wall_ms)
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    localtime_r(&secs, &tm);
    fprintf(out, "%02d:%02d:%02d.%03u", tm.tm_hour, tm.tm_min, tm.tm_sec,
            (unsigned)(wall_ms % 1000));
}

void ctl_print_record(FILE *out, Tide__V1__JobRecord *rec)
{
    size_t n = rec->n_output_tail;
    rec->n_output_tail = 0; /* left out of the line: ctl_print_tail prints it */
    msg_print_text(out, &rec->base);
    rec->n_output_tail = n;
}

void ctl_print_tail(FILE *out, const Tide__V1__JobRecord *rec)
{
    for (size_t i = 0; i < rec->n_output_tail; i++)
        fprintf(out, "\n    | %s", rec->output_tail[i] ? rec->output_tail[i] : "");
}

void ctl_print_message(FILE *out, const char *topic, ProtobufCMessage *msg, bool json)
{
    if (json) {
        fputs("{\"topic\":\"", out);
        for (const char *p = topic; *p; p++)
            if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
                fputc(*p, out);
        fputs("\",\"msg\":", out);
        msg_print_json(out, msg);
        fputc('}', out);
        return;
    }
    Tide__V1__Header **slot = s_header_slot(msg);
    Tide__V1__Header *h = slot ? *slot : NULL;
    s_clock(out, h && h->ts_ms ? h->ts_ms : clock_wall_ms());
    fprintf(out, " %s", topic);
    if (h)
        fprintf(out, " %s#%llu", h->sender ? h->sender : "?", (unsigned long long)h->seq);
    /* The header is already printed in front: leave it out of the fields (the text printer
     * skips unset messages), then put it back so the message frees as it came. */
    if (slot)
        *slot = NULL;
    fputc(' ', out);
    /* A finished job's record carries the playbook's last lines: on one line they would be an
     * unreadable run of quoted strings, and for a job that succeeded they repeat the OUTPUT
     * lines. So they are left out of the line, and a failed job's follow it, one line each. */
    Tide__V1__JobEvent *ev =
        msg->descriptor == &tide__v1__job_event__descriptor ? (Tide__V1__JobEvent *)msg : NULL;
    Tide__V1__JobRecord *rec = ev ? ev->job : NULL;
    if (rec) {
        ev->job = NULL;
        msg_print_text(out, msg);
        ev->job = rec;
        fputs(" job={", out);
        ctl_print_record(out, rec);
        fputc('}', out);
    } else {
        msg_print_text(out, msg);
    }
    if (slot)
        *slot = h;
    if (rec && rec->state == TIDE__V1__JOB_STATE__JOB_FAILED)
        ctl_print_tail(out, rec);
}

static zsock_t *s_sub(const ctl_t *ctl, const char *endpoint, const char *server,
                      const char *const *topics, size_t n_topics)
{
    zsock_t *sock = zsock_new(ZMQ_SUB);
    if (sock)
        msg_socket_limits(sock);
    if (!sock || bus_secure_client(sock, ctl->cfg, BUS_ROLE_TIDECTL, server) ||
        zsock_connect(sock, "%s", endpoint) != 0) {
        fprintf(ctl->err, "tidectl: cannot connect to %s: %s\n", endpoint,
                zmq_strerror(zmq_errno()));
        zsock_destroy(&sock);
        return NULL;
    }
    if (n_topics == 0)
        zsock_set_subscribe(sock, "");
    for (size_t i = 0; i < n_topics; i++)
        zsock_set_subscribe(sock, topics[i]);
    return sock;
}

int ctl_watch(const ctl_t *ctl, const char *const *topics, size_t n_topics, unsigned long count)
{
    const tide_config_t *cfg = ctl->cfg;
    /* Every scaler's events (config scalers:), on the one socket. */
    const char *events[CFG_SCALERS_MAX];
    size_t n_events = config_scaler_list(cfg, true, events);
    const char *endpoints[3] = {cfg->endpoints.metrics, events[0], cfg->endpoints.executor_events};
    const char *servers[3] = {BUS_ROLE_METRICS, BUS_ROLE_SCALER, BUS_ROLE_EXECUTOR};
    zsock_t *socks[3] = {NULL, NULL, NULL};
    zpoller_t *poller = NULL;
    int status = CTL_FAIL;
    for (int i = 0; i < 3; i++)
        if (!(socks[i] = s_sub(ctl, endpoints[i], servers[i], topics, n_topics)))
            goto done;
    for (size_t i = 0; i < n_events; i++)
        if (i > 0 && zsock_connect(socks[1], "%s", events[i]) != 0) {
            fprintf(ctl->err, "tidectl: cannot connect to %s: %s\n", events[i],
                    zmq_strerror(zmq_errno()));
            goto done;
        }
    poller = zpoller_new(socks[0], socks[1], socks[2], NULL);
    if (!poller)
        goto done;

    uint64_t deadline = ctl->timeout_ms >= 0 ? clock_mono_ms() + (uint64_t)ctl->timeout_ms : 0;
    unsigned long printed = 0;
    status = CTL_OK;
    while (!zsys_interrupted && (count == 0 || printed < count)) {
        int wait = -1;
        if (ctl->timeout_ms >= 0) {
            uint64_t now = clock_mono_ms();
            if (now >= deadline)
                break;
            wait = (int)(deadline - now);
        }
        zsock_t *which = zpoller_wait(poller, wait);
        if (!which) {
            if (zpoller_terminated(poller))
                break; /* SIGINT/SIGTERM: a normal end */
            continue;  /* expired: the loop checks the deadline */
        }
        /* Read what is queued, up to the count. */
        while (count == 0 || printed < count) {
            msg_in_t in;
            int rc = msg_recv(which, &in);
            if (rc == -EAGAIN)
                break;
            if (rc != 0)
                continue; /* malformed: dropped, counted and logged by msg_recv */
            ctl_print_message(ctl->out, in.topic, in.msg, ctl->json);
            fputc('\n', ctl->out);
            fflush(ctl->out); /* one line at a time: tidectl watch is piped in tests */
            msg_in_free(&in);
            printed++;
        }
    }
done:
    zpoller_destroy(&poller);
    for (int i = 0; i < 3; i++)
        zsock_destroy(&socks[i]);
    return status;
}
