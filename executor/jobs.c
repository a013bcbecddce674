/* jobs.c - the executor's job table, request validation and the JobRecord view. */
#include "jobs.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tide_clock.h"

struct jobs_t {
    const tide_config_t *cfg;
    size_t keep;
    job_t **items; /* in order of arrival: eviction takes the oldest finished */
    size_t n, cap;
};

jobs_t *jobs_new(const tide_config_t *cfg, size_t keep)
{
    jobs_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = cfg;
    self->keep = keep ? keep : JOBS_KEEP_DEFAULT;
    return self;
}

static void s_job_free(job_t *job)
{
    if (!job)
        return;
    for (size_t i = 0; i < job->tail_cap; i++)
        free(job->tail[i]);
    free(job->tail);
    free(job->instances);
    free(job->results);
    free(job);
}

void jobs_destroy(jobs_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    jobs_t *self = *self_p;
    for (size_t i = 0; i < self->n; i++)
        s_job_free(self->items[i]);
    free(self->items);
    free(self);
    *self_p = NULL;
}

/* ---- validation ------------------------------------------------------------------------- */

static bool s_job_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > JOB_ID_MAX || id[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!isalnum(c) && c != '_' && c != '.' && c != ':' && c != '-')
            return false;
    }
    return true;
}

/* N from prefix + decimal digits without a leading zero, or -1. */
static long s_instance_number(const char *name, const char *prefix)
{
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0)
        return -1;
    const char *d = name + pl;
    size_t dl = strlen(d);
    if (dl == 0 || dl > 6 || (d[0] == '0' && dl > 1))
        return -1;
    long n = 0;
    for (size_t i = 0; i < dl; i++) {
        if (!isdigit((unsigned char)d[i]))
            return -1;
        n = n * 10 + (d[i] - '0');
    }
    return n;
}

