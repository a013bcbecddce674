/* app_misbehave.c - failing and crashing on demand (see app_misbehave.h). */
#include "app_misbehave.h"

#include "app_cost.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_uint_fast32_t s_share_ppm;
static atomic_uint_fast32_t s_cpu_us = MISBEHAVE_FAIL_CPU_US;
static atomic_uint_fast64_t s_seen;       /* ordinary requests seen while failing */
static volatile uintptr_t s_nowhere = 16; /* an address in the unmapped first page */

/* "0", "1", "0.5", ".25": a decimal in [0, 1] with up to 6 digits after the point, into parts
 * per million. Returns false for anything else. */
static bool s_parse_share(const char *s, size_t len, uint32_t *ppm)
{
    size_t i = 0;
    uint32_t whole = 0, frac = 0, scale = 1000000;
    bool digits = false;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        whole = whole * 10 + (uint32_t)(s[i++] - '0');
        digits = true;
        if (whole > 1)
            return false;
    }
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (scale == 1)
                return false; /* more than 6 decimals */
            scale /= 10;
            frac += (uint32_t)(s[i++] - '0') * scale;
            digits = true;
        }
    }
    if (!digits || i != len || whole * 1000000 + frac > 1000000)
        return false;
    *ppm = whole * 1000000 + frac;
    return true;
}

static bool s_parse_uint(const char *s, size_t len, uint32_t max, uint32_t *out)
{
    if (len == 0 || len > 9)
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

sample_route_t misbehave_route(const http_req_t *req, uint32_t *share_ppm, uint32_t *cpu_us)
{
    const char *p = req->path;
    size_t n = req->path_len;
    if (n < 8 || memcmp(p, "/_sample", 8) != 0 || (n > 8 && p[8] != '/'))
        return SAMPLE_NONE;
    if (n == 8 || (n == 9 && p[8] == '/'))
        return SAMPLE_SHOW;
    bool fail = n == 13 && memcmp(p + 8, "/fail", 5) == 0;
    bool crash = n == 14 && memcmp(p + 8, "/crash", 6) == 0;
    if (!fail && !crash)
        return SAMPLE_NOT_FOUND;
    if (!req->post)
        return SAMPLE_METHOD;
    if (crash)
        return SAMPLE_CRASH;
    bool have_share = false;
    *cpu_us = MISBEHAVE_FAIL_CPU_US;
    for (size_t i = 0; i < req->query_len;) {
        const char *kv = req->query + i;
        const char *amp = memchr(kv, '&', req->query_len - i);
        size_t len = amp ? (size_t)(amp - kv) : req->query_len - i;
        i += len + 1;
        if (len > 6 && memcmp(kv, "share=", 6) == 0)
            have_share = s_parse_share(kv + 6, len - 6, share_ppm);
        else if (len > 7 && memcmp(kv, "cpu_us=", 7) == 0) {
            if (!s_parse_uint(kv + 7, len - 7, MISBEHAVE_CPU_US_MAX, cpu_us))
                return SAMPLE_BAD_ARG;
        } else if (len > 0) {
            return SAMPLE_BAD_ARG;
        }
        if ((len > 6 && memcmp(kv, "share=", 6) == 0) && !have_share)
            return SAMPLE_BAD_ARG;
    }
    return have_share ? SAMPLE_FAIL : SAMPLE_BAD_ARG;
}

void misbehave_set_fail(uint32_t share_ppm, uint32_t cpu_us)
{
    atomic_store(&s_cpu_us, cpu_us);
    atomic_store(&s_seen, 0);
    atomic_store(&s_share_ppm, share_ppm);
}

size_t misbehave_describe(char *buf, size_t cap)
{
    uint32_t ppm = (uint32_t)atomic_load(&s_share_ppm);
    int n = snprintf(buf, cap, "fail_share=%u.%06u fail_cpu_us=%u\n", ppm / 1000000, ppm % 1000000,
                     (unsigned)atomic_load(&s_cpu_us));
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

__attribute__((noinline)) void sample_fail_burn(uint64_t ns)
{
    cost_burn(ns);
}

bool misbehave_fail_now(void)
{
    uint64_t ppm = atomic_load(&s_share_ppm);
    if (ppm == 0)
        return false;
    /* Request k fails when floor((k + 1) * share) > floor(k * share): exactly share of them,
     * evenly spread. */
    uint64_t k = atomic_fetch_add(&s_seen, 1);
    if ((k + 1) * ppm / 1000000 == k * ppm / 1000000)
        return false;
    sample_fail_burn((uint64_t)atomic_load(&s_cpu_us) * 1000u);
    return true;
}

__attribute__((noinline)) void sample_crash_now(void)
{
    /* The kernel's own action for the fault (terminate, dump core where the host allows):
     * a sanitizer build installs a SEGV handler that would print a report and exit 1 instead. */
    signal(SIGSEGV, SIG_DFL);
    /* A store to an unmapped page: a real SIGSEGV in this frame (not a null pointer, which the
     * compiler and UBSan may treat as undefined behaviour rather than a fault). */
    *(volatile int *)s_nowhere = 1;
    abort(); /* not reached */
}
