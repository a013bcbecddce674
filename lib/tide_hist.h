/* tide_hist.h - the latency histogram shared by the proxy (which fills it) and metrics (which
 * reads percentiles from it). Fixed bucket bounds, so histograms from several proxies add up
 * bucket by bucket and travel as plain repeated uint64 in ProxyStats. */
#ifndef TIDE_HIST_H
#define TIDE_HIST_H

#include <stddef.h>
#include <stdint.h>

/* Upper bounds in microseconds of buckets 0..HIST_BUCKETS-2; the last bucket is +Inf. */
#define HIST_BUCKETS 24
extern const uint64_t hist_bounds_us[HIST_BUCKETS - 1];

/* Index of the bucket a latency of us microseconds falls into. */
int hist_bucket(uint64_t us);

/* The q-quantile (0 < q <= 1) in milliseconds of the counts in buckets[0..n), interpolating
 * linearly inside the bucket. Returns 0 when the histogram is empty. n may be shorter than
 * HIST_BUCKETS (a sender with fewer buckets); extra buckets are ignored. */
double hist_quantile_ms(const uint64_t *buckets, size_t n, double q);

#endif
