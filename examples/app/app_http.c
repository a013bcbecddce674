/* app_http.c - parses HTTP/1.x request heads and writes response heads (see app_http.h). */
#include "app_http.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 token characters, for methods and header names. */
static bool s_is_tchar(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool s_is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!s_is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

static bool s_ieq(const char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}

size_t http_skip_blank(const char *buf, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (buf[i] == '\n')
            i++;
        else if (buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n')
            i += 2;
        else
            break;
    }
    return i;
}

size_t http_head_end(const char *buf, size_t len, size_t *scan)
{
    /* *scan is always the start of a line not yet known to be complete. */
    while (*scan < len) {
        const char *nl = memchr(buf + *scan, '\n', len - *scan);
        if (!nl)
            return 0;
        size_t line_len = (size_t)(nl - (buf + *scan));
        if (line_len == 0 || (line_len == 1 && buf[*scan] == '\r'))
            return (size_t)(nl - buf) + 1;
        *scan = (size_t)(nl - buf) + 1;
    }
    return 0;
}

/* Splits off the next line of head[*pos..len), without its CRLF or LF. Returns false at the
 * end. A CR anywhere but before the LF makes the line invalid (*bad), as bare CRs are a
 * request smuggling vector. */
static bool s_next_line(const char *head, size_t len, size_t *pos, const char **line,
                        size_t *line_len, bool *bad)
{
    if (*pos >= len)
        return false;
    const char *start = head + *pos;
    const char *nl = memchr(start, '\n', len - *pos);
    size_t n = nl ? (size_t)(nl - start) : len - *pos;
    *pos += n + (nl ? 1 : 0);
    if (n > 0 && start[n - 1] == '\r')
        n--;
    if (memchr(start, '\r', n) || memchr(start, '\0', n))
        *bad = true;
    *line = start;
    *line_len = n;
    return true;
}

/* Parses a Content-Length value: digits only, at most 18 of them so it cannot overflow. */
static bool s_parse_length(const char *v, size_t len, uint64_t *out)
{
    if (len == 0 || len > 18)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    *out = n;
    return true;
}

/* Reads the comma-separated options of a Connection header. */
static void s_parse_connection(const char *v, size_t len, bool *close, bool *keep_alive)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        if (s_ieq(v + start, i - start, "close"))
            *close = true;
        else if (s_ieq(v + start, i - start, "keep-alive"))
            *keep_alive = true;
    }
}

/* Finds the path in a request target: origin form (/a?b), absolute form (http://h/a) or *. */
static int s_parse_target(const char *t, size_t len, http_req_t *req)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c == 0x7f)
            return 400;
    }
    if (len == 1 && t[0] == '*') {
        req->path = t;
        req->path_len = 1;
        return 0;
    }
    if ((len >= 7 && strncasecmp(t, "http://", 7) == 0) ||
        (len >= 8 && strncasecmp(t, "https://", 8) == 0)) {
        const char *after = memchr(t, ':', len) + 3;
        const char *slash = memchr(after, '/', len - (size_t)(after - t));
        if (!slash) {
            req->path = "/";
            req->path_len = 1;
            return 0;
        }
        len -= (size_t)(slash - t);
        t = slash;
    }
    if (len == 0 || t[0] != '/')
        return 400;
    size_t n = 0;
    while (n < len && t[n] != '?' && t[n] != '#')
        n++;
    req->path = t;
    req->path_len = n;
    if (n < len && t[n] == '?') {
        size_t q = n + 1;
        while (q < len && t[q] != '#')
            q++;
        req->query = t + n + 1;
        req->query_len = q - n - 1;
    }
    return 0;
}

