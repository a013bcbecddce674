/* prom.c - Prometheus text exposition (format 0.0.4) of tide-metrics (see prom.h). */
#include "prom.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tide_msg.h"

void prom_on_event(bus_gauges_t *g, const char *topic, const ProtobufCMessage *msg)
{
    if (strcmp(topic, TOPIC_SCALER_STATE) == 0) {
        const Tide__V1__ScalerState *m = (const void *)msg;
        g->state_known = true;
        g->state = m->state;
        g->current = m->current;
        g->desired = m->desired;
        g->paused = m->paused;
        g->transitions++;
    } else if (strcmp(topic, TOPIC_SCALER_DECISION) == 0) {
        const Tide__V1__ScalerDecision *m = (const void *)msg;
        g->desired = m->desired;
        g->decisions++;
    } else if (strcmp(topic, TOPIC_SCALER_POOL) == 0) {
        const Tide__V1__ScalerPool *m = (const void *)msg;
        g->pool_known = true;
        g->pool_size = (uint32_t)m->n_entries;
        g->pool_version = m->version;
        g->draining = (uint32_t)m->n_draining;
    } else if (strcmp(topic, TOPIC_EXEC_JOB) == 0) {
        const Tide__V1__JobEvent *m = (const void *)msg;
        unsigned kind = m->job ? (unsigned)m->job->kind : 0;
        if (kind >= PROM_JOB_KINDS)
            kind = 0;
        if (m->type == TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_STARTED)
            g->jobs_started[kind]++;
        else if (m->type == TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_FINISHED) {
            if (m->job && m->job->state == TIDE__V1__JOB_STATE__JOB_SUCCEEDED)
                g->jobs_succeeded[kind]++;
            else
                g->jobs_failed[kind]++;
        }
    }
}

