/* test_jobs.c - unit tests of executor/jobs.c: request validation, the job table, the output
 * tail, the record view and the LIST result lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs.h"
#include "tide_clock.h"

static tide_config_t s_cfg;

static int s_setup(void **state)
{
    (void)state;
    config_defaults(&s_cfg);
    snprintf(s_cfg.app.host, sizeof s_cfg.app.host, "127.0.0.1");
    snprintf(s_cfg.app.name_prefix, sizeof s_cfg.app.name_prefix, "production");
    s_cfg.app.base_port = 9101;
    s_cfg.scaler.max = 4;
    s_cfg.executor.output_tail_lines = 3;
    s_cfg.executor.job_deadline_ms = 5000;
    return 0;
}

/* A request with up to 4 instances given as "name host port" triples. */
typedef struct {
    Tide__V1__ExecRequest req;
    Tide__V1__Instance inst[4];
    Tide__V1__Instance *ptrs[4];
} req_t;

static void s_req(req_t *r, Tide__V1__JobKind kind, const char *id, size_t n,
                  const char *const names[], const char *const hosts[], const uint32_t ports[])
{
    tide__v1__exec_request__init(&r->req);
    r->req.kind = kind;
    r->req.job_id = (char *)id;
    for (size_t i = 0; i < n; i++) {
        tide__v1__instance__init(&r->inst[i]);
        r->inst[i].name = (char *)names[i];
        r->inst[i].host = (char *)hosts[i];
        r->inst[i].port = ports[i];
        r->ptrs[i] = &r->inst[i];
    }
    r->req.instances = r->ptrs;
    r->req.n_instances = n;
}

#define UP   TIDE__V1__JOB_KIND__JOB_SCALE_UP
#define DOWN TIDE__V1__JOB_KIND__JOB_SCALE_DOWN
#define LIST TIDE__V1__JOB_KIND__JOB_LIST

static void test_validate_table(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        Tide__V1__JobKind kind;
        const char *id;
        size_t n;
        const char *names[2];
        const char *hosts[2];
        uint32_t ports[2];
        const char *reason; /* NULL: accepted; else a substring of the reason */
    } cases[] = {
        // clang-format off
        {"good", UP, "j1", 1, {"production0"}, {"127.0.0.1"}, {9101}, NULL},
        {"good pair", UP, "j1", 2, {"production1", "production3"}, {"127.0.0.1", "127.0.0.1"},
         {9102, 9104}, NULL},
        {"good down", DOWN, "up-7:a.b_c", 1, {"production2"}, {"127.0.0.1"}, {9103}, NULL},
        {"list", LIST, "l1", 0, {NULL}, {NULL}, {0}, NULL},
        {"wrong name", UP, "j", 1, {"staging0"}, {"127.0.0.1"}, {9101},
         "name must be production<N>"},
        {"no number", UP, "j", 1, {"production"}, {"127.0.0.1"}, {9101}, "name must be"},
        {"leading zero", UP, "j", 1, {"production01"}, {"127.0.0.1"}, {9102}, "name must be"},
        {"junk after N", UP, "j", 1, {"production1x"}, {"127.0.0.1"}, {9102}, "name must be"},
        {"wrong port", UP, "j", 1, {"production1"}, {"127.0.0.1"}, {9101},
         "port 9101 is not app.base_port + 1"},
        {"wrong host", UP, "j", 1, {"production0"}, {"10.0.0.1"}, {9101},
         "host '10.0.0.1' is not app.host"},
        {"no host", UP, "j", 1, {"production0"}, {""}, {9101}, "is not app.host"},
        {"N = max", UP, "j", 1, {"production4"}, {"127.0.0.1"}, {9105}, "out of range"},
        {"N huge", UP, "j", 1, {"production99999"}, {"127.0.0.1"}, {9101}, "out of range"},
        {"stop past max", DOWN, "j", 1, {"production7"}, {"127.0.0.1"}, {9108}, NULL},
        {"stop past 1023", DOWN, "j", 1, {"production1024"}, {"127.0.0.1"}, {10125},
         "out of range"},
        {"duplicate", DOWN, "j", 2, {"production1", "production1"}, {"127.0.0.1", "127.0.0.1"},
         {9102, 9102}, "named twice"},
        {"no instances", UP, "j", 0, {NULL}, {NULL}, {0}, "at least one instance"},
        {"profile without a spec", TIDE__V1__JOB_KIND__JOB_PROFILE, "j", 1, {"production0"},
         {"127.0.0.1"}, {9101}, "reason must be errors, crash or manual"},
        {"profile of nothing", TIDE__V1__JOB_KIND__JOB_PROFILE, "j", 0, {NULL}, {NULL}, {0},
         "one instance and at most one baseline"},
        {"status", TIDE__V1__JOB_KIND__JOB_STATUS, "j", 0, {NULL}, {NULL}, {0}, "not a job"},
        {"empty id", LIST, "", 0, {NULL}, {NULL}, {0}, "bad job_id"},
        {"dotted id", LIST, "..", 0, {NULL}, {NULL}, {0}, "bad job_id"},
        {"slash id", LIST, "a/b", 0, {NULL}, {NULL}, {0}, "bad job_id"},
        {"space id", LIST, "a b", 0, {NULL}, {NULL}, {0}, "bad job_id"},
        // clang-format on
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        req_t r;
        s_req(&r, cases[i].kind, cases[i].id, cases[i].n, cases[i].names, cases[i].hosts,
              cases[i].ports);
        char reason[512] = "";
        int rc = jobs_validate(&s_cfg, &r.req, reason, sizeof reason);
        if (cases[i].reason == NULL) {
            if (rc != 0)
                fail_msg("case '%s': refused: %s", cases[i].what, reason);
        } else {
            if (rc == 0)
                fail_msg("case '%s': accepted", cases[i].what);
            if (!strstr(reason, cases[i].reason))
                fail_msg("case '%s': reason '%s' lacks '%s'", cases[i].what, reason,
                         cases[i].reason);
        }
    }
}

