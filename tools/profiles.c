/* profiles.c - tidectl's profile commands: take one (through the scaler, which picks the
 * baseline and sends the PROFILE job), list them, and copy one's files out of the store. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tide_clock.h"
#include "tide_profiles.h"
#include "tidectl.h"

#define POLL_MS      500
#define JOB_GRACE_MS 90000 /* beyond the sampling: ansible, perf script, folding */
/* The scaler queues the job for the executor after it answers us: until it is delivered (its
 * lazy-pirate client tries 3 times) the executor does not know the id yet. */
#define UNKNOWN_GRACE_MS 15000

static void s_time(FILE *out, uint64_t wall_ms)
{
    time_t t = (time_t)(wall_ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    char buf[32];
    strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    fputs(buf, out);
}

static void s_print_files(const ctl_t *ctl, const profile_rec_t *r)
{
    char root[CFG_PATH + 16];
    profiles_root(ctl->cfg, root, sizeof root);
    fprintf(ctl->out, "profile %s\n  flame: %s/%s/%s\n", r->id, root, r->id, PROFILE_SVG);
    if (r->has_diff)
        fprintf(ctl->out, "  diff:  %s/%s/%s (against %s)\n", root, r->id, PROFILE_DIFF,
                r->baseline);
    if (r->has_crash)
        fprintf(ctl->out, "  crash: %s/%s/%s\n", root, r->id, PROFILE_CRASH);
    fprintf(ctl->out, "  %" PRIu64 " samples at %d Hz, %.0f%% of frames unnamed\n", r->samples,
            r->rate_hz, 100.0 * r->unknown_share);
}

/* Polls the executor for job_id until it ends or until deadline (mono ms). Returns CTL_OK with
 * the profile's id in id, or CTL_FAIL with the reason printed. */
static int s_wait_job(const ctl_t *ctl, const char *job_id, uint64_t deadline, char *id,
                      size_t idlen)
{
    uint64_t unknown_until = clock_mono_ms() + UNKNOWN_GRACE_MS;
    while (clock_mono_ms() < deadline) {
        Tide__V1__ExecRequest req = TIDE__V1__EXEC_REQUEST__INIT;
        req.header = msg_sender_next(ctl->sender);
        req.kind = TIDE__V1__JOB_KIND__JOB_STATUS;
        req.job_id = (char *)job_id;
        msg_in_t in;
        /* One unanswered poll is not the end: the executor may be busy starting a playbook. */
        if (ctl_request(ctl, "executor", ctl->cfg->endpoints.executor_control, TOPIC_EXEC_REQ,
                        &req.base, TOPIC_EXEC_REP, &in) == CTL_OK) {
            const Tide__V1__ExecReply *rep = (const void *)in.msg;
            const Tide__V1__JobRecord *rec = rep->job;
            int done = 0;
            bool unknown = !rep->accepted && rep->reason && strstr(rep->reason, "unknown job");
            if (unknown && clock_mono_ms() < unknown_until) {
                done = 0; /* not delivered yet */
            } else if (unknown) {
                fprintf(ctl->err,
                        "tidectl: the executor never received job %s (the scaler "
                        "could not deliver it; see its log)\n",
                        job_id);
                done = -1;
            } else if (!rep->accepted) {
                fprintf(ctl->err, "tidectl: executor: %s\n", rep->reason ? rep->reason : "");
                done = -1;
            } else if (rec && rec->state == TIDE__V1__JOB_STATE__JOB_FAILED) {
                fprintf(ctl->err, "tidectl: profile job %s failed: %s\n", job_id,
                        rec->error ? rec->error : "");
                ctl_print_tail(ctl->err, rec);
                fputc('\n', ctl->err);
                done = -1;
            } else if (rec && rec->state == TIDE__V1__JOB_STATE__JOB_SUCCEEDED) {
                snprintf(id, idlen, "%s", rec->profile_id ? rec->profile_id : "");
                done = 1;
            }
            msg_in_free(&in);
            if (done)
                return done > 0 ? CTL_OK : CTL_FAIL;
        }
        usleep(POLL_MS * 1000);
    }
    fprintf(ctl->err, "tidectl: profile job %s did not end in time\n", job_id);
    return CTL_FAIL;
}

int ctl_profile_take(const ctl_t *ctl, const char *instance, uint32_t seconds)
{
    Tide__V1__ControlRequest req = TIDE__V1__CONTROL_REQUEST__INIT;
    req.command = TIDE__V1__COMMAND__CMD_PROFILE;
    req.instance = (char *)instance;
    req.seconds = seconds;
    msg_in_t in;
    int status = ctl_scaler_request(ctl, &req, &in);
    if (status != CTL_OK)
        return status;
    const Tide__V1__ControlReply *rep = (const void *)in.msg;
    char job_id[160] = "";
    if (!rep->ok || !rep->job_id || !rep->job_id[0]) {
        fprintf(ctl->err, "tidectl: scaler refused: %s\n",
                rep->error && rep->error[0] ? rep->error : "no job sent");
        msg_in_free(&in);
        return CTL_FAIL;
    }
    snprintf(job_id, sizeof job_id, "%s", rep->job_id);
    msg_in_free(&in);
    if (!ctl->json)
        fprintf(ctl->out, "profiling %s (job %s)...\n", instance, job_id);
    fflush(ctl->out);
    uint32_t s = seconds ? seconds : (uint32_t)ctl->cfg->profiling.manual_seconds;
    char id[PROFILE_ID_MAX + 1];
    status = s_wait_job(ctl, job_id, clock_mono_ms() + s * 1000ull + JOB_GRACE_MS, id, sizeof id);
    if (status != CTL_OK)
        return status;
    char root[CFG_PATH + 16], dir[CFG_PATH + PROFILE_ID_MAX + 24], err[CFG_PATH + 128];
    profiles_root(ctl->cfg, root, sizeof root);
    snprintf(dir, sizeof dir, "%s/%s", root, id);
    profile_rec_t *r = malloc(sizeof *r);
    if (!r || !id[0] || profile_rec_read(dir, r, err, sizeof err) != 0) {
        fprintf(ctl->err, "tidectl: the job ended but its profile cannot be read: %s\n",
                r && id[0] ? err : "no profile id");
        free(r);
        return CTL_FAIL;
    }
    if (ctl->json) {
        profile_rec_json(r, ctl->out);
        fputc('\n', ctl->out);
    } else {
        s_print_files(ctl, r);
    }
    fflush(ctl->out);
    free(r);
    return CTL_OK;
}

int ctl_profiles_list(const ctl_t *ctl)
{
    char root[CFG_PATH + 16];
    profiles_root(ctl->cfg, root, sizeof root);
    profile_rec_t *recs;
    size_t n;
    if (profiles_list(root, &recs, &n) != 0) {
        fprintf(ctl->err, "tidectl: out of memory listing %s\n", root);
        return CTL_FAIL;
    }
    for (size_t i = 0; i < n; i++) {
        const profile_rec_t *r = &recs[i];
        if (ctl->json) {
            profile_rec_json(r, ctl->out);
        } else {
            fprintf(ctl->out, "%s  %s  %s  ", r->id, r->instance, r->reason);
            s_time(ctl->out, r->created_ms);
            fprintf(ctl->out, "  %" PRIu64 " samples%s%s", r->samples,
                    r->has_diff ? "  diff against " : "", r->has_diff ? r->baseline : "");
        }
        fputc('\n', ctl->out);
    }
    if (n == 0 && !ctl->json)
        fprintf(ctl->err, "tidectl: no profiles in %s\n", root);
    free(recs);
    fflush(ctl->out);
    return CTL_OK;
}

int ctl_profile_get(const ctl_t *ctl, const char *id, const char *what, const char *path)
{
    if (!profiles_id_ok(id)) {
        fprintf(ctl->err, "tidectl: '%.140s' is not a profile id (see tidectl profiles)\n", id);
        return CTL_FAIL;
    }
    char root[CFG_PATH + 16], file[CFG_PATH + PROFILE_ID_MAX + 48];
    profiles_root(ctl->cfg, root, sizeof root);
    snprintf(file, sizeof file, "%s/%s/%s", root, id, what);
    FILE *in = fopen(file, "rb");
    if (!in) {
        char dir[CFG_PATH + PROFILE_ID_MAX + 24];
        snprintf(dir, sizeof dir, "%s/%s", root, id);
        fprintf(ctl->err, "tidectl: %s: %s\n", access(dir, F_OK) == 0 ? file : id,
                access(dir, F_OK) == 0 ? "this profile has no such file" : "no such profile");
        return CTL_FAIL;
    }
    FILE *out = path ? fopen(path, "wb") : ctl->out;
    if (!out) {
        fprintf(ctl->err, "tidectl: cannot write %s: %s\n", path, strerror(errno));
        fclose(in);
        return CTL_FAIL;
    }
    char buf[65536];
    size_t n;
    bool bad = false;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        bad |= fwrite(buf, 1, n, out) != n;
    bad |= ferror(in) != 0;
    fclose(in);
    if (path)
        bad |= fclose(out) != 0;
    else
        bad |= fflush(out) != 0;
    if (bad) {
        fprintf(ctl->err, "tidectl: copying %s to %s failed\n", file, path ? path : "stdout");
        if (path)
            unlink(path);
        return CTL_FAIL;
    }
    if (path)
        fprintf(ctl->err, "wrote %s\n", path);
    return CTL_OK;
}