int jobs_validate(const tide_config_t *cfg, const Tide__V1__ExecRequest *req, char *reason,
                  size_t len)
{
    if (!req->job_id || !s_job_id_ok(req->job_id)) {
        snprintf(reason, len,
                 "bad job_id: 1 to %d characters of [A-Za-z0-9_.:-], not starting "
                 "with '.'",
                 JOB_ID_MAX);
        return -EINVAL;
    }
    switch (req->kind) {
    case TIDE__V1__JOB_KIND__JOB_SCALE_UP:
    case TIDE__V1__JOB_KIND__JOB_SCALE_DOWN:
        if (req->n_instances == 0) {
            snprintf(reason, len, "a %s job needs at least one instance",
                     req->kind == TIDE__V1__JOB_KIND__JOB_SCALE_UP ? "scale up" : "scale down");
            return -EINVAL;
        }
        break;
    case TIDE__V1__JOB_KIND__JOB_LIST:
        break;
    case TIDE__V1__JOB_KIND__JOB_PROFILE: {
        const Tide__V1__ProfileSpec *p = req->profile;
        const char *why = p ? p->reason : "";
        if (req->n_instances < 1 || req->n_instances > 2) {
            snprintf(reason, len, "a profile job names one instance and at most one baseline");
            return -EINVAL;
        }
        if (!p || (strcmp(why, "errors") != 0 && strcmp(why, "crash") != 0 &&
                   strcmp(why, "manual") != 0)) {
            snprintf(reason, len, "a profile job's reason must be errors, crash or manual");
            return -EINVAL;
        }
        if (strcmp(why, "crash") == 0 && p->pid == 0) {
            snprintf(reason, len, "a crash profile names the pid of the process that died");
            return -EINVAL;
        }
        if (p->seconds < 1 || p->seconds > (uint32_t)cfg->profiling.max_seconds) {
            snprintf(reason, len, "profile seconds %u out of bounds (1..%d, profiling.max_seconds)",
                     p->seconds, cfg->profiling.max_seconds);
            return -EINVAL;
        }
        break;
    }
    default:
        snprintf(reason, len, "not a job kind");
        return -EINVAL;
    }
    if (req->kind == TIDE__V1__JOB_KIND__JOB_SCALE_UP &&
        strcmp(cfg->executor.driver, "docker") == 0 && !jobs_image_ok(cfg->app.image)) {
        snprintf(reason, len, "app.image '%.100s' is not a plain image reference", cfg->app.image);
        return -EINVAL;
    }
    /* Starting is bounded by scaler.max. Stopping is allowed for any number tide's naming can
     * produce (the scaler tracks 0..1023): an instance left past a lowered scaler.max, or
     * started by hand, must still be stoppable, or the scaler would retry its stop forever. */
    bool stop = req->kind == TIDE__V1__JOB_KIND__JOB_SCALE_DOWN;
    long limit = stop ? 1024 : cfg->scaler.max;
    if (req->n_instances > (size_t)limit) {
        snprintf(reason, len, "%zu instances: more than %s (%ld)", req->n_instances,
                 stop ? "1024" : "scaler.max", limit);
        return -EINVAL;
    }
    for (size_t i = 0; i < req->n_instances; i++) {
        const Tide__V1__Instance *in = req->instances[i];
        const char *name = in->name ? in->name : "";
        long n = s_instance_number(name, cfg->app.name_prefix);
        if (n < 0) {
            snprintf(reason, len, "instance '%.64s': name must be %s<N>", name,
                     cfg->app.name_prefix);
            return -EINVAL;
        }
        if (n >= limit || cfg->app.base_port + n > 65535) {
            snprintf(reason, len, "instance '%s': %ld is out of range (%s is %ld)", name, n,
                     stop ? "the most tide names" : "scaler.max", limit);
            return -EINVAL;
        }
        if (!in->host || strcmp(in->host, cfg->app.host) != 0) {
            snprintf(reason, len, "instance '%s': host '%.64s' is not app.host (%s)", name,
                     in->host ? in->host : "", cfg->app.host);
            return -EINVAL;
        }
        if (in->port != (uint32_t)(cfg->app.base_port + n)) {
            snprintf(reason, len, "instance '%s': port %u is not app.base_port + %ld (%ld)", name,
                     in->port, n, cfg->app.base_port + n);
            return -EINVAL;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(req->instances[k]->name, name) == 0) {
                snprintf(reason, len, "instance '%s' named twice", name);
                return -EINVAL;
            }
        }
    }
    return 0;
}

static const char *s_kind(Tide__V1__JobKind kind)
{
    switch (kind) {
    case TIDE__V1__JOB_KIND__JOB_SCALE_UP:
        return "scale up";
    case TIDE__V1__JOB_KIND__JOB_SCALE_DOWN:
        return "scale down";
    case TIDE__V1__JOB_KIND__JOB_LIST:
        return "list";
    case TIDE__V1__JOB_KIND__JOB_PROFILE:
        return "profile";
    default:
        return "other";
    }
}

int jobs_same_request(const job_t *job, const Tide__V1__ExecRequest *req, char *reason, size_t len)
{
    if (req->kind != job->kind) {
        snprintf(reason, len, "job id %s is a %s job; this request is a %s", job->id,
                 s_kind(job->kind), s_kind(req->kind));
        return -EEXIST;
    }
    bool same = req->n_instances == job->n_instances;
    for (size_t i = 0; same && i < req->n_instances; i++) {
        const Tide__V1__Instance *in = req->instances[i];
        bool found = false;
        for (size_t k = 0; k < job->n_instances && !found; k++) {
            const job_instance_t *have = &job->instances[k];
            found = in->name && in->host && strcmp(in->name, have->name) == 0 &&
                    strcmp(in->host, have->host) == 0 && in->port == have->port;
        }
        same = found;
    }
    if (!same) {
        snprintf(reason, len, "job id %s was given other instances (%zu, first %s)", job->id,
                 job->n_instances, job->n_instances ? job->instances[0].name : "none");
        return -EEXIST;
    }
    if (job->kind == TIDE__V1__JOB_KIND__JOB_PROFILE) {
        const Tide__V1__ProfileSpec *p = req->profile;
        uint32_t pid = p && p->reason && strcmp(p->reason, "crash") == 0 ? p->pid : 0;
        if (!p || !p->reason || strcmp(p->reason, job->profile.reason) != 0 ||
            p->seconds != job->profile.seconds || pid != job->profile.pid) {
            snprintf(reason, len, "job id %s is a profile with another reason, length or pid",
                     job->id);
            return -EEXIST;
        }
    }
    return 0;
}

