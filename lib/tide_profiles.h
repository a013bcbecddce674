/* tide_profiles.h - the profile store on disk: one folder per profile under
 * <executor.state_dir>/profiles/<id>/ (stacks.folded, flame.svg, diff.svg, crash.txt and
 * record.json), listed newest first and kept within profiling.keep per instance and
 * profiling.max_bytes in all. tide-executor writes and prunes it; tidectl and tide-metrics
 * read it. */
#ifndef TIDE_PROFILES_H
#define TIDE_PROFILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tide.pb-c.h"
#include "tide_config.h"

#define PROFILE_ID_MAX 128

/* The files of a profile folder. */
#define PROFILE_RECORD "record.json"
#define PROFILE_FOLDED "stacks.folded"
#define PROFILE_SVG    "flame.svg"
#define PROFILE_DIFF   "diff.svg"
#define PROFILE_CRASH  "crash.txt"

typedef struct {
    char id[PROFILE_ID_MAX + 1];
    char service[CFG_STR];
    char instance[64];
    char host[64];
    char reason[16]; /* "errors", "crash", "manual" */
    char source[8];  /* "ring": the flight recorders' last seconds; "live": sampled for it */
    char detail[256];
    uint64_t created_ms, from_ms, to_ms; /* wall clock */
    int rate_hz;
    uint64_t samples;
    double unknown_share;
    char baseline[64]; /* empty: no differential */
    uint64_t baseline_samples;
    char command[CFG_PATH];
    char crash_note[256];
    bool has_diff, has_crash;
    uint64_t bytes; /* the folder's size on disk (set by profiles_list) */
} profile_rec_t;

/* <state_dir>/profiles into buf. Returns buf. */
const char *profiles_root(const tide_config_t *cfg, char *buf, size_t len);

/* True for an id a folder may be named: 1..128 of [A-Za-z0-9_.:-], not starting with '.'. */
bool profiles_id_ok(const char *id);

/* Writes dir/record.json (through a temporary file and a rename, so a reader never sees half
 * of one). Returns 0 or a negative errno. */
int profile_rec_write(const char *dir, const profile_rec_t *rec);

/* Reads dir/record.json into *rec. Returns 0, or a negative errno with the reason in err (a
 * missing file, bad JSON, a field of the wrong type). */
int profile_rec_read(const char *dir, profile_rec_t *rec, char *err, size_t errlen);

/* Reads every profile under root, newest first (created_ms, then id). Folders without a
 * readable record are skipped. *out is allocated (free it); an absent root is an empty list.
 * Returns 0 or -ENOMEM. */
int profiles_list(const char *root, profile_rec_t **out, size_t *n);

/* Which of recs[0..n) (newest first) go: past keep of one instance, then the oldest until the
 * rest fit in max_bytes (the newest always stays). Sets remove[i]. Pure. */
void profiles_plan(const profile_rec_t *recs, size_t n, int keep, long long max_bytes,
                   bool *remove);

/* Removes what profiles_plan says from root. Returns the number of profiles removed, or a
 * negative errno when the list could not be read. */
int profiles_retain(const char *root, int keep, long long max_bytes);

/* Removes a profile (or work) folder and the files in it; nothing when it is absent. */
void profiles_remove_dir(const char *dir);

/* Writes rec as one line of JSON (no newline), the same fields as record.json. Returns 0 or
 * -EIO. */
int profile_rec_json(const profile_rec_t *rec, FILE *out);

/* A Profile message whose strings point into rec (valid while rec is). header is left NULL. */
void profile_rec_msg(const profile_rec_t *rec, Tide__V1__Profile *msg);

#endif
