/* syntax.c - the request syntax rules http-parser leaves out (see syntax.h). */
#include "syntax.h"

#include <string.h>
#include <strings.h>

enum {
    S_START,    /* before the request line: empty lines are skipped */
    S_START_CR, /* a CR before the request line: LF must follow */
    S_METHOD,
    S_TARGET0, /* the first byte of the target */
    S_TARGET,
    S_VERSION, /* "HTTP/" DIGIT "." DIGIT, version_at bytes matched */
    S_LINE_CR, /* the request line's CR: LF must follow */
    S_LINE,    /* the start of a field line, or of the final empty line */
    S_NAME,
    S_VALUE,
    S_VALUE_CR,
    S_END_CR, /* the final empty line's CR */
    S_DONE,
    S_BAD,
};

static bool s_vchar(unsigned char ch)
{
    return ch >= 0x21 && ch <= 0x7e;
}

/* A field value byte: HTAB, SP, VCHAR or obs-text (RFC 9110 5.5). */
static bool s_value_char(unsigned char ch)
{
    return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

void head_scan_init(head_scan_t *self)
{
    memset(self, 0, sizeof *self);
    self->state = S_START;
}

static head_rc_t s_bad(head_scan_t *self, int status, const char *reason)
{
    self->state = S_BAD;
    self->status = status;
    self->reason = reason;
    return HEAD_BAD;
}

head_rc_t head_scan(head_scan_t *self, const char *data, size_t len, size_t *used)
{
    static const char version[] = "HTTP/d.d";
    if (self->state == S_BAD)
        return HEAD_BAD;
    for (size_t i = 0; i < len; i++) {
        /* The bulk of a head is names, values and the target: skip their runs of ordinary
         * bytes at once, and switch only on the byte that ends a run. */
        if (self->state == S_VALUE) {
            while (i < len && (unsigned char)data[i] >= 0x20 && data[i] != 0x7f)
                i++;
        } else if (self->state == S_NAME || self->state == S_METHOD) {
            while (i < len && http_tchar((unsigned char)data[i]))
                i++;
        } else if (self->state == S_TARGET) {
            while (i < len && s_vchar((unsigned char)data[i]))
                i++;
        }
        if (i == len)
            break;
        unsigned char ch = (unsigned char)data[i];
        switch (self->state) {
        case S_START:
            if (ch == '\r')
                self->state = S_START_CR;
            else if (ch == '\n')
                ;
            else if (http_tchar(ch))
                self->state = S_METHOD;
            else
                return s_bad(self, 400, "request line");
            break;
        case S_START_CR:
            if (ch != '\n')
                return s_bad(self, 400, "bare CR");
            self->state = S_START;
            break;
        case S_METHOD:
            if (ch == ' ')
                self->state = S_TARGET0;
            else if (!http_tchar(ch))
                return s_bad(self, 400, "method");
            break;
        case S_TARGET0:
        case S_TARGET:
            if (ch == ' ' && self->state == S_TARGET) {
                self->state = S_VERSION;
                self->version_at = 0;
            } else if (s_vchar(ch)) {
                self->state = S_TARGET;
            } else {
                return s_bad(self, 400, "request target");
            }
            break;
        case S_VERSION: {
            char want = version[self->version_at];
            if (self->version_at == sizeof version - 1) {
                if (ch == '\r')
                    self->state = S_LINE_CR;
                else if (ch == '\n')
                    self->state = S_LINE;
                else
                    return s_bad(self, 400, "version");
                if (self->major != 1)
                    return s_bad(self, 505, "version");
                break;
            }
            if (want == 'd' ? (ch < '0' || ch > '9') : ch != (unsigned char)want)
                return s_bad(self, 400, "version");
            if (self->version_at == 5)
                self->major = (uint8_t)(ch - '0');
            self->version_at++;
            break;
        }
        case S_LINE_CR:
        case S_VALUE_CR:
            if (ch != '\n')
                return s_bad(self, 400, "bare CR");
            self->state = S_LINE;
            break;
        case S_LINE:
            if (ch == '\r')
                self->state = S_END_CR;
            else if (ch == '\n')
                goto done;
            else if (ch == ' ' || ch == '\t')
                return s_bad(self, 400, "obs-fold or whitespace before a field");
            else if (http_tchar(ch))
                self->state = S_NAME;
            else
                return s_bad(self, 400, "field name");
            break;
        case S_NAME:
            if (ch == ':')
                self->state = S_VALUE;
            else if (!http_tchar(ch))
                return s_bad(self, 400, "field name");
            break;
        case S_VALUE:
            if (ch == '\r')
                self->state = S_VALUE_CR;
            else if (ch == '\n')
                self->state = S_LINE;
            else if (!s_value_char(ch))
                return s_bad(self, 400, "field value");
            break;
        case S_END_CR:
            if (ch != '\n')
                return s_bad(self, 400, "bare CR");
            goto done;
        case S_DONE:
            *used = 0;
            return HEAD_DONE;
        }
        continue;
    done:
        self->state = S_DONE;
        *used = i + 1;
        return HEAD_DONE;
    }
    if (self->state == S_DONE) {
        *used = 0;
        return HEAD_DONE;
    }
    *used = len;
    return HEAD_MORE;
}

enum {
    C_IDLE,    /* not armed, or over chunk data or the trailers */
    C_DATA_CR, /* the CR after a chunk's data */
    C_DATA_LF,
    C_SIZE0, /* the first hex digit */
    C_SIZE,
    C_BWS, /* whitespace after the size: only ";" or more whitespace may follow */
    C_EXT,
    C_LF,
};

static int s_hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')
        return (ch | 0x20) - 'a' + 10;
    return -1;
}

