/* fsm.h - the scaler's state machine (IDLE, BUSY, READY, UP), start-up reconcile included.
 *
 * Pure: every function takes an event and the time (any monotonic millisecond clock) and
 * answers with actions in fsm_actions_t; the caller (scaler.c) performs them: writes Redis,
 * publishes, talks to the executor, and feeds the outcome back as further events. No sockets,
 * no Redis, no clock reads here, so every transition is unit-tested (test_fsm.c).
 *
 * The caller must perform the actions in this order: persist (with the pool when pool_changed,
 * then fsm_on_pool_written), publish the pool, publish transitions and the decision, then send
 * the job or the status poll. Persisting before sending means a crash after the send leaves the
 * job id in Redis, so the next start asks the executor about it instead of losing it.
 *
 * Instances are tracked by index N of "<name_prefix>N"; names and addresses are the caller's. */
#ifndef SCALER_FSM_H
#define SCALER_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "names.h"
#include "policy.h"
#include "tide.pb-c.h"
#include "tide_config.h"

#define FSM_JOB_ID_MAX 128
#define FSM_TRANS_MAX  4
#define FSM_REASON_MAX 200

typedef struct {
    policy_config_t policy;      /* min/max here are the configured bounds */
    uint32_t settle_ms;          /* READY -> UP */
    uint32_t job_deadline_ms;    /* sent with each job (the executor's deadline) */
    uint32_t deadline_grace_ms;  /* the scaler gives up at job_deadline_ms + this */
    uint32_t up_cleanup_ms;      /* + this for a scale up: the executor's cleanup run after it */
    uint32_t poll_ms;            /* job status poll while no FINISHED event came */
    uint32_t backoff_initial_ms; /* after a failure, doubled per failure in a row */
    uint32_t backoff_max_ms;
    uint32_t drain_deadline_ms; /* stop draining instances after this even if not drained */
    uint32_t stale_ms;          /* a metrics.snapshot older than this: hold */
    bool reconcile_adopt;       /* on start: adopt running instances missing from the pool */
    /* Health checks: a LIST job while stable, whose answer is applied like the reconcile's
     * (instances not running leave the pool; running but unhealthy ones leave it and are
     * stopped), after which the policy replaces what is missing. */
    double suspect_error_rate;  /* an instance failing this share of its requests is suspect */
    uint32_t suspect_grace_ms;  /* ... once it has been in the pool this long (the error rate
                                   covers the panic window, which may predate it) */
    uint32_t check_gap_ms;      /* fewest ms between two health checks */
    uint32_t check_interval_ms; /* a health check this often even with no suspect; 0 = never */
    char job_prefix[96];        /* job ids are "<job_prefix>-<seq>" */
    char name_prefix[32];       /* for reasons in logs only */
} fsm_config_t;

/* Fills cfg from tide.yml. job_prefix should be unique across restarts (id and start time). */
void fsm_config_from_tide(fsm_config_t *cfg, const tide_config_t *tide, const char *job_prefix);

/* What is persisted (Redis) and read back at start. */
typedef struct {
    Tide__V1__State state;
    char job_id[FSM_JOB_ID_MAX]; /* the job in flight (or being prepared) when BUSY */
    uint64_t since_ms;           /* fsm_record: the fsm's clock; the caller converts */
    uint32_t desired, current;
    bool paused;
    bool pinned; /* "scale N" in force */
    uint32_t forced;
    bool bounds_set; /* min/max were set by "bounds" (else the config's apply) */
    uint32_t min, max;
    uint32_t n_pool;
    uint16_t pool[NAMES_MAX]; /* indices in the pool, ascending */
    uint32_t n_stopping;
    uint16_t stopping[NAMES_MAX]; /* out of the pool, still to be stopped, ascending */
    uint64_t pool_version;
} fsm_record_t;

/* One instance in a job record, its name already mapped to an index (-1: not ours). */
typedef struct {
    int index;
    bool ok;
    bool running;
    /* A list reported it running at an address that is not the one tide gives it (another
     * host or port: scaler/placement.c). Such an instance is left alone: not adopted, not
     * stopped, and a pool member keeps its entry (at its known address). */
    bool unverified;
} fsm_result_t;

/* A job record from the executor (exec.job FINISHED, or a status/submit reply). */
typedef struct {
    const char *job_id;
    Tide__V1__JobKind kind;
    Tide__V1__JobState state;
    const char *error;
    const fsm_result_t *results;
    size_t n_results;
    const int *instances; /* what the job was asked to act on (indices, -1 = not ours) */
    size_t n_instances;
} fsm_job_result_t;

typedef enum {
    FSM_ERR_REFUSED,     /* the executor refused the job: nothing was started */
    FSM_ERR_UNKNOWN_JOB, /* the executor does not know the job (it restarted): outcome unknown */
    FSM_ERR_UNREACHABLE, /* the request was never answered: outcome unknown */
} fsm_err_t;

typedef struct {
    Tide__V1__State from, to; /* equal for notices that are not transitions (pause, drained) */
    char reason[FSM_REASON_MAX];
    /* as they were right after this transition */
    uint32_t current, desired;
    bool paused;
    char job_id[FSM_JOB_ID_MAX]; /* the job in flight or being prepared ("" when none) */
} fsm_transition_t;

