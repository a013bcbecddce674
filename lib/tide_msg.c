/* tide_msg.c - bus framing, decoding with checks, and generic printing of messages. */
#include "tide_msg.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "tide_clock.h"
#include "tide_log.h"

void msg_sender_init(msg_sender_t *self, const char *program, const char *id)
{
    memset(self, 0, sizeof *self);
    snprintf(self->sender, sizeof self->sender, "%s/%s", program, id);
}

Tide__V1__Header *msg_sender_next(msg_sender_t *self)
{
    tide__v1__header__init(&self->header);
    self->header.sender = self->sender;
    self->header.seq = ++self->seq;
    self->header.ts_ms = clock_wall_ms();
    return &self->header;
}

void msg_socket_limits(zsock_t *sock)
{
    zsock_set_maxmsgsize(sock, (int)MSG_MAX_FRAME);
}

int msg_send(zsock_t *sock, const char *topic, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > MSG_MAX_FRAME) {
        /* Every receiver would close the connection over it: a bug in the sender, said here. */
        log_once_per_kind("send-oversized", "refused to send a message larger than the bus limit",
                          topic);
        return -EMSGSIZE;
    }
    zframe_t *frame = zframe_new(NULL, len);
    if (!frame)
        return -ENOMEM;
    protobuf_c_message_pack(msg, zframe_data(frame));
    zmsg_t *zm = zmsg_new();
    zmsg_addstr(zm, topic);
    zmsg_append(zm, &frame);
    if (zmsg_send(&zm, sock) != 0) {
        zmsg_destroy(&zm);
        return -EIO;
    }
    return 0;
}

/* ---- checks: garbage occasionally unpacks without error, so look at the values ---------- */

#define MAX_LIST MSG_MAX_LIST
#define MAX_TEXT 4096

static bool s_text_ok(const char *s)
{
    return s == NULL || strnlen(s, MAX_TEXT + 1) <= MAX_TEXT;
}

static bool s_header_ok(const Tide__V1__Header *h)
{
    return h && h->sender && h->sender[0] && s_text_ok(h->sender) && h->seq > 0;
}

static bool s_instance_ok(const Tide__V1__Instance *in)
{
    return in && in->name && s_text_ok(in->name) && s_text_ok(in->host) && in->port <= 65535;
}

static bool s_record_ok(const Tide__V1__JobRecord *r)
{
    if (!r)
        return true;
    if ((unsigned)r->kind > TIDE__V1__JOB_KIND__JOB_STATUS ||
        (unsigned)r->state > TIDE__V1__JOB_STATE__JOB_FAILED || r->n_results > MAX_LIST ||
        r->n_output_tail > MAX_LIST || r->n_instances > MAX_LIST || !s_text_ok(r->error))
        return false;
    for (size_t i = 0; i < r->n_results; i++)
        if (r->results[i]->instance && !s_instance_ok(r->results[i]->instance))
            return false;
    for (size_t i = 0; i < r->n_instances; i++)
        if (!s_instance_ok(r->instances[i]))
            return false;
    return true;
}

static bool s_decision_ok(const Tide__V1__ScalerDecision *d)
{
    return !d || (isfinite(d->rps_stable) && isfinite(d->rps_panic) && s_text_ok(d->reason));
}

