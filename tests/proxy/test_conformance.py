"""test_conformance.py - HTTP/1.1 message syntax and framing (RFC 9112 sections 2-7, RFC 9110
5.x and 9.6): each rule sent to tide-proxy, nginx and HAProxy, all in front of one lenient
recording instance (conformance.Recorder), with a victim client after each attack that must get
its own answer.

A proxy is strict on a row when it refuses (4xx/5xx or a close) and nothing reaches the
instance, or when everything it forwards is valid under conformance.strict_parse (it
normalised the message, e.g. rebuilt the request line or dropped a bad field), no request hidden
in the attack reached the instance as one of its own, and the victim got its own answer. Worse:
"no answer" (the proxy kept the attacker waiting, nothing forwarded), "forwarded" (the instance
received something invalid or a hidden request), worst "desync" (the victim got another
answer, or none). Each row asserts that tide-proxy ranks at least as high as the better of
nginx and HAProxy. The baseline rows must be forwarded by all three (the harness works).

TIDE_CONFORMANCE_TABLE=<path> writes the results as the markdown table of
docs/conformance.md (run without -x so that every row runs).
"""

import os
import re
import time

import pytest

import conformance as cf
import proxyharness

ATTACK_TIMEOUT = 2.5   # s; the proxies give up on a stalled client or instance after 2 s
VICTIM_TIMEOUT = 3.0
PEER_TIMEOUT_S = 2

H = b"Host: conf.test\r\n"
HIDDEN = b"GET /smuggled HTTP/1.1\r\nHost: conf.test\r\n\r\n"  # must never arrive on its own
CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"


def post(fields, body=b"", line=b"POST /attack HTTP/1.1"):
    return line + b"\r\n" + H + fields + b"\r\n" + body


def get(fields=b"", line=b"GET /attack HTTP/1.1", host=H):
    return line + b"\r\n" + host + fields + b"\r\n"


def cl(n):
    return b"Content-Length: %d\r\n" % n


def te(v):
    return b"Transfer-Encoding: " + v + b"\r\n"


class Row:
    def __init__(self, id, rule, rfc, raw, rfc_says, tide_where, valid=False, repair=False,
                 baseline=False, check=None):
        self.id = id
        self.rule = rule
        self.rfc = rfc
        self.raw = raw
        self.rfc_says = rfc_says      # what a recipient must / may do, for the table
        self.tide_where = tide_where  # where tide-proxy enforces it (file: function)
        self.valid = valid            # the RFC lets a recipient accept it
        self.repair = repair          # ... or repair it (e.g. obs-fold replaced by SP)
        self.baseline = baseline      # valid and plain: every proxy must forward it
        self.check = check            # more to require of the forwarded requests


def host_is(want):
    def check(reqs):
        for r in reqs:
            if cf.header(r, b"host") != want:
                return "forwarded with Host %r, the target says %r" % (cf.header(r, b"host"),
                                                                       want)
        return None
    return check


def not_connect(reqs):
    return "CONNECT reached the instance" if any(r["method"] == b"CONNECT" for r in reqs) \
        else None


def folded_value(reqs):
    for r in reqs:
        v = cf.header(r, b"x-folded")
        if v is not None and not re.match(rb"^a[ \t]+b$", v):
            return "X-Folded forwarded as %r" % v
    return None


# Where tide-proxy enforces each rule. head_scan checks the grammar of the head before
# http-parser (Debian's, built lenient) sees a byte; http-parser then refuses what breaks its
# own rules (Content-Length values, chunk sizes, a length beside chunked).
HP = "http-parser"
SC = "proxy/syntax.c: head_scan"
SCP = "proxy/syntax.c: head_scan (http-parser too)"
HOST = "proxy/client.c: s_check_head (proxy/syntax.c: host_is_valid)"
TE = "proxy/client.c: s_check_head (proxy/headers.c: hdrs_te_check)"
BUILD = "proxy/headers.c: head_build_request (writes its own head)"