/* PROFILE requests: reason and seconds checked; the instances like any job's; a profile job
 * holds no instance, so scaling jobs on its instances are not refused as busy. */
static void test_validate_profile(void **state)
{
    (void)state;
    s_cfg.profiling.max_seconds = 60;
    static const struct {
        const char *what, *reason_field;
        uint32_t seconds, pid;
        size_t n;
        const char *names[3];
        const char *refusal;
    } cases[] = {
        {"manual", "manual", 5, 0, 1, {"production0"}, NULL},
        {"errors with baseline", "errors", 5, 0, 2, {"production1", "production0"}, NULL},
        {"crash", "crash", 60, 4242, 1, {"production3"}, NULL},
        {"crash without its pid", "crash", 5, 0, 1, {"production3"}, "pid of the process"},
        {"zero seconds", "manual", 0, 0, 1, {"production0"}, "out of bounds (1..60"},
        {"too long", "manual", 61, 0, 1, {"production0"}, "out of bounds (1..60"},
        {"unknown reason", "because", 5, 0, 1, {"production0"}, "reason must be"},
        {"three",
         "manual",
         5,
         0,
         3,
         {"production0", "production1", "production2"},
         "at most one baseline"},
        {"unknown instance", "manual", 5, 0, 1, {"production9"}, "out of range"},
        {"baseline is itself", "errors", 5, 0, 2, {"production1", "production1"}, "named twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *hosts[] = {"127.0.0.1", "127.0.0.1", "127.0.0.1"};
        uint32_t ports[3];
        for (size_t k = 0; k < cases[i].n; k++)
            ports[k] = 9101 + (uint32_t)atoi(cases[i].names[k] + strlen("production"));
        req_t r;
        s_req(&r, TIDE__V1__JOB_KIND__JOB_PROFILE, "p", cases[i].n, cases[i].names, hosts, ports);
        Tide__V1__ProfileSpec spec = TIDE__V1__PROFILE_SPEC__INIT;
        spec.reason = (char *)cases[i].reason_field;
        spec.seconds = cases[i].seconds;
        spec.pid = cases[i].pid;
        r.req.profile = &spec;
        char reason[512] = "";
        int rc = jobs_validate(&s_cfg, &r.req, reason, sizeof reason);
        if (!cases[i].refusal && rc != 0)
            fail_msg("case '%s': refused: %s", cases[i].what, reason);
        if (cases[i].refusal && (rc == 0 || !strstr(reason, cases[i].refusal)))
            fail_msg("case '%s': rc %d reason '%s' lacks '%s'", cases[i].what, rc, reason,
                     cases[i].refusal);
    }

    jobs_t *jobs = jobs_new(&s_cfg, 0);
    const char *names[] = {"production0"}, *hosts[] = {"127.0.0.1"};
    const uint32_t ports[] = {9101};
    req_t r;
    s_req(&r, TIDE__V1__JOB_KIND__JOB_PROFILE, "prof", 1, names, hosts, ports);
    Tide__V1__ProfileSpec spec = TIDE__V1__PROFILE_SPEC__INIT;
    spec.reason = "errors";
    spec.seconds = 5;
    spec.detail = "error rate 0.50 for 5 s";
    r.req.profile = &spec;
    job_t *p = jobs_add(jobs, &r.req);
    assert_non_null(p);
    assert_string_equal(p->profile.reason, "errors");
    assert_string_equal(p->profile.detail, "error rate 0.50 for 5 s");
    assert_int_equal(p->profile.seconds, 5);
    assert_null(jobs_busy(jobs, "production0"));
    jobs_destroy(&jobs);
}

static void test_table_resend_and_busy(void **state)
{
    (void)state;
    jobs_t *jobs = jobs_new(&s_cfg, 2);
    assert_non_null(jobs);
    const char *names[] = {"production0", "production1"};
    const char *hosts[] = {"127.0.0.1", "127.0.0.1"};
    const uint32_t ports[] = {9101, 9102};
    req_t r;
    s_req(&r, TIDE__V1__JOB_KIND__JOB_SCALE_UP, "a", 2, names, hosts, ports);
    job_t *a = jobs_add(jobs, &r.req);
    assert_non_null(a);
    assert_int_equal(a->state, TIDE__V1__JOB_STATE__JOB_PENDING);
    assert_int_equal(a->n_instances, 2);
    assert_string_equal(a->instances[1].name, "production1");
    /* A resend of a known id: found, never added twice. */
    assert_ptr_equal(jobs_find(jobs, "a"), a);
    assert_null(jobs_add(jobs, &r.req));
    assert_int_equal(jobs_size(jobs), 1);
    /* One job per instance at a time. */
    assert_ptr_equal(jobs_busy(jobs, "production1"), a);
    assert_null(jobs_busy(jobs, "production2"));
    a->holds_instances = false;
    assert_null(jobs_busy(jobs, "production1"));
    a->holds_instances = true;
    job_finish(a, TIDE__V1__JOB_STATE__JOB_SUCCEEDED, NULL);
    assert_null(jobs_busy(jobs, "production1"));
    assert_true(a->finished_ms >= a->started_ms);
    /* Finished records are kept up to keep (2), oldest evicted first; running ones stay. */
    req_t l;
    s_req(&l, TIDE__V1__JOB_KIND__JOB_LIST, "run", 0, NULL, NULL, NULL);
    job_t *running = jobs_add(jobs, &l.req);
    assert_non_null(running);
    char id[16];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "f%d", i);
        s_req(&l, TIDE__V1__JOB_KIND__JOB_LIST, id, 0, NULL, NULL, NULL);
        job_t *j = jobs_add(jobs, &l.req);
        assert_non_null(j);
        job_finish(j, TIDE__V1__JOB_STATE__JOB_FAILED, "x");
    }
    s_req(&l, TIDE__V1__JOB_KIND__JOB_LIST, "last", 0, NULL, NULL, NULL);
    assert_non_null(jobs_add(jobs, &l.req));
    assert_null(jobs_find(jobs, "a"));
    assert_null(jobs_find(jobs, "f2"));
    assert_non_null(jobs_find(jobs, "f3"));
    assert_non_null(jobs_find(jobs, "f4"));
    assert_ptr_equal(jobs_find(jobs, "run"), running);
    assert_int_equal(jobs_running(jobs), 2);
    jobs_destroy(&jobs);
    assert_null(jobs);
    jobs_destroy(&jobs);
}

