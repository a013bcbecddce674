/* headers.h - HTTP header collection and the rewriting of request and response heads.
 *
 * Pure code (no sockets): http-parser hands header names and values in pieces, hdrs_t joins
 * them; head_build_* write the head tide sends on: hop-by-hop headers (the fixed list and
 * every name listed in Connection) removed, the framing re-stated, X-Forwarded-* set, Host
 * kept. Unit-tested in test_headers.c. */
#ifndef PROXY_HEADERS_H
#define PROXY_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct {
    uint32_t name_off, name_len, value_off, value_len;
} hdr_t;

/* The headers of one message, stored in one buffer; offsets stay valid as it grows. */
typedef struct {
    buf_t buf;
    hdr_t *v;
    size_t n, cap;
    bool in_value; /* the last piece was a value: the next field piece starts a header */
    size_t limit;  /* most bytes kept; past it hdrs_on_* fail with -E2BIG */
} hdrs_t;

void hdrs_init(hdrs_t *self, size_t limit);
void hdrs_reset(hdrs_t *self);
void hdrs_free(hdrs_t *self);

/* Add a piece of a header name / value as http-parser reports it. Return 0, -E2BIG past the
 * limit, or -ENOMEM. */
int hdrs_on_field(hdrs_t *self, const char *at, size_t len);
int hdrs_on_value(hdrs_t *self, const char *at, size_t len);

/* The name / value of header i (not NUL-terminated). */
const char *hdrs_name(const hdrs_t *self, size_t i, size_t *len);
const char *hdrs_value(const hdrs_t *self, size_t i, size_t *len);

/* The value of the first header called name (case-insensitive), or NULL. */
const char *hdrs_get(const hdrs_t *self, const char *name, size_t *len);

/* True for the hop-by-hop headers (Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
 * Transfer-Encoding, Upgrade, Proxy-Authenticate, Proxy-Authorization). The head builders
 * never forward them, except Upgrade on an upgrade and Trailer with a body that goes out
 * chunked (its trailer fields follow it). */
bool hdr_is_hop_by_hop(const char *name, size_t len);

/* How many headers of h are called name (case-insensitive). */
size_t hdrs_count(const hdrs_t *self, const char *name);

/* True when name appears as a token in any Connection header of h (so it is hop-by-hop too). */
bool hdrs_connection_lists(const hdrs_t *h, const char *name, size_t len);

typedef enum {
    BODY_NONE,    /* no body */
    BODY_LENGTH,  /* Content-Length */
    BODY_CHUNKED, /* Transfer-Encoding: chunked */
    BODY_EOF,     /* until the connection closes (responses only) */
} body_mode_t;

typedef struct {
    const char *method;
    const char *url; /* origin-form, or empty or "?query" for "/" + it */
    size_t url_len;
    body_mode_t body;         /* how tide frames the body it forwards: NONE, LENGTH, CHUNKED */
    const char *client_ip;    /* appended to X-Forwarded-For */
    const char *default_host; /* Host to send when the client sent none (HTTP/1.0) */
    const char *host;         /* Host to send instead of the client's (absolute-form target) */
    size_t host_len;
    bool has_length;         /* the client sent a Content-Length: tide writes its own */
    uint64_t content_length; /* the length http-parser read from it */
    bool upgrade;            /* an upgrade request: Upgrade kept, Connection: upgrade */
} req_head_t;

/* Writes the upstream request head (HTTP/1.1, keep-alive) for r with headers h into out.
 * Returns 0 or -ENOMEM. */
int head_build_request(buf_t *out, const req_head_t *r, const hdrs_t *h);

/* Writes the last chunk of a chunked body: "0\r\n", the trailer fields h holds from index
 * first on (hop-by-hop ones and those that must not be trailers, such as Content-Length,
 * dropped), and the final empty line. Returns 0 or -ENOMEM. */
int head_build_trailers(buf_t *out, const hdrs_t *h, size_t first);

/* The Transfer-Encoding of a request h, where some header names it: 0 when the codings are
 * "chunked" once, the only one tide re-frames (it would drop any other on the way); 400 when
 * chunked is missing, repeated or not last (RFC 9112 6.1, 6.3: the length cannot be told);
 * 501 when chunked is last once but another coding comes before it (RFC 9112 6.1). */
int hdrs_te_check(const hdrs_t *h);

typedef struct {
    int status;
    const char *reason; /* as the instance sent it; NULL or empty: the standard phrase */
    size_t reason_len;
    body_mode_t frame; /* how tide frames the body for the client */
    bool close;        /* Connection: close */
    bool keepalive_10; /* an HTTP/1.0 client kept alive: Connection: keep-alive */
    bool upgrade;      /* a 101 switch: Upgrade kept, Connection: upgrade */
} resp_head_t;

/* Writes the client response head for r with the instance's headers h into out. With frame
 * CHUNKED a Content-Length from the instance is dropped and Transfer-Encoding: chunked added;
 * with EOF the length headers are dropped. Returns 0 or -ENOMEM. */
int head_build_response(buf_t *out, const resp_head_t *r, const hdrs_t *h);

/* Writes one of tide's own short responses (502, 503, 504, 400, ...) with a text body.
 * Returns 0 or -ENOMEM. */
int head_build_error(buf_t *out, int status, bool close);

/* The standard reason phrase of status ("Bad Gateway"), "Unknown" for others. */
const char *http_reason(int status);

#endif
