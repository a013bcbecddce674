/* balancer.c - least outstanding requests between two random choices (see balancer.h). */
#include "balancer.h"

static bool s_ok(const balancer_cand_t *c, bool down)
{
    return !c->excluded && c->down == down;
}

/* The k-th (0-based) candidate that s_ok accepts. */
static size_t s_nth(const balancer_cand_t *c, size_t n, bool down, size_t k)
{
    for (size_t i = 0; i < n; i++)
        if (s_ok(&c[i], down) && k-- == 0)
            return i;
    return 0; /* not reached: k < the count */
}

static int s_pick(const balancer_cand_t *c, size_t n, uint64_t rnd, bool down)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += s_ok(&c[i], down);
    if (m == 0)
        return -1;
    if (m == 1)
        return (int)s_nth(c, n, down, 0);
    /* Two distinct draws from one 64-bit number: a uniform over m, b uniform over the m-1
     * others. The high bits of rnd are the better ones for xorshift64*. */
    uint64_t hi = rnd >> 32, lo = rnd & 0xffffffffu;
    size_t a = (size_t)(hi % m);
    size_t b = (size_t)((a + 1 + lo % (m - 1)) % m);
    size_t ia = m == n ? a : s_nth(c, n, down, a), ib = m == n ? b : s_nth(c, n, down, b);
    if (c[ia].in_flight != c[ib].in_flight)
        return (int)(c[ia].in_flight < c[ib].in_flight ? ia : ib);
    return (int)((rnd >> 31) & 1 ? ia : ib);
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
