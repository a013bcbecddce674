/* test_http.c - unit tests of metrics/http.c against a real libmicrohttpd server on a free
 * loopback port: paths, status codes, content types, bodies replaced by http_publish. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"

/* A port the kernel just handed out and released: free unless something races us for it. */
static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Sends one request with Connection: close and reads the whole answer into buf. */
static void s_request(int port, const char *method, const char *path, char *buf, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                     method, path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < size && (r = read(fd, buf + got, size - 1 - got)) > 0)
        got += (size_t)r;
    buf[got] = '\0';
    close(fd);
}

static void test_paths(void **state)
{
    (void)state;
    int port = s_free_port();
    char listen[64], err[256], buf[8192];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    http_t *http = http_new(listen, NULL, err, sizeof err);
    if (!http)
        fail_msg("http_new: %s", err);

    s_request(port, "GET", "/metrics", buf, sizeof buf);
    assert_non_null(strstr(buf, "HTTP/1.1 503"));

    const char *prom = "# TYPE tide_proxies gauge\ntide_proxies 2\n";
    const char *json = "{\"rps_stable\":1.5}\n";
    assert_int_equal(http_publish(http, prom, strlen(prom), json, strlen(json)), 0);

    static const struct {
        const char *method, *path, *status, *type, *body;
    } cases[] = {
        {"GET", "/metrics", "HTTP/1.1 200", "text/plain; version=0.0.4", "tide_proxies 2\n"},
        {"GET", "/metrics?x=1", "HTTP/1.1 200", "text/plain", "tide_proxies 2\n"},
        {"GET", "/api/snapshot", "HTTP/1.1 200", "application/json", "{\"rps_stable\":1.5}"},
        {"HEAD", "/metrics", "HTTP/1.1 200", "text/plain", NULL},
        {"GET", "/", "HTTP/1.1 404", NULL, "not found"},
        {"GET", "/metrics/", "HTTP/1.1 404", NULL, NULL},
        {"GET", "/api/snapshot2", "HTTP/1.1 404", NULL, NULL},
        {"POST", "/metrics", "HTTP/1.1 404", NULL, NULL},
        {"DELETE", "/api/snapshot", "HTTP/1.1 404", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_request(port, cases[i].method, cases[i].path, buf, sizeof buf);
        if (strncmp(buf, cases[i].status, strlen(cases[i].status)) != 0 ||
            (cases[i].type && !strstr(buf, cases[i].type)) ||
            (cases[i].body && !strstr(buf, cases[i].body)))
            fail_msg("%s %s: got\n%s", cases[i].method, cases[i].path, buf);
    }
    s_request(port, "HEAD", "/metrics", buf, sizeof buf);
    assert_null(strstr(buf, "tide_proxies 2")); /* HEAD: no body */

    /* a new publish replaces the bodies */
    const char *prom2 = "tide_proxies 3\n";
    assert_int_equal(http_publish(http, prom2, strlen(prom2), json, strlen(json)), 0);
    s_request(port, "GET", "/metrics", buf, sizeof buf);
    assert_non_null(strstr(buf, "tide_proxies 3\n"));
    assert_int_equal(http_requests(http), 12);

    /* the port is taken now: a second server fails with a reason */
    http_t *again = http_new(listen, NULL, err, sizeof err);
    assert_null(again);
    assert_non_null(strstr(err, listen));
    http_destroy(&http);
    assert_null(http);
    http_destroy(&http); /* NULL: nothing */
}

static void test_bad_address(void **state)
{
    (void)state;
    static const char *bad[] = {"127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", ":80",
                                "[::1]:8081x"};
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_null(http_new(bad[i], NULL, err, sizeof err));
        assert_true(err[0] != '\0');
    }
}

int main(void)
{
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_bad_address),
    };
    /* clang-format on */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
