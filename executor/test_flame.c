/* test_flame.c - unit tests of executor/flame_*.c: folding `perf script` output (kernel frames,
 * unknown frames, inlined frames, C++ names, garbled lines, time windows) and the SVG (well
 * formed, widths by samples, escaping, pruning, differential colours and shares). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flame.h"

/* Folds text (perf script output) into a new set; the caller destroys it. */
static flame_t *s_fold(const char *text, double from, double to, long pid, flame_stats_t *st)
{
    flame_t *f = flame_new();
    assert_non_null(f);
    FILE *in = fmemopen((void *)text, strlen(text), "r");
    assert_non_null(in);
    flame_filter_t filter = {from, to, pid};
    assert_int_equal(flame_parse_perf_script(f, in, &filter, st), 0);
    fclose(in);
    return f;
}

/* The folded lines of f, as one string (caller frees). */
static char *s_folded(const flame_t *f)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_int_equal(flame_write_folded(f, out), 0);
    fclose(out);
    return buf;
}

static char *s_svg(const flame_t *f, const flame_t *base, const flame_svg_opts_t *opts)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_int_equal(flame_write_svg(f, base, opts, out), 0);
    fclose(out);
    return buf;
}

static const char s_script_basic[] =
    "app 4242/4242  1000.100000:   20408163 cpu-clock: \n"
    "\t          4011d6 hot_function+0x16 (/usr/bin/app)\n"
    "\t          401200 main+0x20 (/usr/bin/app)\n"
    "\t    7f0000001234 __libc_start_call_main+0x80 (/usr/lib/x86_64-linux-gnu/libc.so.6)\n"
    "\n"
    "app 4242/4243  1000.120000:   20408163 cpu-clock: \n"
    "\t          4011d6 hot_function+0x16 (/usr/bin/app)\n"
    "\t          401200 main+0x20 (/usr/bin/app)\n"
    "\t    7f0000001234 __libc_start_call_main+0x80 (/usr/lib/x86_64-linux-gnu/libc.so.6)\n"
    "\n"
    "app 4242/4242  1000.140000:   20408163 cpu-clock: \n"
    "\tffffffff81000010 clear_page_erms+0x10 ([kernel.kallsyms])\n"
    "\tffffffff81000200 do_anonymous_page+0x40 ([kernel.kallsyms])\n"
    "\t          401300 cold_function (/usr/bin/app)\n"
    "\t          401200 main+0x20 (/usr/bin/app)\n"
    "\n";

static void test_fold_basic(void **state)
{
    (void)state;
    flame_stats_t st;
    flame_t *f = s_fold(s_script_basic, 0, 0, 0, &st);
    char *out = s_folded(f);
    assert_string_equal(out,
                        "app;__libc_start_call_main;main;hot_function 2\n"
                        "app;main;cold_function;do_anonymous_page_[k];clear_page_erms_[k] 1\n");
    assert_int_equal(st.samples, 3);
    assert_int_equal(st.frames, 10);
    assert_int_equal(st.unknown_frames, 0);
    assert_int_equal(st.garbled, 0);
    assert_true(fabs(st.first_s - 1000.1) < 1e-9 && fabs(st.last_s - 1000.14) < 1e-9);
    assert_int_equal(flame_total(f), 3);
    assert_int_equal(flame_samples_in(f, "main"), 3);
    assert_int_equal(flame_samples_in(f, "hot_function"), 2);
    assert_int_equal(flame_samples_in(f, "hot"), 0); /* whole frames only */
    free(out);
    flame_destroy(&f);
    assert_null(f);
}

/* Default perf script fields (no tid, offsets), a comm with spaces and digits, [unknown]
 * frames with and without a file, inlined frames, C++ names with <>& and parentheses, and a
 * ';' in a symbol. */