/* ---- the table -------------------------------------------------------------------------- */

job_t *jobs_find(jobs_t *self, const char *id)
{
    for (size_t i = 0; i < self->n; i++)
        if (strcmp(self->items[i]->id, id) == 0)
            return self->items[i];
    return NULL;
}

bool job_is_running(const job_t *job)
{
    return job->state == TIDE__V1__JOB_STATE__JOB_PENDING ||
           job->state == TIDE__V1__JOB_STATE__JOB_RUNNING;
}

job_t *jobs_busy(jobs_t *self, const char *name)
{
    for (size_t i = 0; i < self->n; i++) {
        job_t *job = self->items[i];
        if (!job_is_running(job) || !job->holds_instances)
            continue;
        for (size_t k = 0; k < job->n_instances; k++)
            if (strcmp(job->instances[k].name, name) == 0)
                return job;
    }
    return NULL;
}

size_t jobs_size(jobs_t *self)
{
    return self->n;
}

size_t jobs_running(jobs_t *self)
{
    size_t r = 0;
    for (size_t i = 0; i < self->n; i++)
        r += job_is_running(self->items[i]);
    return r;
}

void jobs_each_running(jobs_t *self, void (*fn)(job_t *job, void *arg), void *arg)
{
    for (size_t i = 0; i < self->n; i++)
        if (job_is_running(self->items[i]))
            fn(self->items[i], arg);
}

static void s_evict(jobs_t *self)
{
    size_t finished = 0;
    for (size_t i = 0; i < self->n; i++)
        finished += !job_is_running(self->items[i]);
    for (size_t i = 0; i < self->n && finished > self->keep;) {
        if (job_is_running(self->items[i])) {
            i++;
            continue;
        }
        s_job_free(self->items[i]);
        memmove(&self->items[i], &self->items[i + 1], (self->n - i - 1) * sizeof(job_t *));
        self->n--;
        finished--;
    }
}

job_t *jobs_add(jobs_t *self, const Tide__V1__ExecRequest *req)
{
    if (jobs_find(self, req->job_id))
        return NULL;
    s_evict(self);
    if (self->n == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 32;
        job_t **items = realloc(self->items, cap * sizeof *items);
        if (!items)
            return NULL;
        self->items = items;
        self->cap = cap;
    }
    job_t *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    snprintf(job->id, sizeof job->id, "%s", req->job_id);
    job->kind = req->kind;
    job->state = TIDE__V1__JOB_STATE__JOB_PENDING;
    job->started_ms = clock_wall_ms();
    uint64_t deadline =
        req->deadline_ms ? req->deadline_ms : (uint64_t)self->cfg->executor.job_deadline_ms;
    job->deadline_mono_ms = clock_mono_ms() + deadline;
    /* A profile changes no instance: it neither waits for scaling jobs nor holds them up. */
    job->holds_instances = req->kind != TIDE__V1__JOB_KIND__JOB_PROFILE;
    if (req->profile) {
        snprintf(job->profile.reason, sizeof job->profile.reason, "%s", req->profile->reason);
        snprintf(job->profile.detail, sizeof job->profile.detail, "%s",
                 req->profile->detail ? req->profile->detail : "");
        job->profile.seconds = req->profile->seconds;
        job->profile.pid = strcmp(req->profile->reason, "crash") == 0 ? req->profile->pid : 0;
    }
    int cap = self->cfg->executor.output_tail_lines;
    job->tail_cap = cap < 1 ? 1 : cap > JOB_TAIL_MAX ? JOB_TAIL_MAX : (size_t)cap;
    job->tail = calloc(job->tail_cap, sizeof *job->tail);
    job->instances = calloc(req->n_instances ? req->n_instances : 1, sizeof *job->instances);
    if (!job->tail || !job->instances) {
        s_job_free(job);
        return NULL;
    }
    for (size_t i = 0; i < req->n_instances; i++) {
        job_instance_t *in = &job->instances[i];
        snprintf(in->name, sizeof in->name, "%s", req->instances[i]->name);
        snprintf(in->host, sizeof in->host, "%s", req->instances[i]->host);
        in->port = req->instances[i]->port;
    }
    job->n_instances = req->n_instances;
    self->items[self->n++] = job;
    return job;
}

