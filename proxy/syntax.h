/* syntax.h - the request syntax rules of RFC 9112 that http-parser does not enforce.
 *
 * Debian's http-parser (2.9) is built lenient: it takes whitespace before a field name's colon,
 * a tab or a byte above 0x7f in the request target, obs-fold, more than one space between the
 * parts of the request line, and any HTTP major version. Each of those is a way for tide and the
 * instance behind it to read one message two ways. head_scan runs over the same bytes as the
 * parser, from the first byte of a request to the empty line that ends its head, and refuses the
 * head at the first byte that breaks the grammar below (RFC 9112 sections 2-5):
 *
 *   request-line = method SP request-target SP "HTTP/" DIGIT "." DIGIT CRLF
 *   method       = 1*tchar
 *   target       = 1*VCHAR                       (no whitespace, control or non-ASCII byte)
 *   field-line   = 1*tchar ":" *( SP / HTAB / VCHAR / obs-text ) CRLF
 *   head         = *CRLF request-line *field-line CRLF
 *
 * A bare LF ends a line as CRLF does (RFC 9112 2.2 lets a recipient accept it, and tide writes
 * its own CRLFs upstream); a bare CR, a line that starts with whitespace (obs-fold, or before the
 * first field), an empty field name and any control byte other than HTAB in a value are refused
 * with 400; an HTTP major version other than 1 with 505. Pure code, unit-tested in
 * test_syntax.c. */
#ifndef PROXY_SYNTAX_H
#define PROXY_SYNTAX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    HEAD_MORE, /* every byte so far is valid; the head goes on */
    HEAD_DONE, /* the head ended at *used: the bytes after it are the body or the next request */
    HEAD_BAD,  /* refused: status says with what (400 or 505), reason why */
} head_rc_t;

typedef struct {
    uint8_t state;
    uint8_t version_at; /* bytes of "HTTP/d.d" matched */
    uint8_t major;
    int status;
    const char *reason;
} head_scan_t;

/* True when ch is a tchar (RFC 9110 5.6.2: ALPHA, DIGIT and !#$%&'*+-.^_`|~), the bytes of a
 * token such as a field name. A bitmap: this runs over every byte of every field name. */
static inline bool http_tchar(unsigned char ch)
{
    static const uint64_t tchars[2] = {0x03ff6cfa00000000ULL, 0x57ffffffc7fffffeULL};
    return ch < 128 && (tchars[ch >> 6] >> (ch & 63) & 1);
}

/* Ready for the first byte of a request. */
void head_scan_init(head_scan_t *self);

/* Checks the next len bytes of the stream. Returns HEAD_MORE (all of them valid, the head not
 * over), HEAD_DONE with *used the bytes up to and including the final line end, or HEAD_BAD
 * with self->status and self->reason set (and every later call HEAD_BAD). */
head_rc_t head_scan(head_scan_t *self, const char *data, size_t len, size_t *used);

/* The framing lines of a chunked request body (RFC 9112 7.1), which http-parser (built lenient)
 * reads loosely: it takes any two bytes after a chunk's data as its CRLF, and reads "5 5" as a
 * size of 5 with an extension. chunk_scan checks, from where the client arms it:
 *
 *   [ CRLF ]  chunk-size = 1*HEXDIG  [ *( SP / HTAB ) ";" ext ] CRLF
 *
 * the CRLF first when armed after a chunk's data; ext any HTAB, SP, VCHAR or obs-text (names,
 * values and quoted strings). After the line it idles over the chunk's data; after the line
 * of the last chunk (size 0) the trailer section follows, which http-parser reads as a head. */
typedef struct {
    uint8_t state;
    bool zero; /* the size read so far is all zeros */
} chunk_scan_t;

/* Arms the scan: the next byte starts a chunk-size line, or (after_data) its CRLF comes first. */
void chunk_scan_arm(chunk_scan_t *self, bool after_data);

/* Checks the next len bytes: false at the first one that breaks the grammar. Bytes after the
 * line (chunk data, trailers) are not looked at; an unarmed scan takes anything. */
bool chunk_scan(chunk_scan_t *self, const char *data, size_t len);

/* True when v is a valid Host field value (RFC 9110 7.2): uri-host [ ":" port ], the host a
 * reg-name (unreserved, pct-encoded, sub-delims), a dotted IPv4 address or a bracketed IP
 * literal, the port digits only. An empty value is valid (RFC 9112 3.2: a target without an
 * authority). */
bool host_is_valid(const char *v, size_t len);

/* For an absolute-form target ("http://host:port/path?q", RFC 9112 3.2.2): sets the authority
 * and the rest and returns 1 (the rest starts with "/", or is empty or a "?query": then the
 * origin-form is "/" followed by it); 0 for any other form (origin-form,
 * asterisk-form); -1 for a scheme other than http or https, or an authority with userinfo. */
int target_absolute(const char *url, size_t len, const char **auth, size_t *auth_len,
                    const char **path, size_t *path_len);

#endif
