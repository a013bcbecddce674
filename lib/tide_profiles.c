/* tide_profiles.c - the profile store on disk (see tide_profiles.h); JSON through jansson. */
#include "tide_profiles.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *profiles_root(const tide_config_t *cfg, char *buf, size_t len)
{
    snprintf(buf, len, "%s/profiles", cfg->executor.state_dir);
    return buf;
}

bool profiles_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > PROFILE_ID_MAX || id[0] == '.')
        return false;
    return strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-") == n;
}

static json_t *s_to_json(const profile_rec_t *r)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:i, s:I, s:f, s:s, "
                     "s:I, s:s, s:s, s:b, s:b}",
                     "id", r->id, "service", r->service, "instance", r->instance, "host", r->host,
                     "reason", r->reason, "source", r->source, "detail", r->detail, "created_ms",
                     (json_int_t)r->created_ms, "from_ms", (json_int_t)r->from_ms, "to_ms",
                     (json_int_t)r->to_ms, "rate_hz", r->rate_hz, "samples", (json_int_t)r->samples,
                     "unknown_share", r->unknown_share, "baseline", r->baseline, "baseline_samples",
                     (json_int_t)r->baseline_samples, "command", r->command, "crash_note",
                     r->crash_note, "has_diff", r->has_diff, "has_crash", r->has_crash);
}

int profile_rec_json(const profile_rec_t *rec, FILE *out)
{
    json_t *j = s_to_json(rec);
    if (!j)
        return -ENOMEM;
    int rc = json_dumpf(j, out, JSON_COMPACT | JSON_PRESERVE_ORDER) == 0 ? 0 : -EIO;
    json_decref(j);
    return rc;
}

int profile_rec_write(const char *dir, const profile_rec_t *rec)
{
    char path[CFG_PATH + 64], tmp[CFG_PATH + 72];
    snprintf(path, sizeof path, "%s/%s", dir, PROFILE_RECORD);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    json_t *j = s_to_json(rec);
    if (!j)
        return -ENOMEM;
    int rc = json_dump_file(j, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == 0 ? 0 : -EIO;
    json_decref(j);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0)
        unlink(tmp);
    return rc;
}

/* Copies the string field key of j into buf; a missing key leaves buf empty. Returns false when
 * the field is there but not a string. */
static bool s_str(json_t *j, const char *key, char *buf, size_t len)
{
    json_t *v = json_object_get(j, key);
    buf[0] = '\0';
    if (!v)
        return true;
    if (!json_is_string(v))
        return false;
    snprintf(buf, len, "%s", json_string_value(v));
    return true;
}

static bool s_u64(json_t *j, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(j, key);
    *out = 0;
    if (!v)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

int profile_rec_read(const char *dir, profile_rec_t *rec, char *err, size_t errlen)
{
    char path[CFG_PATH + 64];
    snprintf(path, sizeof path, "%s/%s", dir, PROFILE_RECORD);
    memset(rec, 0, sizeof *rec);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) {
        snprintf(err, errlen, "%s: %s", path, je.text);
        return access(path, R_OK) == 0 ? -EINVAL : -ENOENT;
    }
    uint64_t rate = 0;
    json_t *share = json_object_get(j, "unknown_share");
    bool ok = json_is_object(j) && s_str(j, "id", rec->id, sizeof rec->id) &&
              s_str(j, "service", rec->service, sizeof rec->service) &&
              s_str(j, "instance", rec->instance, sizeof rec->instance) &&
              s_str(j, "host", rec->host, sizeof rec->host) &&
              s_str(j, "reason", rec->reason, sizeof rec->reason) &&
              s_str(j, "source", rec->source, sizeof rec->source) &&
              s_str(j, "detail", rec->detail, sizeof rec->detail) &&
              s_u64(j, "created_ms", &rec->created_ms) && s_u64(j, "from_ms", &rec->from_ms) &&
              s_u64(j, "to_ms", &rec->to_ms) && s_u64(j, "rate_hz", &rate) &&
              s_u64(j, "samples", &rec->samples) &&
              s_str(j, "baseline", rec->baseline, sizeof rec->baseline) &&
              s_u64(j, "baseline_samples", &rec->baseline_samples) &&
              s_str(j, "command", rec->command, sizeof rec->command) &&
              s_str(j, "crash_note", rec->crash_note, sizeof rec->crash_note) &&
              (!share || json_is_number(share)) && rec->id[0] && profiles_id_ok(rec->id);
    if (ok) {
        rec->rate_hz = (int)rate;
        rec->unknown_share = share ? json_number_value(share) : 0;
        rec->has_diff = json_is_true(json_object_get(j, "has_diff"));
        rec->has_crash = json_is_true(json_object_get(j, "has_crash"));
    } else {
        snprintf(err, errlen, "%s: a field is missing or of the wrong type", path);
    }
    json_decref(j);
    return ok ? 0 : -EINVAL;
}