/* ---- output, results, end --------------------------------------------------------------- */

/* Length of a valid UTF-8 sequence at p (max n bytes), or 0 when invalid. */
static size_t s_utf8_len(const unsigned char *p, size_t n)
{
    size_t len;
    uint32_t cp;
    if (p[0] < 0xC2 || p[0] > 0xF4)
        return 0;
    if (p[0] < 0xE0) {
        len = 2;
        cp = p[0] & 0x1F;
    } else if (p[0] < 0xF0) {
        len = 3;
        cp = p[0] & 0x0F;
    } else {
        len = 4;
        cp = p[0] & 0x07;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return len;
}

/* Copies at most max bytes of line to out (max + 1 bytes). Protobuf strings must be UTF-8 and log
 * readers dislike control bytes: a playbook's output is whatever its modules print, so clean it
 * before it goes anywhere. */
static void s_sanitize(const char *line, char *out, size_t max)
{
    const unsigned char *p = (const unsigned char *)line;
    size_t n = strlen(line), o = 0;
    while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == '\n'))
        n--;
    for (size_t i = 0; i < n && o < max;) {
        if (p[i] >= 0x80) {
            size_t l = s_utf8_len(p + i, n - i);
            if (l > 0 && o + l <= max) {
                memcpy(out + o, p + i, l);
                o += l;
                i += l;
                continue;
            }
            out[o++] = '?';
            i += l ? l : 1;
            continue;
        }
        out[o++] = (p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7F ? ' ' : (char)p[i];
        i++;
    }
    out[o] = '\0';
}

void job_output(job_t *job, const char *line, char *clean)
{
    char buf[JOB_LINE_MAX + 1];
    s_sanitize(line, buf, JOB_LINE_MAX);
    if (clean)
        memcpy(clean, buf, strlen(buf) + 1);
    char *copy = strdup(buf);
    if (!copy)
        return;
    size_t slot = (job->tail_head + job->tail_len) % job->tail_cap;
    if (job->tail_len == job->tail_cap) {
        free(job->tail[job->tail_head]);
        job->tail[job->tail_head] = copy;
        job->tail_head = (job->tail_head + 1) % job->tail_cap;
    } else {
        job->tail[slot] = copy;
        job->tail_len++;
    }
}

const char *job_tail_line(const job_t *job, size_t i)
{
    if (i >= job->tail_len)
        return NULL;
    return job->tail[(job->tail_head + i) % job->tail_cap];
}

int job_add_result(job_t *job, const job_instance_t *inst, bool ok, bool running,
                   const char *detail)
{
    job_result_t *r = realloc(job->results, (job->n_results + 1) * sizeof *r);
    if (!r)
        return -ENOMEM;
    job->results = r;
    job_result_t *res = &r[job->n_results++];
    memset(res, 0, sizeof *res);
    res->instance = *inst;
    res->ok = ok;
    res->running = running;
    if (detail)
        s_sanitize(detail, res->detail, sizeof res->detail - 1);
    return 0;
}

