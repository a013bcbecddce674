/* aggregate.c - deltas of cumulative ProxyStats into per-second windows, and the
 * MetricsSnapshot over them (see aggregate.h).
 *
 * Counters arrive cumulative since each proxy started, so a lost message loses nothing: the
 * next one carries the difference. What needs care is where a difference starts:
 * - a proxy we have never heard from (or with a new started_ms) that started recently, judged
 *   on its own clock (header.ts_ms - started_ms, so clock skew between hosts does not matter):
 *   everything it counted happened just now, and the whole cumulative value is the delta;
 * - one that started long ago (tide-metrics is the one that restarted): its counts are history,
 *   and the message is only the baseline for the next;
 * - a counter that goes backwards under the same started_ms: the proxy was reset in a way we
 *   cannot date, so baseline again rather than guess.
 * An instance that appears in a known proxy's stats for the first time (or whose counters went
 * backwards: the proxy dropped and recreated them) counts whole: it was created after the
 * proxy's previous message.
 *
 * Rates use whole seconds only. The current second is still filling (proxies report every
 * 250 ms), so counting it as a second would read as a dip of up to one second's worth of
 * requests: with a 6 s panic window a steady load would flicker up to 1/6 low every second.
 * Whole seconds lag by at most one second instead, and a load that stops reads as zero once
 * panic_window_s whole seconds have passed, i.e. within panic_window_s + 1 s. Each window
 * holds stable_window_s + 1 slots so the second now being filled never overwrites the oldest
 * whole second the stable sum still needs. Rates divide by the seconds actually covered
 * (window_sum's return, trimmed to the time since the window's first message), so a fresh
 * start is not diluted by seconds before any data.
 *
 * Deltas are keyed by the receive second, so a whole second holds the requests of the stats
 * intervals that ended in it: a steady load reads exactly right, one stats interval late. The
 * exceptions are messages that carry more than a second of counts: a recently started proxy's
 * first (tide-metrics restarted, or the first messages were lost while connecting), spread over
 * the seconds since the proxy started, where the window's data then starts; and a known
 * proxy's first after a gap (lost messages), spread over the gap. They read as the rate they
 * were rather than as a burst. Below one second of data, rates
 * divide by one second: a start reads low rather than as a spike that makes the scaler panic. */
#include "aggregate.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tide_window.h"

/* Deltas from a known proxy that was silent longer than this are spread over the silence
 * instead of landing in one second (see s_add_spread). */
#define SPREAD_AFTER_MS 1000

/* Most instances remembered per proxy (a message lists at most 4096). */
#define PREV_MAX 4096

/* What one proxy last said about one instance. */
typedef struct {
    char *name;
    char *addr;
    uint64_t v[AGG_WIDTH];
    uint32_t in_flight;
    bool present; /* listed in the proxy's latest message */
} prev_t;

typedef struct {
    char *name;
    uint64_t started_ms;
    uint64_t last_seq;
    uint64_t last_heard_ms;
    uint32_t in_flight;
    uint64_t tot[AGG_WIDTH];
    prev_t *inst;
    size_t n_inst, cap_inst;
} sender_t;

typedef struct {
    char *name;
    char *addr;
    window_t *win;
    uint64_t cum[AGG_WIDTH];
    uint64_t first_ms; /* when it was first listed: its window's data starts there */
    uint64_t last_seen_ms;
} inst_t;

struct _agg_t {
    agg_config_t cfg;
    window_t *total_win;
    uint64_t total_cum[AGG_WIDTH];
    bool started;
    uint64_t first_ms; /* the first stats message: the total window's data starts there */
    sender_t **senders;
    size_t n_senders;
    inst_t **insts; /* sorted by natural name order */
    size_t n_insts;
};

/* ---- helpers ---------------------------------------------------------------------------- */

/* Natural order: runs of digits compare as numbers, so production2 < production10. */
static int s_natcmp(const char *a, const char *b)
{
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            while (*a == '0')
                a++;
            while (*b == '0')
                b++;
            size_t la = 0, lb = 0;
            while (isdigit((unsigned char)a[la]))
                la++;
            while (isdigit((unsigned char)b[lb]))
                lb++;
            if (la != lb)
                return la < lb ? -1 : 1;
            int c = strncmp(a, b, la);
            if (c)
                return c;
            a += la;
            b += lb;
        } else {
            if (*a != *b)
                return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
            a++;
            b++;
        }
    }
    return *a ? 1 : *b ? -1 : 0;
}

