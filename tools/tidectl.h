/* tidectl.h - tidectl's subcommands (private to tools/): each writes to the streams it is
 * given and returns the process exit status, so tests drive them in-process. */
#ifndef TIDE_TOOLS_TIDECTL_H
#define TIDE_TOOLS_TIDECTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tide_config.h"
#include "tide_msg.h"

/* Exit statuses. */
#define CTL_OK    0
#define CTL_FAIL  1 /* no answer, refused, malformed reply */
#define CTL_USAGE 2 /* bad arguments or config */

/* What every subcommand needs. */
typedef struct {
    const tide_config_t *cfg;
    msg_sender_t *sender; /* stamps requests */
    int timeout_ms;       /* REQ: how long to wait for the answer; watch: how long to run
                             (-1 = the default: 3000 ms for REQ, forever for watch) */
    bool json;
    FILE *out, *err;
} ctl_t;

#define CTL_REQ_TIMEOUT_MS 3000

/* Subscribes to cfg's metrics, scaler_events and executor_events publishers (every topic, or
 * only those starting with one of topics[0..n_topics)) and prints each message on one line
 * until SIGINT/SIGTERM, `count` messages (0 = no limit) or ctl->timeout_ms. Malformed frames
 * are dropped (counted, logged once per kind on stderr). Returns CTL_OK, or CTL_FAIL when a
 * socket cannot be set up. */
int ctl_watch(const ctl_t *ctl, const char *const *topics, size_t n_topics, unsigned long count);

/* Sends one command to the scaler's control socket and prints the outcome: status prints the
 * whole status (or its JSON); the others print "ok" and the resulting status line (or the
 * whole reply as JSON). Returns CTL_OK, or CTL_FAIL with the reason on ctl->err when the
 * scaler does not answer in time, refuses, or answers garbage. */
int ctl_control(const ctl_t *ctl, Tide__V1__Command command, uint32_t count, uint32_t min,
                uint32_t max);

/* Sends req on a fresh REQ socket to endpoint and waits ctl->timeout_ms for the answer. On
 * CTL_OK *reply holds the decoded answer (caller frees with msg_in_free); otherwise the reason
 * is on ctl->err and reply->msg is NULL. peer names the other side in messages ("scaler"). */
int ctl_request(const ctl_t *ctl, const char *peer, const char *endpoint, const char *topic,
                const ProtobufCMessage *req, const char *reply_topic, msg_in_t *reply);

/* Stamps req's header and sends it to the scaler's control socket (ctl_request). */
int ctl_scaler_request(const ctl_t *ctl, Tide__V1__ControlRequest *req, msg_in_t *reply);

/* tidectl profile NAME: asks the scaler to profile instance for seconds (0: the config's
 * default), waits for the executor's job to end, and prints the profile's id and files (or
 * its record as JSON). Returns CTL_OK, or CTL_FAIL with the reason on ctl->err (refused, the
 * job failed, no answer). */
int ctl_profile_take(const ctl_t *ctl, const char *instance, uint32_t seconds);

/* tidectl profiles: every profile, newest first, one line each (id, instance, reason, time,
 * samples, baseline) or one JSON object per line. Returns CTL_OK. */
int ctl_profiles_list(const ctl_t *ctl);

/* tidectl profile get ID: copies the profile's file (flame.svg, or diff.svg, stacks.folded,
 * crash.txt as what says) to path, or to ctl->out when path is NULL. Returns CTL_OK, or
 * CTL_FAIL with the reason on ctl->err (unknown id, no such file in it, a write error). */
int ctl_profile_get(const ctl_t *ctl, const char *id, const char *what, const char *path);

/* Asks the executor for the record of job_id and prints it. Returns as ctl_control. */
int ctl_job_status(const ctl_t *ctl, const char *job_id);

/* One watch line: "HH:MM:SS.mmm topic sender#seq field=value ..." (the header's stamp, local
 * time), or {"topic":...,"msg":{...}} with json. No newline. msg's header is restored after.
 * In text, a job record's output_tail is not on the line: a FAILED job's follows it, one line
 * per output line, each "    | LINE" (so the playbook's error reads as it was printed). */
void ctl_print_message(FILE *out, const char *topic, ProtobufCMessage *msg, bool json);

/* A job record in text, on one line without its output_tail. No newline. rec is restored. */
void ctl_print_record(FILE *out, Tide__V1__JobRecord *rec);

/* The record's output_tail, "\n    | LINE" per line (nothing when empty). */
void ctl_print_tail(FILE *out, const Tide__V1__JobRecord *rec);

/* The scaler's status, several "key: value" lines. now_wall_ms dates "since" and "backoff". */
void ctl_print_status(FILE *out, const Tide__V1__ScalerStatus *st, uint64_t now_wall_ms);

/* The status on one line: "state=UP current=3 desired=3 min=1 max=10 paused=no ...". */
void ctl_print_status_line(FILE *out, const Tide__V1__ScalerStatus *st);

#endif
