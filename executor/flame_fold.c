/* flame_fold.c - the stack multiset and its two readers: `perf script` output and folded lines
 * (see flame.h). */
#include "flame.h"

#include <ctype.h>
#include <czmq.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "flame_tree.h"

struct flame_t {
    zhashx_t *stacks; /* stack -> uint64_t * (samples) */
    uint64_t total;
};

static void s_free_count(void **item)
{
    free(*item);
    *item = NULL;
}

flame_t *flame_new(void)
{
    flame_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->stacks = zhashx_new();
    if (!self->stacks) {
        free(self);
        return NULL;
    }
    zhashx_set_destructor(self->stacks, s_free_count);
    return self;
}

void flame_destroy(flame_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zhashx_destroy(&(*self_p)->stacks);
    free(*self_p);
    *self_p = NULL;
}

int flame_add(flame_t *self, const char *stack, uint64_t count)
{
    if (!stack[0] || stack[0] == ';' || strstr(stack, ";;") || stack[strlen(stack) - 1] == ';')
        return -EINVAL;
    if (count == 0)
        return 0;
    uint64_t *n = zhashx_lookup(self->stacks, stack);
    if (!n) {
        if (!(n = calloc(1, sizeof *n)))
            return -ENOMEM;
        if (zhashx_insert(self->stacks, stack, n) != 0) {
            free(n);
            return -ENOMEM;
        }
    }
    *n += count;
    self->total += count;
    return 0;
}

uint64_t flame_total(const flame_t *self)
{
    return self->total;
}

size_t flame_stacks(const flame_t *self)
{
    return zhashx_size(self->stacks);
}

/* True when frame is one of stack's ';'-separated frames. */
static bool s_has_frame(const char *stack, const char *frame)
{
    size_t fl = strlen(frame);
    for (const char *p = stack; p;) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == fl && memcmp(p, frame, fl) == 0)
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