static const char *s_check(const char *topic, const ProtobufCMessage *m)
{
    if (strcmp(topic, TOPIC_STATS) == 0) {
        const Tide__V1__ProxyStats *s = (const void *)m;
        if (!s_header_ok(s->header))
            return "bad header";
        if (s->n_instances > MAX_LIST || s->n_latency_buckets > 64)
            return "too many entries";
        for (size_t i = 0; i < s->n_instances; i++)
            if (!s->instances[i]->name || !s_text_ok(s->instances[i]->name) ||
                s->instances[i]->n_latency_buckets > 64)
                return "bad instance";
        return NULL;
    }
    if (strcmp(topic, TOPIC_SNAPSHOT) == 0) {
        const Tide__V1__MetricsSnapshot *s = (const void *)m;
        if (!s_header_ok(s->header))
            return "bad header";
        if (!isfinite(s->rps_stable) || !isfinite(s->rps_panic) || s->rps_stable < 0 ||
            s->rps_panic < 0 || s->n_instances > MAX_LIST)
            return "bad values";
        /* The scaler acts on per-instance error rates: NaN or out-of-range values must not
         * reach a comparison that would read them as healthy or failing. */
        for (size_t i = 0; i < s->n_instances; i++) {
            const Tide__V1__InstanceMetrics *im = s->instances[i];
            if (!im->name || !s_text_ok(im->name) || !isfinite(im->rps_stable) ||
                !isfinite(im->rps_panic) || im->rps_stable < 0 || im->rps_panic < 0 ||
                !isfinite(im->error_rate) || im->error_rate < 0 || im->error_rate > 1 ||
                !isfinite(im->p50_ms) || !isfinite(im->p99_ms))
                return "bad instance metrics";
        }
        return NULL;
    }
    if (strcmp(topic, TOPIC_SCALER_STATE) == 0) {
        const Tide__V1__ScalerState *s = (const void *)m;
        if (!s_header_ok(s->header) || (unsigned)s->state > TIDE__V1__STATE__STATE_UP ||
            (unsigned)s->previous > TIDE__V1__STATE__STATE_UP)
            return "bad values";
        return NULL;
    }
    if (strcmp(topic, TOPIC_SCALER_DECISION) == 0) {
        const Tide__V1__ScalerDecision *s = (const void *)m;
        return s_header_ok(s->header) && s_decision_ok(s) ? NULL : "bad values";
    }
    if (strcmp(topic, TOPIC_SCALER_POOL) == 0) {
        const Tide__V1__ScalerPool *s = (const void *)m;
        if (!s_header_ok(s->header) || s->n_entries > MAX_LIST || s->n_draining > MAX_LIST)
            return "bad values";
        for (size_t i = 0; i < s->n_entries; i++)
            if (!s->entries[i]->name || !s->entries[i]->addr || !s->entries[i]->name[0])
                return "bad pool entry";
        return NULL;
    }
    if (strcmp(topic, TOPIC_EXEC_JOB) == 0) {
        const Tide__V1__JobEvent *s = (const void *)m;
        if (!s_header_ok(s->header) || !s->job_id || !s->job_id[0] ||
            (unsigned)s->type > TIDE__V1__JOB_EVENT_TYPE__JOB_EVENT_FINISHED ||
            !s_text_ok(s->line) || !s_record_ok(s->job))
            return "bad values";
        return NULL;
    }
    if (strcmp(topic, TOPIC_PROFILE) == 0) {
        const Tide__V1__Profile *s = (const void *)m;
        if (!s_header_ok(s->header) || !s->id || !s->id[0] || !s_text_ok(s->id) ||
            !s_text_ok(s->instance) || !s_text_ok(s->reason) || !s_text_ok(s->detail) ||
            !isfinite(s->unknown_share) || s->unknown_share < 0 || s->unknown_share > 1)
            return "bad values";
        return NULL;
    }
    if (strcmp(topic, TOPIC_CONTROL_REQ) == 0) {
        const Tide__V1__ControlRequest *s = (const void *)m;
        if (!s_header_ok(s->header) || (unsigned)s->command > TIDE__V1__COMMAND__CMD_PROFILE ||
            !s_text_ok(s->instance))
            return "bad values";
        return NULL;
    }
    if (strcmp(topic, TOPIC_CONTROL_REP) == 0) {
        const Tide__V1__ControlReply *s = (const void *)m;
        if (!s_header_ok(s->header) || !s_text_ok(s->error))
            return "bad values";
        if (s->status && ((unsigned)s->status->state > TIDE__V1__STATE__STATE_UP ||
                          !s_decision_ok(s->status->last_decision)))
            return "bad status";
        return NULL;
    }
    if (strcmp(topic, TOPIC_EXEC_REQ) == 0) {
        const Tide__V1__ExecRequest *s = (const void *)m;
        if (!s_header_ok(s->header) || (unsigned)s->kind > TIDE__V1__JOB_KIND__JOB_STATUS ||
            s->kind == TIDE__V1__JOB_KIND__JOB_UNKNOWN || !s->job_id || !s->job_id[0] ||
            strlen(s->job_id) > 128 || s->n_instances > MAX_LIST ||
            (s->profile && (!s_text_ok(s->profile->reason) || !s_text_ok(s->profile->detail))))
            return "bad values";
        for (size_t i = 0; i < s->n_instances; i++)
            if (!s_instance_ok(s->instances[i]))
                return "bad instance";
        return NULL;
    }
    if (strcmp(topic, TOPIC_EXEC_REP) == 0) {
        const Tide__V1__ExecReply *s = (const void *)m;
        if (!s_header_ok(s->header) || !s_text_ok(s->reason) || !s_record_ok(s->job))
            return "bad values";
        return NULL;
    }
    return "unknown topic";
}