/* Sets *field to a copy of text unless it already holds it. Returns false on OOM. */
static bool s_set_str(char **field, const char *text)
{
    if (!text)
        text = "";
    if (*field && strcmp(*field, text) == 0)
        return true;
    char *copy = strdup(text);
    if (!copy)
        return false;
    free(*field);
    *field = copy;
    return true;
}

/* Fills v from wire counters and latency buckets. Extra buckets (a sender built with more
 * bounds) fold into the +Inf bucket so the count of requests stays right. */
static void s_vector(uint64_t v[AGG_WIDTH], const Tide__V1__Counters *c, const uint64_t *buckets,
                     size_t n_buckets)
{
    memset(v, 0, AGG_WIDTH * sizeof v[0]);
    if (c) {
        v[AGG_REQ] = c->requests;
        v[AGG_1XX] = c->status_1xx;
        v[AGG_2XX] = c->status_2xx;
        v[AGG_3XX] = c->status_3xx;
        v[AGG_4XX] = c->status_4xx;
        v[AGG_5XX] = c->status_5xx;
        v[AGG_UPERR] = c->upstream_errors;
        v[AGG_BYTES_IN] = c->bytes_in;
        v[AGG_BYTES_OUT] = c->bytes_out;
    }
    for (size_t i = 0; i < n_buckets; i++) {
        size_t k = i < HIST_BUCKETS ? i : HIST_BUCKETS - 1;
        v[AGG_LAT0 + k] += buckets[i];
    }
}

static bool s_went_back(const uint64_t *cur, const uint64_t *prev)
{
    for (int k = 0; k < AGG_WIDTH; k++)
        if (cur[k] < prev[k])
            return true;
    return false;
}

static void s_add(uint64_t *acc, const uint64_t *v)
{
    for (int k = 0; k < AGG_WIDTH; k++)
        acc[k] += v[k];
}

/* ---- construction ----------------------------------------------------------------------- */

agg_t *agg_new(const agg_config_t *cfg)
{
    if (!cfg || cfg->stable_window_s < 1 || cfg->stable_window_s > 3600 ||
        cfg->panic_window_s < 1 || cfg->panic_window_s > cfg->stable_window_s)
        return NULL;
    agg_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = *cfg;
    if (self->cfg.forget_after_ms == 0) {
        uint64_t a = (uint64_t)cfg->stable_window_s * 1000 + 2000;
        uint64_t b = cfg->stale_after_ms * 10;
        self->cfg.forget_after_ms = a > b ? a : b;
    }
    self->total_win = window_new(cfg->stable_window_s + 1, AGG_WIDTH);
    self->senders = calloc(AGG_MAX_SENDERS, sizeof *self->senders);
    self->insts = calloc(AGG_MAX_INSTANCES, sizeof *self->insts);
    if (!self->total_win || !self->senders || !self->insts) {
        agg_destroy(&self);
        return NULL;
    }
    return self;
}

static void s_sender_free(sender_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_inst; i++) {
        free(s->inst[i].name);
        free(s->inst[i].addr);
    }
    free(s->inst);
    free(s->name);
    free(s);
}

static void s_inst_free(inst_t *in)
{
    if (!in)
        return;
    window_destroy(&in->win);
    free(in->name);
    free(in->addr);
    free(in);
}

void agg_destroy(agg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    agg_t *self = *self_p;
    if (self->senders)
        for (size_t i = 0; i < self->n_senders; i++)
            s_sender_free(self->senders[i]);
    if (self->insts)
        for (size_t i = 0; i < self->n_insts; i++)
            s_inst_free(self->insts[i]);
    free(self->senders);
    free(self->insts);
    window_destroy(&self->total_win);
    free(self);
    *self_p = NULL;
}

const char *agg_result_name(agg_result_t r)
{
    switch (r) {
    case AGG_DELTA:
        return "delta";
    case AGG_NEW_BASELINE:
        return "new-baseline";
    case AGG_NEW_FULL:
        return "new-full";
    case AGG_RESTART_BASELINE:
        return "restart-baseline";
    case AGG_RESTART_FULL:
        return "restart-full";
    case AGG_OLD_SEQ:
        return "old-seq";
    case AGG_REJECTED:
        return "rejected";
    }
    return "?";
}

/* ---- lookups ---------------------------------------------------------------------------- */

