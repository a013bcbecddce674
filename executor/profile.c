/* profile.c - a profile playbook's capture to a profile folder (see profile.h). */
#include "profile.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "flame.h"
#include "tide_clock.h"
#include "tide_log.h"
#include "tide_profiles.h"

#define PATH_LEN (CFG_PATH + 2 * JOB_ID_MAX + 32) /* a folder */
#define FILE_LEN (PATH_LEN + 32)                  /* a file in it */

const char *profile_work_dir(const tide_config_t *cfg, const job_t *job, char *buf, size_t len)
{
    snprintf(buf, len, "%s/profiles/.work-%s", cfg->executor.state_dir, job->id);
    return buf;
}

void profile_remove_work(const char *dir)
{
    profiles_remove_dir(dir);
}

int profile_clean_work(const tide_config_t *cfg)
{
    char root[CFG_PATH + 16], dir[PATH_LEN];
    profiles_root(cfg, root, sizeof root);
    DIR *d = opendir(root);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, ".work-", 6) != 0)
            continue;
        snprintf(dir, sizeof dir, "%s/%.*s", root, JOB_ID_MAX + 8, e->d_name);
        profile_remove_work(dir);
        n++;
    }
    closedir(d);
    return n;
}

typedef struct {
    long target_pid, baseline_pid;
    uint64_t start_ms, end_ms;
    char host[64];
    char command[CFG_PATH];
    char crash_note[256];
    char source[16]; /* "ring" (flight recorders' dumps) or "live" (sampled for the job) */
    int window_s;    /* ring: keep the last window_s seconds of the target's samples */
    bool realtime;   /* samples stamped with the wall clock: [start_ms, end_ms] is exact */
} meta_t;

/* Reads meta.txt: "KEY VALUE" lines; unknown keys are ignored (a newer playbook may say more).
 * Returns 0, or -EINVAL with err set when the target's pid is missing. */
static int s_read_meta(const char *work, meta_t *m, char *err, size_t errlen)
{
    char path[FILE_LEN];
    snprintf(path, sizeof path, "%s/meta.txt", work);
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "the playbook wrote no %s: %s", path, strerror(errno));
        return -ENOENT;
    }
    char line[CFG_PATH + 64];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *val = strchr(line, ' ');
        if (!val)
            continue;
        *val++ = '\0';
        if (strcmp(line, "target_pid") == 0)
            m->target_pid = strtol(val, NULL, 10);
        else if (strcmp(line, "baseline_pid") == 0)
            m->baseline_pid = strtol(val, NULL, 10);
        else if (strcmp(line, "start_ms") == 0)
            m->start_ms = strtoull(val, NULL, 10);
        else if (strcmp(line, "end_ms") == 0)
            m->end_ms = strtoull(val, NULL, 10);
        else if (strcmp(line, "host") == 0)
            snprintf(m->host, sizeof m->host, "%s", val);
        else if (strcmp(line, "command") == 0)
            snprintf(m->command, sizeof m->command, "%s", val);
        else if (strcmp(line, "crash_note") == 0)
            snprintf(m->crash_note, sizeof m->crash_note, "%s", val);
        else if (strcmp(line, "source") == 0)
            snprintf(m->source, sizeof m->source, "%s", val);
        else if (strcmp(line, "window_s") == 0)
            m->window_s = atoi(val);
        else if (strcmp(line, "clock") == 0)
            m->realtime = strcmp(val, "realtime") == 0;
    }
    fclose(f);
    if (m->target_pid <= 0) {
        snprintf(err, errlen, "the playbook's %s names no target_pid", path);
        return -EINVAL;
    }
    return 0;
}

/* Folds the samples of pid in [from_s, to_s] (0, 0: all) from script into a new set (NULL with
 * err set on failure). */
static flame_t *s_fold(const char *script, long pid, double from_s, double to_s, flame_stats_t *st,
                       char *err, size_t errlen)
{
    FILE *in = fopen(script, "r");
    if (!in) {
        snprintf(err, errlen, "the playbook wrote no %s: %s", script, strerror(errno));
        return NULL;
    }
    flame_t *f = flame_new();
    flame_filter_t filter = {from_s, to_s, pid};
    int rc = f ? flame_parse_perf_script(f, in, &filter, st) : -ENOMEM;
    fclose(in);
    if (rc != 0) {
        snprintf(err, errlen, "reading %s: %s", script, strerror(-rc));
        flame_destroy(&f);
    }
    return f;
}

