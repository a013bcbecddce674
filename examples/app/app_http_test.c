/* app_http_test.c - table tests of the sample app's request parser and router (app_http.c). */
#include "app_http.h"
#include "app_misbehave.h"

#include <stdio.h>
#include <string.h>

static int s_failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            s_failures++;                                                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

typedef struct {
    const char *head;
    int status;       /* what http_parse returns */
    const char *path; /* when status is 0 */
    int minor;
    bool keep_alive;
    bool is_head;
    unsigned long long length;
} parse_case_t;

static const parse_case_t s_parse_cases[] = {
    {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, "/", 1, true, false, 0},
    {"GET /a/b?c=d HTTP/1.1\r\n\r\n", 0, "/a/b", 1, true, false, 0},
    {"GET /a#frag HTTP/1.1\r\n\r\n", 0, "/a", 1, true, false, 0},
    {"GET / HTTP/1.0\r\n\r\n", 0, "/", 0, false, false, 0},
    {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0, "/", 0, true, false, 0},
    {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 0, "/", 1, false, false, 0},
    {"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n", 0, "/", 1, false, false, 0},
    {"GET / HTTP/1.9\r\n\r\n", 0, "/", 1, true, false, 0},
    {"HEAD /x HTTP/1.1\r\n\r\n", 0, "/x", 1, true, true, 0},
    {"POST /p HTTP/1.1\r\nContent-Length: 12\r\n\r\n", 0, "/p", 1, true, false, 12},
    {"POST /p HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 0, "/p", 1, true, false,
     5},
    {"GET / HTTP/1.1\nHost: x\n\n", 0, "/", 1, true, false, 0},
    {"GET http://example.com/abs?q HTTP/1.1\r\n\r\n", 0, "/abs", 1, true, false, 0},
    {"GET http://example.com HTTP/1.1\r\n\r\n", 0, "/", 1, true, false, 0},
    {"OPTIONS * HTTP/1.1\r\n\r\n", 0, "*", 1, true, false, 0},
    {"GET / HTTP/1.1\r\nX-Empty:\r\n\r\n", 0, "/", 1, true, false, 0},
    {"PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 9\r\n\r\n", 0, "/", 1, true, false,
     9},
    /* malformed */
    {"garbage\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET /\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET  / HTTP/1.1\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET / HTTP/1.1 \r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET / http/1.1\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET / HTTP/11\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"G(T / HTTP/1.1\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET nopath HTTP/1.1\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET /a\x01 HTTP/1.1\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET / HTTP/1.1\r\nNo colon\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400, NULL, 0, false, false, 0},
    {"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400, NULL, 0, false, false,
     0},
    {"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, NULL, 0, false, false,
     0},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411, NULL, 0, false, false, 0},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400, NULL, 0,
     false, false, 0},
    {"GET / HTTP/2.0\r\n\r\n", 505, NULL, 0, false, false, 0},
    {"GET / HTTP/0.9\r\n\r\n", 505, NULL, 0, false, false, 0},
};

static void s_test_parse(void)
{
    for (size_t i = 0; i < sizeof s_parse_cases / sizeof s_parse_cases[0]; i++) {
        const parse_case_t *t = &s_parse_cases[i];
        size_t len = strlen(t->head);
        size_t scan = 0;
        size_t end = http_head_end(t->head, len, &scan);
        CHECK(end == len, "case %zu: head_end %zu, want %zu", i, end, len);
        http_req_t req;
        int status = http_parse(t->head, end ? end : len, &req);
        CHECK(status == t->status, "case %zu: status %d, want %d", i, status, t->status);
        if (status != 0 || t->status != 0)
            continue;
        CHECK(req.path_len == strlen(t->path) && memcmp(req.path, t->path, req.path_len) == 0,
              "case %zu: path '%.*s', want '%s'", i, (int)req.path_len, req.path, t->path);
        CHECK(req.minor == t->minor, "case %zu: minor %d", i, req.minor);
        CHECK(req.keep_alive == t->keep_alive, "case %zu: keep_alive %d", i, req.keep_alive);
        CHECK(req.head == t->is_head, "case %zu: head %d", i, req.head);
        CHECK(req.content_length == t->length, "case %zu: length %llu", i,
              (unsigned long long)req.content_length);
    }
}