static sender_t *s_sender_find(agg_t *self, const char *name)
{
    for (size_t i = 0; i < self->n_senders; i++)
        if (strcmp(self->senders[i]->name, name) == 0)
            return self->senders[i];
    return NULL;
}

static sender_t *s_sender_add(agg_t *self, const char *name)
{
    if (self->n_senders >= AGG_MAX_SENDERS)
        return NULL;
    sender_t *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(name))) {
        free(s);
        return NULL;
    }
    self->senders[self->n_senders++] = s;
    return s;
}

/* The proxy lists its instances in much the same order every time: try index hint first. */
static prev_t *s_prev_find(sender_t *s, const char *name, size_t hint)
{
    if (hint < s->n_inst && strcmp(s->inst[hint].name, name) == 0)
        return &s->inst[hint];
    for (size_t i = 0; i < s->n_inst; i++)
        if (strcmp(s->inst[i].name, name) == 0)
            return &s->inst[i];
    return NULL;
}

/* Drops what a proxy said about instances missing from its latest message, to make room. */
static void s_prev_compact(sender_t *s)
{
    size_t w = 0;
    for (size_t i = 0; i < s->n_inst; i++) {
        if (s->inst[i].present) {
            s->inst[w++] = s->inst[i];
        } else {
            free(s->inst[i].name);
            free(s->inst[i].addr);
        }
    }
    s->n_inst = w;
}

static prev_t *s_prev_add(sender_t *s, const char *name)
{
    if (s->n_inst >= PREV_MAX)
        return NULL;
    if (s->n_inst == s->cap_inst) {
        size_t cap = s->cap_inst ? s->cap_inst * 2 : 8;
        prev_t *grown = realloc(s->inst, cap * sizeof *grown);
        if (!grown)
            return NULL;
        s->inst = grown;
        s->cap_inst = cap;
    }
    prev_t *p = &s->inst[s->n_inst];
    memset(p, 0, sizeof *p);
    if (!(p->name = strdup(name)))
        return NULL;
    s->n_inst++;
    return p;
}