void chunk_scan_arm(chunk_scan_t *self, bool after_data)
{
    self->state = after_data ? C_DATA_CR : C_SIZE0;
    self->zero = true;
}

bool chunk_scan(chunk_scan_t *self, const char *data, size_t len)
{
    for (size_t i = 0; i < len && self->state != C_IDLE; i++) {
        unsigned char ch = (unsigned char)data[i];
        switch (self->state) {
        case C_DATA_CR:
            if (ch != '\r')
                return false;
            self->state = C_DATA_LF;
            break;
        case C_DATA_LF:
            if (ch != '\n')
                return false;
            self->state = C_SIZE0;
            self->zero = true;
            break;
        case C_SIZE0:
        case C_SIZE: {
            int v = s_hexval(ch);
            if (v >= 0) {
                self->zero = self->zero && v == 0;
                self->state = C_SIZE;
            } else if (self->state == C_SIZE0) {
                return false;
            } else if (ch == ' ' || ch == '\t') {
                self->state = C_BWS;
            } else if (ch == ';') {
                self->state = C_EXT;
            } else if (ch == '\r') {
                self->state = C_LF;
            } else {
                return false;
            }
            break;
        }
        case C_BWS:
            if (ch == ';')
                self->state = C_EXT;
            else if (ch != ' ' && ch != '\t')
                return false;
            break;
        case C_EXT:
            if (ch == '\r')
                self->state = C_LF;
            else if (!s_value_char(ch))
                return false;
            break;
        case C_LF:
            if (ch != '\n')
                return false;
            self->state = C_IDLE; /* data (or, after size 0, the trailers) follows */
            break;
        }
    }
    return true;
}

static bool s_unreserved_or_sub(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch != 0 && strchr("-._~!$&'()*+,;=", ch) != NULL;
}

static bool s_hex(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

bool host_is_valid(const char *v, size_t len)
{
    size_t i = 0;
    if (len > 0 && v[0] == '[') {
        /* IP-literal: hex digits, colons and dots (IPv6, with an embedded IPv4), or IPvFuture */
        for (i = 1; i < len && v[i] != ']'; i++)
            if (!s_hex((unsigned char)v[i]) && v[i] != ':' && v[i] != '.' && v[i] != 'v' &&
                v[i] != 'V')
                return false;
        if (i >= len || i == 1)
            return false;
        i++;
    } else {
        for (; i < len && v[i] != ':'; i++) {
            unsigned char ch = (unsigned char)v[i];
            if (ch == '%') {
                if (i + 2 >= len || !s_hex((unsigned char)v[i + 1]) ||
                    !s_hex((unsigned char)v[i + 2]))
                    return false;
                i += 2;
            } else if (!s_unreserved_or_sub(ch)) {
                return false;
            }
        }
    }
    if (i == len)
        return true;
    if (v[i] != ':')
        return false;
    for (i++; i < len; i++)
        if (v[i] < '0' || v[i] > '9')
            return false;
    return true;
}

int target_absolute(const char *url, size_t len, const char **auth, size_t *auth_len,
                    const char **path, size_t *path_len)
{
    if (len == 0 || url[0] == '/' || (len == 1 && url[0] == '*'))
        return 0;
    size_t scheme = 0;
    if (len > 7 && strncasecmp(url, "http://", 7) == 0)
        scheme = 7;
    else if (len > 8 && strncasecmp(url, "https://", 8) == 0)
        scheme = 8;
    else
        return -1;
    size_t end = scheme;
    while (end < len && url[end] != '/' && url[end] != '?' && url[end] != '#')
        end++;
    if (memchr(url + scheme, '@', end - scheme))
        return -1; /* userinfo is deprecated (RFC 9110 4.2.4) and hides the real host */
    *auth = url + scheme;
    *auth_len = end - scheme;
    if (end == len || url[end] != '/') {
        /* "http://h" or "http://h?q": the path is empty, the caller writes "/" before it */
        *path = url + end;
        *path_len = len - end;
    } else {
        *path = url + end;
        *path_len = len - end;
    }
    return 1;
}
