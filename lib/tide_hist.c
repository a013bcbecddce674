/* tide_hist.c - fixed-bound latency histogram (see tide_hist.h). */
#include "tide_hist.h"

/* Roughly x2 / x2.5 steps from 100 us to 60 s: fine where proxies live (sub-ms to tens of ms),
 * coarse in the tail where only "slow" matters. */
const uint64_t hist_bounds_us[HIST_BUCKETS - 1] = {
    100,    250,    500,     750,     1000,    1500,    2000,    3000,
    5000,   7500,   10000,   15000,   25000,   50000,   75000,   100000,
    250000, 500000, 1000000, 2500000, 5000000, 10000000, 60000000,
};

int hist_bucket(uint64_t us)
{
    int lo = 0, hi = HIST_BUCKETS - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (us <= hist_bounds_us[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

double hist_quantile_ms(const uint64_t *buckets, size_t n, double q)
{
    if (n > HIST_BUCKETS)
        n = HIST_BUCKETS;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += buckets[i];
    if (total == 0)
        return 0.0;
    if (q <= 0)
        q = 0.000001;
    if (q > 1)
        q = 1;
    double rank = q * (double)total;
    uint64_t seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (buckets[i] == 0)
            continue;
        if ((double)(seen + buckets[i]) >= rank) {
            double lo = i == 0 ? 0.0 : (double)hist_bounds_us[i - 1];
            /* The +Inf bucket has no upper bound: report its lower bound. */
            double hi = i >= HIST_BUCKETS - 1 ? lo : (double)hist_bounds_us[i];
            double frac = (rank - (double)seen) / (double)buckets[i];
            return (lo + (hi - lo) * frac) / 1000.0;
        }
        seen += buckets[i];
    }
    return (double)hist_bounds_us[HIST_BUCKETS - 2] / 1000.0;
}
