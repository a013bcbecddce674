/* balancer.h - instance choice: least outstanding requests between two random choices.
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
    bool down;          /* marked down after a failed connect: only when every other is down */
} balancer_cand_t;

/* "Power of two choices": among the candidates that are neither excluded nor down (or, when
 * all the rest are down, among the down ones), two distinct ones are drawn uniformly with rnd
 * and the one with fewer requests in flight wins (a tie goes to either, at random). With one
 * candidate left it is the answer. Two random choices keep every worker from piling onto the
 * same least-loaded instance between two stats updates, and cost O(1) draws per request.
 * Returns the index in cands, or -1 when none may be chosen. */
int balancer_pick(const balancer_cand_t *cands, size_t n, uint64_t rnd);

/* xorshift64*: the per-worker random source. state must start non-zero. */
uint64_t balancer_random(uint64_t *state);

#endif