uint64_t flame_samples_in(const flame_t *self, const char *func)
{
    uint64_t sum = 0;
    zhashx_t *h = self->stacks;
    for (uint64_t *n = zhashx_first(h); n; n = zhashx_next(h))
        if (s_has_frame(zhashx_cursor(h), func))
            sum += *n;
    return sum;
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int flame_each_sorted(const flame_t *self, flame_each_fn *fn, void *arg)
{
    size_t n = zhashx_size(self->stacks), i = 0;
    const char **keys = malloc((n ? n : 1) * sizeof *keys);
    if (!keys)
        return -ENOMEM;
    zhashx_t *h = self->stacks;
    for (void *v = zhashx_first(h); v; v = zhashx_next(h))
        keys[i++] = zhashx_cursor(h);
    qsort(keys, n, sizeof *keys, s_cmp_str);
    int rc = 0;
    for (i = 0; i < n && rc == 0; i++)
        rc = fn(arg, keys[i], *(uint64_t *)zhashx_lookup(h, keys[i]));
    free(keys);
    return rc;
}

static int s_write_line(void *arg, const char *stack, uint64_t count)
{
    return fprintf(arg, "%s %" PRIu64 "\n", stack, count) < 0 ? -EIO : 0;
}

int flame_write_folded(const flame_t *self, FILE *out)
{
    int rc = flame_each_sorted(self, s_write_line, out);
    return rc == 0 && ferror(out) ? -EIO : rc;
}

/* ---- reading ---------------------------------------------------------------------------- */

/* Reads one line of any length into *buf (grown as needed), without its newline. Returns its
 * length, or -1 at the end of the stream. */
static ssize_t s_getline(char **buf, size_t *cap, FILE *in)
{
    ssize_t n = getline(buf, cap, in);
    if (n > 0 && (*buf)[n - 1] == '\n')
        (*buf)[--n] = '\0';
    if (n > 0 && (*buf)[n - 1] == '\r')
        (*buf)[--n] = '\0';
    return n;
}

int flame_parse_folded(flame_t *self, FILE *in, uint64_t *garbled)
{
    char *line = NULL;
    size_t cap = 0;
    uint64_t bad = 0;
    int rc = 0;
    ssize_t n;
    while (rc == 0 && (n = s_getline(&line, &cap, in)) >= 0) {
        if (n == 0)
            continue;
        char *sp = strrchr(line, ' ');
        char *end = NULL;
        errno = 0;
        unsigned long long count =
            sp && isdigit((unsigned char)sp[1]) ? strtoull(sp + 1, &end, 10) : 0;
        if (!sp || !end || *end || errno) {
            bad++;
            continue;
        }
        *sp = '\0';
        rc = flame_add(self, line, count);
        if (rc == -EINVAL) {
            bad++;
            rc = 0;
        }
    }
    if (rc == 0 && ferror(in))
        rc = -EIO;
    free(line);
    if (garbled)
        *garbled += bad;
    return rc;
}

/* One sample being read: its frames, leaf first, as perf prints them. */
typedef struct {
    char comm[FLAME_FRAME_MAX];
    double time;
    long pid;
    bool open; /* a header was read and its frames are coming */
    char *frames[FLAME_DEPTH_MAX];
    size_t depth;
    uint64_t unknown;
} sample_t;

/* The sample header: "COMM PID[/TID] [CPU] TIME: [PERIOD] EVENT:" (comm may hold spaces).
 * Finds TIME as the first token of digits '.' digits ending in ':' after a pid token. Returns 0
 * with comm and time set, or -EINVAL. */
static int s_parse_header(const char *line, sample_t *s)
{
    const char *p = line;
    const char *pid_start = NULL;
    while (*p) {
        const char *tok = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        size_t len = (size_t)(p - tok);
        /* TIME: digits '.' digits ':' */
        size_t d = 0;
        while (d < len && isdigit((unsigned char)tok[d]))
            d++;
        if (pid_start && d > 0 && d < len && tok[d] == '.' && tok[len - 1] == ':') {
            size_t f = d + 1;
            while (f < len - 1 && isdigit((unsigned char)tok[f]))
                f++;
            if (f == len - 1 && f > d + 1) {
                s->time = strtod(tok, NULL);
                s->pid = strtol(pid_start, NULL, 10);
                size_t cl = (size_t)(pid_start - line);
                while (cl > 0 && (line[cl - 1] == ' ' || line[cl - 1] == '\t'))
                    cl--;
                if (cl == 0)
                    return -EINVAL;
                if (cl >= sizeof s->comm)
                    cl = sizeof s->comm - 1;
                memcpy(s->comm, line, cl);
                s->comm[cl] = '\0';
                return 0;
            }
        }
        /* A pid token ("123" or "123/456") after at least one comm token; the last one before
         * TIME wins, so a comm with a number in it stays whole. */
        if (tok != line && len > 0 && isdigit((unsigned char)tok[0])) {
            size_t k = 0;
            while (k < len && (isdigit((unsigned char)tok[k]) || tok[k] == '/'))
                k++;
            if (k == len)
                pid_start = tok;
        }
        while (*p == ' ' || *p == '\t')
            p++;
    }
    return -EINVAL;
}

/* Copies a frame name, cut at FLAME_FRAME_MAX, ';' as ':'. */
static char *s_frame_dup(const char *name, size_t len, const char *suffix)
{
    if (len > FLAME_FRAME_MAX - 8)
        len = FLAME_FRAME_MAX - 8;
    size_t sl = strlen(suffix);
    char *out = malloc(len + sl + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++)
        out[i] = name[i] == ';' ? ':' : name[i];
    memcpy(out + len, suffix, sl + 1);
    return out;
}

/* A frame line: "ADDR SYMBOL[+0xOFF] (DSO)". Returns 0 with the frame appended, 1 for a frame
 * past FLAME_DEPTH_MAX (dropped: the root-most are kept by the caller's order), -EINVAL for a
 * line that is not a frame, -ENOMEM. */
static int s_parse_frame(char *line, sample_t *s)
{
    char *p = line + strspn(line, " \t");
    char *addr = p;
    while (isxdigit((unsigned char)*p))
        p++;
    if (p == addr || (*p != ' ' && *p != '\t'))
        return -EINVAL;
    p += strspn(p, " \t");
    char *sym = p;
    char *end = sym + strlen(sym);
    while (end > sym && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    const char *dso = "";
    size_t dso_len = 0;
    if (end > sym && end[-1] == ')') {
        /* The DSO is the last parenthesised group preceded by a space. */
        char *open = NULL;
        for (char *q = end - 1; q > sym; q--)
            if (*q == '(' && (q[-1] == ' ' || q[-1] == '\t')) {
                open = q;
                break;
            }
        if (open) {
            dso = open + 1;
            dso_len = (size_t)(end - 1 - dso);
            end = open;
            while (end > sym && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
        }
    }
    size_t sym_len = (size_t)(end - sym);
    /* Drop "+0x1f" offsets. */
    for (size_t i = sym_len; i-- > 0;) {
        if (sym[i] == '+' && i + 2 < sym_len && sym[i + 1] == '0' && sym[i + 2] == 'x') {
            bool hex = true;
            for (size_t k = i + 3; k < sym_len && hex; k++)
                hex = isxdigit((unsigned char)sym[k]);
            if (hex)
                sym_len = i;
            break;
        }
    }
    if (s->depth == FLAME_DEPTH_MAX)
        return 1;
    bool kernel = dso_len >= 9 && memmem(dso, dso_len, "kernel", 6) != NULL && dso[0] == '[';
    bool unknown = sym_len == 0 || (sym_len == 9 && memcmp(sym, "[unknown]", 9) == 0);
    char *frame;
    if (unknown) {
        s->unknown++;
        const char *base = dso;
        size_t bl = dso_len;
        for (size_t i = 0; i < dso_len; i++)
            if (dso[i] == '/') {
                base = dso + i + 1;
                bl = dso_len - i - 1;
            }
        if (bl == 0 || (bl == 9 && memcmp(base, "[unknown]", 9) == 0)) {
            frame = s_frame_dup("[unknown]", 9, "");
        } else if (base[0] == '[') {
            frame = s_frame_dup(base, bl, "");
        } else {
            char tmp[FLAME_FRAME_MAX];
            int w = snprintf(tmp, sizeof tmp, "[%.*s]", (int)bl, base);
            frame = s_frame_dup(tmp, (size_t)w < sizeof tmp ? (size_t)w : sizeof tmp - 1, "");
        }
    } else {
        frame = s_frame_dup(sym, sym_len, kernel ? "_[k]" : "");
    }
    if (!frame)
        return -ENOMEM;
    s->frames[s->depth++] = frame;
    return 0;
}

static void s_sample_clear(sample_t *s)
{
    for (size_t i = 0; i < s->depth; i++)
        free(s->frames[i]);
    s->depth = 0;
    s->unknown = 0;
    s->open = false;
}

/* Ends the sample being read: folds it (root first) into self when it is inside the window. */
static int s_sample_end(flame_t *self, sample_t *s, const flame_filter_t *fl, flame_stats_t *st)
{
    if (!s->open)
        return 0;
    if (fl->pid > 0 && s->pid != fl->pid) {
        s_sample_clear(s);
        return 0;
    }
    int rc = 0;
    if (st->samples + st->outside == 0 || s->time < st->first_s)
        st->first_s = s->time;
    if (s->time > st->last_s)
        st->last_s = s->time;
    if (s->time < fl->from_s || (fl->to_s > 0 && s->time > fl->to_s)) {
        st->outside++;
    } else {
        size_t len = strlen(s->comm) + 1;
        for (size_t i = 0; i < s->depth; i++)
            len += strlen(s->frames[i]) + 1;
        char *stack = malloc(len + 1);
        if (!stack) {
            rc = -ENOMEM;
        } else {
            char *o = stack;
            for (const char *c = s->comm; *c; c++)
                *o++ = *c == ';' ? ':' : (*c == ' ' ? '_' : *c);
            for (size_t i = s->depth; i-- > 0;) {
                *o++ = ';';
                size_t fl = strlen(s->frames[i]);
                memcpy(o, s->frames[i], fl);
                o += fl;
            }
            *o = '\0';
            rc = flame_add(self, stack, 1);
            if (rc == -EINVAL)
                rc = 0; /* cannot happen with a non-empty comm and named frames */
            free(stack);
            st->samples++;
            st->frames += s->depth;
            st->unknown_frames += s->unknown;
        }
    }
    s_sample_clear(s);
    return rc;
}

int flame_parse_perf_script(flame_t *self, FILE *in, const flame_filter_t *filter,
                            flame_stats_t *stats)
{
    static const flame_filter_t all = {0, 0, 0};
    const flame_filter_t *fl = filter ? filter : &all;
    flame_stats_t st_local;
    flame_stats_t *st = stats ? stats : &st_local;
    memset(st, 0, sizeof *st);
    sample_t *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    ssize_t n;
    while (rc == 0 && (n = s_getline(&line, &cap, in)) >= 0) {
        if (line[strspn(line, " \t")] == '\0') {
            rc = s_sample_end(self, s, fl, st);
            continue;
        }
        if (line[0] != ' ' && line[0] != '\t') {
            rc = s_sample_end(self, s, fl, st);
            if (rc == 0 && s_parse_header(line, s) == 0)
                s->open = true;
            else if (rc == 0)
                st->garbled++;
            continue;
        }
        if (!s->open) {
            st->garbled++;
            continue;
        }
        int r = s_parse_frame(line, s);
        if (r == -EINVAL)
            st->garbled++;
        else if (r == -ENOMEM)
            rc = r;
    }
    if (rc == 0)
        rc = s_sample_end(self, s, fl, st);
    if (rc == 0 && ferror(in))
        rc = -EIO;
    s_sample_clear(s);
    free(s);
    free(line);
    return rc;
}
