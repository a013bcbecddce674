/* test_headers.c - header collection and the rewriting of request and response heads. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "headers.h"

/* Fills h from "Name: value" pairs, each name and value fed in two pieces like a split read. */
static void s_fill(hdrs_t *h, const char *const *pairs)
{
    for (size_t i = 0; pairs[i]; i += 2) {
        const char *n = pairs[i], *v = pairs[i + 1];
        size_t nl = strlen(n), vl = strlen(v);
        assert_int_equal(hdrs_on_field(h, n, nl / 2), 0);
        assert_int_equal(hdrs_on_field(h, n + nl / 2, nl - nl / 2), 0);
        assert_int_equal(hdrs_on_value(h, v, vl / 2), 0);
        assert_int_equal(hdrs_on_value(h, v + vl / 2, vl - vl / 2), 0);
    }
}

static char *s_str(buf_t *b)
{
    buf_append(b, "", 1);
    return b->data;
}

static void test_collect(void **state)
{
    (void)state;
    hdrs_t h;
    hdrs_init(&h, 4096);
    const char *const pairs[] = {"Host", "example", "X-Empty", "", "Accept", "*/*", NULL};
    s_fill(&h, pairs);
    assert_int_equal(h.n, 3);
    size_t len;
    const char *v = hdrs_get(&h, "host", &len);
    assert_non_null(v);
    assert_int_equal(len, 7);
    assert_memory_equal(v, "example", 7);
    v = hdrs_get(&h, "x-empty", &len);
    assert_non_null(v);
    assert_int_equal(len, 0);
    assert_null(hdrs_get(&h, "cookie", &len));
    hdrs_reset(&h);
    assert_int_equal(h.n, 0);
    hdrs_free(&h);
}

static void test_limit(void **state)
{
    (void)state;
    hdrs_t h;
    hdrs_init(&h, 10);
    assert_int_equal(hdrs_on_field(&h, "abcdef", 6), 0);
    assert_int_equal(hdrs_on_value(&h, "ghijk", 5), -E2BIG);
    hdrs_free(&h);
}