LF_ONLY = "proxy/syntax.c: head_scan (accepted; CRLF upstream)"
LONG = "proxy/client.c: s_parse_error (431 past proxy.max_header_size)"
ABSOLUTE = "proxy/client.c: s_check_head (proxy/syntax.c: target_absolute)"
METHODS = "http-parser (its fixed list of methods)"
CONNECT = "proxy/client.c: s_on_headers_complete (405)"
V505 = "proxy/syntax.c: head_scan (505)"
TE10 = "proxy/client.c: s_check_head"
CHUNK_EXT = "proxy/client.c: s_on_body (re-chunked, extensions dropped)"
CHUNK_CRLF = "proxy/syntax.c: chunk_scan (from client.c: s_on_body)"
CHUNK_SPACE = "proxy/syntax.c: chunk_scan (http-parser reads `5 5` as 5 and an extension)"
TRAILER = "proxy/headers.c: head_build_trailers (the field dropped)"

ROWS = [
    # -- baselines: the harness itself
    Row("baseline-get", "a plain GET", "-", get(), "forward", BUILD, valid=True, baseline=True),
    Row("baseline-length", "a POST with Content-Length", "9112 6.2",
        post(cl(5), b"hello"), "forward", BUILD, valid=True, baseline=True),
    Row("baseline-chunked", "a POST with a chunked body", "9112 7.1",
        post(te(b"chunked"), CHUNKED_HELLO), "forward", BUILD, valid=True, baseline=True),
    # -- field syntax (RFC 9112 5, RFC 9110 5.1, 5.5)
    Row("ws-before-colon", "space between field name and colon (`Content-Length : n`)",
        "9112 5.1", post(b"Content-Length : %d\r\n" % len(HIDDEN), HIDDEN), "400", SC),
    Row("tab-before-colon", "tab between field name and colon", "9112 5.1",
        post(b"Content-Length\t: %d\r\n" % len(HIDDEN), HIDDEN), "400", SC),
    Row("space-in-name", "space inside a field name (`Foo Bar: x`)", "9110 5.1",
        get(b"Foo Bar: x\r\n"), "400", SC),
    Row("separator-in-name", "separator inside a field name (`X(y): x`)", "9110 5.1",
        get(b"X(y): x\r\n"), "400", SC),
    Row("empty-name", "empty field name (`: x`)", "9110 5.1", get(b": x\r\n"), "400", SC),
    Row("no-colon", "field line without a colon", "9112 5", get(b"NoColonHere\r\n"), "400", SCP),
    Row("cr-in-name", "CR inside a field name", "9112 2.2", get(b"X\rY: x\r\n"), "400", SCP),
    Row("nul-in-name", "NUL inside a field name", "9110 5.1", get(b"X\0Y: x\r\n"), "400", SCP),
    Row("cr-in-value", "bare CR inside a field value", "9112 2.2",
        get(b"X-A: a\rb\r\n"), "400 or CR replaced by SP", SCP, repair=True),
    Row("cr-ends-field", "bare CR as a line end (`X: a\\rContent-Length: n`)", "9112 2.2",
        post(b"X-A: a\rContent-Length: %d\r\n" % len(HIDDEN), HIDDEN),
        "400 or CR replaced by SP", SCP, repair=True),
    Row("nul-in-value", "NUL inside a field value", "9110 5.5", get(b"X-A: a\0b\r\n"),
        "400 or NUL replaced by SP", SCP, repair=True),
    Row("ctl-in-value", "control character \\x01 inside a field value", "9110 5.5",
        get(b"X-A: a\x01b\r\n"), "400", SC),
    Row("del-in-value", "DEL (\\x7f) inside a field value", "9110 5.5",
        get(b"X-A: a\x7fb\r\n"), "400", SC),
    Row("obs-text-value", "obs-text (\\xe9) inside a field value", "9110 5.5",
        get(b"X-A: caf\xe9\r\n"), "accept (obs-text is allowed)", BUILD, valid=True),
    Row("obs-fold", "obs-fold (a continuation line starting with a space)", "9112 5.2",
        get(b"X-Folded: a\r\n b\r\n"), "400, or the fold replaced by SP", SC,
        check=folded_value, repair=True),
    Row("obs-fold-tab", "obs-fold with a tab", "9112 5.2",
        get(b"X-Folded: a\r\n\tb\r\n"), "400, or the fold replaced by SP", SC,
        check=folded_value, repair=True),
    Row("obs-fold-length", "obs-fold inside Content-Length (`Content-Length: 5\\r\\n 5`)",
        "9112 5.2", post(b"Content-Length: 5\r\n %d\r\n" % (5 + len(HIDDEN)), b"hello" + HIDDEN),
        "400", SC),
    Row("ws-first-line", "whitespace-led line before the first field", "9112 2.2",
        b"GET /attack HTTP/1.1\r\n X-Hidden: 1\r\n" + H + b"\r\n",
        "400, or the line consumed unprocessed", SC, repair=True),
    # -- line endings (RFC 9112 2.2)
    Row("lf-only", "LF-only line endings in the head", "9112 2.2",
        b"GET /attack HTTP/1.1\n" + H.replace(b"\r\n", b"\n") + b"\n",
        "may accept (LF as line end)", LF_ONLY, valid=True),
    Row("leading-crlf", "an empty line before the request line", "9112 2.2",
        b"\r\n" + get(), "should ignore it", SC, valid=True),
    Row("long-field", "a 64 KiB field line", "9112 2.3, 6585 5",
        get(b"X-Long: " + b"a" * 65536 + b"\r\n"), "431 (or 400)",
        LONG),
    # -- Host (RFC 9112 3.2, RFC 9110 7.2)
    Row("no-host", "HTTP/1.1 without Host", "9112 3.2", get(host=b""), "400", HOST),
    Row("two-hosts", "two Host fields", "9112 3.2",
        get(b"Host: other.test\r\n"), "400", HOST),
    Row("host-list", "a Host field listing two hosts (`Host: a, b`)", "9112 3.2",
        get(host=b"Host: conf.test, other.test\r\n"), "400", HOST),
    Row("host-space", "whitespace inside Host (`Host: a b`)", "9112 3.2, 9110 4.2.3",
        get(host=b"Host: conf test\r\n"), "400", HOST),
    Row("host-slash", "a path inside Host (`Host: a/b`)", "9112 3.2",
        get(host=b"Host: conf.test/x\r\n"), "400", HOST),
    Row("host-at", "userinfo inside Host (`Host: u@a`)", "9110 4.2.4",
        get(host=b"Host: user@conf.test\r\n"), "400", HOST),
    Row("absolute-form", "absolute-form target with a different Host", "9112 3.2.2",
        get(line=b"GET http://good.test/attack HTTP/1.1", host=b"Host: evil.test\r\n"),
        "use the target's authority as Host", ABSOLUTE, valid=True, check=host_is(b"good.test")),
    # -- the request line (RFC 9112 3)
    Row("space-in-target", "whitespace inside the target (`GET /a b`)", "9112 3.2",
        get(line=b"GET /a b HTTP/1.1"), "400 (or 301 to the fixed URI)", SCP),
    Row("tab-in-target", "a tab inside the target", "9112 3.2",
        get(line=b"GET /a\tb HTTP/1.1"), "400", SC),
    Row("ctl-in-target", "a control character (\\x01) inside the target", "9112 3.2",
        get(line=b"GET /a\x01b HTTP/1.1"), "400", SCP),
    Row("del-in-target", "DEL (\\x7f) inside the target", "9112 3.2",
        get(line=b"GET /a\x7fb HTTP/1.1"), "400", SC),
    Row("nul-in-target", "NUL inside the target", "9112 3.2",
        get(line=b"GET /a\0b HTTP/1.1"), "400", SCP),
    Row("double-space", "two spaces between method and target", "9112 3",
        get(line=b"GET  /attack HTTP/1.1"), "may parse on whitespace", SC, valid=True),
    Row("method-not-token", "a method that is not a token (`G@T`)", "9112 3.1",
        get(line=b"G@T /attack HTTP/1.1"), "400", SCP),
    Row("unknown-method", "an unknown but well-formed method (`FOO`)", "9110 9.1",
        get(line=b"FOO /attack HTTP/1.1"), "501 or forward", METHODS, valid=True),
    Row("lowercase-method", "a lowercase method (`get`)", "9110 9.1",
        get(line=b"get /attack HTTP/1.1"), "501 or forward (methods are case-sensitive)",
        METHODS, valid=True),
    Row("connect", "CONNECT to a reverse proxy", "9110 9.3.6",
        get(line=b"CONNECT conf.test:443 HTTP/1.1", host=b"Host: conf.test:443\r\n"),
        "refuse (405/400/501), never tunnel", CONNECT, valid=True, check=not_connect),
    Row("version-1.2", "HTTP/1.2 (a higher minor)", "9112 2.3, 9110 2.5",
        get(line=b"GET /attack HTTP/1.2"), "process as 1.1", BUILD, valid=True),
    Row("version-2.0", "HTTP/2.0 in an HTTP/1 request line", "9110 2.5, 15.6.6",
        get(line=b"GET /attack HTTP/2.0"), "505", V505, repair=True),
    Row("version-suffix", "a version with a suffix (`HTTP/1.1x`)", "9112 2.3",
        get(line=b"GET /attack HTTP/1.1x"), "400", SCP),
    Row("version-lowercase", "a lowercase version (`http/1.1`)", "9112 2.3",
        get(line=b"GET /attack http/1.1"), "400 (HTTP-name is case-sensitive)", SCP),
    Row("version-two-digits", "a two-digit minor (`HTTP/1.10`)", "9112 2.3",
        get(line=b"GET /attack HTTP/1.10"), "400", SC),
    # -- Content-Length (RFC 9112 6.3, RFC 9110 8.6)
    Row("cl-list-differ", "a Content-Length list of different values (`5, n`)", "9112 6.3",
        post(b"Content-Length: 5, %d\r\n" % (5 + len(HIDDEN)), b"hello" + HIDDEN), "400", HP),
    Row("cl-two-differ", "two Content-Length fields that differ", "9112 6.3",
        post(cl(5) + cl(5 + len(HIDDEN)), b"hello" + HIDDEN), "400", HP),
    Row("cl-list-same", "a Content-Length list of one value twice (`5, 5`)", "9110 8.6",
        post(b"Content-Length: 5, 5\r\n", b"hello"),
        "400, or one Content-Length: 5 forwarded", HP, valid=True),
    Row("cl-two-same", "two Content-Length fields, both 5", "9110 8.6",
        post(cl(5) + cl(5), b"hello"), "400, or one Content-Length: 5 forwarded", HP,
        valid=True),
    Row("cl-plus", "a signed Content-Length (`+n`)", "9110 8.6",
        post(b"Content-Length: +%d\r\n" % len(HIDDEN), HIDDEN), "400", HP),
    Row("cl-minus", "a negative Content-Length (`-n`)", "9110 8.6",
        post(b"Content-Length: -%d\r\n" % len(HIDDEN), HIDDEN), "400", HP),
    Row("cl-suffix", "Content-Length with a suffix (`5x`)", "9110 8.6",
        post(b"Content-Length: 5x\r\n", b"hello"), "400", HP),
    Row("cl-hex", "Content-Length in hex (`0xn`)", "9110 8.6",
        post(b"Content-Length: 0x%x\r\n" % len(HIDDEN), HIDDEN), "400", HP),
    Row("cl-inner-space", "Content-Length with inner whitespace (`1 0`)", "9110 8.6",
        post(b"Content-Length: 1 0\r\n", b"0123456789"), "400", HP),
    Row("cl-overflow", "a Content-Length past 2^64", "9110 8.6",
        post(b"Content-Length: 99999999999999999999999\r\n", b"hello"), "400 (or 413)", HP),
    Row("cl-empty", "an empty Content-Length", "9110 8.6",
        post(b"Content-Length: \r\n", b""), "400", HP),
    # -- Transfer-Encoding (RFC 9112 6.1, 6.3, 7)
    Row("te-and-cl", "Transfer-Encoding and Content-Length together", "9112 6.1, 6.3",
        post(cl(5 + len(HIDDEN)) + te(b"chunked"), b"0\r\n\r\n" + HIDDEN),
        "400, or chunked with Content-Length removed and the connection closed", HP, repair=True),
    Row("cl-and-te", "Content-Length, then Transfer-Encoding", "9112 6.1, 6.3",
        post(te(b"chunked") + cl(5 + len(HIDDEN)), b"0\r\n\r\n" + HIDDEN),
        "400, or chunked with Content-Length removed and the connection closed", HP, repair=True),
    Row("te-chunked-gzip", "last coding not chunked (`chunked, gzip`)", "9112 6.3",
        post(te(b"chunked, gzip"), CHUNKED_HELLO), "400 and close", TE),
    Row("te-unknown", "an unknown coding alone (`foo`)", "9112 6.1, 6.3",
        post(te(b"foo"), CHUNKED_HELLO), "400 (no chunked) or 501", TE),
    Row("te-unknown-chunked", "an unknown coding before chunked (`foo, chunked`)", "9112 6.1",
        post(te(b"foo, chunked"), CHUNKED_HELLO), "501", TE),
    Row("te-gzip-chunked", "a known coding before chunked (`gzip, chunked`)", "9112 6.1",
        post(te(b"gzip, chunked"), CHUNKED_HELLO), "forward, or 501 when not understood",
        TE, valid=True),
    Row("te-chunked-twice", "`chunked, chunked`", "9112 6.1", post(te(b"chunked, chunked"),
        CHUNKED_HELLO), "400", TE),
    Row("te-two-fields", "two Transfer-Encoding: chunked fields", "9112 6.1",
        post(te(b"chunked") + te(b"chunked"), CHUNKED_HELLO), "400", TE),
    Row("te-xchunked", "`Transfer-Encoding: xchunked`", "9112 6.1",
        post(te(b"xchunked"), CHUNKED_HELLO), "400 or 501", TE),
    Row("te-trailing-ws", "`chunked` with trailing whitespace", "9112 5.1",
        post(b"Transfer-Encoding: chunked \r\n", CHUNKED_HELLO), "accept (OWS)", BUILD,
        valid=True),
    Row("te-tab", "`Transfer-Encoding:\\tchunked`", "9112 5.1",
        post(b"Transfer-Encoding:\tchunked\r\n", CHUNKED_HELLO), "accept (OWS)", BUILD,
        valid=True),
    Row("te-uppercase", "`Transfer-Encoding: CHUNKED`", "9112 7",
        post(te(b"CHUNKED"), CHUNKED_HELLO), "accept (case-insensitive)", BUILD, valid=True),
    Row("te-ws-before-colon", "`Transfer-Encoding : chunked`", "9112 5.1",
        post(b"Transfer-Encoding : chunked\r\n", CHUNKED_HELLO), "400", SC),
    Row("te-vtab", "`Transfer-Encoding: chunked` with a vertical tab after it", "9110 5.5",
        post(b"Transfer-Encoding: chunked\x0b\r\n", CHUNKED_HELLO), "400", SC),
    Row("te-http10", "Transfer-Encoding in an HTTP/1.0 request", "9112 6.1",
        post(te(b"chunked"), CHUNKED_HELLO, line=b"POST /attack HTTP/1.0"),
        "treat the framing as faulty; close after", TE10),
    Row("te-get", "Transfer-Encoding: chunked on a GET",
        "9112 6.1", post(te(b"chunked"), b"0\r\n\r\n", line=b"GET /attack HTTP/1.1"),
        "forward as chunked", BUILD, valid=True),
    # -- chunked framing (RFC 9112 7.1)
    Row("chunk-ext", "a chunk extension (`5;name=value`)", "9112 7.1.1",
        post(te(b"chunked"), b"5;name=value\r\nhello\r\n0\r\n\r\n"), "accept", CHUNK_EXT,
        valid=True),
    Row("chunk-hex-prefix", "a chunk size with 0x (`0x5`)", "9112 7.1",
        post(te(b"chunked"), b"0x5\r\nhello\r\n0\r\n\r\n"), "400", HP),
    Row("chunk-negative", "a negative chunk size (`-5`)", "9112 7.1",
        post(te(b"chunked"), b"-5\r\nhello\r\n0\r\n\r\n"), "400", HP),
    Row("chunk-overflow", "a chunk size past 2^64", "9112 7.1",
        post(te(b"chunked"), b"1" + b"0" * 16 + b"5\r\nhello\r\n0\r\n\r\n"), "400", HP),
    Row("chunk-empty-size", "an empty chunk size line", "9112 7.1",
        post(te(b"chunked"), b"\r\nhello\r\n0\r\n\r\n"), "400", HP),
    Row("chunk-no-crlf", "chunk data not followed by CRLF", "9112 7.1",
        post(te(b"chunked"), b"5\r\nhelloXX0\r\n\r\n"), "400", CHUNK_CRLF),
    Row("chunk-size-space", "whitespace inside a chunk size (`5 5`)", "9112 7.1",
        post(te(b"chunked"), b"5 5\r\nhello\r\n0\r\n\r\n"), "400", CHUNK_SPACE),
    Row("trailer-bad-name", "a trailer field whose name is not a token", "9112 7.1.2",
        post(te(b"chunked"), b"5\r\nhello\r\n0\r\nBad Name: x\r\n\r\n"),
        "400, or the field dropped", TRAILER, repair=True),
]