/* Label values: backslash, double quote and newline are escaped, per the format. */
static void s_label(FILE *out, const char *text)
{
    fputc('"', out);
    for (const char *p = text ? text : ""; *p; p++) {
        if (*p == '\\' || *p == '"')
            fprintf(out, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", out);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static void s_head(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void s_kind_label(FILE *out, unsigned kind)
{
    char low[32];
    const char *name = msg_job_kind_name((Tide__V1__JobKind)kind);
    size_t i = 0;
    for (; name[i] && i + 1 < sizeof low; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    low[i] = '\0';
    s_label(out, low);
}

/* Job kinds printed even at zero, so rate() has a series from the start. */
static bool s_kind_shown(const bus_gauges_t *g, unsigned k)
{
    return (k >= TIDE__V1__JOB_KIND__JOB_SCALE_UP && k <= TIDE__V1__JOB_KIND__JOB_LIST) ||
           g->jobs_started[k] || g->jobs_succeeded[k] || g->jobs_failed[k];
}

static const struct {
    int idx;
    const char *name;
} s_classes[] = {
    {AGG_1XX, "1xx"}, {AGG_2XX, "2xx"}, {AGG_3XX, "3xx"}, {AGG_4XX, "4xx"}, {AGG_5XX, "5xx"}};
#define N_CLASSES (sizeof s_classes / sizeof s_classes[0])

static void s_render_counters(FILE *out, const agg_t *agg)
{
    size_t n = agg_instance_count(agg);
    const uint64_t *tot = agg_totals(agg);

    s_head(out, "tide_requests_total", "counter",
           "Requests routed to each instance, counted since tide-metrics started.");
    for (size_t i = 0; i < n; i++) {
        fputs("tide_requests_total{instance=", out);
        s_label(out, agg_instance_name(agg, i));
        fprintf(out, "} %" PRIu64 "\n", agg_instance_totals(agg, i)[AGG_REQ]);
    }
    s_head(out, "tide_responses_total", "counter",
           "Responses to requests routed to each instance, by status class.");
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < N_CLASSES; c++) {
            fputs("tide_responses_total{instance=", out);
            s_label(out, agg_instance_name(agg, i));
            fprintf(out, ",class=\"%s\"} %" PRIu64 "\n", s_classes[c].name,
                    agg_instance_totals(agg, i)[s_classes[c].idx]);
        }
    s_head(out, "tide_upstream_errors_total", "counter",
           "Connect or read failures of the proxies talking to each instance.");
    for (size_t i = 0; i < n; i++) {
        fputs("tide_upstream_errors_total{instance=", out);
        s_label(out, agg_instance_name(agg, i));
        fprintf(out, "} %" PRIu64 "\n", agg_instance_totals(agg, i)[AGG_UPERR]);
    }

    s_head(out, "tide_proxy_requests_total", "counter",
           "Requests accepted by all proxies, including those no instance served.");
    fprintf(out, "tide_proxy_requests_total %" PRIu64 "\n", tot[AGG_REQ]);
    s_head(out, "tide_proxy_responses_total", "counter",
           "Responses sent by all proxies, by status class.");
    for (size_t c = 0; c < N_CLASSES; c++)
        fprintf(out, "tide_proxy_responses_total{class=\"%s\"} %" PRIu64 "\n", s_classes[c].name,
                tot[s_classes[c].idx]);
    s_head(out, "tide_proxy_upstream_errors_total", "counter",
           "Connect or read failures of all proxies talking to instances.");
    fprintf(out, "tide_proxy_upstream_errors_total %" PRIu64 "\n", tot[AGG_UPERR]);
    s_head(out, "tide_proxy_bytes_total", "counter", "Bytes from and to clients, all proxies.");
    fprintf(out, "tide_proxy_bytes_total{direction=\"in\"} %" PRIu64 "\n", tot[AGG_BYTES_IN]);
    fprintf(out, "tide_proxy_bytes_total{direction=\"out\"} %" PRIu64 "\n", tot[AGG_BYTES_OUT]);

    /* The proxies send bucket counts only, no sum of latencies, so the histogram has no _sum
     * line (the format allows leaving it out); quantiles and rates work from the buckets. */
    s_head(out, "tide_latency_seconds", "histogram",
           "Request latency through the proxies (client request to response end).");
    uint64_t cum = 0;
    for (int b = 0; b < HIST_BUCKETS - 1; b++) {
        cum += tot[AGG_LAT0 + b];
        fprintf(out, "tide_latency_seconds_bucket{le=\"%.6g\"} %" PRIu64 "\n",
                (double)hist_bounds_us[b] / 1e6, cum);
    }
    cum += tot[AGG_LAT0 + HIST_BUCKETS - 1];
    fprintf(out, "tide_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
    fprintf(out, "tide_latency_seconds_count %" PRIu64 "\n", cum);
}

static void s_render_snapshot(FILE *out, const Tide__V1__MetricsSnapshot *snap)
{
    s_head(out, "tide_rps", "gauge",
           "Mean requests per second over the stable and panic windows and the last second.");
    fprintf(out, "tide_rps{window=\"stable\"} %.9g\n", snap->rps_stable);
    fprintf(out, "tide_rps{window=\"panic\"} %.9g\n", snap->rps_panic);
    fprintf(out, "tide_rps{window=\"last\"} %.9g\n", snap->rps_last);
    s_head(out, "tide_instance_rps", "gauge", "Requests per second routed to each instance.");
    for (size_t i = 0; i < snap->n_instances; i++) {
        const Tide__V1__InstanceMetrics *im = snap->instances[i];
        fputs("tide_instance_rps{instance=", out);
        s_label(out, im->name);
        fprintf(out, ",window=\"stable\"} %.9g\n", im->rps_stable);
        fputs("tide_instance_rps{instance=", out);
        s_label(out, im->name);
        fprintf(out, ",window=\"panic\"} %.9g\n", im->rps_panic);
    }
    s_head(out, "tide_instance_in_flight", "gauge",
           "Requests in flight to each instance, over all live proxies.");
    for (size_t i = 0; i < snap->n_instances; i++) {
        fputs("tide_instance_in_flight{instance=", out);
        s_label(out, snap->instances[i]->name);
        fprintf(out, "} %" PRIu32 "\n", snap->instances[i]->in_flight);
    }
    s_head(out, "tide_latency_panic_seconds", "gauge", "Latency quantiles over the panic window.");
    fprintf(out, "tide_latency_panic_seconds{quantile=\"0.5\"} %.9g\n", snap->p50_ms / 1000.0);
    fprintf(out, "tide_latency_panic_seconds{quantile=\"0.9\"} %.9g\n", snap->p90_ms / 1000.0);
    fprintf(out, "tide_latency_panic_seconds{quantile=\"0.99\"} %.9g\n", snap->p99_ms / 1000.0);
    s_head(out, "tide_in_flight", "gauge", "Requests in flight over all live proxies.");
    fprintf(out, "tide_in_flight %" PRIu32 "\n", snap->in_flight);
    s_head(out, "tide_proxies", "gauge", "Proxies heard from within metrics.stale_after_ms.");
    fprintf(out, "tide_proxies %" PRIu32 "\n", snap->proxies);
    s_head(out, "tide_stable_covered_seconds", "gauge",
           "Seconds of data in the stable window (below its size while it fills).");
    fprintf(out, "tide_stable_covered_seconds %" PRIu32 "\n", snap->stable_covered_s);
}

static void s_render_bus(FILE *out, const bus_gauges_t *g)
{
    /* Gauges the scaler owns appear once it has said something: a made-up 0 would read as
     * "no instances" rather than "unknown". */
    if (g->pool_known || g->state_known) {
        s_head(out, "tide_instances", "gauge", "Instances in the pool, as the scaler reports.");
        fprintf(out, "tide_instances %" PRIu32 "\n", g->pool_known ? g->pool_size : g->current);
    }
    if (g->state_known) {
        s_head(out, "tide_instances_desired", "gauge", "The scaler's desired instance count.");
        fprintf(out, "tide_instances_desired %" PRIu32 "\n", g->desired);
        s_head(out, "tide_scaler_state", "gauge", "1 for the scaler's current state.");
        for (int s = TIDE__V1__STATE__STATE_IDLE; s <= TIDE__V1__STATE__STATE_UP; s++)
            fprintf(out, "tide_scaler_state{state=\"%s\"} %d\n", msg_state_name((Tide__V1__State)s),
                    g->state == s);
        s_head(out, "tide_scaler_paused", "gauge", "1 while the scaler is paused.");
        fprintf(out, "tide_scaler_paused %d\n", g->paused ? 1 : 0);
    }
    if (g->pool_known) {
        s_head(out, "tide_pool_version", "gauge", "The pool version last published.");
        fprintf(out, "tide_pool_version %" PRIu64 "\n", g->pool_version);
        s_head(out, "tide_draining_instances", "gauge",
               "Instances removed from the pool, not yet stopped.");
        fprintf(out, "tide_draining_instances %" PRIu32 "\n", g->draining);
    }
    s_head(out, "tide_scaler_transitions_total", "counter",
           "State transitions heard on scaler.state since tide-metrics started.");
    fprintf(out, "tide_scaler_transitions_total %" PRIu64 "\n", g->transitions);
    s_head(out, "tide_scaler_decisions_total", "counter",
           "Decisions heard on scaler.decision since tide-metrics started.");
    fprintf(out, "tide_scaler_decisions_total %" PRIu64 "\n", g->decisions);
    s_head(out, "tide_jobs_started_total", "counter", "Executor jobs started, by kind.");
    for (unsigned k = 0; k < PROM_JOB_KINDS; k++) {
        if (!s_kind_shown(g, k))
            continue;
        fputs("tide_jobs_started_total{kind=", out);
        s_kind_label(out, k);
        fprintf(out, "} %" PRIu64 "\n", g->jobs_started[k]);
    }
    s_head(out, "tide_jobs_total", "counter", "Executor jobs finished, by kind and result.");
    for (unsigned k = 0; k < PROM_JOB_KINDS; k++) {
        if (!s_kind_shown(g, k))
            continue;
        fputs("tide_jobs_total{kind=", out);
        s_kind_label(out, k);
        fprintf(out, ",result=\"succeeded\"} %" PRIu64 "\n", g->jobs_succeeded[k]);
        fputs("tide_jobs_total{kind=", out);
        s_kind_label(out, k);
        fprintf(out, ",result=\"failed\"} %" PRIu64 "\n", g->jobs_failed[k]);
    }
}

char *prom_render(const agg_t *agg, const Tide__V1__MetricsSnapshot *snap, const bus_gauges_t *g,
                  uint64_t dropped_frames, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    if (!out)
        return NULL;
    s_render_counters(out, agg);
    if (snap)
        s_render_snapshot(out, snap);
    s_render_bus(out, g);
    s_head(out, "tide_dropped_frames_total", "counter",
           "Malformed frames dropped by tide-metrics (all sockets).");
    fprintf(out, "tide_dropped_frames_total %" PRIu64 "\n", dropped_frames);
    bool failed = ferror(out) != 0;
    if (fclose(out) != 0 || failed) {
        free(buf);
        return NULL;
    }
    if (len)
        *len = size;
    return buf;
}