static void test_hop_by_hop(void **state)
{
    (void)state;
    const char *hop[] = {"Connection",        "keep-alive", "PROXY-CONNECTION",   "TE", "Trailer",
                         "Transfer-Encoding", "Upgrade",    "Proxy-Authorization"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        assert_true(hdr_is_hop_by_hop(hop[i], strlen(hop[i])));
    assert_false(hdr_is_hop_by_hop("Host", 4));
    assert_false(hdr_is_hop_by_hop("Content-Length", 14));
    assert_false(hdr_is_hop_by_hop("Tex", 3));
}

static void test_request_head(void **state)
{
    (void)state;
    hdrs_t h;
    hdrs_init(&h, 4096);
    const char *const pairs[] = {"Host",
                                 "svc.example",
                                 "Connection",
                                 "keep-alive, X-Secret",
                                 "X-Secret",
                                 "drop me",
                                 "Keep-Alive",
                                 "timeout=5",
                                 "X-Forwarded-For",
                                 "10.0.0.1",
                                 "X-Forwarded-Proto",
                                 "https",
                                 "Content-Length",
                                 "05",
                                 "Accept",
                                 "*/*",
                                 NULL};
    s_fill(&h, pairs);
    buf_t out = {0};
    req_head_t r = {.method = "POST",
                    .url = "/a?b=1",
                    .url_len = 6,
                    .body = BODY_LENGTH,
                    .client_ip = "127.0.0.1",
                    .default_host = "127.0.0.1:9000",
                    .has_length = true,
                    .content_length = 5};
    assert_int_equal(head_build_request(&out, &r, &h), 0);
    /* The length is tide's own, written from what the parser read ("05" is 5), never
     * copied: no spelling of it can mean one thing to tide and another to the instance. */
    const char *want = "POST /a?b=1 HTTP/1.1\r\n"
                       "Host: svc.example\r\n"
                       "Accept: */*\r\n"
                       "X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n"
                       "X-Forwarded-Proto: http\r\n"
                       "X-Forwarded-Host: svc.example\r\n"
                       "Content-Length: 5\r\n"
                       "\r\n";
    assert_string_equal(s_str(&out), want);
    buf_free(&out);
    hdrs_free(&h);
}

static void test_request_chunked_no_host(void **state)
{
    (void)state;
    hdrs_t h;
    hdrs_init(&h, 4096);
    const char *const pairs[] = {"Transfer-Encoding", "chunked", "TE", "trailers", NULL};
    s_fill(&h, pairs);
    buf_t out = {0};
    req_head_t r = {.method = "PUT",
                    .url = "/u",
                    .url_len = 2,
                    .body = BODY_CHUNKED,
                    .client_ip = "::1",
                    .default_host = "127.0.0.1:9000"};
    assert_int_equal(head_build_request(&out, &r, &h), 0);
    const char *want = "PUT /u HTTP/1.1\r\n"
                       "Host: 127.0.0.1:9000\r\n"
                       "X-Forwarded-For: ::1\r\n"
                       "X-Forwarded-Proto: http\r\n"
                       "X-Forwarded-Host: 127.0.0.1:9000\r\n"
                       "Transfer-Encoding: chunked\r\n"
                       "\r\n";
    assert_string_equal(s_str(&out), want);
    buf_free(&out);
    hdrs_free(&h);
}

static void test_response_head(void **state)
{
    (void)state;
    hdrs_t h;
    hdrs_init(&h, 4096);
    const char *const pairs[] = {"Content-Type", "text/plain",  "Transfer-Encoding",
                                 "chunked",      "Connection",  "keep-alive",
                                 "X-Instance",   "production0", NULL};
    s_fill(&h, pairs);
    buf_t out = {0};
    resp_head_t r = {.status = 200, .reason = "OK", .reason_len = 2, .frame = BODY_CHUNKED};
    assert_int_equal(head_build_response(&out, &r, &h), 0);
    assert_string_equal(s_str(&out), "HTTP/1.1 200 OK\r\n"
                                     "Content-Type: text/plain\r\n"
                                     "X-Instance: production0\r\n"
                                     "Transfer-Encoding: chunked\r\n"
                                     "\r\n");
    /* The same body to an HTTP/1.0 client: delimited by the close. */
    buf_reset(&out);
    r.frame = BODY_EOF;
    r.close = true;
    assert_int_equal(head_build_response(&out, &r, &h), 0);
    assert_string_equal(s_str(&out), "HTTP/1.1 200 OK\r\n"
                                     "Content-Type: text/plain\r\n"
                                     "X-Instance: production0\r\n"
                                     "Connection: close\r\n"
                                     "\r\n");
    buf_free(&out);
    hdrs_free(&h);
}

static void test_response_length_keepalive_10(void **state)
{
    (void)state;
    hdrs_t h;
    hdrs_init(&h, 4096);
    const char *const pairs[] = {"Content-Length", "3", NULL};
    s_fill(&h, pairs);
    buf_t out = {0};
    resp_head_t r = {.status = 404, .frame = BODY_LENGTH, .keepalive_10 = true};
    assert_int_equal(head_build_response(&out, &r, &h), 0);
    assert_string_equal(s_str(&out), "HTTP/1.1 404 Not Found\r\n"
                                     "Content-Length: 3\r\n"
                                     "Connection: keep-alive\r\n"
                                     "\r\n");
    buf_free(&out);
    hdrs_free(&h);
}

static void test_error(void **state)
{
    (void)state;
    int codes[] = {400, 408, 413, 501, 502, 503, 504};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        buf_t out = {0};
        assert_int_equal(head_build_error(&out, codes[i], i % 2 == 0), 0);
        char *s = s_str(&out);
        char line[32];
        snprintf(line, sizeof line, "HTTP/1.1 %d ", codes[i]);
        assert_memory_equal(s, line, strlen(line));
        /* The body is exactly Content-Length long. */
        const char *cl = strstr(s, "Content-Length: ");
        assert_non_null(cl);
        size_t n = strtoul(cl + 16, NULL, 10);
        const char *body = strstr(s, "\r\n\r\n") + 4;
        assert_int_equal(strlen(body), n);
        assert_int_equal(strstr(s, "Connection: close") != NULL, i % 2 == 0);
        buf_free(&out);
    }
}

