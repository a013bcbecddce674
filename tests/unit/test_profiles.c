/* test_profiles.c - unit tests of lib/tide_profiles.c: record.json written and read back, bad
 * records and folders skipped by the list, newest first, and retention (per instance, then by
 * bytes, the newest always kept) both as a plan and on disk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tide_profiles.h"

static char s_root[256];

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_root, sizeof s_root, "/tmp/tide-test-profiles-XXXXXX");
    assert_non_null(mkdtemp(s_root));
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_root);
    return system(cmd) == 0 ? 0 : -1;
}

static profile_rec_t s_rec(const char *id, const char *instance, uint64_t created, uint64_t bytes)
{
    profile_rec_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%s", id);
    snprintf(r.instance, sizeof r.instance, "%s", instance);
    snprintf(r.reason, sizeof r.reason, "errors");
    r.created_ms = created;
    r.bytes = bytes;
    return r;
}

/* Writes a profile folder with a record and a file of size bytes. */
static void s_write(const profile_rec_t *r, size_t bytes)
{
    char dir[512], file[600];
    snprintf(dir, sizeof dir, "%s/%s", s_root, r->id);
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(profile_rec_write(dir, r), 0);
    snprintf(file, sizeof file, "%s/flame.svg", dir);
    FILE *f = fopen(file, "w");
    for (size_t i = 0; i < bytes; i++)
        fputc('x', f);
    fclose(f);
}

static void test_record_roundtrip(void **state)
{
    (void)state;
    profile_rec_t r = s_rec("20261203T120000Z-production1-errors", "production1", 1234, 0);
    snprintf(r.service, sizeof r.service, "web");
    snprintf(r.detail, sizeof r.detail, "error rate 0.50 for 3.0 s, \"quoted\" \\ and \xc3\xa9");
    snprintf(r.baseline, sizeof r.baseline, "production0");
    snprintf(r.source, sizeof r.source, "ring");
    r.samples = 4321;
    r.baseline_samples = 99;
    r.unknown_share = 0.125;
    r.rate_hz = 49;
    r.has_diff = true;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", s_root, r.id);
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(profile_rec_write(dir, &r), 0);
    profile_rec_t back;
    char err[512];
    assert_int_equal(profile_rec_read(dir, &back, err, sizeof err), 0);
    assert_string_equal(back.detail, r.detail);
    assert_string_equal(back.baseline, "production0");
    assert_string_equal(back.source, "ring");
    assert_true(back.samples == 4321 && back.baseline_samples == 99 && back.rate_hz == 49);
    assert_true(back.unknown_share == 0.125 && back.has_diff && !back.has_crash);
    /* A record with a field of the wrong type, and garbage, are refused with the reason. */
    char path[600];
    snprintf(path, sizeof path, "%s/record.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"id\": \"x\", \"samples\": \"many\"}", f);
    fclose(f);
    assert_int_equal(profile_rec_read(dir, &back, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "wrong type"));
    f = fopen(path, "w");
    fputs("{not json", f);
    fclose(f);
    assert_int_equal(profile_rec_read(dir, &back, err, sizeof err), -EINVAL);
    unlink(path);
    assert_int_equal(profile_rec_read(dir, &back, err, sizeof err), -ENOENT);
    rmdir(dir);
}

static void test_list_newest_first_and_skips(void **state)
{
    (void)state;
    profile_rec_t a = s_rec("a-production0-errors", "production0", 1000, 0);
    profile_rec_t b = s_rec("b-production1-errors", "production1", 3000, 0);
    profile_rec_t c = s_rec("c-production0-manual", "production0", 2000, 0);
    s_write(&a, 10);
    s_write(&b, 20);
    s_write(&c, 30);
    /* not profiles: a work folder, a folder without a record, one whose record names another id */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/.work-job1", s_root);
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/empty", s_root);
    mkdir(dir, 0755);
    profile_rec_t wrong = s_rec("elsewhere", "production0", 5000, 0);
    snprintf(dir, sizeof dir, "%s/copied", s_root);
    mkdir(dir, 0755);
    profile_rec_write(dir, &wrong);
    profile_rec_t *list;
    size_t n;
    assert_int_equal(profiles_list(s_root, &list, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(list[0].id, "b-production1-errors");
    assert_string_equal(list[1].id, "c-production0-manual");
    assert_string_equal(list[2].id, "a-production0-errors");
    assert_true(list[0].bytes > 20 && list[2].bytes > 10); /* the record counts too */
    free(list);
    assert_int_equal(profiles_list("/nonexistent/tide", &list, &n), 0);
    assert_int_equal(n, 0);
    free(list);
}

/* The plan: past keep per instance go first, then the oldest until the rest fit. */
static void test_plan(void **state)
{
    (void)state;
    profile_rec_t r[6] = {
        s_rec("6", "p1", 6, 100), s_rec("5", "p0", 5, 100), s_rec("4", "p1", 4, 100),
        s_rec("3", "p1", 3, 100), s_rec("2", "p0", 2, 100), s_rec("1", "p0", 1, 100),
    };
    bool rm[6];
    profiles_plan(r, 6, 2, 0, rm); /* keep 2 per instance, no byte limit */
    bool want1[6] = {false, false, false, true, false, true};
    assert_memory_equal(rm, want1, sizeof rm);
    profiles_plan(r, 6, 100, 350, rm); /* bytes: the newest three fit */
    bool want2[6] = {false, false, false, true, true, true};
    assert_memory_equal(rm, want2, sizeof rm);
    profiles_plan(r, 6, 1, 50, rm); /* the newest stays even when it alone is too big */
    bool want3[6] = {false, true, true, true, true, true};
    assert_memory_equal(rm, want3, sizeof rm);
}

static void test_retain_on_disk(void **state)
{
    (void)state;
    for (int i = 0; i < 5; i++) {
        char id[64];
        snprintf(id, sizeof id, "p%d-production0-errors", i);
        profile_rec_t r = s_rec(id, "production0", 1000 + (uint64_t)i, 0);
        s_write(&r, 1000);
    }
    assert_int_equal(profiles_retain(s_root, 3, 0), 2);
    profile_rec_t *list;
    size_t n;
    assert_int_equal(profiles_list(s_root, &list, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(list[2].id, "p2-production0-errors");
    free(list);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/p0-production0-errors", s_root);
    assert_int_equal(access(dir, F_OK), -1);
    assert_int_equal(profiles_retain(s_root, 3, 0), 0);
}

static void test_ids(void **state)
{
    (void)state;
    assert_true(profiles_id_ok("20261203T120000Z-production1-errors-2"));
    assert_false(profiles_id_ok(""));
    assert_false(profiles_id_ok(".work-x"));
    assert_false(profiles_id_ok("../etc"));
    assert_false(profiles_id_ok("a/b"));
    assert_false(profiles_id_ok("a b"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_record_roundtrip, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_list_newest_first_and_skips, s_setup, s_teardown),
        cmocka_unit_test(test_plan),
        cmocka_unit_test_setup_teardown(test_retain_on_disk, s_setup, s_teardown),
        cmocka_unit_test(test_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
