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

/* Frames larger than this are dropped unread (a ProxyStats for 1000 instances is ~100 KB). */
#define MSG_MAX_FRAME (4u << 20)

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

/* Packs msg and sends [topic][bytes] on sock. Returns 0, or -EIO when ZeroMQ refused the
 * message (for PUB that only happens on a closed socket; a full HWM drops silently). */
int msg_send(zsock_t *sock, const char *topic, const ProtobufCMessage *msg);

/* A received, decoded, checked message. */
typedef struct {
    char topic[64];
    ProtobufCMessage *msg; /* owned: free with msg_in_free */
} msg_in_t;

/* Receives one message from sock (call when the poller says it is readable). On success
 * returns 0 and fills *in; the caller owns in->msg. A message whose frame count, topic, size,
 * protobuf encoding or field values are wrong is dropped: it is counted, logged once per kind
 * and -EBADMSG is returned with in->msg NULL. -EAGAIN when nothing could be read. */
int msg_recv(zsock_t *sock, msg_in_t *in);

/* msg_recv that also hands back the frames as received, on success only (*raw is NULL
 * otherwise): a forwarder sends them on unchanged (zmsg_send) instead of packing in->msg
 * again. The caller owns *raw (zmsg_send or zmsg_destroy). */
int msg_recv_raw(zsock_t *sock, msg_in_t *in, zmsg_t **raw);

/* Frees in->msg and sets it to NULL; nothing on NULL. */
void msg_in_free(msg_in_t *in);

/* Decodes bytes as the type of topic and checks values. Returns the message (caller frees with
 * protobuf_c_message_free_unpacked) or NULL, with a static reason in *why. */
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