/* A request without a deadline gets executor.job_deadline_ms (5000 here); one with its own
 * keeps it. Both count from when the job is added. */
static void test_deadline(void **state)
{
    (void)state;
    jobs_t *jobs = jobs_new(&s_cfg, 0);
    uint64_t t0 = clock_mono_ms();
    req_t l;
    s_req(&l, TIDE__V1__JOB_KIND__JOB_LIST, "d1", 0, NULL, NULL, NULL);
    job_t *d1 = jobs_add(jobs, &l.req);
    s_req(&l, TIDE__V1__JOB_KIND__JOB_LIST, "d2", 0, NULL, NULL, NULL);
    l.req.deadline_ms = 100000;
    job_t *d2 = jobs_add(jobs, &l.req);
    uint64_t t1 = clock_mono_ms();
    assert_in_range(d1->deadline_mono_ms, t0 + 5000, t1 + 5000);
    assert_in_range(d2->deadline_mono_ms, t0 + 100000, t1 + 100000);
    jobs_destroy(&jobs);
}

static void test_output_tail(void **state)
{
    (void)state;
    jobs_t *jobs = jobs_new(&s_cfg, 0);
    req_t l;
    s_req(&l, TIDE__V1__JOB_KIND__JOB_LIST, "t", 0, NULL, NULL, NULL);
    job_t *j = jobs_add(jobs, &l.req);
    assert_int_equal(j->tail_cap, 3);
    char clean[JOB_LINE_MAX + 1];
    job_output(j, "one\r\n", clean);
    assert_string_equal(clean, "one");
    job_output(j, "two", NULL);
    assert_int_equal(j->tail_len, 2);
    assert_string_equal(job_tail_line(j, 0), "one");
    job_output(j, "three", NULL);
    job_output(j, "four", NULL);
    job_output(j, "five", NULL);
    assert_int_equal(j->tail_len, 3);
    assert_string_equal(job_tail_line(j, 0), "three");
    assert_string_equal(job_tail_line(j, 2), "five");
    assert_null(job_tail_line(j, 3));
    /* Control bytes and invalid UTF-8 are replaced; valid UTF-8 stays. */
    job_output(j, "a\x1b[31mb\xff\xc3\xa9", clean);
    assert_string_equal(clean, "a [31mb?\xc3\xa9");
    /* Long lines are cut. */
    char *big = malloc(5000);
    memset(big, 'x', 4999);
    big[4999] = '\0';
    job_output(j, big, clean);
    assert_int_equal(strlen(clean), JOB_LINE_MAX);
    free(big);
    /* The view carries the tail in order, the instances and the results. */
    job_instance_t in = {"production0", "127.0.0.1", 9101};
    assert_int_equal(job_add_result(j, &in, true, true, "ready"), 0);
    job_finish(j, TIDE__V1__JOB_STATE__JOB_SUCCEEDED, NULL);
    job_view_t v;
    assert_int_equal(job_view_init(&v, j), 0);
    assert_int_equal(v.record.n_output_tail, 3);
    assert_string_equal(v.record.output_tail[0], "five");
    assert_int_equal(v.record.n_results, 1);
    assert_string_equal(v.record.results[0]->instance->name, "production0");
    assert_true(v.record.results[0]->running);
    assert_int_equal(v.record.state, TIDE__V1__JOB_STATE__JOB_SUCCEEDED);
    /* It packs and unpacks. */
    size_t len = protobuf_c_message_get_packed_size(&v.record.base);
    uint8_t *buf = malloc(len);
    protobuf_c_message_pack(&v.record.base, buf);
    Tide__V1__JobRecord *back = tide__v1__job_record__unpack(NULL, len, buf);
    assert_non_null(back);
    assert_string_equal(back->job_id, "t");
    tide__v1__job_record__free_unpacked(back, NULL);
    free(buf);
    job_view_clear(&v);
    jobs_destroy(&jobs);
}

