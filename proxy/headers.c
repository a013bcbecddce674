/* headers.c - header collection and head rewriting (see headers.h). */
#include "headers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "syntax.h"

void hdrs_init(hdrs_t *self, size_t limit)
{
    memset(self, 0, sizeof *self);
    self->limit = limit;
}

void hdrs_reset(hdrs_t *self)
{
    buf_reset(&self->buf);
    self->n = 0;
    self->in_value = false;
}

void hdrs_free(hdrs_t *self)
{
    buf_free(&self->buf);
    free(self->v);
    self->v = NULL;
    self->n = self->cap = 0;
}

static int s_room(hdrs_t *self, size_t len)
{
    if (self->buf.len + len > self->limit)
        return -E2BIG;
    return 0;
}

int hdrs_on_field(hdrs_t *self, const char *at, size_t len)
{
    if (s_room(self, len) != 0)
        return -E2BIG;
    if (self->n == 0 || self->in_value) {
        if (self->n == self->cap) {
            size_t cap = self->cap ? self->cap * 2 : 16;
            hdr_t *v = realloc(self->v, cap * sizeof *v);
            if (!v)
                return -ENOMEM;
            self->v = v;
            self->cap = cap;
        }
        hdr_t *h = &self->v[self->n++];
        h->name_off = (uint32_t)self->buf.len;
        h->name_len = 0;
        h->value_off = 0;
        h->value_len = 0;
        self->in_value = false;
    }
    if (buf_append(&self->buf, at, len) != 0)
        return -ENOMEM;
    self->v[self->n - 1].name_len += (uint32_t)len;
    return 0;
}

int hdrs_on_value(hdrs_t *self, const char *at, size_t len)
{
    if (self->n == 0)
        return -EINVAL; /* http-parser never sends a value first */
    if (s_room(self, len) != 0)
        return -E2BIG;
    hdr_t *h = &self->v[self->n - 1];
    if (!self->in_value) {
        h->value_off = (uint32_t)self->buf.len;
        h->value_len = 0;
        self->in_value = true;
    }
    if (buf_append(&self->buf, at, len) != 0)
        return -ENOMEM;
    h->value_len += (uint32_t)len;
    return 0;
}

const char *hdrs_name(const hdrs_t *self, size_t i, size_t *len)
{
    *len = self->v[i].name_len;
    return self->buf.data + self->v[i].name_off;
}

const char *hdrs_value(const hdrs_t *self, size_t i, size_t *len)
{
    const char *v = self->v[i].value_len ? self->buf.data + self->v[i].value_off : "";
    size_t n = self->v[i].value_len;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--; /* http-parser drops the leading OWS, not the trailing (RFC 9112 5.1) */
    *len = n;
    return v;
}

static inline bool s_is(const char *name, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

const char *hdrs_get(const hdrs_t *self, const char *name, size_t *len)
{
    for (size_t i = 0; i < self->n; i++) {
        size_t nl;
        const char *n = hdrs_name(self, i, &nl);
        if (s_is(n, nl, name))
            return hdrs_value(self, i, len);
    }
    return NULL;
}

static bool s_token(const char *name, size_t len)
{
    if (len == 0)
        return false;
    for (size_t k = 0; k < len; k++)
        if (!http_tchar((unsigned char)name[k]))
            return false;
    return true;
}

size_t hdrs_count(const hdrs_t *self, const char *name)
{
    size_t n = 0, want = strlen(name);
    for (size_t i = 0; i < self->n; i++) {
        size_t nl;
        const char *hn = hdrs_name(self, i, &nl);
        n += nl == want && strncasecmp(hn, name, nl) == 0;
    }
    return n;
}

static bool s_token_in(const char *list, size_t len, const char *name, size_t nlen)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (list[i] == ' ' || list[i] == '\t' || list[i] == ','))
            i++;
        size_t start = i;
        while (i < len && list[i] != ',' && list[i] != ' ' && list[i] != '\t')
            i++;
        if (i > start && i - start == nlen && strncasecmp(list + start, name, nlen) == 0)
            return true;
    }
    return false;
}

bool hdrs_connection_lists(const hdrs_t *h, const char *name, size_t len)
{
    for (size_t i = 0; i < h->n; i++) {
        size_t nl, vl;
        const char *n = hdrs_name(h, i, &nl);
        if (!s_is(n, nl, "connection"))
            continue;
        const char *v = hdrs_value(h, i, &vl);
        if (s_token_in(v, vl, name, len))
            return true;
    }
    return false;
}

