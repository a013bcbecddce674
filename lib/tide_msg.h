/* tide_msg.h - tide's bus framing: [topic][protobuf bytes] over czmq sockets.
 *
 * One table maps every topic to its protobuf message type and a validity check, so every
 * receiver decodes and checks messages the same way, and a malformed frame is dropped,
 * counted and logged once per kind instead of crashing anything. */
#ifndef TIDE_MSG_H
#define TIDE_MSG_H

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "tide.pb-c.h"

/* Pub/sub topics. */
#define TOPIC_STATS           "stats"
#define TOPIC_SNAPSHOT        "metrics.snapshot"
#define TOPIC_SCALER_STATE    "scaler.state"
#define TOPIC_SCALER_DECISION "scaler.decision"
#define TOPIC_SCALER_POOL     "scaler.pool"
#define TOPIC_EXEC_JOB        "exec.job"
#define TOPIC_PROFILE         "profile"
/* Request/reply "topics" (first frame on REQ/REP sockets). */
#define TOPIC_CONTROL_REQ "scaler.control"
#define TOPIC_CONTROL_REP "scaler.control.reply"
#define TOPIC_EXEC_REQ    "exec.request"
#define TOPIC_EXEC_REP    "exec.reply"

/* ---- size limits --------------------------------------------------------------------------
 * MSG_MAX_LIST: entries in any repeated field. Four times the most instances a service can have
 * (scaler.max <= 1000), for instances still draining and for a LIST that also reports exited
 * ones.
 *
 * MSG_MAX_FRAME: the largest payload frame. Every socket that receives refuses a bigger frame
 * before buffering it (ZMQ_MAXMSGSIZE, set by msg_socket_limits): libzmq reads the frame's
 * length, closes that peer's connection and never allocates the frame; tide sees nothing (so
 * it logs nothing per frame) and keeps serving its other peers. The largest messages tide
 * sends, at MSG_MAX_LIST entries and every field at its longest (tests/unit/test_msg.c builds
 * them and checks they pass):
 *   - a JobRecord (exec.reply, exec.job) of a LIST: 4096 results with a 511-byte detail,
 *     1000 output lines of 1000 bytes (executor/jobs.h), 4096 requested instances: 4.3 MB;
 *   - a ProxyStats for 4096 instances, every counter and bucket at 2^64-1: 2.0 MB.
 * 8 MiB leaves them twice the room.
 *
 * MSG_MAX_UNPACKED: what protobuf-c may allocate to unpack one message (malloc's own overhead
 * counted). The same maxima unpack to at most 5.9 MB; garbage expands much more (a 2-byte empty
 * InstanceStats becomes an 80-byte struct, so a full frame of them would ask for 416 MB), and
 * decoding stops at this budget, before the repeated fields are checked. */
#define MSG_MAX_LIST     4096u
#define MSG_MAX_FRAME    (8u << 20)
#define MSG_MAX_UNPACKED (16u << 20)

/* A sender's identity and sequence counter: fills the Header every message starts with. */
typedef struct {
    char sender[96];
    uint64_t seq;
    Tide__V1__Header header;
} msg_sender_t;

/* Sets the sender id to "<program>/<id>" and the sequence to 0. */
void msg_sender_init(msg_sender_t *self, const char *program, const char *id);

/* Advances the sequence and stamps the wall clock. Returns a header owned by self, valid until
 * the next call: point the outgoing message's header field at it. */
Tide__V1__Header *msg_sender_next(msg_sender_t *self);

/* Sets the receive limits on sock (ZMQ_MAXMSGSIZE = MSG_MAX_FRAME). Call on every socket that
 * receives, before it binds or connects: the option applies to connections made afterwards. */
void msg_socket_limits(zsock_t *sock);

/* Packs msg and sends [topic][bytes] on sock. Returns 0; -EMSGSIZE (logged once) when the
 * packed message is larger than MSG_MAX_FRAME, which every receiver would refuse; -EIO when
 * ZeroMQ refused the message (for PUB that only happens on a closed socket; a full HWM drops
 * silently). */
int msg_send(zsock_t *sock, const char *topic, const ProtobufCMessage *msg);

/* A received, decoded, checked message. */
typedef struct {
    char topic[64];
    ProtobufCMessage *msg; /* owned: free with msg_in_free */
    char peer[48];         /* the sender's CURVE public key (User-Id), "" without CURVE */
} msg_in_t;

/* Receives one message from sock (call when the poller says it is readable). On success
 * returns 0 and fills *in; the caller owns in->msg. A message whose frame count, topic, size,
 * protobuf encoding or field values are wrong is dropped: it is counted, logged once per kind
 * and -EBADMSG is returned with in->msg NULL. -EAGAIN when nothing could be read. */
int msg_recv(zsock_t *sock, msg_in_t *in);

/* Decodes and checks a received [topic][payload] message, as msg_recv does; zm stays the
 * caller's. Same results as msg_recv (0 or -EBADMSG, counted and logged once per kind). */
int msg_parse(zmsg_t *zm, msg_in_t *in);

/* msg_recv that also hands back the frames as received, on success only (*raw is NULL
 * otherwise): a forwarder sends them on unchanged (zmsg_send) instead of packing in->msg
 * again. The caller owns *raw (zmsg_send or zmsg_destroy). */
int msg_recv_raw(zsock_t *sock, msg_in_t *in, zmsg_t **raw);

/* Frees in->msg and sets it to NULL; nothing on NULL. */
void msg_in_free(msg_in_t *in);

/* Decodes bytes as the type of topic and checks values. Refuses len > MSG_MAX_FRAME and stops
 * unpacking past MSG_MAX_UNPACKED bytes of allocations. Returns the message (caller frees with
 * protobuf_c_message_free_unpacked(m, NULL)) or NULL, with a static reason in *why. */
ProtobufCMessage *msg_decode(const char *topic, const uint8_t *data, size_t len, const char **why);

/* The protobuf descriptor for topic, or NULL for an unknown topic. */
const ProtobufCMessageDescriptor *msg_descriptor(const char *topic);

/* Malformed frames dropped by this process so far (all sockets, all kinds). */
uint64_t msg_dropped_total(void);

/* Prints msg as one JSON object (no newline). Enum values print as their names. */
void msg_print_json(FILE *out, const ProtobufCMessage *msg);

/* Prints msg as compact one-line text "field=value ..." with nested messages in braces. */
void msg_print_text(FILE *out, const ProtobufCMessage *msg);

/* Enum names without their prefix, for logs: "IDLE", "SCALE_UP", "SUCCEEDED" ... */
const char *msg_state_name(Tide__V1__State s);
const char *msg_job_kind_name(Tide__V1__JobKind k);
const char *msg_job_state_name(Tide__V1__JobState s);

#endif