/* Binary search in the sorted instance table; *pos receives the insertion point. */
static inst_t *s_inst_find(agg_t *self, const char *name, size_t *pos)
{
    size_t lo = 0, hi = self->n_insts;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = s_natcmp(self->insts[mid]->name, name);
        if (c == 0) {
            /* natcmp treats "p01" and "p1" alike: fall back to exact order among equals */
            c = strcmp(self->insts[mid]->name, name);
            if (c == 0) {
                *pos = mid;
                return self->insts[mid];
            }
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return NULL;
}

/* The instance named name, created (with its data starting at first_ms) when new. NULL when
 * the table is full or on OOM. */
static inst_t *s_inst_get(agg_t *self, const char *name, uint64_t first_ms)
{
    size_t pos;
    inst_t *in = s_inst_find(self, name, &pos);
    if (in || self->n_insts >= AGG_MAX_INSTANCES)
        return in;
    in = calloc(1, sizeof *in);
    if (!in)
        return NULL;
    in->first_ms = first_ms;
    in->name = strdup(name);
    in->win = window_new(self->cfg.stable_window_s + 1, AGG_WIDTH);
    if (!in->name || !in->win) {
        s_inst_free(in);
        return NULL;
    }
    memmove(&self->insts[pos + 1], &self->insts[pos], (self->n_insts - pos) * sizeof in);
    self->insts[pos] = in;
    self->n_insts++;
    return in;
}

/* ---- input ------------------------------------------------------------------------------ */

/* Adds d to win spread evenly over the span_ms before now_ms, the time the counts built up
 * over: a proxy's first message may carry several seconds of counts, which must not read as a
 * burst in one second. Rounding leftovers go to now's second. */
static void s_add_spread(window_t *win, uint64_t now_ms, uint64_t span_ms, const uint64_t *d)
{
    uint64_t to_sec = now_ms / 1000;
    if (span_ms == 0 || span_ms > now_ms || (now_ms - span_ms) / 1000 == to_sec) {
        window_add(win, to_sec, d);
        return;
    }
    uint64_t from_ms = now_ms - span_ms;
    uint64_t left[AGG_WIDTH], part[AGG_WIDTH];
    memcpy(left, d, sizeof left);
    for (uint64_t sec = from_ms / 1000; sec < to_sec; sec++) {
        uint64_t lo = sec * 1000 > from_ms ? sec * 1000 : from_ms;
        uint64_t ms = (sec + 1) * 1000 - lo;
        for (int k = 0; k < AGG_WIDTH; k++) {
            part[k] = (uint64_t)((unsigned __int128)d[k] * ms / span_ms);
            left[k] -= part[k];
        }
        window_add(win, sec, part);
    }
    window_add(win, to_sec, left);
}

/* Did the proxy start within two stale periods before it sent this message (its own clock)? */
static bool s_recent_start(const agg_t *self, const Tide__V1__ProxyStats *st)
{
    uint64_t ts = st->header->ts_ms;
    return st->started_ms > 0 && ts >= st->started_ms &&
           ts - st->started_ms < 2 * self->cfg.stale_after_ms;
}

agg_result_t agg_on_stats(agg_t *self, const Tide__V1__ProxyStats *st, uint64_t now_ms)
{
    const char *name = st->header->sender;
    sender_t *s = s_sender_find(self, name);
    uint64_t tot[AGG_WIDTH];
    s_vector(tot, st->totals, st->latency_buckets, st->n_latency_buckets);

    agg_result_t r;
    if (!s) {
        s = s_sender_add(self, name);
        if (!s)
            return AGG_REJECTED;
        r = s_recent_start(self, st) ? AGG_NEW_FULL : AGG_NEW_BASELINE;
    } else if (st->started_ms != s->started_ms) {
        r = s_recent_start(self, st) ? AGG_RESTART_FULL : AGG_RESTART_BASELINE;
    } else if (st->header->seq <= s->last_seq) {
        return AGG_OLD_SEQ;
    } else if (s_went_back(tot, s->tot)) {
        r = AGG_RESTART_BASELINE;
    } else {
        r = AGG_DELTA;
    }
    bool fresh = r != AGG_DELTA; /* forget what this proxy said before */
    bool baseline = r == AGG_NEW_BASELINE || r == AGG_RESTART_BASELINE;
    if (fresh) {
        for (size_t i = 0; i < s->n_inst; i++) {
            free(s->inst[i].name);
            free(s->inst[i].addr);
        }
        s->n_inst = 0;
        memset(s->tot, 0, sizeof s->tot);
    }

    /* The time the counts built up over, when that is more than one second: a recent start's
     * since it started (its own clock, so no skew), or a known proxy's since its previous
     * message after a gap (lost messages). Capped at the window: nothing older is kept. */
    uint64_t cap = (uint64_t)self->cfg.stable_window_s * 1000;
    uint64_t since_prev = now_ms > s->last_heard_ms ? now_ms - s->last_heard_ms : 0;
    since_prev = since_prev > cap ? cap : since_prev;
    uint64_t span = 0;
    if (r == AGG_NEW_FULL || r == AGG_RESTART_FULL)
        span = st->header->ts_ms - st->started_ms;
    else if (r == AGG_DELTA && since_prev > SPREAD_AFTER_MS)
        span = since_prev;
    span = span > cap ? cap : span > now_ms ? now_ms : span;
    uint64_t d[AGG_WIDTH];
    for (int k = 0; k < AGG_WIDTH; k++)
        d[k] = baseline ? 0 : tot[k] - s->tot[k];
    /* Added even when all zero: the window's coverage starts with the first message heard. */
    if (!self->started) {
        self->started = true;
        self->first_ms = now_ms - span;
    }
    s_add_spread(self->total_win, now_ms, span, d);
    s_add(self->total_cum, d);
    memcpy(s->tot, tot, sizeof tot);

    if (s->n_inst + st->n_instances > PREV_MAX)
        s_prev_compact(s);
    for (size_t i = 0; i < s->n_inst; i++)
        s->inst[i].present = false;
    for (size_t i = 0; i < st->n_instances; i++) {
        const Tide__V1__InstanceStats *is = st->instances[i];
        uint64_t v[AGG_WIDTH];
        s_vector(v, is->counters, is->latency_buckets, is->n_latency_buckets);
        prev_t *p = s_prev_find(s, is->name, i);
        /* A new instance under a known proxy was created after the proxy's previous message. */
        uint64_t ispan = span;
        if (!p || s_went_back(v, p->v))
            ispan = r == AGG_DELTA ? since_prev : span;
        if (!p) {
            /* New under a known proxy: created after its previous message, counts whole
             * (p->v starts at zero). Under a baseline it is history like the rest. */
            p = s_prev_add(s, is->name);
            if (!p)
                continue; /* OOM or too many: skipped here, the totals stay right */
        } else if (s_went_back(v, p->v)) {
            memset(p->v, 0, sizeof p->v); /* the proxy recreated its counters: whole */
        }
        uint64_t dv[AGG_WIDTH];
        for (int k = 0; k < AGG_WIDTH; k++)
            dv[k] = baseline ? 0 : v[k] - p->v[k];
        memcpy(p->v, v, sizeof v);
        p->in_flight = is->in_flight;
        p->present = true;
        s_set_str(&p->addr, is->addr);

        inst_t *in = s_inst_get(self, is->name, now_ms - ispan);
        if (!in)
            continue; /* table full or OOM: not tracked per instance */
        s_add_spread(in->win, now_ms, ispan, dv);
        s_add(in->cum, dv);
        in->last_seen_ms = now_ms;
        if (is->addr && is->addr[0])
            s_set_str(&in->addr, is->addr);
    }
    s->started_ms = st->started_ms;
    s->last_seq = st->header->seq;
    s->last_heard_ms = now_ms;
    s->in_flight = st->in_flight;
    return r;
}

void agg_expire(agg_t *self, uint64_t now_ms)
{
    uint64_t limit = self->cfg.forget_after_ms;
    size_t w = 0;
    for (size_t i = 0; i < self->n_senders; i++) {
        sender_t *s = self->senders[i];
        if (now_ms > s->last_heard_ms && now_ms - s->last_heard_ms > limit)
            s_sender_free(s);
        else
            self->senders[w++] = s;
    }
    self->n_senders = w;
    w = 0;
    for (size_t i = 0; i < self->n_insts; i++) {
        inst_t *in = self->insts[i];
        if (now_ms > in->last_seen_ms && now_ms - in->last_seen_ms > limit)
            s_inst_free(in);
        else
            self->insts[w++] = in;
    }
    self->n_insts = w;
}

/* ---- output ----------------------------------------------------------------------------- */

/* Sums the last `last` whole seconds before now_ms's second into out and returns the seconds
 * of data they hold: the whole seconds window_sum counts as covered, trimmed to the time since
 * first_ms (the first message that fed the window), so a start in the middle of a second does
 * not count that second in full. At least 1 s once anything is covered: the first message's
 * counts may span the time before it (a proxy that just started). */
static double s_whole(const window_t *win, uint64_t now_ms, uint64_t first_ms, unsigned last,
                      uint64_t *out, unsigned *covered_whole)
{
    uint64_t sec = now_ms / 1000;
    unsigned covered = 0;
    if (sec == 0)
        memset(out, 0, AGG_WIDTH * sizeof *out);
    else
        covered = window_sum(win, sec - 1, last, out);
    if (covered_whole)
        *covered_whole = covered;
    if (covered == 0)
        return 0.0;
    uint64_t end_ms = sec * 1000;
    double since = end_ms > first_ms ? (double)(end_ms - first_ms) / 1000.0 : 0.0;
    if (since < 1.0)
        since = 1.0;
    return since < (double)covered ? since : (double)covered;
}

static double s_rate(uint64_t count, double covered_s)
{
    return covered_s > 0 ? (double)count / covered_s : 0.0;
}

static bool s_live(const agg_t *self, const sender_t *s, uint64_t now_ms)
{
    return now_ms < s->last_heard_ms || now_ms - s->last_heard_ms < self->cfg.stale_after_ms;
}

Tide__V1__MetricsSnapshot *agg_snapshot(agg_t *self, uint64_t now_ms)
{
    agg_expire(self, now_ms);
    Tide__V1__MetricsSnapshot *snap = calloc(1, sizeof *snap);
    if (!snap)
        return NULL;
    tide__v1__metrics_snapshot__init(snap);
    const agg_config_t *c = &self->cfg;
    uint64_t stable[AGG_WIDTH], panic[AGG_WIDTH], last[AGG_WIDTH];
    unsigned whole = 0;
    uint64_t first = self->first_ms;
    double cs = s_whole(self->total_win, now_ms, first, c->stable_window_s, stable, &whole);
    double cp = s_whole(self->total_win, now_ms, first, c->panic_window_s, panic, NULL);
    double cl = s_whole(self->total_win, now_ms, first, 1, last, NULL);

    snap->stable_window_s = c->stable_window_s;
    snap->panic_window_s = c->panic_window_s;
    snap->stable_covered_s = whole;
    snap->rps_stable = s_rate(stable[AGG_REQ], cs);
    snap->rps_panic = s_rate(panic[AGG_REQ], cp);
    snap->rps_last = s_rate(last[AGG_REQ], cl);
    snap->p50_ms = hist_quantile_ms(panic + AGG_LAT0, HIST_BUCKETS, 0.50);
    snap->p90_ms = hist_quantile_ms(panic + AGG_LAT0, HIST_BUCKETS, 0.90);
    snap->p99_ms = hist_quantile_ms(panic + AGG_LAT0, HIST_BUCKETS, 0.99);
    snap->rate_2xx = s_rate(panic[AGG_2XX], cp);
    snap->rate_4xx = s_rate(panic[AGG_4XX], cp);
    snap->rate_5xx = s_rate(panic[AGG_5XX], cp);
    snap->upstream_errors_rate = s_rate(panic[AGG_UPERR], cp);

    for (size_t i = 0; i < self->n_senders; i++) {
        const sender_t *s = self->senders[i];
        if (!s_live(self, s, now_ms))
            continue;
        snap->proxies++;
        snap->in_flight += s->in_flight;
    }

    if (self->n_insts) {
        snap->instances = calloc(self->n_insts, sizeof *snap->instances);
        if (!snap->instances) {
            agg_snapshot_destroy(&snap);
            return NULL;
        }
    }
    for (size_t i = 0; i < self->n_insts; i++) {
        const inst_t *in = self->insts[i];
        Tide__V1__InstanceMetrics *im = calloc(1, sizeof *im);
        if (!im) {
            agg_snapshot_destroy(&snap);
            return NULL;
        }
        tide__v1__instance_metrics__init(im);
        snap->instances[snap->n_instances++] = im;
        im->name = strdup(in->name);
        im->addr = strdup(in->addr ? in->addr : "");
        if (!im->name || !im->addr) {
            agg_snapshot_destroy(&snap);
            return NULL;
        }
        double ics = s_whole(in->win, now_ms, in->first_ms, c->stable_window_s, stable, NULL);
        double icp = s_whole(in->win, now_ms, in->first_ms, c->panic_window_s, panic, NULL);
        im->rps_stable = s_rate(stable[AGG_REQ], ics);
        im->rps_panic = s_rate(panic[AGG_REQ], icp);
        im->p50_ms = hist_quantile_ms(panic + AGG_LAT0, HIST_BUCKETS, 0.50);
        im->p99_ms = hist_quantile_ms(panic + AGG_LAT0, HIST_BUCKETS, 0.99);
        /* Failed attempts over attempts. A proxy that marked the instance down sends it no
         * request, only probes, whose failures count as upstream errors: with no request in
         * the window the errors alone make the rate (capped at 1). */
        uint64_t bad = panic[AGG_5XX] + panic[AGG_UPERR];
        uint64_t tries = panic[AGG_REQ] > panic[AGG_UPERR] ? panic[AGG_REQ] : panic[AGG_UPERR];
        im->error_rate = tries ? (double)(bad > tries ? tries : bad) / (double)tries : 0.0;
        /* in flight to this instance: what every live proxy last said about it */
        for (size_t k = 0; k < self->n_senders; k++) {
            sender_t *s = self->senders[k];
            if (!s_live(self, s, now_ms))
                continue;
            prev_t *p = s_prev_find(s, in->name, i);
            if (p && p->present)
                im->in_flight += p->in_flight;
        }
    }
    return snap;
}

void agg_snapshot_destroy(Tide__V1__MetricsSnapshot **snap_p)
{
    if (!snap_p || !*snap_p)
        return;
    Tide__V1__MetricsSnapshot *snap = *snap_p;
    for (size_t i = 0; i < snap->n_instances; i++) {
        free(snap->instances[i]->name);
        free(snap->instances[i]->addr);
        free(snap->instances[i]);
    }
    free(snap->instances);
    free(snap);
    *snap_p = NULL;
}

const uint64_t *agg_totals(const agg_t *self)
{
    return self->total_cum;
}

size_t agg_instance_count(const agg_t *self)
{
    return self->n_insts;
}

const char *agg_instance_name(const agg_t *self, size_t i)
{
    return i < self->n_insts ? self->insts[i]->name : NULL;
}

const uint64_t *agg_instance_totals(const agg_t *self, size_t i)
{
    return i < self->n_insts ? self->insts[i]->cum : NULL;
}

size_t agg_sender_count(const agg_t *self)
{
    return self->n_senders;
}