/* The headers the head builders treat specially, told apart by length first so that an
 * ordinary header costs one switch and at most two compares. */
typedef enum {
    H_OTHER,
    H_HOP, /* hop-by-hop: never forwarded */
    H_CONNECTION,
    H_UPGRADE,
    H_CONTENT_LENGTH,
    H_HOST,
    H_XFF,
    H_XFP,
    H_XFH,
    H_TRAILER, /* announces trailer fields: kept only where the body goes out chunked */
} hkind_t;

static hkind_t s_kind(const char *n, size_t len)
{
    switch (len) {
    case 2:
        return s_is(n, len, "te") ? H_HOP : H_OTHER;
    case 4:
        return s_is(n, len, "host") ? H_HOST : H_OTHER;
    case 7:
        if (s_is(n, len, "upgrade"))
            return H_UPGRADE;
        return s_is(n, len, "trailer") ? H_TRAILER : H_OTHER;
    case 10:
        if (s_is(n, len, "connection"))
            return H_CONNECTION;
        return s_is(n, len, "keep-alive") ? H_HOP : H_OTHER;
    case 14:
        return s_is(n, len, "content-length") ? H_CONTENT_LENGTH : H_OTHER;
    case 15:
        return s_is(n, len, "x-forwarded-for") ? H_XFF : H_OTHER;
    case 16:
        if (s_is(n, len, "x-forwarded-host"))
            return H_XFH;
        return s_is(n, len, "proxy-connection") ? H_HOP : H_OTHER;
    case 17:
        if (s_is(n, len, "x-forwarded-proto"))
            return H_XFP;
        return s_is(n, len, "transfer-encoding") ? H_HOP : H_OTHER;
    case 18:
        return s_is(n, len, "proxy-authenticate") ? H_HOP : H_OTHER;
    case 19:
        return s_is(n, len, "proxy-authorization") ? H_HOP : H_OTHER;
    default:
        return H_OTHER;
    }
}

/* The head builders' own classification, so the unit test checks the list they use. */
bool hdr_is_hop_by_hop(const char *name, size_t len)
{
    hkind_t k = s_kind(name, len);
    return k == H_HOP || k == H_CONNECTION || k == H_UPGRADE || k == H_TRAILER;
}

/* True when some Connection header of h names a header other than the usual close,
 * keep-alive and upgrade tokens: only then must every header be checked against the list. */
static bool s_connection_names_others(const hdrs_t *h)
{
    for (size_t i = 0; i < h->n; i++) {
        size_t nl, vl;
        const char *n = hdrs_name(h, i, &nl);
        if (nl != 10 || !s_is(n, nl, "connection"))
            continue;
        const char *v = hdrs_value(h, i, &vl);
        size_t k = 0;
        while (k < vl) {
            while (k < vl && (v[k] == ' ' || v[k] == '\t' || v[k] == ','))
                k++;
            size_t start = k;
            while (k < vl && v[k] != ',' && v[k] != ' ' && v[k] != '\t')
                k++;
            size_t tl = k - start;
            if (tl && !s_is(v + start, tl, "close") && !s_is(v + start, tl, "keep-alive") &&
                !s_is(v + start, tl, "upgrade"))
                return true;
        }
    }
    return false;
}

static int s_header(buf_t *out, const char *n, size_t nl, const char *v, size_t vl)
{
    int rc = buf_append(out, n, nl);
    rc |= buf_append(out, ": ", 2);
    rc |= buf_append(out, v, vl);
    rc |= buf_append(out, "\r\n", 2);
    return rc ? -ENOMEM : 0;
}

