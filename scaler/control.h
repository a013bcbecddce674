/* control.h - the scaler.control REP socket: status, pause, resume, scale N, bounds.
 *
 * Every request gets exactly one ControlReply, garbage included (ok=false, "malformed
 * request"), so the REP socket never wedges. */
#ifndef SCALER_CONTROL_H
#define SCALER_CONTROL_H

#include <stdint.h>

#include "fsm.h"
#include "store.h"
#include "tide_config.h"
#include "tide_msg.h"

typedef struct {
    const tide_config_t *cfg;
    const store_t *store; /* pool addresses as written to Redis (placement may differ from
                             app.host); NULL: app.host:base_port+N */
    msg_sender_t *sender;
    int64_t wall_offset_ms; /* wall clock minus the fsm's clock, for the times in status */
    const char *not_ready;  /* when the fsm is not restored yet: why (sent as the error) */
    /* CMD_PROFILE: sends a PROFILE job for instance; returns 0 with its id in job_id, or a
     * negative errno with the reason in err. NULL: profiles are refused. */
    int (*profile)(void *arg, const char *instance, uint32_t seconds, uint64_t now_ms, char *job_id,
                   size_t idlen, char *err, size_t errlen);
    void *profile_arg;
} control_ctx_t;

/* Reads one request from rep (call when it is readable) and answers it. fsm may be NULL
 * before the start-up read of Redis; requests are then answered ok=false with ctx->not_ready.
 * The fsm's actions go to *acts (zeroed first) for the caller to perform. Returns 0 when a
 * reply was sent, -EAGAIN when nothing was read, -EIO when the reply could not be sent. */
int control_serve(zsock_t *rep, fsm_t *fsm, const control_ctx_t *ctx, uint64_t now_ms,
                  fsm_actions_t *acts);

/* A ScalerStatus with the storage its pointers refer to. */
typedef struct {
    Tide__V1__ScalerStatus msg;
    Tide__V1__ScalerDecision decision;
    char reason[200];
    Tide__V1__PoolEntry *entries;
    Tide__V1__PoolEntry **ptrs;
    char (*text)[2][280];
} control_status_t;

/* Fills st->msg from the fsm. The pool arrays are allocated (on OOM the pool is left empty);
 * free them with control_status_free. st->msg points into the fsm: use it before the next
 * event. */
void control_status_fill(control_status_t *st, fsm_t *fsm, const control_ctx_t *ctx);
void control_status_free(control_status_t *st);

#endif
