/* timeouts.h - any number of deadlines of a few fixed lengths on one libuv timer (each proxy
 * worker keeps its clients' timeouts in one).
 *
 * Each length (a "class": the idle keep-alive timeout, the header timeout, ...) has its own
 * list. An entry set in a class is due at now + that length and goes to the tail of the
 * class's list; since the loop's clock never goes back, every list stays in deadline order.
 * Setting, moving and cancelling are O(1) pointer updates, and the one timer only ever
 * needs the earliest head of the lists.
 *
 * Why not a uv_timer_t per connection: that handle is 152 bytes, which is most of what an
 * idle keep-alive client would cost beyond its socket (10,000 idle clients: 1.5 MB), and
 * every re-arm is a heap operation. An entry here is 24 bytes. */
#ifndef PROXY_TIMEOUTS_H
#define PROXY_TIMEOUTS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "list.h"

#define TIMEOUTS_CLASSES 8

typedef struct timeout {
    list_node_t node; /* in its class's list; linked to itself when not set */
    uint64_t due;     /* loop time (ms) it expires at, while set */
} timeout_t;

typedef struct timeouts timeouts_t;

/* Called for an entry that came due; it is no longer set (it may be set again). */
typedef void (*timeout_cb)(timeouts_t *tos, timeout_t *t);

/* Public, and set up with init/close rather than new/destroy, because, like the libuv handle
 * it holds, it lives inside its owner (the worker) and is closed through the loop. */
struct timeouts {
    uv_timer_t timer;
    uint64_t armed_for; /* the due time the timer is running for; 0: not running */
    timeout_cb cb;
    int nclasses;
    uint64_t len_ms[TIMEOUTS_CLASSES];
    list_node_t lists[TIMEOUTS_CLASSES];
};

/* Starts empty on loop with the lengths (ms) of n classes (n <= TIMEOUTS_CLASSES); class k
 * is len_ms[k] (0 counts as 1 ms, so an entry set again from cb is never due at once). cb is
 * called for each entry that comes due. */
void timeouts_init(timeouts_t *self, uv_loop_t *loop, const uint64_t *len_ms, int n, timeout_cb cb);

/* Prepares an entry (not set). */
void timeout_init(timeout_t *t);

/* Sets t due now + the length of class (moving it when it was set already). */
void timeouts_set(timeouts_t *self, timeout_t *t, int cls);

/* Unsets t; nothing when it is not set. */
void timeout_cancel(timeout_t *t);

bool timeout_is_set(const timeout_t *t);

/* Closes the timer (every entry must have been cancelled); close_cb as for uv_close. */
void timeouts_close(timeouts_t *self, uv_close_cb close_cb);

#endif
