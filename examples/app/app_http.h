/* app_http.h - HTTP/1.x request heads and response heads for the sample app: pure, no I/O.
 *
 * Kept apart from the sockets so a unit test (and later a fuzzer) can feed it any bytes. */
#ifndef APP_HTTP_H
#define APP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEAD    8192 /* request line + headers; more gets 431 */
#define HTTP_MAX_HEADERS 100
#define HTTP_BYTES_MAX   (10u * 1024 * 1024) /* largest /bytes/N */

typedef struct {
    const char *path; /* points into the head; query and fragment cut off */
    size_t path_len;
    const char *query; /* after the '?', up to any '#'; NULL when there is none */
    size_t query_len;
    bool post; /* the method is POST */
    int minor;               /* HTTP/1.minor, 0 or 1 */
    bool head;               /* HEAD: answer without a body */
    bool keep_alive;         /* after the version default and any Connection header */
    uint64_t content_length; /* body bytes that follow the head */
    bool expect_continue;    /* Expect: 100-continue: the client waits for a 100 first */
} http_req_t;

typedef enum {
    ROUTE_HEALTH, /* the health path: "ok", no cost */
    ROUTE_HELLO,  /* / and every other path */
    ROUTE_STATUS, /* /status/NNN: arg is the status */
    ROUTE_BYTES,  /* /bytes/N: arg is N */
    ROUTE_BAD     /* /status/ or /bytes/ with a bad argument: 400 */
} http_route_t;

/* Returns how many bytes at the start of buf are empty lines (CRLF or LF), which RFC 9112
 * asks a server to skip before a request line. A lone trailing CR is left for later. */
size_t http_skip_blank(const char *buf, size_t len);

/* Looks for the empty line that ends a request head in buf[0..len). *scan must start at 0 for
 * a new head; it remembers how far earlier calls got, so a head that dribbles in is scanned
 * about once. Returns the head's length including that empty line, or 0 if it is not all
 * there yet. */
size_t http_head_end(const char *buf, size_t len, size_t *scan);

/* Parses a complete head (as delimited by http_head_end) into req, whose path points into
 * head. Returns 0, or the status to answer before closing: 400 (malformed), 411 (a
 * Transfer-Encoding body, which the app does not decode), 431 (too many headers) or 505
 * (not HTTP/1.x). */
int http_parse(const char *head, size_t len, http_req_t *req);

/* Maps a path to what the app does with it; *arg gets the status or byte count. */
http_route_t http_route(const char *path, size_t len, const char *health_path, uint64_t *arg);

/* The reason phrase for a status ("OK", "Not Found"); never NULL. */
const char *http_reason(int status);

/* Writes a response head into buf (cap bytes): status line, X-Instance, Content-Type and,
 * except for 204 and 304, Content-Length; Connection: close when !keep_alive, or
 * Connection: keep-alive for an HTTP/1.0 client that keeps the connection. Returns its length,
 * or 0 if cap is too small (nothing useful is written then). */
size_t http_response_head(char *buf, size_t cap, int status, const char *instance,
                          const char *content_type, uint64_t content_length, bool keep_alive,
                          int minor);

/* Whether a response with this status carries a body at all (not 1xx, 204, 304). */
bool http_status_has_body(int status);

#endif