/* A new folder <root>/<UTC time>-<instance>-<reason>[-N]; its id into id. */
static int s_make_folder(const char *root, const job_t *job, char *id, size_t idlen, char *dir,
                         size_t dirlen)
{
    time_t now = (time_t)(clock_wall_ms() / 1000);
    struct tm tm;
    gmtime_r(&now, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    for (int n = 1; n < 100; n++) {
        if (n == 1)
            snprintf(id, idlen, "%s-%s-%s", stamp, job->instances[0].name, job->profile.reason);
        else
            snprintf(id, idlen, "%s-%s-%s-%d", stamp, job->instances[0].name, job->profile.reason,
                     n);
        snprintf(dir, dirlen, "%s/%s", root, id);
        if (mkdir(dir, 0755) == 0)
            return 0;
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

static int s_write_file(const char *dir, const char *name, const flame_t *f, const flame_t *base,
                        const flame_svg_opts_t *opts)
{
    char path[FILE_LEN];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *out = fopen(path, "w");
    if (!out)
        return -errno;
    int rc = opts ? flame_write_svg(f, base, opts, out) : flame_write_folded(f, out);
    if (fclose(out) != 0 && rc == 0)
        rc = -EIO;
    return rc;
}

static void s_clock_text(uint64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* Copies the playbook's crash stack (work/crash.txt) into the profile, if there is one. */
static bool s_copy_crash(const char *work, const char *dir)
{
    char from[FILE_LEN], to[FILE_LEN];
    snprintf(from, sizeof from, "%s/%s", work, PROFILE_CRASH);
    snprintf(to, sizeof to, "%s/%s", dir, PROFILE_CRASH);
    return rename(from, to) == 0;
}

unsigned profile_ring_pages(int rate_hz, int window_s)
{
    double want =
        (double)(rate_hz > 0 ? rate_hz : 1) * (window_s > 0 ? window_s : 1) * 1600.0 / 4096.0;
    unsigned pages = 8;
    while (pages < 1024 && (double)pages < want)
        pages *= 2;
    return pages;
}

int profile_build(const tide_config_t *cfg, job_t *job, char *err, size_t errlen)
{
    char work[PATH_LEN], script[FILE_LEN], root[CFG_PATH + 16], dir[PATH_LEN];
    profile_work_dir(cfg, job, work, sizeof work);
    snprintf(script, sizeof script, "%s/script.txt", work);
    profiles_root(cfg, root, sizeof root);
    meta_t m;
    flame_t *target = NULL, *base = NULL;
    flame_stats_t st = {0}, bst = {0};
    profile_rec_t *rec = calloc(1, sizeof *rec);
    int rc = rec ? s_read_meta(work, &m, err, errlen) : -ENOMEM;
    if (rc == 0 && !(target = s_fold(script, m.target_pid, 0, 0, &st, err, errlen)))
        rc = -EIO;
    /* A recorder's ring holds more than was asked: the seconds the playbook names stay (the
     * window before the dump, or before a crash's exit), whatever the target did in them, when
     * the samples carry the wall clock; else the last window_s seconds of the target's
     * samples. The baseline is cut to the same seconds (one clock on one host). */
    double from = 0, to = 0;
    bool exact = m.realtime && m.end_ms > m.start_ms;
    if (rc == 0 && m.window_s > 0 && (exact || st.samples + st.outside > 0)) {
        from = exact ? (double)m.start_ms / 1000.0 : st.last_s - m.window_s;
        to = exact ? (double)m.end_ms / 1000.0 : st.last_s;
        flame_destroy(&target);
        if (!(target = s_fold(script, m.target_pid, from, to, &st, err, errlen)))
            rc = -EIO;
    }
    bool has_base = rc == 0 && job->n_instances > 1 && m.baseline_pid > 0;
    if (has_base && !(base = s_fold(script, m.baseline_pid, from, to, &bst, err, errlen)))
        rc = -EIO;
    if (rc == 0 && (rc = s_make_folder(root, job, rec->id, sizeof rec->id, dir, sizeof dir)) != 0)
        snprintf(err, errlen, "cannot create a folder under %s: %s", root, strerror(-rc));
    if (rc != 0) {
        if (rc == -ENOMEM)
            snprintf(err, errlen, "out of memory");
        flame_destroy(&target);
        flame_destroy(&base);
        free(rec);
        profile_remove_work(work);
        return rc;
    }

    snprintf(rec->service, sizeof rec->service, "%s", cfg->service);
    snprintf(rec->instance, sizeof rec->instance, "%s", job->instances[0].name);
    snprintf(rec->host, sizeof rec->host, "%s", m.host[0] ? m.host : job->instances[0].host);
    snprintf(rec->reason, sizeof rec->reason, "%s", job->profile.reason);
    snprintf(rec->source, sizeof rec->source, "%.7s", m.source[0] ? m.source : "live");
    snprintf(rec->detail, sizeof rec->detail, "%.255s", job->profile.detail);
    snprintf(rec->command, sizeof rec->command, "%s", m.command);
    rec->created_ms = clock_wall_ms();
    rec->from_ms = m.start_ms ? m.start_ms : job->started_ms;
    rec->to_ms = m.end_ms ? m.end_ms : rec->created_ms;
    rec->rate_hz = cfg->profiling.rate_hz;
    rec->samples = st.samples;
    rec->unknown_share = st.frames ? (double)st.unknown_frames / (double)st.frames : 0;
    if (has_base) {
        snprintf(rec->baseline, sizeof rec->baseline, "%s", job->instances[1].name);
        rec->baseline_samples = bst.samples;
    }
    rec->has_crash = s_copy_crash(work, dir);
    snprintf(rec->crash_note, sizeof rec->crash_note, "%s", m.crash_note);

    char from_text[32], to_text[32], title[640], sub[768];
    s_clock_text(rec->from_ms, from_text, sizeof from_text);
    s_clock_text(rec->to_ms, to_text, sizeof to_text);
    snprintf(title, sizeof title, "%s %s: %s%s%s", rec->service, rec->instance, rec->reason,
             rec->detail[0] ? " (" : "", rec->detail[0] ? rec->detail : "");
    if (strlen(title) + 1 < sizeof title && rec->detail[0])
        strcat(title, ")");
    snprintf(sub, sizeof sub,
             "%s to %s UTC (%.1f s%s), %d Hz cpu-clock, %" PRIu64 " samples, %.0f%% of frames "
             "unnamed, host %s",
             from_text, to_text + 11, (double)(rec->to_ms - rec->from_ms) / 1000.0,
             strcmp(m.source, "ring") == 0 ? ", the flight recorder's last seconds" : "",
             rec->rate_hz, rec->samples, 100.0 * rec->unknown_share, rec->host);
    flame_svg_opts_t opts = {.title = title, .subtitle = sub};
    rc = s_write_file(dir, PROFILE_FOLDED, target, NULL, NULL);
    if (rc == 0)
        rc = s_write_file(dir, PROFILE_SVG, target, NULL, &opts);
    if (rc == 0 && has_base) {
        char dtitle[800], dsub[1000];
        snprintf(dtitle, sizeof dtitle, "%s against %s (healthy): red grew, blue shrank", title,
                 rec->baseline);
        snprintf(dsub, sizeof dsub, "%s; baseline %" PRIu64 " samples over the same seconds", sub,
                 rec->baseline_samples);
        flame_svg_opts_t dopts = {.title = dtitle, .subtitle = dsub};
        rc = s_write_file(dir, PROFILE_DIFF, target, base, &dopts);
        rec->has_diff = rc == 0;
        if (rc == 0)
            rc = s_write_file(dir, "baseline.folded", base, NULL, NULL);
    }
    if (rc == 0)
        rc = profile_rec_write(dir, rec);
    if (rc != 0) {
        snprintf(err, errlen, "writing %s: %s", dir, strerror(-rc));
        profiles_remove_dir(dir);
    } else {
        snprintf(job->profile.id, sizeof job->profile.id, "%s", rec->id);
        int removed = profiles_retain(root, cfg->profiling.keep, cfg->profiling.max_bytes);
        char q[CFG_PATH + 8];
        log_info("profile written",
                 "id=%s instance=%s reason=%s samples=%" PRIu64
                 " baseline=%s removed_old=%d dir=%s",
                 rec->id, rec->instance, rec->reason, rec->samples,
                 rec->baseline[0] ? rec->baseline : "-", removed > 0 ? removed : 0,
                 log_quote(q, sizeof q, dir));
    }
    flame_destroy(&target);
    flame_destroy(&base);
    free(rec);
    profile_remove_work(work);
    return rc;
}