static void test_fold_names(void **state)
{
    (void)state;
    const char *text =
        "Web Content 2 77  12.5: 1 cpu-clock:\n"
        "\t    55d0c8a1b2c3 inner_step (inlined)\n"
        "\t    55d0c8a1b2c3 outer+0x13 (/srv/app)\n"
        "\t            ae77 [unknown] (/usr/bin/dash)\n"
        "\t    7ffec4addf60 [unknown] ([unknown])\n"
        "\n"
        "svc 9/9 [001] 13.0: 1 cpu-clock:\n"
        "\t  4011d6 std::vector<int, std::allocator<int> >::push_back(int const&)+0x16 "
        "(/srv/svc)\n"
        "\t  4011e0 (anonymous namespace)::run() (/srv/svc)\n"
        "\t  4011f0 weird;name (/srv/svc)\n"
        "\n";
    flame_stats_t st;
    flame_t *f = s_fold(text, 0, 0, 0, &st);
    char *out = s_folded(f);
    assert_string_equal(out, "Web_Content_2;[unknown];[dash];outer;inner_step 1\n"
                             "svc;weird:name;(anonymous namespace)::run();"
                             "std::vector<int, std::allocator<int> >::push_back(int const&) 1\n");
    assert_int_equal(st.samples, 2);
    assert_int_equal(st.unknown_frames, 2);
    assert_int_equal(st.frames, 7);
    free(out);
    flame_destroy(&f);
}

/* Garbage between, before and inside samples is counted and skipped; the samples around it
 * stay whole. */
static void test_fold_garbled(void **state)
{
    (void)state;
    const char *text = "\tframe before any header\n"
                       "this is not a header\n"
                       "app 1/1 5.0: 1 cpu-clock:\n"
                       "\t   401000 f (/a)\n"
                       "\tnot-hex g (/a)\n"
                       "\t   401100 main (/a)\n"
                       "\n"
                       "\x01\x02 binary junk \xff\n"
                       "app 1/1 5.5: 1 cpu-clock:\n"
                       "\t   401100 main (/a)\n";
    flame_stats_t st;
    flame_t *f = s_fold(text, 0, 0, 0, &st);
    char *out = s_folded(f);
    assert_string_equal(out, "app;main 1\napp;main;f 1\n");
    assert_int_equal(st.garbled, 4);
    assert_int_equal(st.samples, 2);
    free(out);
    flame_destroy(&f);
}

/* Only the samples inside [from, to] are kept; the span covers all that were seen. */
static void test_fold_window(void **state)
{
    (void)state;
    const char *text = "app 1/1 10.0: 1 cpu-clock:\n\t 1 early (/a)\n\n"
                       "app 1/1 11.0: 1 cpu-clock:\n\t 1 middle (/a)\n\n"
                       "app 1/1 12.0: 1 cpu-clock:\n\t 1 late (/a)\n\n";
    flame_stats_t st;
    flame_t *f = s_fold(text, 10.5, 11.5, 0, &st);
    char *out = s_folded(f);
    assert_string_equal(out, "app;middle 1\n");
    assert_int_equal(st.samples, 1);
    assert_int_equal(st.outside, 2);
    assert_true(st.first_s == 10.0 && st.last_s == 12.0);
    free(out);
    flame_destroy(&f);
    f = s_fold(text, 10.5, 0, 0, &st);
    assert_int_equal(flame_total(f), 2);
    flame_destroy(&f);
}

/* One recording of two processes (a profile and its baseline) split by pid; the span is the
 * pid's own. */