void job_finish(job_t *job, Tide__V1__JobState state, const char *error)
{
    job->state = state;
    job->finished_ms = clock_wall_ms();
    job->error[0] = '\0';
    if (error)
        s_sanitize(error, job->error, sizeof job->error - 1);
}

/* ---- the view sent on the bus ----------------------------------------------------------- */

static void s_fill_instance(Tide__V1__Instance *out, const job_instance_t *in)
{
    tide__v1__instance__init(out);
    out->name = (char *)in->name;
    out->host = (char *)in->host;
    out->port = in->port;
}

int job_view_init(job_view_t *view, const job_t *job)
{
    memset(view, 0, sizeof *view);
    Tide__V1__JobRecord *r = &view->record;
    tide__v1__job_record__init(r);
    r->job_id = (char *)job->id;
    r->kind = job->kind;
    r->state = job->state;
    r->started_ms = job->started_ms;
    r->finished_ms = job->finished_ms;
    r->error = (char *)job->error;
    r->profile_id = (char *)job->profile.id;
    size_t nr = job->n_results, ni = job->n_instances, nt = job->tail_len;
    view->results = calloc(nr + 1, sizeof *view->results);
    view->result_ptrs = calloc(nr + 1, sizeof *view->result_ptrs);
    view->result_insts = calloc(nr + 1, sizeof *view->result_insts);
    view->insts = calloc(ni + 1, sizeof *view->insts);
    view->inst_ptrs = calloc(ni + 1, sizeof *view->inst_ptrs);
    view->tail_ptrs = calloc(nt + 1, sizeof *view->tail_ptrs);
    if (!view->results || !view->result_ptrs || !view->result_insts || !view->insts ||
        !view->inst_ptrs || !view->tail_ptrs) {
        job_view_clear(view);
        return -ENOMEM;
    }
    for (size_t i = 0; i < nr; i++) {
        const job_result_t *src = &job->results[i];
        Tide__V1__InstanceResult *dst = &view->results[i];
        tide__v1__instance_result__init(dst);
        s_fill_instance(&view->result_insts[i], &src->instance);
        dst->instance = &view->result_insts[i];
        dst->ok = src->ok;
        dst->running = src->running;
        dst->exited_pid = src->exited_pid;
        dst->detail = (char *)src->detail;
        view->result_ptrs[i] = dst;
    }
    for (size_t i = 0; i < ni; i++) {
        s_fill_instance(&view->insts[i], &job->instances[i]);
        view->inst_ptrs[i] = &view->insts[i];
    }
    for (size_t i = 0; i < nt; i++)
        view->tail_ptrs[i] = (char *)job_tail_line(job, i);
    r->results = view->result_ptrs;
    r->n_results = nr;
    r->instances = view->inst_ptrs;
    r->n_instances = ni;
    r->output_tail = view->tail_ptrs;
    r->n_output_tail = nt;
    return 0;
}

void job_view_clear(job_view_t *view)
{
    free(view->results);
    free(view->result_ptrs);
    free(view->result_insts);
    free(view->insts);
    free(view->inst_ptrs);
    free(view->tail_ptrs);
    memset(view, 0, sizeof *view);
    tide__v1__job_record__init(&view->record);
}

/* ---- the LIST result file --------------------------------------------------------------- */