static void test_list_lines(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        int rc;
        const char *name;
        uint32_t port;
        bool healthy;
    } cases[] = {
        {"production0 127.0.0.1 9101 1\n", 0, "production0", 9101, true},
        {"production12\t127.0.0.1\t9113\tfalse", 0, "production12", 9113, false},
        {"  production1 127.0.0.1 9102 True  ", 0, "production1", 9102, true},
        {"production1 127.0.0.1 9102 0", 0, "production1", 9102, false},
        {"", 1, NULL, 0, false},
        {"   \n", 1, NULL, 0, false},
        {"production1 127.0.0.1 9102", -EINVAL, NULL, 0, false},
        {"production1 127.0.0.1 9102 1 extra", -EINVAL, NULL, 0, false},
        {"production1 127.0.0.1 port 1", -EINVAL, NULL, 0, false},
        {"production1 127.0.0.1 70000 1", -EINVAL, NULL, 0, false},
        {"production1 127.0.0.1 -5 1", -EINVAL, NULL, 0, false},
        {"production1 127.0.0.1 9102 yes", -EINVAL, NULL, 0, false},
        {"other1 127.0.0.1 9102 1", -EINVAL, NULL, 0, false},
        {"production 127.0.0.1 9102 1", -EINVAL, NULL, 0, false},
        /* the host goes to the pool as given: a numeric address only */
        {"production1 localhost 9102 1", -EINVAL, NULL, 0, false},
        {"production1 127.0.0 9102 1", -EINVAL, NULL, 0, false},
        {"production1 127.0.0.1:9102 9102 1", -EINVAL, NULL, 0, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        job_result_t r;
        int rc = jobs_parse_list_line(cases[i].line, "production", &r);
        if (rc != cases[i].rc)
            fail_msg("line '%s': rc %d, want %d", cases[i].line, rc, cases[i].rc);
        if (rc != 0)
            continue;
        assert_string_equal(r.instance.name, cases[i].name);
        assert_string_equal(r.instance.host, "127.0.0.1");
        assert_int_equal(r.instance.port, cases[i].port);
        assert_int_equal(r.ok, cases[i].healthy);
        assert_true(r.running);
        assert_int_equal(r.exited_pid, 0);
    }

    /* An instance whose process exited on its own: its last pid and how it ended. */
    job_result_t r;
    assert_int_equal(jobs_parse_list_line("production2 127.0.0.1 9103 exited 4242 terminated by "
                                          "SIGSEGV (core dumped); core kept\n",
                                          "production", &r),
                     0);
    assert_string_equal(r.instance.name, "production2");
    assert_int_equal(r.instance.port, 9103);
    assert_false(r.running);
    assert_false(r.ok);
    assert_int_equal(r.exited_pid, 4242);
    assert_string_equal(r.detail, "terminated by SIGSEGV (core dumped); core kept");
    assert_int_equal(jobs_parse_list_line("production2 127.0.0.1 9103 exited 77", "production",
                                          &r),
                     0);
    assert_string_equal(r.detail, "exited");
    static const char *const bad[] = {
        "production2 127.0.0.1 9103 exited",
        "production2 127.0.0.1 9103 exited 0 how",
        "production2 127.0.0.1 9103 exited -5 how",
        "production2 127.0.0.1 9103 exited pid how",
        "production2 127.0.0.1 9103 gone 77 how",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (jobs_parse_list_line(bad[i], "production", &r) != -EINVAL)
            fail_msg("line '%s' should be malformed", bad[i]);
}

/* The docker driver: what a container runs is app.image, and only a plain reference. */
static void test_image(void **state)
{
    (void)state;
    static const struct {
        const char *image;
        bool ok;
    } cases[] = {
        {"tide-sample-app:latest", true},
        {"registry.local:5000/team/app@sha256:0123abcd", true},
        {"app", true},
        {"", false},
        {"-v", false},
        {"--privileged", false},
        {".hidden", false},
        {"/etc/passwd", false},
        {"app latest", false},
        {"app;rm", false},
        {"app\nx", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (jobs_image_ok(cases[i].image) != cases[i].ok)
            fail_msg("image '%s': want %s", cases[i].image, cases[i].ok ? "ok" : "refused");

    tide_config_t cfg = s_cfg;
    snprintf(cfg.executor.driver, sizeof cfg.executor.driver, "docker");
    snprintf(cfg.app.image, sizeof cfg.app.image, "--privileged");
    const char *names[] = {"production0"}, *hosts[] = {"127.0.0.1"};
    const uint32_t ports[] = {9101};
    req_t r;
    s_req(&r, UP, "img", 1, names, hosts, ports);
    char reason[512] = "";
    assert_int_equal(jobs_validate(&cfg, &r.req, reason, sizeof reason), -EINVAL);
    assert_non_null(strstr(reason, "app.image '--privileged' is not a plain image reference"));
    /* Stopping and listing need no image: they still work to clean up. */
    s_req(&r, DOWN, "img", 1, names, hosts, ports);
    assert_int_equal(jobs_validate(&cfg, &r.req, reason, sizeof reason), 0);
    /* The process driver runs app.command, not an image. */
    snprintf(cfg.executor.driver, sizeof cfg.executor.driver, "process");
    s_req(&r, UP, "img", 1, names, hosts, ports);
    assert_int_equal(jobs_validate(&cfg, &r.req, reason, sizeof reason), 0);
}

/* A scale up's reported placement must match the job exactly. */
static void test_placement(void **state)
{
    (void)state;
    jobs_t *jobs = jobs_new(&s_cfg, 0);
    const char *names[] = {"production1", "production2"}, *hosts[] = {"127.0.0.1", "127.0.0.1"};
    const uint32_t ports[] = {9102, 9103};
    req_t r;
    s_req(&r, UP, "place", 2, names, hosts, ports);
    job_t *job = jobs_add(jobs, &r.req);
    assert_non_null(job);
    static const struct {
        const char *lines[3];
        const char *reason; /* NULL: accepted */
    } cases[] = {
        {{"production1 127.0.0.1 9102 1", "production2 10.1.2.3 9103 1"}, NULL},
        {{"production2 127.0.0.1 9103 1", "production1 ::1 9102 1"}, NULL},
        {{"production1 127.0.0.1 9102 1"}, "does not say where production2 runs"},
        {{"production1 127.0.0.1 9102 1", "production3 127.0.0.1 9104 1"},
         "production3, which is not in the job"},
        {{"production1 127.0.0.1 9102 1", "production2 127.0.0.1 9999 1"},
         "gives production2 port 9999"},
        {{"production1 127.0.0.1 9102 1", "production1 127.0.0.1 9102 1",
          "production2 127.0.0.1 9103 1"},
         "names production1 twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        job_result_t lines[3];
        size_t n = 0;
        for (size_t k = 0; k < 3 && cases[i].lines[k]; k++)
            assert_int_equal(jobs_parse_list_line(cases[i].lines[k], "production", &lines[n++]), 0);
        char err[256] = "";
        int rc = jobs_check_placement(job, lines, n, err, sizeof err);
        if (!cases[i].reason && rc != 0)
            fail_msg("case %zu refused: %s", i, err);
        if (cases[i].reason && (rc == 0 || !strstr(err, cases[i].reason)))
            fail_msg("case %zu: rc %d err '%s', want '%s'", i, rc, err, cases[i].reason);
    }
    jobs_destroy(&jobs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_table),
        cmocka_unit_test(test_validate_profile),
        cmocka_unit_test(test_table_resend_and_busy),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_output_tail),
        cmocka_unit_test(test_list_lines),
        cmocka_unit_test(test_image),
        cmocka_unit_test(test_placement),
    };
    return cmocka_run_group_tests(tests, s_setup, NULL);
}