static void test_fold_pid(void **state)
{
    (void)state;
    const char *text = "app 10/10 1.0: 1 cpu-clock:\n\t 1 failing (/a)\n\n"
                       "app 20/21 2.0: 1 cpu-clock:\n\t 1 healthy (/a)\n\n"
                       "app 10/12 3.0: 1 cpu-clock:\n\t 1 failing (/a)\n\n";
    flame_stats_t st;
    flame_t *f = s_fold(text, 0, 0, 10, &st);
    char *out = s_folded(f);
    assert_string_equal(out, "app;failing 2\n");
    assert_true(st.first_s == 1.0 && st.last_s == 3.0 && st.samples == 2);
    free(out);
    flame_destroy(&f);
    f = s_fold(text, 0, 0, 20, &st);
    assert_int_equal(flame_samples_in(f, "healthy"), 1);
    assert_true(st.first_s == 2.0 && st.last_s == 2.0);
    flame_destroy(&f);
}

static void test_folded_roundtrip(void **state)
{
    (void)state;
    const char *text = "a;b;c 5\na;b 2\nbad line\na;;b 3\nx 4\na;b;c 1\n\nnocount \n";
    flame_t *f = flame_new();
    FILE *in = fmemopen((void *)text, strlen(text), "r");
    uint64_t garbled = 0;
    assert_int_equal(flame_parse_folded(f, in, &garbled), 0);
    fclose(in);
    assert_int_equal(garbled, 3);
    char *out = s_folded(f);
    assert_string_equal(out, "a;b 2\na;b;c 6\nx 4\n");
    assert_int_equal(flame_total(f), 12);
    assert_int_equal(flame_stacks(f), 3);
    assert_int_equal(flame_add(f, "", 1), -EINVAL);
    assert_int_equal(flame_add(f, "a;", 1), -EINVAL);
    free(out);
    flame_destroy(&f);
}

/* ---- SVG checks -------------------------------------------------------------------------- */

/* A small XML well-formedness check: every element closed in order, attributes quoted, no raw
 * '<' or '&' outside markup, CDATA and the declaration skipped. Returns the number of
 * elements, or -1. */
static int s_xml_check(const char *s)
{
    char stack[64][32];
    int depth = 0, elements = 0;
    const char *p = s;
    while (*p) {
        if (*p == '&') {
            const char *semi = strchr(p, ';');
            if (!semi || semi - p > 8)
                return -1;
            p = semi + 1;
            continue;
        }
        if (*p != '<') {
            p++;
            continue;
        }
        if (strncmp(p, "<?", 2) == 0) {
            p = strstr(p, "?>");
            if (!p)
                return -1;
            p += 2;
            continue;
        }
        if (strncmp(p, "<![CDATA[", 9) == 0) {
            p = strstr(p, "]]>");
            if (!p)
                return -1;
            p += 3;
            continue;
        }
        bool closing = p[1] == '/';
        const char *name = p + (closing ? 2 : 1);
        size_t nl = strspn(name, "abcdefghijklmnopqrstuvwxyz");
        if (nl == 0 || nl >= 32)
            return -1;
        const char *q = name + nl;
        /* attributes: name="value" with no '<' inside values */
        while (*q && *q != '>' && !(q[0] == '/' && q[1] == '>')) {
            if (*q == '"') {
                const char *end = strchr(q + 1, '"');
                if (!end || memchr(q + 1, '<', (size_t)(end - q - 1)))
                    return -1;
                q = end;
            }
            q++;
        }
        if (!*q)
            return -1;
        bool self_closing = *q == '/';
        if (closing) {
            if (depth == 0 || strlen(stack[depth - 1]) != nl ||
                strncmp(stack[depth - 1], name, nl) != 0)
                return -1;
            depth--;
        } else if (!self_closing) {
            if (depth == 64)
                return -1;
            memcpy(stack[depth], name, nl);
            stack[depth++][nl] = '\0';
            elements++;
        } else {
            elements++;
        }
        p = q + (self_closing ? 2 : 1);
    }
    return depth == 0 ? elements : -1;
}

typedef struct {
    char name[256];
    uint64_t v;
    double b;
    double x, w;
    int y;
    char fill[40];
} frame_t;

