/* service.c - tide-metrics' loop: receive stats and events, publish snapshots, feed HTTP. */
#include "service.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "http.h"
#include "prom.h"
#include "tide_clock.h"
#include "tide_log.h"
#include "tide_curve.h"
#include "tide_profiles.h"

/* Messages read from one socket per wakeup before timers get a look in. */
#define DRAIN_BATCH 256

typedef struct {
    const tide_config_t *cfg;
    msg_sender_t *sender;
    zsock_t *stats, *pub, *scaler, *executor;
    agg_t *agg;
    http_t *http;
    bus_gauges_t gauges;
    Tide__V1__MetricsSnapshot *last;
} service_t;

/* server: the role that binds endpoint (this one when bind). */
static zsock_t *s_socket(const tide_config_t *cfg, int type, const char *endpoint, bool bind,
                         const char *server, const char *what)
{
    zsock_t *sock = zsock_new(type);
    if (!sock) {
        log_error("cannot create a socket", "socket=%s", what);
        return NULL;
    }
    msg_socket_limits(sock); /* PUB too: subscriptions come in on it */
    int rc = bind ? bus_secure_server(sock, cfg, BUS_ROLE_METRICS, endpoint)
                  : bus_secure_client(sock, cfg, BUS_ROLE_METRICS, server);
    if (rc == 0)
        rc = bind ? zsock_bind(sock, "%s", endpoint) : zsock_connect(sock, "%s", endpoint);
    if (rc == -1) {
        char q[300];
        log_error(bind ? "cannot bind" : "cannot connect", "socket=%s endpoint=%s error=%s", what,
                  log_quote(q, sizeof q, endpoint), zmq_strerror(zmq_errno()));
        zsock_destroy(&sock);
        return NULL;
    }
    if (type == ZMQ_SUB)
        zsock_set_subscribe(sock, ""); /* every topic: garbage is then counted, not filtered */
    return sock;
}

static void s_on_stats(service_t *self, msg_in_t *in, zmsg_t **raw)
{
    /* Republished for the scaler (draining) and tidectl: the proxy's frames as they came,
     * once msg_recv_raw has checked them (nothing malformed is passed on). */
    if (zmsg_send(raw, self->pub) != 0)
        zmsg_destroy(raw);
    const Tide__V1__ProxyStats *st = (const void *)in->msg;
    agg_result_t r = agg_on_stats(self->agg, st, clock_mono_ms());
    char q[200];
    switch (r) {
    case AGG_DELTA:
        break;
    case AGG_NEW_BASELINE:
    case AGG_NEW_FULL:
        log_info("proxy joined", "sender=%s started_ms=%llu counting=%s",
                 log_quote(q, sizeof q, st->header->sender), (unsigned long long)st->started_ms,
                 r == AGG_NEW_FULL ? "all" : "from-now");
        break;
    case AGG_RESTART_BASELINE:
    case AGG_RESTART_FULL:
        log_info("proxy restarted", "sender=%s started_ms=%llu counting=%s",
                 log_quote(q, sizeof q, st->header->sender), (unsigned long long)st->started_ms,
                 r == AGG_RESTART_FULL ? "all" : "from-now");
        break;
    case AGG_OLD_SEQ:
        log_debug("stats with an old seq ignored", "sender=%s seq=%llu",
                  log_quote(q, sizeof q, st->header->sender), (unsigned long long)st->header->seq);
        break;
    case AGG_REJECTED:
        log_once_per_kind("metrics-too-many-proxies", "stats ignored: too many proxies tracked",
                          st->header->sender);
        break;
    }
}

static void s_drain(service_t *self, zsock_t *sock)
{
    for (int i = 0; i < DRAIN_BATCH; i++) {
        msg_in_t in;
        zmsg_t *raw = NULL;
        int rc = msg_recv_raw(sock, &in, &raw);
        if (rc == -EAGAIN)
            return;
        if (rc != 0)
            continue; /* dropped and counted by msg_recv_raw */
        if (sock == self->stats) {
            if (strcmp(in.topic, TOPIC_STATS) == 0)
                s_on_stats(self, &in, &raw);
            else
                log_once_per_kind("metrics-unexpected-topic",
                                  "ignored a message that does not belong on the stats socket",
                                  in.topic);
        } else {
            prom_on_event(&self->gauges, in.topic, in.msg);
        }
        zmsg_destroy(&raw); /* not forwarded */
        msg_in_free(&in);
    }
}

