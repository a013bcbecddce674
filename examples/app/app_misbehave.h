/* app_misbehave.h - the sample's misbehaviour on demand, so a profiler has something to find:
 * a share of ordinary requests fail with 500 while burning CPU in sample_fail_burn, and
 * POST /_sample/crash ends the process with a SIGSEGV from sample_crash_now. The switches are
 * per process and atomic (every event loop thread reads them).
 *
 * The functions named sample_* keep those names on purpose: tests look for them in profiles
 * and crash stacks. */
#ifndef APP_MISBEHAVE_H
#define APP_MISBEHAVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app_http.h"

#define MISBEHAVE_FAIL_CPU_US 2000   /* CPU a failing request burns unless told otherwise */
#define MISBEHAVE_CPU_US_MAX  100000 /* most a failing request may be told to burn */

/* What a /_sample request asks. */
typedef enum {
    SAMPLE_NONE,     /* not a /_sample path: an ordinary request */
    SAMPLE_SHOW,     /* /_sample: the switches as text */
    SAMPLE_FAIL,     /* POST /_sample/fail?share=S[&cpu_us=N] */
    SAMPLE_CRASH,    /* POST /_sample/crash */
    SAMPLE_BAD_ARG,  /* 400 */
    SAMPLE_METHOD,   /* 405: fail and crash want POST */
    SAMPLE_NOT_FOUND /* 404: another /_sample/ path */
} sample_route_t;

/* Maps a parsed request to a sample route (pure). For SAMPLE_FAIL, *share_ppm gets the share
 * in parts per million and *cpu_us the CPU per failing request. */
sample_route_t misbehave_route(const http_req_t *req, uint32_t *share_ppm, uint32_t *cpu_us);

/* Sets the failing share (0 turns failing off) and the CPU each failing request burns. */
void misbehave_set_fail(uint32_t share_ppm, uint32_t cpu_us);

/* The current switches, as "fail_share=0.5 fail_cpu_us=2000\n" into buf. Returns its length. */
size_t misbehave_describe(char *buf, size_t cap);

/* Whether this ordinary request fails: exactly share of them, spread evenly (a share of 0.5
 * fails every other one), so a test can count. When it returns true it has already burnt the
 * CPU (in sample_fail_burn). */
bool misbehave_fail_now(void);

/* Burns ns of this thread's CPU time. */
void sample_fail_burn(uint64_t ns);

/* Ends the process with SIGSEGV (a write through a null pointer). Does not return. */
void sample_crash_now(void);

#endif