/* Reads the drawn frames of an SVG (data-n, data-v, data-b, rect x/y/width/fill). */
static size_t s_frames(const char *svg, frame_t *out, size_t max)
{
    size_t n = 0;
    for (const char *p = strstr(svg, "<g class=\"f\""); p && n < max;
         p = strstr(p + 1, "<g class=\"f\"")) {
        frame_t *fr = &out[n++];
        memset(fr, 0, sizeof *fr);
        const char *dn = strstr(p, "data-n=\"") + 8;
        size_t len = (size_t)(strchr(dn, '"') - dn);
        memcpy(fr->name, dn, len < 255 ? len : 255);
        fr->v = strtoull(strstr(p, "data-v=\"") + 8, NULL, 10);
        const char *db = strstr(p, "data-b=\"");
        const char *rect = strstr(p, "<rect ");
        if (db && db < rect)
            fr->b = strtod(db + 8, NULL);
        fr->x = strtod(strstr(rect, " x=\"") + 4, NULL);
        fr->y = atoi(strstr(rect, " y=\"") + 4);
        fr->w = strtod(strstr(rect, " width=\"") + 8, NULL);
        sscanf(strstr(rect, " fill=\"") + 7, "%39[^\"]", fr->fill);
    }
    return n;
}

static const frame_t *s_frame(const frame_t *fr, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(fr[i].name, name) == 0)
            return &fr[i];
    return NULL;
}

static void test_svg_layout(void **state)
{
    (void)state;
    flame_t *f = flame_new();
    assert_int_equal(flame_add(f, "app;main;hot", 60), 0);
    assert_int_equal(flame_add(f, "app;main;cold", 30), 0);
    assert_int_equal(flame_add(f, "app;main", 10), 0);
    flame_svg_opts_t opts = {.title = "web production1: errors", .subtitle = "49 Hz"};
    char *svg = s_svg(f, NULL, &opts);
    assert_true(s_xml_check(svg) > 0);
    assert_non_null(strstr(svg, "web production1: errors"));
    frame_t fr[16];
    size_t n = s_frames(svg, fr, 16);
    assert_int_equal(n, 5); /* all, app, main, cold, hot */
    const frame_t *all = s_frame(fr, n, "all"), *app = s_frame(fr, n, "app"),
                  *main_ = s_frame(fr, n, "main"), *hot = s_frame(fr, n, "hot"),
                  *cold = s_frame(fr, n, "cold");
    assert_true(all && app && main_ && hot && cold);
    double scale = 1180.0 / 100;
    assert_int_equal(all->v, 100);
    assert_true(fabs(all->w - 1180) < 0.01);
    /* widths by samples, children side by side in name order inside their parent */
    assert_true(fabs(hot->w - 60 * scale) < 0.01 && fabs(cold->w - 30 * scale) < 0.01);
    assert_true(fabs(cold->x - main_->x) < 0.01);
    assert_true(fabs(hot->x - (cold->x + cold->w)) < 0.01);
    assert_true(hot->v + cold->v <= main_->v);
    /* the root at the bottom, each level one frame higher */
    assert_true(all->y > app->y && app->y > main_->y && main_->y > hot->y && hot->y == cold->y);
    /* the same name keeps its colour */
    char *svg2 = s_svg(f, NULL, &opts);
    assert_string_equal(svg, svg2);
    free(svg2);
    free(svg);
    flame_destroy(&f);
}

static void test_svg_escaping(void **state)
{
    (void)state;
    flame_t *f = flame_new();
    assert_int_equal(flame_add(f, "app;std::map<int, T&>::find(\"k\") 'q';bad\x01\xff", 5), 0);
    flame_svg_opts_t opts = {.title = "a <title> & \"quotes\""};
    char *svg = s_svg(f, NULL, &opts);
    assert_true(s_xml_check(svg) > 0);
    assert_non_null(strstr(svg, "std::map&lt;int, T&amp;&gt;::find(&quot;k&quot;) &#39;q&#39;"));
    assert_non_null(strstr(svg, "a &lt;title&gt; &amp; &quot;quotes&quot;"));
    assert_non_null(strstr(svg, "data-n=\"bad??\""));
    assert_null(strstr(svg, "<int"));
    free(svg);
    flame_destroy(&f);
}