static const struct {
    const char *topic;
    const ProtobufCMessageDescriptor *desc;
} s_topics[] = {
    {TOPIC_STATS, &tide__v1__proxy_stats__descriptor},
    {TOPIC_SNAPSHOT, &tide__v1__metrics_snapshot__descriptor},
    {TOPIC_SCALER_STATE, &tide__v1__scaler_state__descriptor},
    {TOPIC_SCALER_DECISION, &tide__v1__scaler_decision__descriptor},
    {TOPIC_SCALER_POOL, &tide__v1__scaler_pool__descriptor},
    {TOPIC_EXEC_JOB, &tide__v1__job_event__descriptor},
    {TOPIC_PROFILE, &tide__v1__profile__descriptor},
    {TOPIC_CONTROL_REQ, &tide__v1__control_request__descriptor},
    {TOPIC_CONTROL_REP, &tide__v1__control_reply__descriptor},
    {TOPIC_EXEC_REQ, &tide__v1__exec_request__descriptor},
    {TOPIC_EXEC_REP, &tide__v1__exec_reply__descriptor},
};

const ProtobufCMessageDescriptor *msg_descriptor(const char *topic)
{
    for (size_t i = 0; i < sizeof s_topics / sizeof s_topics[0]; i++)
        if (strcmp(s_topics[i].topic, topic) == 0)
            return s_topics[i].desc;
    return NULL;
}

/* protobuf-c allocates through this while unpacking: it counts what malloc really takes and
 * refuses once the message's budget is spent, so unpack fails (and frees what it had) instead
 * of expanding a small frame of empty repeated entries into hundreds of megabytes. */
typedef struct {
    size_t used;
    bool over;
} budget_t;

#define MALLOC_OVERHEAD 16 /* glibc's chunk header, and its minimum chunk */

static void *s_budget_alloc(void *data, size_t size)
{
    budget_t *b = data;
    size_t cost = (size < MALLOC_OVERHEAD ? MALLOC_OVERHEAD : size) + MALLOC_OVERHEAD;
    if (size > MSG_MAX_UNPACKED || cost > MSG_MAX_UNPACKED - b->used) {
        b->over = true;
        return NULL;
    }
    void *p = malloc(size ? size : 1);
    if (p)
        b->used += cost;
    return p;
}

static void s_budget_free(void *data, void *p)
{
    (void)data;
    free(p); /* the message is later freed with the default allocator: same malloc */
}

/* protobuf-c keeps fields it does not know, and takes a tag of field number 0 (which no
 * encoder writes) as one when it is spelled in more than one byte; packed again it is one byte,
 * which protobuf-c then refuses. So a message repacked by one program would be dropped by the
 * next: refuse field 0 here, at every depth (tide.proto nests four deep, never recursively). */
static bool s_wire_ok(const ProtobufCMessage *m, int depth)
{
    if (depth > 8)
        return false;
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return false;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const ProtobufCMessage *const *v =
                *(const ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (!s_wire_ok(v[k], depth + 1))
                    return false;
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)(base + f->offset);
            if (sub && !s_wire_ok(sub, depth + 1))
                return false;
        }
    }
    return true;
}

ProtobufCMessage *msg_decode(const char *topic, const uint8_t *data, size_t len, const char **why)
{
    const ProtobufCMessageDescriptor *desc = msg_descriptor(topic);
    if (!desc) {
        *why = "unknown topic";
        return NULL;
    }
    if (len > MSG_MAX_FRAME) {
        *why = "frame too large";
        return NULL;
    }
    budget_t budget = {0, false};
    ProtobufCAllocator alloc = {s_budget_alloc, s_budget_free, &budget};
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, &alloc, len, data);
    if (!m) {
        *why = budget.over ? "unpacks past the size limit" : "protobuf decode failed";
        return NULL;
    }
    if (!s_wire_ok(m, 0)) {
        protobuf_c_message_free_unpacked(m, NULL);
        *why = "protobuf decode failed";
        return NULL;
    }
    const char *bad = s_check(topic, m);
    if (bad) {
        protobuf_c_message_free_unpacked(m, NULL);
        *why = bad;
        return NULL;
    }
    return m;
}

