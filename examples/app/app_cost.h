/* app_cost.h - what a request costs: a FIFO admission gate (--concurrency) and CPU burnt on
 * worker threads (--cpu-us). The wall-clock delay (--delay-ms) is a timer in the server's
 * event loops instead, so sleeping requests hold no thread.
 *
 * A job goes: cost_submit -> waits for a slot (FIFO) -> burns CPU on a worker -> ready
 * callback -> (the caller's delay) -> cost_release, which hands its slot to the next job. */
#ifndef APP_COST_H
#define APP_COST_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef struct cost_job cost_job_t;
struct cost_job {
    cost_job_t *next; /* owned by the cost module while the job is inside it */
};

/* Called once per submitted job when it holds a slot and its CPU is spent. It runs on a
 * worker thread (when cpu_us > 0) or on the thread that called cost_submit or cost_release;
 * it must not call back into the cost module while holding its own locks. */
typedef void(cost_ready_fn)(cost_job_t *job, void *arg);

typedef struct cost cost_t;

/* Creates the gate (concurrency 0 = no limit) and, when cpu_us > 0, starts that many worker threads
 * to burn it. Returns NULL if memory or threads ran out (errno says which). */
cost_t *cost_new(long concurrency, long cpu_us, int workers, cost_ready_fn *ready, void *arg);

/* Stops and joins the workers (a job being burnt is finished first, queued ones are dropped),
 * then frees everything. Jobs still inside are not touched: they belong to the caller. Does
 * nothing when *self_p is NULL; sets it to NULL. */
void cost_destroy(cost_t **self_p);

/* Stops the workers as cost_destroy does, so no ready callback runs after it returns; submits
 * after it queue jobs that never become ready. */
void cost_stop(cost_t *self);

/* Queues job behind earlier ones; the ready callback runs once it has a slot and its CPU. The
 * job stays owned by the caller but must not be freed until ready has run for it. */
void cost_submit(cost_t *self, cost_job_t *job);

/* Gives back the slot of a job whose ready callback ran; the next waiting job gets it (its
 * ready callback may run on this thread before this returns). */
void cost_release(cost_t *self);

/* Adds between two looks at the clock: a few microseconds, so a burn's samples land in the
 * burning function itself rather than in clock_gettime (libc and the vDSO keep no frame
 * pointer, and a stack walked from there skips the function that called them). */
#define COST_BURN_STEP 8192

/* Spins until this thread has used ns of CPU time (not wall time: on a busy machine a request
 * still costs what was asked, which is what an autoscaler should see). Always inlined, so the
 * samples of a burn belong to the named function that asked for it. */
static inline __attribute__((always_inline)) void cost_burn(uint64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec, end = now + ns;
    volatile uint64_t sink = 0;
    while (now < end) {
        for (int i = 0; i < COST_BURN_STEP; i++)
            sink += (uint64_t)i;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    (void)sink;
}

/* Burns ns of this thread's CPU time: a request's --cpu-us. Not static and never inlined, so a
 * profile of the app names it. */
void sample_request_work(uint64_t ns);

/* Jobs waiting for a slot right now, for logs. */
int cost_waiting(cost_t *self);

#endif