static void test_upgrade_heads(void **state)
{
    (void)state;
    hdrs_t h;
    hdrs_init(&h, 4096);
    const char *const pairs[] = {
        "Host",  "svc", "Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Key",
        "abc==", NULL};
    s_fill(&h, pairs);
    buf_t out = {0};
    req_head_t r = {.method = "GET",
                    .url = "/ws",
                    .url_len = 3,
                    .body = BODY_NONE,
                    .client_ip = "10.1.1.1",
                    .upgrade = true};
    assert_int_equal(head_build_request(&out, &r, &h), 0);
    assert_string_equal(s_str(&out), "GET /ws HTTP/1.1\r\n"
                                     "Host: svc\r\n"
                                     "Upgrade: websocket\r\n"
                                     "Sec-WebSocket-Key: abc==\r\n"
                                     "X-Forwarded-For: 10.1.1.1\r\n"
                                     "X-Forwarded-Proto: http\r\n"
                                     "X-Forwarded-Host: svc\r\n"
                                     "Connection: upgrade\r\n"
                                     "\r\n");
    /* Not an upgrade: the Upgrade header is hop-by-hop and goes. */
    buf_reset(&out);
    r.upgrade = false;
    assert_int_equal(head_build_request(&out, &r, &h), 0);
    assert_null(strstr(s_str(&out), "pgrade"));
    hdrs_free(&h);

    hdrs_init(&h, 4096);
    const char *const resp[] = {
        "Upgrade", "websocket", "Connection", "Upgrade", "Sec-WebSocket-Accept", "xyz=", NULL};
    s_fill(&h, resp);
    buf_reset(&out);
    resp_head_t rr = {.status = 101, .frame = BODY_NONE, .upgrade = true, .close = true};
    assert_int_equal(head_build_response(&out, &rr, &h), 0);
    assert_string_equal(s_str(&out), "HTTP/1.1 101 Switching Protocols\r\n"
                                     "Upgrade: websocket\r\n"
                                     "Sec-WebSocket-Accept: xyz=\r\n"
                                     "Connection: upgrade\r\n"
                                     "\r\n");
    buf_free(&out);
    hdrs_free(&h);
}

static void test_trailers(void **state)
{
    (void)state;
    hdrs_t h;
    hdrs_init(&h, 4096);
    /* Two head fields, then the trailer fields from index 2 on. */
    const char *const pairs[] = {
        "Content-Type",      "a/b",     "X-Head", "1", "X-Checksum", "77", "Content-Length", "9",
        "Transfer-Encoding", "chunked", "X-More", "",  NULL};
    s_fill(&h, pairs);
    buf_t out = {0};
    assert_int_equal(head_build_trailers(&out, &h, 2), 0);
    assert_string_equal(s_str(&out), "0\r\nX-Checksum: 77\r\nX-More: \r\n\r\n");
    /* None: just the last chunk. */
    buf_reset(&out);
    assert_int_equal(head_build_trailers(&out, &h, h.n), 0);
    assert_string_equal(s_str(&out), "0\r\n\r\n");
    buf_free(&out);
    hdrs_free(&h);
}

static void test_te_check(void **state)
{
    (void)state;
    struct {
        const char *te, *te2;
        int want;
    } t[] = {
        {"chunked", NULL, 0},         {"Chunked", NULL, 0},
        {" chunked ", NULL, 0},       {"gzip, chunked", NULL, 501},
        {"gzip", NULL, 400},          {"chunked, chunked", NULL, 400},
        {"chunked, gzip", NULL, 400}, {"gzip", "chunked", 501},
        {"chunked", "chunked", 400},  {"", NULL, 400},
        {"chunked,", NULL, 0},        {"xchunked", NULL, 400},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        hdrs_t h;
        hdrs_init(&h, 4096);
        const char *const pairs[] = {"Host", "a", "Transfer-Encoding", t[i].te, NULL};
        s_fill(&h, pairs);
        if (t[i].te2) {
            const char *const more[] = {"Transfer-Encoding", t[i].te2, NULL};
            s_fill(&h, more);
        }
        if (hdrs_te_check(&h) != t[i].want)
            fail_msg("row %zu (%s | %s): %d", i, t[i].te, t[i].te2 ? t[i].te2 : "-",
                     hdrs_te_check(&h));
        hdrs_free(&h);
    }
}

