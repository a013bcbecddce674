/* flame.h - folded stacks and flamegraphs: `perf script` output in, folded stacks ("a;b;c N")
 * out; folded stacks in, a self-contained interactive SVG out, plain or differential against a
 * baseline.
 *
 * Pure: streams in, streams out; no processes, no clocks. tide-executor folds and renders a
 * profile with it after the profile playbook has written `perf script` output. */
#ifndef EXEC_FLAME_H
#define EXEC_FLAME_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define FLAME_FRAME_MAX 256 /* a frame's name is cut to this many bytes */
#define FLAME_DEPTH_MAX 512 /* deeper stacks keep their root-most frames */

/* A multiset of stacks: each distinct stack (frames root first, joined by ';') with the number
 * of samples that ended in it. */
typedef struct flame_t flame_t;

/* What a parse saw. Times are perf's sample clock in seconds (the same clock for every
 * recording on one host, so two profiles can be cut to the same seconds). */
typedef struct {
    uint64_t samples;        /* samples kept */
    uint64_t outside;        /* samples left out by the filter */
    uint64_t garbled;        /* lines that are neither a sample header, a frame nor blank */
    uint64_t frames;         /* frames in the kept samples */
    uint64_t unknown_frames; /* of those, frames perf could not name */
    double first_s, last_s;  /* times of the first and last sample of the pid (kept or not) */
} flame_stats_t;

/* An empty set. Returns NULL when out of memory. */
flame_t *flame_new(void);

/* Frees it; nothing on NULL; sets *self_p to NULL. */
void flame_destroy(flame_t **self_p);

/* Adds count samples of stack (frames root first, ';'-separated, as in a folded line). Returns
 * 0, -EINVAL for an empty stack or an empty frame, or -ENOMEM (nothing added). */
int flame_add(flame_t *self, const char *stack, uint64_t count);

/* Samples in all, and in stacks that contain a frame named exactly func (inclusive: a sample is
 * counted once however often func appears in it). */
uint64_t flame_total(const flame_t *self);
uint64_t flame_samples_in(const flame_t *self, const char *func);

/* Distinct stacks. */
size_t flame_stacks(const flame_t *self);

/* Which samples a parse keeps: times in [from_s, to_s] (to_s <= 0: no upper bound) of process
 * pid (0: any). */
typedef struct {
    double from_s, to_s;
    long pid;
} flame_filter_t;

/* Reads `perf script` output (its default fields, or -F with comm, pid and time among them) and
 * adds one sample per record that filter keeps (NULL: every one).
 * A stack is folded root first with the thread's name as its root frame; offsets (+0x..) are
 * dropped; a kernel frame gets the suffix "_[k]"; a frame perf could not name becomes
 * "[unknown]", or "[DSO]" (the file's base name) when the file is known; ';' in a name becomes
 * ':'. Lines it does not understand are counted in stats and skipped; they never end the parse.
 * stats may be NULL. Returns 0, -EIO on a read error, -ENOMEM (what was added stays). */
int flame_parse_perf_script(flame_t *self, FILE *in, const flame_filter_t *filter,
                            flame_stats_t *stats);

/* Reads folded lines ("frame;frame;frame COUNT"); malformed lines are counted in *garbled (may
 * be NULL) and skipped. Returns 0, -EIO or -ENOMEM. */
int flame_parse_folded(flame_t *self, FILE *in, uint64_t *garbled);

/* Writes every stack as a folded line, sorted by stack. Returns 0 or -EIO. */
int flame_write_folded(const flame_t *self, FILE *out);

typedef struct {
    const char *title;    /* the first line of the header: escaped, may be NULL */
    const char *subtitle; /* the second line: escaped, may be NULL */
    int width;            /* image width in px (0 = 1200) */
    double min_width_px;  /* frames narrower than this are left out (0 = 0.1) */
} flame_svg_opts_t;

/* Writes a self-contained SVG flamegraph of self: frame widths by samples (inclusive), hover
 * shows name, samples and percent, click zooms, "Search" (or ?s=REGEX in the file's URL)
 * highlights the matching frames and shows the share of samples they cover. With baseline not
 * NULL the graph is differential: the shape is self's, and each frame is coloured by how its
 * share of samples changed from the baseline (red grew, blue shrank, white unchanged; shares,
 * so the two may have different sample counts). Every drawn frame carries data-v (its samples)
 * and, in a differential, data-b (the baseline's share, per mille). Returns 0, -EIO or
 * -ENOMEM. */
int flame_write_svg(const flame_t *self, const flame_t *baseline, const flame_svg_opts_t *opts,
                    FILE *out);

/* Writes s to out escaped for XML text and attributes: &<>"' as entities, control bytes and
 * invalid UTF-8 as '?'. */
void flame_xml_escape(FILE *out, const char *s);

#endif