int head_build_request(buf_t *out, const req_head_t *r, const hdrs_t *h)
{
    int rc = buf_puts(out, r->method);
    rc |= buf_append(out, " ", 1);
    if (r->url_len == 0 || r->url[0] == '?')
        rc |= buf_append(out, "/", 1); /* an absolute-form "http://h?q" made origin-form */
    rc |= buf_append(out, r->url, r->url_len);
    rc |= buf_puts(out, " HTTP/1.1\r\n");
    bool listed = s_connection_names_others(h);
    bool have_host = false, have_xff = false;
    size_t host_len = 0;
    const char *host = NULL;
    for (size_t i = 0; i < h->n && rc == 0; i++) {
        size_t nl, vl;
        const char *n = hdrs_name(h, i, &nl);
        const char *v = hdrs_value(h, i, &vl);
        switch (s_kind(n, nl)) {
        case H_HOP:
        case H_CONNECTION:
        case H_XFP: /* tide sets these two itself: a client must not be able to claim them */
        case H_XFH:
            continue;
        case H_UPGRADE:
            if (!r->upgrade)
                continue;
            break;
        case H_XFF:
            have_xff = true; /* joined below */
            continue;
        case H_TRAILER:
            if (r->body != BODY_CHUNKED)
                continue;
            break;
        case H_CONTENT_LENGTH:
            continue; /* written below from the parsed length, never copied */
        case H_HOST:
            if (have_host)
                continue; /* the client refuses a second Host; one is sent whatever */
            have_host = true;
            if (r->host) {
                host = r->host; /* the absolute-form target's authority wins (RFC 9112 3.2.2) */
                host_len = r->host_len;
                rc |= s_header(out, "Host", 4, host, host_len);
                continue;
            }
            host = v;
            host_len = vl;
            break;
        case H_OTHER:
            if (listed && hdrs_connection_lists(h, n, nl))
                continue;
            break;
        }
        rc |= s_header(out, n, nl, v, vl);
    }
    if (!have_host && (r->host || r->default_host)) {
        host = r->host ? r->host : r->default_host;
        host_len = r->host ? r->host_len : strlen(host);
        rc |= s_header(out, "Host", 4, host, host_len);
    }
    /* Several X-Forwarded-For headers are one list (RFC 7230 3.2.2): join them, then add the
     * client. */
    rc |= buf_puts(out, "X-Forwarded-For: ");
    for (size_t i = 0; have_xff && i < h->n; i++) {
        size_t nl, vl;
        const char *n = hdrs_name(h, i, &nl);
        if (nl != 15 || !s_is(n, nl, "x-forwarded-for"))
            continue;
        const char *v = hdrs_value(h, i, &vl);
        rc |= buf_append(out, v, vl);
        rc |= buf_append(out, ", ", 2);
    }
    rc |= buf_puts(out, r->client_ip ? r->client_ip : "unknown");
    rc |= buf_puts(out, "\r\nX-Forwarded-Proto: http\r\n");
    if (host)
        rc |= s_header(out, "X-Forwarded-Host", 16, host, host_len);
    /* The framing is tide's own, from what it parsed: no spelling of the client's can mean
     * one length to tide and another to the instance. */
    if (r->body == BODY_CHUNKED) {
        rc |= buf_puts(out, "Transfer-Encoding: chunked\r\n");
    } else if (r->has_length) {
        char cl[32];
        int n = snprintf(cl, sizeof cl, "%llu", (unsigned long long)r->content_length);
        rc |= s_header(out, "Content-Length", 14, cl, (size_t)n);
    }
    if (r->upgrade)
        rc |= buf_puts(out, "Connection: upgrade\r\n");
    rc |= buf_append(out, "\r\n", 2);
    return rc ? -ENOMEM : 0;
}

int head_build_trailers(buf_t *out, const hdrs_t *h, size_t first)
{
    int rc = buf_append(out, "0\r\n", 3);
    bool listed = first < h->n && s_connection_names_others(h);
    for (size_t i = first; i < h->n && rc == 0; i++) {
        size_t nl, vl;
        const char *n = hdrs_name(h, i, &nl);
        const char *v = hdrs_value(h, i, &vl);
        /* Framing, routing and connection fields are not allowed in a trailer (RFC 7230
         * 4.1.2): dropped rather than passed on to confuse the next hop. */
        if (s_kind(n, nl) != H_OTHER || !s_token(n, nl) ||
            (listed && hdrs_connection_lists(h, n, nl)))
            continue;
        rc |= s_header(out, n, nl, v, vl);
    }
    rc |= buf_append(out, "\r\n", 2);
    return rc ? -ENOMEM : 0;
}

