/* fuzz_msg.c - libFuzzer target: arbitrary bytes as the payload of one bus message, through the
 * path every tide receiver takes (msg_parse: the frame checks, protobuf-c unpacking under the
 * size budget, the value checks), then what is done with a message that passes.
 *
 * The topic comes from TIDE_FUZZ_TOPIC (one ctest per topic, run_fuzz_msg.sh); without it,
 * byte 0 of the input picks the topic. For a message that passes:
 *   - it is printed as JSON and as text (tidectl watch prints every message it gets);
 *   - packed again, it must decode again and pack to the same bytes (tide-metrics forwards
 *     stats, and a sender that repacks a received message must not make it one others drop);
 *   - stats also go into tide-metrics' aggregator (metrics/aggregate.c) at a clock that moves
 *     on by the input, and the snapshot it then builds must pass the checks the scaler applies
 *     to metrics.snapshot: one hostile but well-formed stats frame must not make every later
 *     snapshot one the scaler drops. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "tide_log.h"
#include "tide_msg.h"

static const char *const s_topics[] = {
    TOPIC_STATS,       TOPIC_SNAPSHOT, TOPIC_SCALER_STATE, TOPIC_SCALER_DECISION,
    TOPIC_SCALER_POOL, TOPIC_EXEC_JOB, TOPIC_PROFILE,      TOPIC_CONTROL_REQ,
    TOPIC_CONTROL_REP, TOPIC_EXEC_REQ, TOPIC_EXEC_REP,
};
#define N_TOPICS (sizeof s_topics / sizeof s_topics[0])

static const char *s_topic; /* NULL: byte 0 picks */
static FILE *s_null;
static agg_t *s_agg;
static uint64_t s_now_ms = 1000000;
static msg_sender_t s_sender;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_init("fuzz", LOGL_ERROR); /* drops are logged at warn: keep the run quiet */
    const char *t = getenv("TIDE_FUZZ_TOPIC");
    if (t && *t) {
        for (size_t i = 0; i < N_TOPICS; i++)
            if (strcmp(s_topics[i], t) == 0)
                s_topic = s_topics[i];
        if (!s_topic) {
            fprintf(stderr, "fuzz_msg: unknown TIDE_FUZZ_TOPIC '%s'\n", t);
            exit(2);
        }
    }
    s_null = fopen("/dev/null", "w");
    agg_config_t acfg = {.stable_window_s = 60, .panic_window_s = 6, .stale_after_ms = 2000};
    s_agg = agg_new(&acfg);
    if (!s_null || !s_agg)
        abort();
    msg_sender_init(&s_sender, "metrics", "fuzz");
    return 0;
}

static void s_roundtrip(const char *topic, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        abort();
    protobuf_c_message_pack(m, buf);
    const char *why = NULL;
    ProtobufCMessage *again = msg_decode(topic, buf, len, &why);
    if (!again) {
        fprintf(stderr, "fuzz_msg: %s passed, but packed again it is dropped: %s\n", topic, why);
        abort();
    }
    size_t len2 = protobuf_c_message_get_packed_size(again);
    uint8_t *buf2 = malloc(len2 ? len2 : 1);
    if (!buf2)
        abort();
    protobuf_c_message_pack(again, buf2);
    if (len2 != len || memcmp(buf, buf2, len) != 0) {
        fprintf(stderr, "fuzz_msg: %s packs differently after a round trip\n", topic);
        abort();
    }
    free(buf2);
    free(buf);
    protobuf_c_message_free_unpacked(again, NULL);
}

/* What tide-metrics does with stats, and what the scaler then checks of the snapshot. */
static void s_aggregate(const Tide__V1__ProxyStats *st, uint8_t step)
{
    s_now_ms += (uint64_t)step * 37;
    agg_on_stats(s_agg, st, s_now_ms);
    Tide__V1__MetricsSnapshot *snap = agg_snapshot(s_agg, s_now_ms);
    if (!snap)
        abort();
    snap->header = msg_sender_next(&s_sender);
    size_t len = protobuf_c_message_get_packed_size(&snap->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        abort();
    protobuf_c_message_pack(&snap->base, buf);
    const char *why = NULL;
    ProtobufCMessage *back = msg_decode(TOPIC_SNAPSHOT, buf, len, &why);
    if (!back) {
        fprintf(stderr,
                "fuzz_msg: the snapshot after these stats is dropped by its "
                "receivers: %s\n",
                why);
        msg_print_json(stderr, &snap->base);
        fputc('\n', stderr);
        abort();
    }
    protobuf_c_message_free_unpacked(back, NULL);
    free(buf);
    agg_snapshot_destroy(&snap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *topic = s_topic;
    if (!topic) {
        if (size == 0)
            return 0;
        topic = s_topics[data[0] % N_TOPICS];
        data++;
        size--;
    }
    zmsg_t *zm = zmsg_new();
    zmsg_addstr(zm, topic);
    zmsg_addmem(zm, data, size);
    msg_in_t in;
    uint64_t dropped = msg_dropped_total();
    int rc = msg_parse(zm, &in);
    zmsg_destroy(&zm);
    if (rc != 0) {
        /* Dropped: counted, and nothing handed out. */
        if (in.msg || msg_dropped_total() != dropped + 1)
            abort();
        return 0;
    }
    msg_print_json(s_null, in.msg);
    msg_print_text(s_null, in.msg);
    s_roundtrip(topic, in.msg);
    if (strcmp(topic, TOPIC_STATS) == 0)
        s_aggregate((const Tide__V1__ProxyStats *)in.msg, size ? data[size - 1] : 0);
    msg_in_free(&in);
    return 0;
}