static atomic_uint_fast64_t s_dropped;

uint64_t msg_dropped_total(void)
{
    return atomic_load(&s_dropped);
}

static int s_drop(const char *kind, const char *detail)
{
    atomic_fetch_add(&s_dropped, 1);
    log_once_per_kind(kind, "dropped a malformed message", detail);
    return -EBADMSG;
}

int msg_recv(zsock_t *sock, msg_in_t *in)
{
    return msg_recv_raw(sock, in, NULL);
}

int msg_parse(zmsg_t *zm, msg_in_t *in)
{
    in->msg = NULL;
    in->topic[0] = '\0';
    const char *peer = zmsg_size(zm) ? zframe_meta(zmsg_first(zm), "User-Id") : NULL;
    snprintf(in->peer, sizeof in->peer, "%s", peer ? peer : "");
    if (zmsg_size(zm) != 2)
        return s_drop("frame-count", "expected [topic][payload]");
    zframe_t *tf = zmsg_first(zm);
    zframe_t *pf = zmsg_next(zm);
    size_t tlen = zframe_size(tf);
    if (tlen == 0 || tlen >= sizeof in->topic)
        return s_drop("topic", "empty or oversized topic frame");
    memcpy(in->topic, zframe_data(tf), tlen);
    in->topic[tlen] = '\0';
    if (strlen(in->topic) != tlen)
        return s_drop("topic", "NUL byte in topic");
    const char *why = NULL;
    in->msg = msg_decode(in->topic, zframe_data(pf), zframe_size(pf), &why);
    if (!in->msg) {
        /* The kind names the failure, not the topic text, which an attacker controls. */
        bool big =
            strcmp(why, "frame too large") == 0 || strcmp(why, "unpacks past the size limit") == 0;
        return s_drop(strcmp(why, "unknown topic") == 0            ? "unknown-topic"
                      : strcmp(why, "protobuf decode failed") == 0 ? "protobuf"
                      : big                                        ? "oversized"
                                                                   : "bad-values",
                      why);
    }
    return 0;
}

int msg_recv_raw(zsock_t *sock, msg_in_t *in, zmsg_t **raw)
{
    in->msg = NULL;
    in->topic[0] = '\0';
    if (raw)
        *raw = NULL;
    zmsg_t *zm = zmsg_recv_nowait(sock);
    if (!zm)
        return -EAGAIN;
    int rc = msg_parse(zm, in);
    if (rc == 0 && raw)
        *raw = zm;
    else
        zmsg_destroy(&zm);
    return rc;
}

void msg_in_free(msg_in_t *in)
{
    if (in && in->msg) {
        protobuf_c_message_free_unpacked(in->msg, NULL);
        in->msg = NULL;
    }
}

/* ---- generic printing through the descriptors ------------------------------------------- */

static void s_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", out);
        else if (*p == '\t')
            fputs("\\t", out);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static void s_print_value(FILE *out, const ProtobufCFieldDescriptor *f, const void *p, bool json);