int jobs_parse_list_line(const char *line, const char *prefix, job_result_t *out)
{
    char buf[512];
    size_t n = strlen(line);
    if (n >= sizeof buf)
        return -EINVAL;
    memcpy(buf, line, n + 1);
    char *tok[5];
    int nt = 0;
    char *save = NULL, *how = NULL;
    for (char *t = strtok_r(buf, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save)) {
        if (nt == 5)
            return -EINVAL;
        tok[nt++] = t;
        if (nt == 5 && strcmp(tok[3], "exited") == 0) {
            how = save; /* the rest of the line, as written */
            break;
        }
    }
    if (nt == 0)
        return 1;
    if (nt != 4 && !how)
        return -EINVAL;
    if (s_instance_number(tok[0], prefix) < 0 || strlen(tok[0]) >= JOB_NAME_MAX ||
        strlen(tok[1]) >= JOB_HOST_MAX || !jobs_host_ok(tok[1]))
        return -EINVAL;
    char *end = NULL;
    errno = 0;
    long port = strtol(tok[2], &end, 10);
    if (errno || *end || end == tok[2] || port < 1 || port > 65535 || tok[2][0] == '-' ||
        tok[2][0] == '+')
        return -EINVAL;
    if (how) {
        end = NULL;
        errno = 0;
        unsigned long pid = strtoul(tok[4], &end, 10);
        if (errno || *end || end == tok[4] || pid == 0 || pid > 0x3fffffff || tok[4][0] == '-' ||
            tok[4][0] == '+')
            return -EINVAL;
        while (*how == ' ' || *how == '\t')
            how++;
        memset(out, 0, sizeof *out);
        snprintf(out->instance.name, sizeof out->instance.name, "%s", tok[0]);
        snprintf(out->instance.host, sizeof out->instance.host, "%s", tok[1]);
        out->instance.port = (uint32_t)port;
        out->exited_pid = (uint32_t)pid;
        s_sanitize(how, out->detail, sizeof out->detail - 1);
        if (!out->detail[0])
            snprintf(out->detail, sizeof out->detail, "exited");
        return 0;
    }
    bool healthy;
    if (strcmp(tok[3], "1") == 0 || strcasecmp(tok[3], "true") == 0)
        healthy = true;
    else if (strcmp(tok[3], "0") == 0 || strcasecmp(tok[3], "false") == 0)
        healthy = false;
    else
        return -EINVAL;
    memset(out, 0, sizeof *out);
    snprintf(out->instance.name, sizeof out->instance.name, "%s", tok[0]);
    snprintf(out->instance.host, sizeof out->instance.host, "%s", tok[1]);
    out->instance.port = (uint32_t)port;
    out->ok = healthy;
    out->running = true;
    snprintf(out->detail, sizeof out->detail, "%s", healthy ? "healthy" : "not healthy");
    return 0;
}

bool jobs_host_ok(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

bool jobs_image_ok(const char *image)
{
    size_t n = strlen(image);
    if (n == 0 || n > 255 || strchr("-./:", image[0]))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)image[i];
        if (!isalnum(c) && !strchr("._/:@-", c))
            return false;
    }
    return true;
}

int jobs_check_placement(const job_t *job, const job_result_t *lines, size_t n, char *err,
                         size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const job_instance_t *want = NULL;
        for (size_t k = 0; k < job->n_instances && !want; k++)
            if (strcmp(job->instances[k].name, lines[i].instance.name) == 0)
                want = &job->instances[k];
        if (!want) {
            snprintf(err, errlen, "placement names %s, which is not in the job",
                     lines[i].instance.name);
            return -EINVAL;
        }
        if (lines[i].instance.port != want->port) {
            snprintf(err, errlen, "placement gives %s port %u, the job asked for %u", want->name,
                     lines[i].instance.port, want->port);
            return -EINVAL;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(lines[k].instance.name, want->name) == 0) {
                snprintf(err, errlen, "placement names %s twice", want->name);
                return -EINVAL;
            }
        }
    }
    for (size_t k = 0; k < job->n_instances; k++) {
        bool found = false;
        for (size_t i = 0; i < n && !found; i++)
            found = strcmp(lines[i].instance.name, job->instances[k].name) == 0;
        if (!found) {
            snprintf(err, errlen, "placement does not say where %s runs", job->instances[k].name);
            return -EINVAL;
        }
    }
    return 0;
}