int hdrs_te_check(const hdrs_t *h)
{
    int chunked = 0, others = 0;
    for (size_t i = 0; i < h->n; i++) {
        size_t nl, vl;
        const char *n = hdrs_name(h, i, &nl);
        if (nl != 17 || !s_is(n, nl, "transfer-encoding"))
            continue;
        const char *v = hdrs_value(h, i, &vl);
        size_t k = 0;
        while (k < vl) {
            while (k < vl && (v[k] == ' ' || v[k] == '\t' || v[k] == ','))
                k++;
            size_t start = k;
            while (k < vl && v[k] != ',' && v[k] != ' ' && v[k] != '\t')
                k++;
            if (k == start)
                continue;
            if (chunked)
                return 400; /* chunked twice, or not last: no length can be trusted */
            if (s_is(v + start, k - start, "chunked"))
                chunked = 1;
            else
                others++;
        }
    }
    if (chunked == 0)
        return 400; /* no chunked at the end: the length cannot be told (RFC 9112 6.3) */
    return others ? 501 : 0;
}

int head_build_response(buf_t *out, const resp_head_t *r, const hdrs_t *h)
{
    /* Three digits by hand: this runs for every response, printf is the slow way. */
    char line[13] = "HTTP/1.1 000 ";
    int st = r->status < 100 || r->status > 999 ? 500 : r->status;
    line[9] = (char)('0' + st / 100);
    line[10] = (char)('0' + st / 10 % 10);
    line[11] = (char)('0' + st % 10);
    int rc = buf_append(out, line, sizeof line);
    if (r->reason && r->reason_len)
        rc |= buf_append(out, r->reason, r->reason_len);
    else
        rc |= buf_puts(out, http_reason(r->status));
    rc |= buf_append(out, "\r\n", 2);
    bool listed = h && s_connection_names_others(h);
    for (size_t i = 0; h && i < h->n && rc == 0; i++) {
        size_t nl, vl;
        const char *n = hdrs_name(h, i, &nl);
        const char *v = hdrs_value(h, i, &vl);
        switch (s_kind(n, nl)) {
        case H_HOP:
        case H_CONNECTION:
            continue;
        case H_UPGRADE:
            if (!r->upgrade)
                continue;
            break;
        case H_CONTENT_LENGTH:
            if (r->frame == BODY_CHUNKED || r->frame == BODY_EOF)
                continue;
            break;
        case H_TRAILER:
            if (r->frame != BODY_CHUNKED)
                continue;
            break;
        case H_OTHER:
            /* A name that is not a token ("Content-Length : 5" from a careless instance) is
             * not tide's framing, but a client may read it as such: dropped. */
            if (!s_token(n, nl) || (listed && hdrs_connection_lists(h, n, nl)))
                continue;
            break;
        default:
            break;
        }
        rc |= s_header(out, n, nl, v, vl);
    }
    if (r->frame == BODY_CHUNKED)
        rc |= buf_puts(out, "Transfer-Encoding: chunked\r\n");
    if (r->upgrade)
        rc |= buf_puts(out, "Connection: upgrade\r\n");
    else if (r->close)
        rc |= buf_puts(out, "Connection: close\r\n");
    else if (r->keepalive_10)
        rc |= buf_puts(out, "Connection: keep-alive\r\n");
    rc |= buf_append(out, "\r\n", 2);
    return rc ? -ENOMEM : 0;
}

const char *http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

int head_build_error(buf_t *out, int status, bool close)
{
    const char *body;
    switch (status) {
    case 400:
        body = "bad request\n";
        break;
    case 405:
        body = "method not allowed\n";
        break;
    case 408:
        body = "request timeout: the request did not arrive in time\n";
        break;
    case 413:
        body = "payload too large\n";
        break;
    case 414:
        body = "uri too long\n";
        break;
    case 505:
        body = "http version not supported: tide speaks HTTP/1.x\n";
        break;
    case 501:
        body = "not implemented: unsupported transfer coding\n";
        break;
    case 431:
        body = "request header fields too large\n";
        break;
    case 502:
        body = "bad gateway: the instance failed\n";
        break;
    case 503:
        body = "service unavailable\n";
        break;
    case 504:
        body = "gateway timeout: the instance did not answer in time\n";
        break;
    default:
        body = "error\n";
        break;
    }
    int rc = buf_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                        "%s\r\n%s",
                        status, http_reason(status), strlen(body),
                        close ? "Connection: close\r\n" : "", body);
    return rc ? -ENOMEM : 0;
}