# ---- the stack: one recorder, three proxies in front of it ----------------------------------

class Peers:
    def __init__(self):
        self.rec = cf.Recorder()
        self.tide = proxyharness.ProxyStack("conformance", response_timeout_ms=PEER_TIMEOUT_S
                                            * 1000, client_header_timeout_ms=PEER_TIMEOUT_S
                                            * 1000, client_body_timeout_ms=PEER_TIMEOUT_S
                                            * 1000)
        st = self.tide.st
        self.tide.start({"lenient": self.rec.addr})
        self.ports = {"tide-proxy": self.tide.port}
        for name, make in (("nginx", cf.nginx_argv), ("HAProxy", cf.haproxy_argv)):
            port = proxyharness.harness.free_port()
            # HAProxy in the foreground ends on SIGTERM by the signal, not with 0.
            st.start(name, make(st.tmp, port, self.rec.port, PEER_TIMEOUT_S),
                     expect_exit0=name == "nginx")
            self.ports[name] = port
        for name, port in self.ports.items():
            st.wait_until(lambda: cf.victim(port, b"/ready-" + name.encode(), 1.0) is None, 10,
                          "%s forwards to the recorder" % name)
        self.versions = {
            "nginx": cf.version_of(["nginx", "-v"]).replace("nginx version: ", ""),
            "HAProxy": " ".join(cf.version_of(["haproxy", "-v"]).split()[:3])}
        self.n = 0

    def close(self):
        self.rec.stop()
        return self.tide.close()

    def run(self, row, proxy):
        """One attack and its victim through proxy: (verdict, cell text, whether the victim
        went over an upstream connection the attack had used)."""
        port = self.ports[proxy]
        self.rec.drop_connections()
        self.tide.st.wait_until(lambda: self.rec.upstream_sockets() == 0, 5,
                                "the proxies let go of the recorder's closed connections")
        self.n += 1
        mark = self.rec.mark()
        status = cf.attack(port, row.raw, ATTACK_TIMEOUT)
        vt = b"/victim-%d" % self.n
        lost = cf.victim(port, vt, VICTIM_TIMEOUT)
        streams = self.rec.since(mark)
        verdict, text = judge(row, status, streams, vt, lost)
        return verdict, text, shared_upstream(streams, vt)