/* Renders the snapshot as JSON into a heap string. NULL on OOM. */
static char *s_json(const Tide__V1__MetricsSnapshot *snap, size_t *len)
{
    char *buf = NULL;
    FILE *out = open_memstream(&buf, len);
    if (!out)
        return NULL;
    msg_print_json(out, &snap->base);
    fputc('\n', out);
    if (fclose(out) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void s_snapshot(service_t *self)
{
    Tide__V1__MetricsSnapshot *snap = agg_snapshot(self->agg, clock_mono_ms());
    if (!snap) {
        log_error("out of memory building a snapshot", "%s", "");
        return;
    }
    snap->header = msg_sender_next(self->sender);
    snap->dropped_frames = msg_dropped_total();
    if (msg_send(self->pub, TOPIC_SNAPSHOT, &snap->base) != 0)
        log_once_per_kind("metrics-publish", "could not publish a snapshot", "");

    size_t jlen = 0, plen = 0;
    char *json = s_json(snap, &jlen);
    char *prom = prom_render(self->agg, snap, &self->gauges, snap->dropped_frames, &plen);
    if (json && prom)
        http_publish(self->http, prom, plen, json, jlen);
    else
        log_error("out of memory rendering /metrics", "%s", "");
    free(json);
    free(prom);
    agg_snapshot_destroy(&self->last);
    self->last = snap;
}

int service_run(const tide_config_t *cfg, msg_sender_t *sender)
{
    service_t self = {.cfg = cfg, .sender = sender};
    int status = 1;
    agg_config_t ac = {.stable_window_s = (unsigned)cfg->metrics.stable_window_s,
                       .panic_window_s = (unsigned)cfg->metrics.panic_window_s,
                       .stale_after_ms = (uint64_t)cfg->metrics.stale_after_ms};
    self.agg = agg_new(&ac);
    if (!self.agg) {
        log_error("cannot create the aggregator", "stable_window_s=%d panic_window_s=%d",
                  cfg->metrics.stable_window_s, cfg->metrics.panic_window_s);
        return 1;
    }
    zpoller_t *poller = NULL;
    char err[512], q[4][300];
    self.stats = s_socket(cfg, ZMQ_SUB, cfg->endpoints.stats, true, NULL, "stats");
    self.pub = s_socket(cfg, ZMQ_PUB, cfg->endpoints.metrics, true, NULL, "metrics");
    /* Every scaler's events (config scalers:), on the one socket: whichever leads is heard. */
    const char *events[CFG_SCALERS_MAX];
    size_t n_events = config_scaler_list(cfg, true, events);
    self.scaler = s_socket(cfg, ZMQ_SUB, events[0], false, BUS_ROLE_SCALER, "scaler_events");
    self.executor = s_socket(cfg, ZMQ_SUB, cfg->endpoints.executor_events, false, BUS_ROLE_EXECUTOR,
                             "executor_events");
    if (!self.stats || !self.pub || !self.scaler || !self.executor)
        goto done;
    for (size_t i = 0; i < n_events; i++) {
        if (i > 0 && zsock_connect(self.scaler, "%s", events[i]) != 0) {
            log_error("cannot connect", "socket=scaler_events endpoint=%s error=%s",
                      log_quote(q[0], sizeof q[0], events[i]), zmq_strerror(zmq_errno()));
            goto done;
        }
    }
    char profiles[CFG_PATH + 16];
    self.http = http_new(cfg->metrics.listen, profiles_root(cfg, profiles, sizeof profiles), err,
                         sizeof err);
    if (!self.http) {
        log_error("cannot start the HTTP server", "listen=%s error=%s", cfg->metrics.listen,
                  log_quote(q[0], sizeof q[0], err));
        goto done;
    }
    poller = zpoller_new(self.stats, self.scaler, self.executor, NULL);
    if (!poller)
        goto done;
    log_info("started",
             "sender=%s stats=%s metrics=%s scaler_events=%s executor_events=%s http=%s "
             "stable_window_s=%d panic_window_s=%d snapshot_interval_ms=%d",
             sender->sender, log_quote(q[0], sizeof q[0], cfg->endpoints.stats),
             log_quote(q[1], sizeof q[1], cfg->endpoints.metrics),
             log_quote(q[2], sizeof q[2], cfg->endpoints.scaler_events),
             log_quote(q[3], sizeof q[3], cfg->endpoints.executor_events), cfg->metrics.listen,
             cfg->metrics.stable_window_s, cfg->metrics.panic_window_s,
             cfg->metrics.snapshot_interval_ms);

    uint64_t interval = (uint64_t)cfg->metrics.snapshot_interval_ms;
    uint64_t next = clock_mono_ms(); /* the first snapshot at once: HTTP has content from t=0 */
    while (!zsys_interrupted) {
        uint64_t now = clock_mono_ms();
        if (now >= next) {
            s_snapshot(&self);
            next += interval;
            if (next <= now) /* we fell behind (a stop, a slow host): do not burst */
                next = now + interval;
        }
        now = clock_mono_ms();
        int wait = next > now ? (int)(next - now) : 0;
        zsock_t *which = zpoller_wait(poller, wait);
        if (which)
            s_drain(&self, which);
        else if (zpoller_terminated(poller))
            break;
    }
    log_info("stopping", "http_requests=%lu dropped_frames=%llu", http_requests(self.http),
             (unsigned long long)msg_dropped_total());
    status = 0;
done:
    zpoller_destroy(&poller);
    http_destroy(&self.http);
    zsock_destroy(&self.executor);
    zsock_destroy(&self.scaler);
    zsock_destroy(&self.pub);
    zsock_destroy(&self.stats);
    agg_snapshot_destroy(&self.last);
    agg_destroy(&self.agg);
    return status;
}