typedef struct {
    bool persist;      /* write fsm_record() (state hash; with the pool when pool_changed) */
    bool pool_changed; /* the pool changed: write it, bump pool_version, publish scaler.pool */
    bool send_job;     /* submit fsm_job() */
    bool poll_job;     /* ask the executor for the status of fsm_job()->id */
    bool pub_decision; /* publish fsm_decision() */
    size_t n_trans;
    fsm_transition_t trans[FSM_TRANS_MAX];
} fsm_actions_t;

typedef struct {
    char id[FSM_JOB_ID_MAX];
    Tide__V1__JobKind kind;
    uint32_t deadline_ms;
    uint32_t n;
    uint16_t idx[NAMES_MAX];
} fsm_job_t;

typedef struct {
    Tide__V1__State state;
    uint64_t since_ms;
    uint32_t current, desired, min, max;
    bool paused, pinned;
    uint32_t forced;
    bool reconciling;
    const char *job_id;        /* "" when none */
    uint64_t backoff_until_ms; /* 0 when none */
    uint32_t failures;         /* in a row */
    const char *last_error;
    uint64_t pool_version;
    uint32_t n_stopping;
} fsm_status_t;

typedef struct _fsm_t fsm_t;

/* Creates a state machine that does nothing until fsm_restore. NULL on OOM. */
fsm_t *fsm_new(const fsm_config_t *cfg);

/* Destroys *self_p and sets it to NULL; nothing on NULL. */
void fsm_destroy(fsm_t **self_p);

/* Start-up: takes the persisted record (a zeroed one when Redis was empty) and begins the
 * reconcile: asks the executor about a job left in flight, then lists the running instances.
 * Scaling starts only once the list has been applied. */
void fsm_restore(fsm_t *self, const fsm_record_t *rec, uint64_t now_ms, fsm_actions_t *acts);

/* A metrics.snapshot arrived. */
void fsm_on_snapshot(fsm_t *self, double rps_stable, double rps_panic, uint32_t stable_window_s,
                     uint64_t now_ms, fsm_actions_t *acts);

/* Per-instance errors from a metrics.snapshot (InstanceMetrics.error_rate: 5xx responses and
 * upstream errors per request over the panic window). An instance in the pool for at least
 * suspect_grace_ms whose rate is at least suspect_error_rate becomes suspect: at the next stable
 * moment (no job, not paused, no backoff, check_gap_ms after the last check) a health check
 * lists every instance. Call it for each instance of a snapshot before fsm_on_snapshot, which
 * starts the check. A killed instance is noticed this way as long as traffic reaches it (the
 * proxies retry its requests elsewhere, so clients see no failure). */
void fsm_note_errors(fsm_t *self, int index, double error_rate, uint64_t now_ms);

/* Timers: settle, deadlines, polls, backoff, drain. drained is drain_drained() for the names
 * and version of fsm_draining() (false when nothing drains). */
void fsm_on_tick(fsm_t *self, uint64_t now_ms, bool drained, fsm_actions_t *acts);

/* A job record. Ignored unless it is for the job in flight. A record of another kind or
 * other instances than the job sent (its id was already the executor's for something else) is
 * taken as a refusal: the job never ran. Otherwise ignored until it is terminal. */
void fsm_on_job_result(fsm_t *self, const fsm_job_result_t *r, uint64_t now_ms,
                       fsm_actions_t *acts);

/* The executor refused the job, does not know it, or never answered its submission. Ignored
 * unless job_id is the job in flight. */
void fsm_on_job_error(fsm_t *self, const char *job_id, fsm_err_t err, const char *reason,
                      uint64_t now_ms, fsm_actions_t *acts);

/* The pool was written to Redis and pool_version is now version (the INCR's answer). Starts
 * the drain clock of a scale down. */
void fsm_on_pool_written(fsm_t *self, uint64_t version, uint64_t now_ms);

/* Control. Each returns 0, or -EINVAL with a reason in err (nothing changed). */
int fsm_pause(fsm_t *self, uint64_t now_ms, fsm_actions_t *acts);
int fsm_resume(fsm_t *self, uint64_t now_ms, fsm_actions_t *acts);
int fsm_scale(fsm_t *self, uint32_t count, uint64_t now_ms, char *err, size_t errlen,
              fsm_actions_t *acts);
int fsm_bounds(fsm_t *self, uint32_t min, uint32_t max, uint64_t now_ms, char *err, size_t errlen,
               fsm_actions_t *acts);

/* Read side. Pointers stay owned by self and valid until the next event. */
Tide__V1__State fsm_state(const fsm_t *self);
uint32_t fsm_current(const fsm_t *self);
bool fsm_in_pool(const fsm_t *self, int index);
bool fsm_restored(const fsm_t *self);
/* The job in flight or being prepared, or NULL. */
const fsm_job_t *fsm_job(const fsm_t *self);
/* The scale down whose instances are draining (out of the pool, written), with the pool
 * version the proxies must reach; NULL when nothing drains. */
const fsm_job_t *fsm_draining(const fsm_t *self, uint64_t *version);
/* The last policy decision and the rates it saw; NULL before the first. */
const policy_decision_t *fsm_decision(const fsm_t *self, double *rps_stable, double *rps_panic);
void fsm_record(const fsm_t *self, fsm_record_t *rec);
void fsm_status(const fsm_t *self, fsm_status_t *st);
const policy_config_t *fsm_policy(const fsm_t *self);

#endif