# refused / normalised: strict; accepted: a message the RFC says to refuse, re-framed so that
# this instance reads it as the proxy did (a proxy in front of it may not); no answer: the
# attacker left waiting; forwarded: the instance got something invalid or a hidden request;
# desync: the victim did not get its own answer.
RANK = {"refused": 3, "normalised": 3, "accepted": 2, "no answer": 2, "forwarded": 1,
        "desync": 0}


def judge(row, status, streams, vt, lost):
    """(verdict, cell text) for one attack: its status, what reached the instance (per
    upstream connection), the victim's target and what it got instead of its answer."""
    reached, bad = [], []
    for s in streams:
        try:
            reqs = cf.strict_parse(s)
        except cf.Invalid as e:
            bad.append(str(e))
            continue
        reached += [r for r in reqs if r["target"] != vt]
    st = status if isinstance(status, str) else "%d" % status
    if lost is not None:
        return "desync", "desync (%s): the victim got %s" % (st, lost)
    if bad:
        return "forwarded", "forwarded (%s): %s" % (st, bad[0])
    if any(r["target"] == b"/smuggled" for r in reached):
        return "forwarded", "forwarded (%s): the hidden request as a request of its own" % st
    problem = row.check(reached) if row.check else None
    if problem:
        return "forwarded", "forwarded (%s): %s" % (st, problem)
    if reached and row.valid:
        return "normalised", "forwarded (%s)" % st
    if reached and row.repair:
        return "normalised", "repaired (%s)" % st
    if reached:
        return "accepted", "accepted, re-framed (%s)" % st
    if status == "close" or isinstance(status, int) and status >= 400:
        return "refused", "refused (%s)" % st
    return "no answer", "%s, nothing forwarded" % st