/* Frames under min_width_px are left out with everything above them; the widths of what is
 * drawn still come from all the samples. */
static void test_svg_pruning(void **state)
{
    (void)state;
    flame_t *f = flame_new();
    assert_int_equal(flame_add(f, "app;big", 1000000), 0);
    assert_int_equal(flame_add(f, "app;tiny;deeper", 10), 0);
    char *svg = s_svg(f, NULL, NULL);
    frame_t fr[16];
    size_t n = s_frames(svg, fr, 16);
    assert_int_equal(n, 3);
    assert_null(s_frame(fr, n, "tiny"));
    assert_null(s_frame(fr, n, "deeper"));
    assert_int_equal(s_frame(fr, n, "all")->v, 1000010);
    free(svg);
    flame_svg_opts_t opts = {.min_width_px = 0.001};
    svg = s_svg(f, NULL, &opts);
    n = s_frames(svg, fr, 16);
    assert_int_equal(n, 5);
    free(svg);
    flame_destroy(&f);
}

/* A differential: the profile's shape, colours by the change of share from the baseline. */
static void test_svg_differential(void **state)
{
    (void)state;
    flame_t *f = flame_new(), *base = flame_new();
    assert_int_equal(flame_add(f, "app;main;hot", 80), 0);
    assert_int_equal(flame_add(f, "app;main;cold", 20), 0);
    /* the baseline has 10x the samples: shares, not counts, are compared */
    assert_int_equal(flame_add(base, "app;main;hot", 200), 0);
    assert_int_equal(flame_add(base, "app;main;cold", 600), 0);
    assert_int_equal(flame_add(base, "app;main;gone", 200), 0);
    char *svg = s_svg(f, base, NULL);
    assert_true(s_xml_check(svg) > 0);
    frame_t fr[16];
    size_t n = s_frames(svg, fr, 16);
    assert_int_equal(n, 5); /* "gone" is only in the baseline: not drawn */
    const frame_t *hot = s_frame(fr, n, "hot"), *cold = s_frame(fr, n, "cold"),
                  *main_ = s_frame(fr, n, "main");
    assert_true(fabs(hot->b - 200.0) < 0.001 && fabs(cold->b - 600.0) < 0.001);
    /* hot grew 60 points: the largest change, full red; cold shrank 40 points: blue */
    assert_string_equal(hot->fill, "rgb(255,45,45)");
    assert_string_equal(cold->fill, "rgb(115,115,255)");
    /* main holds everything in both: unchanged, white */
    assert_string_equal(main_->fill, "rgb(255,255,255)");
    assert_non_null(strstr(svg, "hot (80 samples, 80.00%; baseline 20.00%, +60.00 points)"));
    free(svg);
    flame_destroy(&f);
    flame_destroy(&base);
}

static void test_svg_empty(void **state)
{
    (void)state;
    flame_t *f = flame_new();
    char *svg = s_svg(f, NULL, NULL);
    assert_true(s_xml_check(svg) > 0);
    frame_t fr[4];
    assert_int_equal(s_frames(svg, fr, 4), 0);
    free(svg);
    flame_destroy(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fold_basic),       cmocka_unit_test(test_fold_names),
        cmocka_unit_test(test_fold_garbled),     cmocka_unit_test(test_fold_window),
        cmocka_unit_test(test_folded_roundtrip), cmocka_unit_test(test_fold_pid),
        cmocka_unit_test(test_svg_layout),       cmocka_unit_test(test_svg_escaping),
        cmocka_unit_test(test_svg_pruning),      cmocka_unit_test(test_svg_differential),
        cmocka_unit_test(test_svg_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