int http_parse(const char *head, size_t len, http_req_t *req)
{
    memset(req, 0, sizeof *req);
    size_t pos = 0;
    const char *line;
    size_t n;
    bool bad = false;
    if (!s_next_line(head, len, &pos, &line, &n, &bad) || bad)
        return 400;

    /* Request line: method SP target SP HTTP/x.y, single spaces as RFC 9112 says. */
    const char *sp1 = memchr(line, ' ', n);
    if (!sp1 || !s_is_token(line, (size_t)(sp1 - line)))
        return 400;
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', n - (size_t)(target - line));
    if (!sp2 || sp2 == target)
        return 400;
    const char *version = sp2 + 1;
    size_t vlen = n - (size_t)(version - line);
    if (vlen != 8 || memcmp(version, "HTTP/", 5) != 0 || version[6] != '.' || version[5] < '0' ||
        version[5] > '9' || version[7] < '0' || version[7] > '9')
        return 400;
    if (version[5] != '1')
        return 505;
    req->minor = version[7] == '0' ? 0 : 1;
    req->head = (size_t)(sp1 - line) == 4 && memcmp(line, "HEAD", 4) == 0;
    req->post = (size_t)(sp1 - line) == 4 && memcmp(line, "POST", 4) == 0;
    int rc = s_parse_target(target, (size_t)(sp2 - target), req);
    if (rc)
        return rc;

    bool close = false, keep_alive = false, has_length = false, has_te = false;
    int count = 0;
    while (s_next_line(head, len, &pos, &line, &n, &bad)) {
        if (bad)
            return 400;
        if (n == 0)
            break;
        if (++count > HTTP_MAX_HEADERS)
            return 431;
        /* A line starting with whitespace would be obsolete folding: refused, not unfolded. */
        const char *colon = memchr(line, ':', n);
        if (!colon || !s_is_token(line, (size_t)(colon - line)))
            return 400;
        size_t name_len = (size_t)(colon - line);
        const char *v = colon + 1;
        const char *end = line + n;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        size_t vl = (size_t)(end - v);
        if (s_ieq(line, name_len, "content-length")) {
            uint64_t cl;
            /* Two different lengths mean two parsers could disagree on where the body ends. */
            if (!s_parse_length(v, vl, &cl) || (has_length && cl != req->content_length))
                return 400;
            has_length = true;
            req->content_length = cl;
        } else if (s_ieq(line, name_len, "transfer-encoding")) {
            has_te = true;
        } else if (s_ieq(line, name_len, "expect")) {
            req->expect_continue = s_ieq(v, vl, "100-continue");
        } else if (s_ieq(line, name_len, "connection")) {
            s_parse_connection(v, vl, &close, &keep_alive);
        }
    }
    if (has_te)
        return has_length ? 400 : 411;
    req->keep_alive = req->minor >= 1 ? !close : keep_alive && !close;
    return 0;
}

/* Parses exactly the decimal digits of s[0..len), no sign, no leading junk. */
static bool s_parse_uint(const char *s, size_t len, size_t max_digits, uint64_t *out)
{
    if (len == 0 || len > max_digits)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

http_route_t http_route(const char *path, size_t len, const char *health_path, uint64_t *arg)
{
    *arg = 0;
    if (strlen(health_path) == len && memcmp(path, health_path, len) == 0)
        return ROUTE_HEALTH;
    if (len >= 8 && memcmp(path, "/status/", 8) == 0) {
        /* 1xx is left out: an interim response without a final one would hang the client. */
        if (!s_parse_uint(path + 8, len - 8, 3, arg) || *arg < 200 || *arg > 599)
            return ROUTE_BAD;
        return ROUTE_STATUS;
    }
    if (len >= 7 && memcmp(path, "/bytes/", 7) == 0) {
        if (!s_parse_uint(path + 7, len - 7, 8, arg) || *arg > HTTP_BYTES_MAX)
            return ROUTE_BAD;
        return ROUTE_BYTES;
    }
    return ROUTE_HELLO;
}

static const struct {
    int status;
    const char *reason;
} s_reasons[] = {
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {304, "Not Modified"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {411, "Length Required"},
    {413, "Content Too Large"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

const char *http_reason(int status)
{
    for (size_t i = 0; i < sizeof s_reasons / sizeof s_reasons[0]; i++)
        if (s_reasons[i].status == status)
            return s_reasons[i].reason;
    /* Clients ignore the phrase; one by class keeps the status line well formed. */
    if (status < 300)
        return "Success";
    if (status < 400)
        return "Redirection";
    return status < 500 ? "Client Error" : "Server Error";
}

bool http_status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

size_t http_response_head(char *buf, size_t cap, int status, const char *instance,
                          const char *content_type, uint64_t content_length, bool keep_alive,
                          int minor)
{
    char length[48] = "";
    if (status != 204 && status != 304)
        snprintf(length, sizeof length, "Content-Length: %llu\r\n",
                 (unsigned long long)content_length);
    const char *connection = !keep_alive  ? "Connection: close\r\n"
                             : minor == 0 ? "Connection: keep-alive\r\n"
                                          : "";
    /* RFC 9110 15.5.6: a 405 says what is allowed. The app's only 405s are the /_sample
     * switches, which take POST. */
    const char *allow = status == 405 ? "Allow: POST\r\n" : "";
    int n =
        snprintf(buf, cap, "HTTP/1.1 %d %s\r\nX-Instance: %s\r\nContent-Type: %s\r\n%s%s%s\r\n",
                 status, http_reason(status), instance, content_type, length, allow, connection);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