/* A response field whose name is not a token never reaches the client: it could read
 * "Content-Length : 5" as the framing tide did not use. */
static void test_response_drops_non_tokens(void **state)
{
    (void)state;
    hdrs_t h;
    hdrs_init(&h, 4096);
    const char *const pairs[] = {"Content-Length ", "5", "X Y", "1", "X-Ok", "2", NULL};
    s_fill(&h, pairs);
    buf_t out = {0};
    resp_head_t r = {.status = 200, .frame = BODY_CHUNKED};
    assert_int_equal(head_build_response(&out, &r, &h), 0);
    assert_string_equal(s_str(&out),
                        "HTTP/1.1 200 OK\r\nX-Ok: 2\r\nTransfer-Encoding: chunked\r\n\r\n");
    buf_free(&out);
    hdrs_free(&h);
}

static void test_connection_listed(void **state)
{
    (void)state;
    hdrs_t h;
    hdrs_init(&h, 4096);
    /* A response naming its own hop-by-hop header in Connection. */
    const char *const pairs[] = {"Connection", "close, X-Hop", "X-Hop", "1", "X-Keep", "2", NULL};
    s_fill(&h, pairs);
    buf_t out = {0};
    resp_head_t r = {.status = 200, .frame = BODY_LENGTH};
    assert_int_equal(head_build_response(&out, &r, &h), 0);
    assert_string_equal(s_str(&out), "HTTP/1.1 200 OK\r\nX-Keep: 2\r\n\r\n");
    buf_free(&out);
    hdrs_free(&h);
}

/* Trailer fields whose name is not a token are dropped (the head was checked by head_scan,
 * the trailers only by http-parser), and hdrs_count sees every spelling of a name. */
static void test_trailer_names(void **state)
{
    (void)state;
    hdrs_t h;
    hdrs_init(&h, 4096);
    const char *const pairs[] = {"X-Sum", "1", "Bad Name", "2", "X(y)", "3", "x-sum", "4", NULL};
    s_fill(&h, pairs);
    assert_int_equal(hdrs_count(&h, "X-SUM"), 2);
    assert_int_equal(hdrs_count(&h, "host"), 0);
    buf_t out = {0};
    assert_int_equal(head_build_trailers(&out, &h, 0), 0);
    assert_string_equal(s_str(&out), "0\r\nX-Sum: 1\r\nx-sum: 4\r\n\r\n");
    buf_free(&out);
    hdrs_free(&h);
}

/* A value keeps its inner whitespace and loses the trailing OWS (RFC 9112 5.1). */
static void test_value_trimmed(void **state)
{
    (void)state;
    hdrs_t h;
    hdrs_init(&h, 4096);
    const char *const pairs[] = {"Host", "a \t ", "X", "b  c\t", NULL};
    s_fill(&h, pairs);
    size_t len;
    assert_non_null(hdrs_get(&h, "host", &len));
    assert_int_equal(len, 1);
    const char *v = hdrs_get(&h, "x", &len);
    assert_int_equal(len, 4);
    assert_memory_equal(v, "b  c", 4);
    hdrs_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_collect),
        cmocka_unit_test(test_trailer_names),
        cmocka_unit_test(test_response_drops_non_tokens),
        cmocka_unit_test(test_value_trimmed),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_hop_by_hop),
        cmocka_unit_test(test_request_head),
        cmocka_unit_test(test_request_chunked_no_host),
        cmocka_unit_test(test_response_head),
        cmocka_unit_test(test_response_length_keepalive_10),
        cmocka_unit_test(test_error),
        cmocka_unit_test(test_upgrade_heads),
        cmocka_unit_test(test_trailers),
        cmocka_unit_test(test_te_check),
        cmocka_unit_test(test_connection_listed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