static void s_test_expect(void)
{
    const char *head = "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n";
    http_req_t req;
    CHECK(http_parse(head, strlen(head), &req) == 0 && req.expect_continue, "Expect: 100-continue");
    head = "PUT / HTTP/1.1\r\nContent-Length: 9\r\n\r\n";
    CHECK(http_parse(head, strlen(head), &req) == 0 && !req.expect_continue, "no Expect");
}

static void s_test_head_end(void)
{
    /* Fed one byte at a time, the end is found exactly when the blank line completes. */
    const char *head = "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next";
    size_t want = strlen("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    size_t scan = 0;
    for (size_t len = 0; len <= strlen(head); len++) {
        size_t end = http_head_end(head, len, &scan);
        if (len < want)
            CHECK(end == 0, "head_end %zu at length %zu", end, len);
        else
            CHECK(end == want, "head_end %zu at length %zu, want %zu", end, len, want);
        if (end)
            break;
    }
    scan = 0;
    CHECK(http_head_end("GET / HTTP/1.1\r\n\r", 17, &scan) == 0, "lone CR ends a head");
    CHECK(http_skip_blank("\r\n\nGET", 6) == 3, "skip_blank CRLF LF");
    CHECK(http_skip_blank("\r", 1) == 0, "skip_blank lone CR");
    CHECK(http_skip_blank("", 0) == 0, "skip_blank empty");
}

typedef struct {
    const char *path;
    http_route_t route;
    unsigned long long arg;
} route_case_t;

static const route_case_t s_route_cases[] = {
    {"/", ROUTE_HELLO, 0},
    {"/health", ROUTE_HEALTH, 0},
    {"/healthz", ROUTE_HELLO, 0},
    {"/anything/else", ROUTE_HELLO, 0},
    {"/status/200", ROUTE_STATUS, 200},
    {"/status/503", ROUTE_STATUS, 503},
    {"/status/599", ROUTE_STATUS, 599},
    {"/status/100", ROUTE_BAD, 0},
    {"/status/600", ROUTE_BAD, 0},
    {"/status/5033", ROUTE_BAD, 0},
    {"/status/abc", ROUTE_BAD, 0},
    {"/status/", ROUTE_BAD, 0},
    {"/bytes/0", ROUTE_BYTES, 0},
    {"/bytes/1024", ROUTE_BYTES, 1024},
    {"/bytes/10485760", ROUTE_BYTES, 10485760},
    {"/bytes/10485761", ROUTE_BAD, 0},
    {"/bytes/-1", ROUTE_BAD, 0},
    {"/bytes/", ROUTE_BAD, 0},
    {"/status", ROUTE_HELLO, 0},
};

static void s_test_route(void)
{
    for (size_t i = 0; i < sizeof s_route_cases / sizeof s_route_cases[0]; i++) {
        const route_case_t *t = &s_route_cases[i];
        uint64_t arg;
        http_route_t route = http_route(t->path, strlen(t->path), "/health", &arg);
        CHECK(route == t->route, "%s: route %d, want %d", t->path, route, t->route);
        if (route == t->route && route != ROUTE_BAD)
            CHECK(arg == t->arg, "%s: arg %llu, want %llu", t->path, (unsigned long long)arg,
                  t->arg);
    }
}

static void s_test_response_head(void)
{
    char buf[512];
    size_t n = http_response_head(buf, sizeof buf, 200, "p0", "text/plain", 5, true, 1);
    const char *want = "HTTP/1.1 200 OK\r\nX-Instance: p0\r\nContent-Type: text/plain\r\n"
                       "Content-Length: 5\r\n\r\n";
    CHECK(n == strlen(want) && memcmp(buf, want, n) == 0, "200 head: %.*s", (int)n, buf);
    n = http_response_head(buf, sizeof buf, 204, "p0", "text/plain", 0, false, 1);
    CHECK(n > 0 && !strstr(buf, "Content-Length") && strstr(buf, "Connection: close\r\n"),
          "204 head: %s", buf);
    n = http_response_head(buf, sizeof buf, 200, "p0", "text/plain", 0, true, 0);
    CHECK(n > 0 && strstr(buf, "Connection: keep-alive\r\n"), "1.0 keep-alive head: %s", buf);
    CHECK(http_response_head(buf, 10, 200, "p0", "text/plain", 0, true, 1) == 0,
          "a small buffer must fail");
}

/* The /_sample switches: paths, methods, the share and cpu_us arguments; then the even spread
 * of failures and the switches' text. */
static void s_test_sample(void)
{
    static const struct {
        const char *head;
        sample_route_t route;
        uint32_t ppm, cpu_us;
    } cases[] = {
        {"GET / HTTP/1.1\r\n\r\n", SAMPLE_NONE, 0, 0},
        {"GET /_samples HTTP/1.1\r\n\r\n", SAMPLE_NONE, 0, 0},
        {"GET /_sample HTTP/1.1\r\n\r\n", SAMPLE_SHOW, 0, 0},
        {"POST /_sample/ HTTP/1.1\r\n\r\n", SAMPLE_SHOW, 0, 0},
        {"POST /_sample/fail?share=0.5 HTTP/1.1\r\n\r\n", SAMPLE_FAIL, 500000, 2000},
        {"POST /_sample/fail?share=1&cpu_us=300 HTTP/1.1\r\n\r\n", SAMPLE_FAIL, 1000000, 300},
        {"POST /_sample/fail?cpu_us=0&share=.25 HTTP/1.1\r\n\r\n", SAMPLE_FAIL, 250000, 0},
        {"POST /_sample/fail?share=0 HTTP/1.1\r\n\r\n", SAMPLE_FAIL, 0, 2000},
        {"POST /_sample/fail?share=0.1234567 HTTP/1.1\r\n\r\n", SAMPLE_BAD_ARG, 0, 0},
        {"POST /_sample/fail?share=1.5 HTTP/1.1\r\n\r\n", SAMPLE_BAD_ARG, 0, 0},
        {"POST /_sample/fail?share=-1 HTTP/1.1\r\n\r\n", SAMPLE_BAD_ARG, 0, 0},
        {"POST /_sample/fail?share= HTTP/1.1\r\n\r\n", SAMPLE_BAD_ARG, 0, 0},
        {"POST /_sample/fail?share=0.5x HTTP/1.1\r\n\r\n", SAMPLE_BAD_ARG, 0, 0},
        {"POST /_sample/fail HTTP/1.1\r\n\r\n", SAMPLE_BAD_ARG, 0, 0},
        {"POST /_sample/fail?share=0.5&cpu_us=100001 HTTP/1.1\r\n\r\n", SAMPLE_BAD_ARG, 0, 0},
        {"POST /_sample/fail?share=0.5&x=1 HTTP/1.1\r\n\r\n", SAMPLE_BAD_ARG, 0, 0},
        {"GET /_sample/fail?share=0.5 HTTP/1.1\r\n\r\n", SAMPLE_METHOD, 0, 0},
        {"POST /_sample/crash HTTP/1.1\r\n\r\n", SAMPLE_CRASH, 0, 0},
        {"PUT /_sample/crash HTTP/1.1\r\n\r\n", SAMPLE_METHOD, 0, 0},
        {"POST /_sample/other HTTP/1.1\r\n\r\n", SAMPLE_NOT_FOUND, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_req_t req;
        int st = http_parse(cases[i].head, strlen(cases[i].head), &req);
        CHECK(st == 0, "sample case %zu: parse %d", i, st);
        uint32_t ppm = 0, cpu = 0;
        sample_route_t r = misbehave_route(&req, &ppm, &cpu);
        CHECK(r == cases[i].route, "sample case %zu: route %d, want %d", i, r, cases[i].route);
        if (r == SAMPLE_FAIL)
            CHECK(ppm == cases[i].ppm && cpu == cases[i].cpu_us,
                  "sample case %zu: ppm %u cpu %u", i, ppm, cpu);
    }
    /* share 0.5 fails every other request, 0.25 one in four; 0 none */
    misbehave_set_fail(500000, 0);
    int failed = 0;
    for (int i = 0; i < 10; i++)
        failed += misbehave_fail_now();
    CHECK(failed == 5, "share 0.5 failed %d of 10", failed);
    misbehave_set_fail(250000, 0);
    failed = 0;
    for (int i = 0; i < 100; i++)
        failed += misbehave_fail_now();
    CHECK(failed == 25, "share 0.25 failed %d of 100", failed);
    char text[80];
    misbehave_describe(text, sizeof text);
    CHECK(strcmp(text, "fail_share=0.250000 fail_cpu_us=0\n") == 0, "describe: %s", text);
    misbehave_set_fail(0, 2000);
    CHECK(!misbehave_fail_now(), "share 0 failed a request");
}

int main(void)
{
    s_test_sample();
    s_test_parse();
    s_test_expect();
    s_test_head_end();
    s_test_route();
    s_test_response_head();
    if (s_failures) {
        fprintf(stderr, "%d failures\n", s_failures);
        return 1;
    }
    printf("app_http: all tests passed\n");
    return 0;
}
