/* msg_seeds.c - writes the seed corpora of fuzz_msg: a few typical messages of every topic, as
 * tide's programs send them, one file each under DIR/<topic>/ (and all of them, prefixed with
 * the topic byte fuzz_msg reads without TIDE_FUZZ_TOPIC, under DIR/any/). Generated at each
 * run instead of committed as binary files, so they follow tide.proto.
 *
 * usage: msg_seeds DIR */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tide_hist.h"
#include "tide_msg.h"

static const char *s_dir;
static msg_sender_t s_sender;
static int s_count;

static const char *const s_topics[] = {
    TOPIC_STATS,       TOPIC_SNAPSHOT, TOPIC_SCALER_STATE, TOPIC_SCALER_DECISION,
    TOPIC_SCALER_POOL, TOPIC_EXEC_JOB, TOPIC_PROFILE,      TOPIC_CONTROL_REQ,
    TOPIC_CONTROL_REP, TOPIC_EXEC_REQ, TOPIC_EXEC_REP,
};
#define N_TOPICS (sizeof s_topics / sizeof s_topics[0])

static void s_mkdir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
}

static void s_write(const char *path, const uint8_t *prefix, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || (prefix && fwrite(prefix, 1, 1, f) != 1) || (len && fwrite(buf, 1, len, f) != len) ||
        fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* Writes m as seed n of topic; it must pass the checks (a seed tide drops is no seed). */
static void s_seed(const char *topic, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        exit(1);
    protobuf_c_message_pack(m, buf);
    const char *why = NULL;
    ProtobufCMessage *back = msg_decode(topic, buf, len, &why);
    if (!back) {
        fprintf(stderr, "msg_seeds: a %s seed does not pass: %s\n", topic, why);
        exit(1);
    }
    protobuf_c_message_free_unpacked(back, NULL);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", s_dir, topic);
    s_mkdir(path);
    snprintf(path, sizeof path, "%s/%s/seed-%02d", s_dir, topic, s_count);
    s_write(path, NULL, buf, len);
    for (size_t i = 0; i < N_TOPICS; i++)
        if (strcmp(s_topics[i], topic) == 0) {
            uint8_t t = (uint8_t)i;
            snprintf(path, sizeof path, "%s/any/seed-%02d", s_dir, s_count);
            s_write(path, &t, buf, len);
        }
    s_count++;
    free(buf);
}

static void s_stats(void)
{
    Tide__V1__Counters tot = TIDE__V1__COUNTERS__INIT, c0 = TIDE__V1__COUNTERS__INIT;
    tot.requests = 1200;
    tot.status_2xx = 1180;
    tot.status_5xx = 20;
    tot.upstream_errors = 3;
    tot.bytes_in = 90000;
    tot.bytes_out = 640000;
    c0 = tot;
    uint64_t buckets[HIST_BUCKETS] = {0, 3, 40, 500, 600, 50, 7};
    Tide__V1__InstanceStats i0 = TIDE__V1__INSTANCE_STATS__INIT, i1 = i0;
    i0.name = "production0";
    i0.addr = "127.0.0.1:9101";
    i0.counters = &c0;
    i0.in_flight = 4;
    i0.n_latency_buckets = HIST_BUCKETS;
    i0.latency_buckets = buckets;
    i0.in_pool = true;
    i1 = i0;
    i1.name = "production1";
    i1.addr = "127.0.0.1:9102";
    i1.in_pool = false;
    Tide__V1__InstanceStats *insts[] = {&i0, &i1};
    Tide__V1__ProxyStats s = TIDE__V1__PROXY_STATS__INIT;
    s.header = msg_sender_next(&s_sender);
    s.started_ms = s.header->ts_ms - 5000;
    s.pool_version = 4;
    s.totals = &tot;
    s.in_flight = 4;
    s.n_instances = 2;
    s.instances = insts;
    s.n_latency_buckets = HIST_BUCKETS;
    s.latency_buckets = buckets;
    s.connections = 9;
    s_seed(TOPIC_STATS, &s.base);
    s.header = msg_sender_next(&s_sender);
    s.n_instances = 0;
    s_seed(TOPIC_STATS, &s.base); /* an empty pool */
}

static void s_snapshot(void)
{
    Tide__V1__InstanceMetrics im = TIDE__V1__INSTANCE_METRICS__INIT;
    im.name = "production0";
    im.addr = "127.0.0.1:9101";
    im.rps_stable = 41.5;
    im.rps_panic = 60;
    im.in_flight = 3;
    im.p50_ms = 21;
    im.p99_ms = 80;
    im.error_rate = 0.02;
    Tide__V1__InstanceMetrics *ims[] = {&im};
    Tide__V1__MetricsSnapshot s = TIDE__V1__METRICS_SNAPSHOT__INIT;
    s.header = msg_sender_next(&s_sender);
    s.stable_window_s = 60;
    s.panic_window_s = 6;
    s.rps_stable = 41.5;
    s.rps_panic = 60;
    s.rps_last = 58;
    s.p50_ms = 21;
    s.p90_ms = 50;
    s.p99_ms = 80;
    s.rate_2xx = 57;
    s.rate_5xx = 1;
    s.proxies = 1;
    s.in_flight = 3;
    s.n_instances = 1;
    s.instances = ims;
    s.stable_covered_s = 60;
    s.dropped_frames = 2;
    s_seed(TOPIC_SNAPSHOT, &s.base);
}

static void s_scaler(void)
{
    Tide__V1__ScalerState st = TIDE__V1__SCALER_STATE__INIT;
    st.header = msg_sender_next(&s_sender);
    st.state = TIDE__V1__STATE__STATE_BUSY;
    st.previous = TIDE__V1__STATE__STATE_UP;
    st.reason = "desired 3 > current 2";
    st.current = 2;
    st.desired = 3;
    st.job_id = "scaler-host-1-7";
    s_seed(TOPIC_SCALER_STATE, &st.base);

    Tide__V1__ScalerDecision d = TIDE__V1__SCALER_DECISION__INIT;
    d.header = msg_sender_next(&s_sender);
    d.policy = "target";
    d.current = 2;
    d.desired = 3;
    d.rps_stable = 250;
    d.rps_panic = 400;
    d.panicking = true;
    d.reason = "panic window 400 rps";
    s_seed(TOPIC_SCALER_DECISION, &d.base);

    Tide__V1__PoolEntry e0 = TIDE__V1__POOL_ENTRY__INIT, e1 = e0;
    e0.name = "production0";
    e0.addr = "127.0.0.1:9101";
    e1.name = "production1";
    e1.addr = "127.0.0.1:9102";
    Tide__V1__PoolEntry *entries[] = {&e0, &e1};
    char *draining[] = {"production2"};
    Tide__V1__ScalerPool p = TIDE__V1__SCALER_POOL__INIT;
    p.header = msg_sender_next(&s_sender);
    p.version = 9;
    p.n_entries = 2;
    p.entries = entries;
    p.n_draining = 1;
    p.draining = draining;
    s_seed(TOPIC_SCALER_POOL, &p.base);

    for (int cmd = 0; cmd <= TIDE__V1__COMMAND__CMD_PROFILE; cmd++) {
        Tide__V1__ControlRequest r = TIDE__V1__CONTROL_REQUEST__INIT;
        r.header = msg_sender_next(&s_sender);
        r.command = (Tide__V1__Command)cmd;
        r.count = 3;
        r.min = 1;
        r.max = 6;
        r.instance = cmd == TIDE__V1__COMMAND__CMD_PROFILE ? "production0" : "";
        r.seconds = 5;
        s_seed(TOPIC_CONTROL_REQ, &r.base);
    }

    Tide__V1__ScalerStatus ss = TIDE__V1__SCALER_STATUS__INIT;
    ss.state = TIDE__V1__STATE__STATE_UP;
    ss.current = 2;
    ss.desired = 2;
    ss.min = 1;
    ss.max = 6;
    ss.policy = "target";
    ss.last_decision = &d;
    ss.n_pool = 2;
    ss.pool = entries;
    ss.pool_version = 9;
    ss.last_error = "scale up failed: deadline";
    ss.consecutive_failures = 1;
    ss.state_since_ms = 1700000000000;
    Tide__V1__ControlReply rep = TIDE__V1__CONTROL_REPLY__INIT;
    rep.header = msg_sender_next(&s_sender);
    rep.ok = true;
    rep.status = &ss;
    s_seed(TOPIC_CONTROL_REP, &rep.base);
    rep.header = msg_sender_next(&s_sender);
    rep.ok = false;
    rep.status = NULL;
    rep.error = "malformed request";
    s_seed(TOPIC_CONTROL_REP, &rep.base);
}

static void s_executor(void)
{
    Tide__V1__Instance in0 = TIDE__V1__INSTANCE__INIT, in1 = in0;
    in0.name = "production2";
    in0.host = "127.0.0.1";
    in0.port = 9103;
    in1 = in0;
    in1.name = "production1";
    in1.port = 9102;
    Tide__V1__Instance *insts[] = {&in0, &in1};
    Tide__V1__ProfileSpec spec = TIDE__V1__PROFILE_SPEC__INIT;
    spec.reason = "errors";
    spec.seconds = 5;
    spec.detail = "error rate 0.50 for 5 s";

    for (int kind = TIDE__V1__JOB_KIND__JOB_SCALE_UP; kind <= TIDE__V1__JOB_KIND__JOB_STATUS;
         kind++) {
        Tide__V1__ExecRequest r = TIDE__V1__EXEC_REQUEST__INIT;
        r.header = msg_sender_next(&s_sender);
        r.kind = (Tide__V1__JobKind)kind;
        r.job_id = "scaler-host-1-8";
        r.n_instances = kind == TIDE__V1__JOB_KIND__JOB_LIST      ? 0
                        : kind == TIDE__V1__JOB_KIND__JOB_PROFILE ? 2
                                                                  : 1;
        r.instances = insts;
        r.deadline_ms = 120000;
        r.profile = kind == TIDE__V1__JOB_KIND__JOB_PROFILE ? &spec : NULL;
        s_seed(TOPIC_EXEC_REQ, &r.base);
    }

    Tide__V1__InstanceResult res = TIDE__V1__INSTANCE_RESULT__INIT, res2;
    res.instance = &in0;
    res.ok = true;
    res.running = true;
    res.detail = "ready after 1.2 s";
    res2 = res;
    res2.instance = &in1;
    res2.running = false;
    res2.exited_pid = 4242;
    res2.detail = "exited: signal 11";
    Tide__V1__InstanceResult *results[] = {&res, &res2};
    char *tail[] = {"PLAY [scale up] ****", "TASK [wait for health] ok", "PLAY RECAP ok=3"};
    Tide__V1__JobRecord rec = TIDE__V1__JOB_RECORD__INIT;
    rec.job_id = "scaler-host-1-8";
    rec.kind = TIDE__V1__JOB_KIND__JOB_LIST;
    rec.state = TIDE__V1__JOB_STATE__JOB_SUCCEEDED;
    rec.started_ms = 1700000000000;
    rec.finished_ms = 1700000001200;
    rec.n_results = 2;
    rec.results = results;
    rec.n_output_tail = 3;
    rec.output_tail = tail;
    rec.n_instances = 1;
    rec.instances = insts;

    Tide__V1__ExecReply xr = TIDE__V1__EXEC_REPLY__INIT;
    xr.header = msg_sender_next(&s_sender);
    xr.accepted = true;
    xr.job = &rec;
    s_seed(TOPIC_EXEC_REP, &xr.base);
    xr.header = msg_sender_next(&s_sender);
    xr.accepted = false;
    xr.reason = "unknown instance production9";
    xr.job = NULL;
    s_seed(TOPIC_EXEC_REP, &xr.base);

    Tide__V1__JobEvent ev = TIDE__V1__JOB_EVENT__INIT;
    ev.header = msg_sender_next(&s_sender);
    ev.job_id = "scaler-host-1-8";
    ev.type = TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_STARTED;
    rec.state = TIDE__V1__JOB_STATE__JOB_RUNNING;
    ev.job = &rec;
    s_seed(TOPIC_EXEC_JOB, &ev.base);
    ev.header = msg_sender_next(&s_sender);
    ev.type = TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_OUTPUT;
    ev.line = "TASK [start production2] changed";
    ev.job = NULL;
    s_seed(TOPIC_EXEC_JOB, &ev.base);
    ev.header = msg_sender_next(&s_sender);
    ev.type = TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_FINISHED;
    ev.line = "";
    rec.state = TIDE__V1__JOB_STATE__JOB_FAILED;
    rec.error = "deadline";
    ev.job = &rec;
    s_seed(TOPIC_EXEC_JOB, &ev.base);

    Tide__V1__Profile pr = TIDE__V1__PROFILE__INIT;
    pr.header = msg_sender_next(&s_sender);
    pr.id = "20261204-185800-production0-errors";
    pr.service = "web";
    pr.instance = "production0";
    pr.host = "127.0.0.1";
    pr.reason = "errors";
    pr.detail = "error rate 0.50 for 5 s";
    pr.from_ms = 1700000000000;
    pr.to_ms = 1700000005000;
    pr.rate_hz = 49;
    pr.samples = 245;
    pr.unknown_share = 0.1;
    pr.baseline = "production1";
    pr.baseline_samples = 240;
    pr.dir = "/var/lib/tide/profiles/20261204-185800-production0-errors";
    pr.command = "tide-sample-app";
    s_seed(TOPIC_PROFILE, &pr.base);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: msg_seeds DIR\n");
        return 2;
    }
    s_dir = argv[1];
    s_mkdir(s_dir);
    char any[1024];
    snprintf(any, sizeof any, "%s/any", s_dir);
    s_mkdir(any);
    msg_sender_init(&s_sender, "seeds", "1");
    s_stats();
    s_snapshot();
    s_scaler();
    s_executor();
    printf("msg_seeds: %d seeds under %s\n", s_count, s_dir);
    return 0;
}