def shared_upstream(streams, vt):
    """True when the victim's request went over a connection the attack had used."""
    for s in streams:
        if b" " + vt + b" " in s:
            return not s.startswith(b"GET " + vt + b" ")
    return False


RESULTS = {}


@pytest.fixture(scope="module")
def peers():
    p = Peers()
    try:
        yield p
    finally:
        problems = p.close()
        path = os.environ.get("TIDE_CONFORMANCE_TABLE")
        if path:
            write_table(path, p.versions)
    assert not problems, "teardown problems:\n" + "\n".join(problems)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_rule(peers, row):
    got = {}
    for proxy in ("tide-proxy", "nginx", "HAProxy"):
        got[proxy] = peers.run(row, proxy)
    RESULTS[row.id] = (row, got)
    detail = "; ".join("%s: %s" % (k, v[1]) for k, v in got.items())
    if row.baseline:  # the harness itself: all forward, and the victim follows on the same
        # upstream connection (or a desync could not show)
        apart = [k for k, v in got.items() if not v[2]]
        assert all(v[0] == "normalised" for v in got.values()), detail
        assert not apart, "the victim went over a new upstream connection through %s" % apart
    best = max(RANK[got["nginx"][0]], RANK[got["HAProxy"][0]])
    assert RANK[got["tide-proxy"][0]] >= best, "tide-proxy is less strict: " + detail


