/* balancer.c - least outstanding requests with random tie-breaks (see balancer.h). */
#include "balancer.h"

static int s_pick(const balancer_cand_t *c, size_t n, uint64_t rnd, bool allow_down)
{
    uint32_t best = UINT32_MAX;
    size_t ties = 0;
    int chosen = -1;
    for (size_t i = 0; i < n; i++) {
        if (c[i].excluded || (c[i].down && !allow_down))
            continue;
        if (c[i].in_flight < best) {
            best = c[i].in_flight;
            ties = 1;
            chosen = (int)i;
        } else if (c[i].in_flight == best) {
            /* Reservoir sampling over the ties: each keeps probability 1/ties. */
            ties++;
            rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
            if ((rnd >> 33) % ties == 0)
                chosen = (int)i;
        }
    }
    return chosen;
}

int balancer_pick(const balancer_cand_t *cands, size_t n, uint64_t rnd)
{
    int i = s_pick(cands, n, rnd, false);
    return i >= 0 ? i : s_pick(cands, n, rnd, true);
}

uint64_t balancer_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}