/* Bytes of the regular files directly in dir (a profile folder has no subfolders). */
static uint64_t s_dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    uint64_t sum = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        struct stat st;
        if (e->d_name[0] != '.' && fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
    }
    closedir(d);
    return sum;
}

static int s_newest_first(const void *a, const void *b)
{
    const profile_rec_t *x = a, *y = b;
    if (x->created_ms != y->created_ms)
        return x->created_ms > y->created_ms ? -1 : 1;
    return -strcmp(x->id, y->id);
}

int profiles_list(const char *root, profile_rec_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(root);
    if (!d)
        return 0;
    size_t cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!profiles_id_ok(e->d_name))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            profile_rec_t *grown = realloc(*out, cap * sizeof **out);
            if (!grown) {
                rc = -ENOMEM;
                break;
            }
            *out = grown;
        }
        char dir[CFG_PATH + PROFILE_ID_MAX + 8], err[CFG_PATH + 128];
        snprintf(dir, sizeof dir, "%s/%s", root, e->d_name);
        profile_rec_t *r = &(*out)[*n];
        /* The folder's name is the id: a record that says otherwise was copied by hand. */
        if (profile_rec_read(dir, r, err, sizeof err) != 0 || strcmp(r->id, e->d_name) != 0)
            continue;
        r->bytes = s_dir_bytes(dir);
        (*n)++;
    }
    closedir(d);
    if (*n > 1)
        qsort(*out, *n, sizeof **out, s_newest_first);
    return rc;
}

void profiles_plan(const profile_rec_t *recs, size_t n, int keep, long long max_bytes, bool *remove)
{
    for (size_t i = 0; i < n; i++) {
        size_t newer = 0; /* profiles of the same instance newer than this one */
        for (size_t k = 0; k < i; k++)
            if (strcmp(recs[k].instance, recs[i].instance) == 0)
                newer++;
        remove[i] = keep > 0 && newer >= (size_t)keep;
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (remove[i])
            continue;
        if (i > 0 && max_bytes > 0 && sum + recs[i].bytes > (uint64_t)max_bytes)
            remove[i] = true;
        else
            sum += recs[i].bytes;
    }
}

void profiles_remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                unlinkat(dirfd(d), e->d_name, 0);
        closedir(d);
    }
    rmdir(dir);
}

int profiles_retain(const char *root, int keep, long long max_bytes)
{
    profile_rec_t *recs;
    size_t n;
    int rc = profiles_list(root, &recs, &n);
    if (rc != 0)
        return rc;
    bool *remove = calloc(n ? n : 1, sizeof *remove);
    if (!remove) {
        free(recs);
        return -ENOMEM;
    }
    profiles_plan(recs, n, keep, max_bytes, remove);
    int removed = 0;
    for (size_t i = 0; i < n; i++) {
        if (!remove[i])
            continue;
        char dir[CFG_PATH + PROFILE_ID_MAX + 8];
        snprintf(dir, sizeof dir, "%s/%s", root, recs[i].id);
        profiles_remove_dir(dir);
        removed++;
    }
    free(remove);
    free(recs);
    return removed;
}

void profile_rec_msg(const profile_rec_t *r, Tide__V1__Profile *m)
{
    tide__v1__profile__init(m);
    m->id = (char *)r->id;
    m->service = (char *)r->service;
    m->instance = (char *)r->instance;
    m->host = (char *)r->host;
    m->reason = (char *)r->reason;
    m->detail = (char *)r->detail;
    m->from_ms = r->from_ms;
    m->to_ms = r->to_ms;
    m->rate_hz = (uint32_t)r->rate_hz;
    m->samples = r->samples;
    m->unknown_share = r->unknown_share;
    m->baseline = (char *)r->baseline;
    m->baseline_samples = r->baseline_samples;
    m->command = (char *)r->command;
    m->crash_note = (char *)r->crash_note;
}