static void s_print_message(FILE *out, const ProtobufCMessage *m, bool json)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    bool first = true;
    fputs(json ? "{" : "", out);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            if (!json && n == 0)
                continue;
            const char *arr = *(const char *const *)(base + f->offset);
            size_t esz = f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE
                             ? sizeof(void *)
                         : f->type == PROTOBUF_C_TYPE_DOUBLE || f->type == PROTOBUF_C_TYPE_UINT64 ||
                                 f->type == PROTOBUF_C_TYPE_INT64
                             ? 8
                         : f->type == PROTOBUF_C_TYPE_BOOL ? sizeof(protobuf_c_boolean)
                                                           : 4;
            fprintf(out, json ? "%s\"%s\":[" : "%s%s=[", first ? "" : json ? "," : " ", f->name);
            for (size_t k = 0; k < n; k++) {
                if (k)
                    fputs(json ? "," : " ", out);
                s_print_value(out, f, arr + k * esz, json);
            }
            fputs("]", out);
        } else {
            const void *p = base + f->offset;
            if (!json) {
                /* Text form: leave out empty strings and unset messages to stay short. */
                if ((f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) &&
                    *(const void *const *)p == NULL)
                    continue;
                if (f->type == PROTOBUF_C_TYPE_STRING && **(const char *const *)p == '\0')
                    continue;
            }
            fprintf(out, json ? "%s\"%s\":" : "%s%s=", first ? "" : json ? "," : " ", f->name);
            s_print_value(out, f, p, json);
        }
        first = false;
    }
    fputs(json ? "}" : "", out);
}

static void s_print_value(FILE *out, const ProtobufCFieldDescriptor *f, const void *p, bool json)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)p;
        if (json || (s && strpbrk(s, " \t\"=")))
            s_json_string(out, s);
        else
            fputs(s ? s : "", out);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)p;
        if (!sub) {
            fputs(json ? "null" : "{}", out);
        } else {
            fputs(json ? "" : "{", out);
            s_print_message(out, sub, json);
            fputs(json ? "" : "}", out);
        }
        break;
    }
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value((const ProtobufCEnumDescriptor *)f->descriptor, v);
        if (ev)
            fprintf(out, json ? "\"%s\"" : "%s", ev->name);
        else
            fprintf(out, "%d", v);
        break;
    }
    case PROTOBUF_C_TYPE_BOOL:
        fputs(*(const protobuf_c_boolean *)p ? "true" : "false", out);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        fprintf(out, "%" PRIu32, *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        fprintf(out, "%" PRId32, *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        fprintf(out, "%" PRIu64, *(const uint64_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        fprintf(out, "%" PRId64, *(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_DOUBLE: {
        double v = *(const double *)p;
        fprintf(out, isfinite(v) ? "%.6g" : "0", v);
        break;
    }
    case PROTOBUF_C_TYPE_FLOAT: {
        double v = *(const float *)p;
        fprintf(out, isfinite(v) ? "%.6g" : "0", v);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES:
        fprintf(out, json ? "\"<%zu bytes>\"" : "<%zu bytes>",
                ((const ProtobufCBinaryData *)p)->len);
        break;
    }
}

void msg_print_json(FILE *out, const ProtobufCMessage *msg)
{
    s_print_message(out, msg, true);
}

void msg_print_text(FILE *out, const ProtobufCMessage *msg)
{
    s_print_message(out, msg, false);
}

const char *msg_state_name(Tide__V1__State s)
{
    switch (s) {
    case TIDE__V1__STATE__STATE_IDLE:
        return "IDLE";
    case TIDE__V1__STATE__STATE_BUSY:
        return "BUSY";
    case TIDE__V1__STATE__STATE_READY:
        return "READY";
    case TIDE__V1__STATE__STATE_UP:
        return "UP";
    default:
        return "?";
    }
}

const char *msg_job_kind_name(Tide__V1__JobKind k)
{
    switch (k) {
    case TIDE__V1__JOB_KIND__JOB_SCALE_UP:
        return "SCALE_UP";
    case TIDE__V1__JOB_KIND__JOB_SCALE_DOWN:
        return "SCALE_DOWN";
    case TIDE__V1__JOB_KIND__JOB_PROFILE:
        return "PROFILE";
    case TIDE__V1__JOB_KIND__JOB_LIST:
        return "LIST";
    case TIDE__V1__JOB_KIND__JOB_STATUS:
        return "STATUS";
    default:
        return "UNKNOWN";
    }
}

const char *msg_job_state_name(Tide__V1__JobState s)
{
    switch (s) {
    case TIDE__V1__JOB_STATE__JOB_PENDING:
        return "PENDING";
    case TIDE__V1__JOB_STATE__JOB_RUNNING:
        return "RUNNING";
    case TIDE__V1__JOB_STATE__JOB_SUCCEEDED:
        return "SUCCEEDED";
    case TIDE__V1__JOB_STATE__JOB_FAILED:
        return "FAILED";
    default:
        return "?";
    }
}
