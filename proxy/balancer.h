/* balancer.h - instance choice: least outstanding requests, ties broken at random.
 *
 * Pure: the caller passes each candidate's outstanding count and whether it may be chosen, so
 * the rule is unit-tested without sockets (test_balancer.c). */
#ifndef PROXY_BALANCER_H
#define PROXY_BALANCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t in_flight; /* requests sent to it whose response has not finished */
    bool excluded;      /* never choose it (the instance a retry is moving away from) */
    bool down;          /* its last connect failed: choose it only when every other is down */
} balancer_cand_t;

/* Index of the candidate with the fewest requests in flight among those neither excluded nor
 * down (or, when all the rest are down, among the down ones); among equals the one picked by
 * rnd, uniformly. Every candidate is looked at: pools are small (tens), and an exact minimum
 * spreads load better than two random choices at that size. Returns -1 when none may be
 * chosen. */
int balancer_pick(const balancer_cand_t *cands, size_t n, uint64_t rnd);

/* xorshift64*: the per-worker random source for tie-breaks. state must start non-zero. */
uint64_t balancer_random(uint64_t *state);

#endif
