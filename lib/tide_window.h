/* tide_window.h - a sliding window of per-second counter slots (stable and panic windows).
 *
 * A window holds the last `seconds` whole seconds, each slot a vector of `width` counters.
 * Adding to a second that has fallen out of the window is ignored; moving forward clears
 * the slots skipped over, so a quiet period reads as zeros, not as stale numbers. */
#ifndef TIDE_WINDOW_H
#define TIDE_WINDOW_H

#include <stddef.h>
#include <stdint.h>

typedef struct _window_t window_t;

/* Creates a window of `seconds` slots (1..3600) of `width` counters (1..256). Returns NULL on
 * bad arguments or out of memory. */
window_t *window_new(unsigned seconds, unsigned width);

/* Destroys *self_p and sets it to NULL; nothing on NULL. */
void window_destroy(window_t **self_p);

/* Adds values[0..width) into the slot of second `sec` (any monotonic second counter). */
void window_add(window_t *self, uint64_t sec, const uint64_t *values);

/* Sums the `last` seconds that end with second `now_sec` inclusive (last is clamped to the
 * window size) into out[0..width). Returns how many of those seconds lie at or after the first
 * second ever added (the coverage, 0..last), so callers can divide by real time, not by the
 * nominal window, while the window is still filling. */
unsigned window_sum(const window_t *self, uint64_t now_sec, unsigned last, uint64_t *out);

#endif