def write_table(path, versions):
    lines = ["Generated by tests/proxy/test_conformance.py (TIDE_CONFORMANCE_TABLE set) on %s: "
             "%s, %s." % (time.strftime("%Y-%m-%d"), versions["nginx"], versions["HAProxy"]),
             "",
             "| rule | RFC | the RFC says | tide-proxy | nginx | HAProxy "
             "| where tide enforces it |",
             "|---|---|---|---|---|---|---|"]
    for row in ROWS:
        if row.id not in RESULTS:
            continue
        _, got = RESULTS[row.id]
        cells = [row.rule, row.rfc, row.rfc_says] + \
            [got[p][1] for p in ("tide-proxy", "nginx", "HAProxy")] + [row.tide_where]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# Attacks that put the recorder itself out of step (the rest it reads as a proxy should).
LENIENT_DESYNCS = [r for r in ROWS if HIDDEN in r.raw or r.id in (
    "te-unknown", "te-unknown-chunked", "te-chunked-gzip", "te-chunked-twice", "te-xchunked",
    "te-ws-before-colon", "te-vtab")]


@pytest.mark.parametrize("row", LENIENT_DESYNCS, ids=lambda r: r.id)
def test_recorder_is_lenient(row):
    """The instance is lenient where it matters: each of these attacks sent straight to it,
    with a victim's request after it on the same connection, puts it out of step, so the
    victim does not get its own answer second (what a proxy that passes the attack on causes).
    """
    rec = cf.Recorder()
    try:
        s = proxyharness.connect(rec.port)
        s.sendall(row.raw + b"GET /victim HTTP/1.1\r\nHost: victim.test\r\n\r\n")
        rd = proxyharness.Reader(s)
        s.settimeout(0.5)  # a recorder waiting for more body answers nothing more
        answers = []
        try:
            while len(answers) < 3:
                answers.append(rd.response().body)
        except (EOFError, OSError):
            pass
        s.close()
        assert answers[:3] != [b"answer to /attack", b"answer to /victim"], answers
    finally:
        rec.stop()


def test_harness_sees_a_desync():
    """Through a proxy that passes the bytes on as they came over a shared upstream connection,
    the Content-Length-with-a-space attack of issue 9 is judged a desync: the victim gets the
    answer to the hidden request."""
    rec = cf.Recorder()
    relay = cf.NaiveRelay(rec.port)
    try:
        row = [r for r in ROWS if r.id == "ws-before-colon"][0]
        mark = rec.mark()
        status = cf.attack(relay.port, row.raw, ATTACK_TIMEOUT)
        lost = cf.victim(relay.port, b"/victim", VICTIM_TIMEOUT)
        verdict, text = judge(row, status, rec.since(mark), b"/victim", lost)
        assert verdict == "desync" and "answer to /smuggled" in text, text
    finally:
        relay.stop()
        rec.stop()
