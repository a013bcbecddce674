/* test_syntax.c - the request syntax rules http-parser leaves out: one row per rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "syntax.h"

/* Scans head whole, then again one byte per call (as split reads bring it): both must agree. */
static head_rc_t s_scan(const char *head, size_t len, int *status, size_t *used)
{
    head_scan_t a, b;
    head_scan_init(&a);
    head_rc_t whole = head_scan(&a, head, len, used);
    head_scan_init(&b);
    head_rc_t split = HEAD_MORE;
    size_t at = 0, u = 0;
    for (; at < len && split == HEAD_MORE; at++)
        split = head_scan(&b, head + at, 1, &u);
    assert_int_equal(whole, split);
    if (whole == HEAD_DONE)
        assert_int_equal(*used, at);
    if (whole == HEAD_BAD)
        assert_int_equal(a.status, b.status);
    *status = a.status;
    return whole;
}

typedef struct {
    const char *head;
    size_t len;
    int status; /* 0: accepted whole */
} row_t;

#define ROW(h, s)                                                                                  \
    {                                                                                              \
        h, sizeof(h) - 1, s                                                                        \
    }

static void test_rows(void **state)
{
    (void)state;
    static const row_t rows[] = {
        ROW("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0),
        ROW("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 0), /* an empty line before: skipped */
        ROW("GET / HTTP/1.1\nHost: a\n\n", 0),           /* bare LF ends lines (2.2) */
        ROW("GET /a?b=%20&c HTTP/1.0\r\n\r\n", 0),
        ROW("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 0),            /* a higher minor is 1.1 (2.3) */
        ROW("GET / HTTP/1.1\r\nX: \t a b\xff\x80 \r\n\r\n", 0), /* obs-text, HTAB, SP */
        ROW("GET / HTTP/1.1\r\nX:\r\n\r\n", 0),                 /* empty value */
        /* 5.1: no whitespace between the field name and the colon */
        ROW("GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n", 400),
        ROW("GET / HTTP/1.1\r\nContent-Length\t: 5\r\n\r\n", 400),
        ROW("GET / HTTP/1.1\r\nFoo Bar: x\r\n\r\n", 400),
        ROW("GET / HTTP/1.1\r\n: x\r\n\r\n", 400),
        ROW("GET / HTTP/1.1\r\nFoo\x01: x\r\n\r\n", 400),
        ROW("GET / HTTP/1.1\r\nFo(o: x\r\n\r\n", 400),
        /* 5.2: obs-fold; 2.2: whitespace before the first field */
        ROW("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400),
        ROW("GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", 400),
        ROW("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
        /* 5.5: CR, LF, NUL and other controls in a value; 2.2: bare CR */
        ROW("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),
        ROW("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 400),
        ROW("GET / HTTP/1.1\r\nX: a\x01\r\n\r\n", 400),
        ROW("GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", 400),
        ROW("GET / HTTP/1.1\r\nX: a\x1b\r\n\r\n", 400),
        ROW("GET / HTTP/1.1\r\nHost: a\r\n\rX", 400),
        ROW("GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
        ROW("\rGET / HTTP/1.1\r\n\r\n", 400),
        /* 3: exactly one SP between the parts; 3.2: no whitespace or control in the target */
        ROW("GET  / HTTP/1.1\r\n\r\n", 400),
        ROW("GET /  HTTP/1.1\r\n\r\n", 400),
        ROW("GET / HTTP/1.1 \r\n\r\n", 400),
        ROW("GET /a b HTTP/1.1\r\n\r\n", 400),
        ROW("GET /a\tb HTTP/1.1\r\n\r\n", 400),
        ROW("GET /a\x01 HTTP/1.1\r\n\r\n", 400),
        ROW("GET /a\x7f HTTP/1.1\r\n\r\n", 400),
        ROW("GET /\xc3\xa9 HTTP/1.1\r\n\r\n", 400),
        ROW("G@T / HTTP/1.1\r\n\r\n", 400),
        ROW(" GET / HTTP/1.1\r\n\r\n", 400),
        /* 2.3: the version's grammar; a major other than 1 is 505 */
        ROW("GET / HTTP/1.1x\r\n\r\n", 400),
        ROW("GET / HTTP/1.10\r\n\r\n", 400),
        ROW("GET / http/1.1\r\n\r\n", 400),
        ROW("GET / HTTP/1\r\n\r\n", 400),
        ROW("GET /\r\n\r\n", 400),
        ROW("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ROW("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
        ROW("GET / HTTP/3.1\r\n\r\n", 505),
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *h = rows[i].head;
        size_t len = rows[i].len;
        int status = -1;
        size_t used = 0;
        head_rc_t rc = s_scan(h, len, &status, &used);
        if (rows[i].status == 0) {
            if (rc != HEAD_DONE)
                fail_msg("row %zu refused: %s", i, h);
            assert_int_equal(used, len);
        } else {
            if (rc != HEAD_BAD)
                fail_msg("row %zu accepted: %s", i, h);
            assert_int_equal(status, rows[i].status);
        }
    }
}

/* The tchar bitmap against RFC 9110 5.6.2's definition, byte by byte. */
static void test_tchar(void **state)
{
    (void)state;
    for (int ch = 0; ch < 256; ch++) {
        bool want = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
        if (http_tchar((unsigned char)ch) != want)
            fail_msg("byte 0x%02x", ch);
    }
}

/* The head ends at its empty line: the body and a pipelined request after it are not scanned,
 * and the next head starts clean after head_scan_init. */
static void test_stops_at_head_end(void **state)
{
    (void)state;
    const char in[] = "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n \x01\rab";
    head_scan_t s;
    head_scan_init(&s);
    size_t used = 0;
    assert_int_equal(head_scan(&s, in, sizeof in - 1, &used), HEAD_DONE);
    assert_int_equal(used, sizeof in - 1 - 5);
    assert_int_equal(head_scan(&s, "\x01", 1, &used), HEAD_DONE);
    assert_int_equal(used, 0);
    head_scan_init(&s);
    assert_int_equal(head_scan(&s, "GET /", 5, &used), HEAD_MORE);
    assert_int_equal(used, 5);
    assert_int_equal(head_scan(&s, " HTTP/1.1\r\n", 11, &used), HEAD_MORE);
    assert_int_equal(head_scan(&s, "\r\nGET", 5, &used), HEAD_DONE);
    assert_int_equal(used, 2);
}

/* Feeds in whole, then one byte per call: both must give want. */
static void s_chunks(const char *in, size_t len, bool after_data, bool want)
{
    chunk_scan_t a, b;
    chunk_scan_arm(&a, after_data);
    bool whole = chunk_scan(&a, in, len);
    chunk_scan_arm(&b, after_data);
    bool split = true;
    for (size_t i = 0; i < len && split; i++)
        split = chunk_scan(&b, in + i, 1);
    assert_int_equal(whole, split);
    if (whole != want)
        fail_msg("%s: %s", want ? "refused" : "accepted", in);
}

static void test_chunk_lines(void **state)
{
    (void)state;
    struct {
        const char *in;
        bool after_data, ok;
    } t[] = {
        {"5\r\nhello", false, true}, /* the data after the line is not looked at */
        {"5;a=b\r\n", false, true},    {"5 ;a=\"x y\"\r\n", false, true},
        {"1F\r\n", false, true},       {"0\r\nX: 1\r\n", false, true},
        {"\r\n0\r\n\r\n", true, true}, {"5 5\r\n", false, false},
        {"5x\r\n", false, false},      {" 5\r\n", false, false},
        {"\r\n", false, false},        {"5\n", false, false},
        {"5\rx", false, false},        {"XX0\r\n", true, false},
        {"\rX", true, false},          {"\n0\r\n", true, false},
        {"5;a\x01\r\n", false, false}, {"-5\r\n", false, false},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        s_chunks(t[i].in, strlen(t[i].in), t[i].after_data, t[i].ok);
}

static void test_host(void **state)
{
    (void)state;
    const char *good[] = {"",
                          "example.com",
                          "a:80",
                          "127.0.0.1:8080",
                          "[::1]",
                          "[::1]:443",
                          "x_y.local",
                          "a%41b",
                          "web.localhost",
                          "a:",
                          "[v1.fe]",
                          "A-Z.test",
                          "sub.d!$&'()*+,;=",
                          NULL};
    const char *bad[] = {"a b",  "a\tb", "a/b",   "a@b",    "a?b", "a#b",  "[::1",
                         "[]",   "a:8x", "a:80:", "[::1]x", "a%4", "a%zz", "a\"b",
                         "a<b>", "a\\b", "a{b}",  "a|b",    "a^b", NULL};
    for (size_t i = 0; good[i]; i++)
        if (!host_is_valid(good[i], strlen(good[i])))
            fail_msg("refused: %s", good[i]);
    for (size_t i = 0; bad[i]; i++)
        if (host_is_valid(bad[i], strlen(bad[i])))
            fail_msg("accepted: %s", bad[i]);
}

static void test_absolute(void **state)
{
    (void)state;
    const char *auth = NULL, *path = NULL;
    size_t al = 0, pl = 0;
    const char *u = "http://b.test:81/x?y";
    assert_int_equal(target_absolute(u, strlen(u), &auth, &al, &path, &pl), 1);
    assert_int_equal(al, 9);
    assert_memory_equal(auth, "b.test:81", 9);
    assert_int_equal(pl, 4);
    assert_memory_equal(path, "/x?y", 4);
    u = "HTTPS://b?q";
    assert_int_equal(target_absolute(u, strlen(u), &auth, &al, &path, &pl), 1);
    assert_int_equal(al, 1);
    assert_int_equal(pl, 2);
    assert_memory_equal(path, "?q", 2);
    u = "http://b";
    assert_int_equal(target_absolute(u, strlen(u), &auth, &al, &path, &pl), 1);
    assert_int_equal(pl, 0);
    assert_int_equal(target_absolute("/x", 2, &auth, &al, &path, &pl), 0);
    assert_int_equal(target_absolute("*", 1, &auth, &al, &path, &pl), 0);
    u = "ftp://b/";
    assert_int_equal(target_absolute(u, strlen(u), &auth, &al, &path, &pl), -1);
    u = "http://user@b/";
    assert_int_equal(target_absolute(u, strlen(u), &auth, &al, &path, &pl), -1);
    u = "b.test:80";
    assert_int_equal(target_absolute(u, strlen(u), &auth, &al, &path, &pl), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_tchar),
        cmocka_unit_test(test_stops_at_head_end),
        cmocka_unit_test(test_chunk_lines),
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_absolute),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
