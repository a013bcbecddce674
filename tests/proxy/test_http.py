"""test_http.py - HTTP/1.1 through tide-proxy (issue 4, "Behaviour": HTTP/1.1 on both sides,
headers, request smuggling): keep-alive on both sides, pipelining in order, HEAD, 204/304,
HTTP/1.0, Expect: 100-continue, bodies streamed both ways (Content-Length and chunked, with
trailers), hop-by-hop headers removed and X-Forwarded-* set, smuggling attempts refused with 400
and the connection closed."""

import hashlib
import json
import socket
import threading
import time

import pytest

from proxyharness import Reader, closed_by_peer, connect, http_request, request_bytes


@pytest.fixture
def stack(proxy_stack):
    s = proxy_stack()
    s.app = s.sample_app("production0")
    s.ev = s.evil("evil")
    s.start({"production0": s.app})
    return s


def to_evil(s):
    s.set_pool({"evil": s.ev.addr})


def test_keepalive_both_sides(stack):
    c = connect(stack.port)
    rd = Reader(c)
    for i in range(5):
        c.sendall(request_bytes("GET", "/?n=%d" % i))
        r = rd.response()
        assert r.status == 200 and r.header("X-Instance") == "production0", r
        assert r.header("Connection") is None  # kept alive (HTTP/1.1 default)
    c.close()
    # The instance side: ten requests from ten client connections, one upstream connection.
    to_evil(stack)
    for i in range(10):
        assert http_request(stack.port, "GET", "/echo").status == 200
    assert stack.ev.accepted == 1, "upstream connections not reused: %d" % stack.ev.accepted


def test_pipelined_in_order(stack):
    c = connect(stack.port)
    reqs = [("GET", "/status/201"), ("GET", "/bytes/3"), ("HEAD", "/bytes/10"),
            ("GET", "/status/204"), ("POST", "/status/202"), ("GET", "/")]
    data = b"".join(request_bytes(m, p, body=b"abc" if m == "POST" else b"") for m, p in reqs)
    c.sendall(data)  # all at once: the proxy must answer them one by one, in order
    rd = Reader(c)
    got = []
    for m, p in reqs:
        r = rd.response(head_only=m == "HEAD")
        got.append((r.status, r.body))
    assert got == [(201, b"201 Created\n"), (200, b"xxx"), (200, b""), (204, b""),
                   (202, b"202 Accepted\n"), (200, b"hello from production0\n")], got
    c.sendall(request_bytes("GET", "/bytes/2"))
    assert rd.response().body == b"xx"  # the connection still works after the batch
    c.close()


def test_head_204_304_no_body(stack):
    c = connect(stack.port)
    rd = Reader(c)
    c.sendall(request_bytes("HEAD", "/bytes/100"))
    r = rd.response(head_only=True)
    assert r.status == 200 and r.header("Content-Length") == "100"
    for code in (204, 304):
        c.sendall(request_bytes("GET", "/status/%d" % code))
        r = rd.response()
        assert r.status == code and r.body == b""
        assert r.header("Transfer-Encoding") is None
    # Had any body byte leaked after them, this response would be misread.
    c.sendall(request_bytes("GET", "/bytes/4"))
    r = rd.response()
    assert r.status == 200 and r.body == b"xxxx"
    c.settimeout(0.3)
    with pytest.raises(socket.timeout):
        c.recv(1)  # nothing more on the wire
    c.close()


def test_http10_clients(stack):
    # No Host, no keep-alive: answered, then closed; the body is delimited by the close when
    # the instance sends it chunked.
    to_evil(stack)
    c = connect(stack.port)
    c.sendall(b"GET /chunked HTTP/1.0\r\n\r\n")
    rd = Reader(c)
    r = rd.response()
    assert r.status == 200 and r.body == b"hello world"
    assert r.header("Transfer-Encoding") is None
    assert rd.eof or closed_by_peer(c)
    c.close()
    # The instance got a Host (the instance address) and HTTP/1.1.
    last = stack.ev.last("/chunked")
    assert last.version == "HTTP/1.1" and last.header("Host") == stack.ev.addr
    # HTTP/1.0 keep-alive: kept, and said so.
    c = connect(stack.port)
    rd = Reader(c)
    for _ in range(2):
        c.sendall(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = rd.response()
        assert r.status == 200 and r.header("Connection").lower() == "keep-alive"
    c.close()


def test_expect_100_continue(stack):
    to_evil(stack)
    c = connect(stack.port)
    body = b"b" * 5000
    c.sendall(request_bytes("POST", "/continue", [("Expect", "100-continue"),
                                                  ("Content-Length", str(len(body)))]))
    rd = Reader(c)
    head = rd.until(b"\r\n\r\n")  # the instance's 100 comes through before any body byte
    assert head.startswith(b"HTTP/1.1 100"), head
    c.sendall(body)
    r = rd.response()
    assert r.status == 200 and r.body == b"got 5000"
    c.close()


def test_bodies_both_ways(stack):
    to_evil(stack)
    big = bytes(range(256)) * 8192  # 2 MB
    r = http_request(stack.port, "POST", "/echo", body=big, timeout=20)
    echo = json.loads(r.body)
    assert echo["body_len"] == len(big)
    assert echo["body_sha1"] == hashlib.sha1(big).hexdigest()
    assert ["Content-Length", str(len(big))] in echo["headers"]
    # Chunked upload, re-framed by the proxy, trailers passed on (minus framing fields).
    c = connect(stack.port, 20)
    c.sendall(request_bytes("PUT", "/echo", [("Transfer-Encoding", "chunked"),
                                             ("Trailer", "X-Digest")]))
    for i in range(0, len(big), 65536):
        part = big[i:i + 65536]
        c.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
    c.sendall(b"0\r\nX-Digest: abc\r\nContent-Length: 5\r\n\r\n")
    r = Reader(c).response()
    echo = json.loads(r.body)
    assert r.status == 200 and echo["body_len"] == len(big)
    assert echo["body_sha1"] == hashlib.sha1(big).hexdigest()
    assert echo["trailers"] == [["X-Digest", "abc"]], echo["trailers"]
    hdrs = {k.lower(): v for k, v in echo["headers"]}
    assert hdrs["transfer-encoding"] == "chunked" and "content-length" not in hdrs
    assert hdrs["trailer"] == "X-Digest"
    c.close()
    # Response trailers reach an HTTP/1.1 client.
    r = http_request(stack.port, "GET", "/trailers")
    assert r.body == b"hello world" and r.trailers == [("X-Sum", "42"), ("X-Other", "y")]
    assert r.header("Trailer") == "X-Sum"


def test_streaming_not_buffered(stack):
    to_evil(stack)
    # Response: the first chunk reaches the client while the instance holds the rest.
    c = connect(stack.port)
    c.sendall(request_bytes("GET", "/hold-chunked"))
    rd = Reader(c)
    rd.until(b"\r\n\r\n")
    assert rd.until(b"first\r\n").endswith(b"5\r\nfirst\r\n")
    stack.ev.release.set()
    assert rd.until(b"0\r\n\r\n").endswith(b"4\r\nlast\r\n0\r\n\r\n")
    c.close()
    stack.ev.release.clear()
    # Request: the instance sees the first part of a body whose rest is not sent yet.
    c = connect(stack.port)
    c.sendall(request_bytes("POST", "/echo?stream", [("Content-Length", "200000")]))
    c.sendall(b"a" * 100000)
    stack.st.wait_until(lambda: stack.ev.last("/echo?stream") is not None and
                        len(stack.ev.last("/echo?stream").body) == 100000, 5,
                        "the instance has the first half of the body before the second is sent")
    c.sendall(b"b" * 100000)
    r = Reader(c).response()
    assert json.loads(r.body)["body_len"] == 200000
    c.close()


def test_forwarding_headers(stack):
    to_evil(stack)
    r = http_request(stack.port, "GET", "/echo", [
        ("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.2"),
        ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.example"),
        ("Connection", "keep-alive, X-Hop"), ("X-Hop", "drop me"), ("Keep-Alive", "timeout=9"),
        ("TE", "trailers"), ("Proxy-Connection", "keep-alive"), ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic x"), ("X-Keep", "me")])
    echo = json.loads(r.body)
    names = [k.lower() for k, _ in echo["headers"]]
    hdrs = {k.lower(): v for k, v in echo["headers"]}
    for hop in ("connection", "x-hop", "keep-alive", "te", "proxy-connection", "upgrade",
                "proxy-authorization"):
        assert hop not in names, "hop-by-hop %s forwarded: %r" % (hop, echo["headers"])
    assert hdrs["host"] == "tide.test"  # kept
    assert hdrs["x-forwarded-for"] == "10.0.0.1, 10.0.0.2, 127.0.0.1"
    assert hdrs["x-forwarded-proto"] == "http"
    assert hdrs["x-forwarded-host"] == "tide.test"
    assert names.count("x-forwarded-for") == 1 and names.count("x-forwarded-host") == 1
    assert hdrs["x-keep"] == "me"
    # Response side.
    r = http_request(stack.port, "GET", "/hop-resp")
    names = [k.lower() for k, _ in r.headers]
    assert r.body == b"ok" and r.header("X-Kept") == "1"
    for hop in ("x-resp-hop", "keep-alive", "proxy-authenticate", "connection"):
        assert hop not in names, r.headers


# RFC 9112 rules http-parser (built lenient) lets through, checked by proxy/syntax.c and
# client.c: s_check_head. Each is refused before anything reaches the instance.
RFC9112_REFUSED = [
    (b"GET /echo HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),          # obs-fold
    (b"GET /echo HTTP/1.1\r\n Host: a\r\n\r\n", 400),           # whitespace before a field
    (b"GET /echo HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),            # bare CR
    (b"GET /echo HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", 400),          # a control
    (b"GET /echo HTTP/1.1\r\nHost: a\r\nX: a\x00\r\n\r\n", 400),          # NUL
    (b"GET /echo\tx HTTP/1.1\r\nHost: a\r\n\r\n", 400),          # whitespace in the target
    (b"GET /echo\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400),          # non-ASCII in the target
    (b"GET  /echo HTTP/1.1\r\nHost: a\r\n\r\n", 400),             # two spaces
    (b"GET /echo HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET /echo HTTP/0.9\r\nHost: a\r\n\r\n", 505),
    (b"GET /echo HTTP/1.1\r\n\r\n", 400),                           # no Host
    (b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),          # two Hosts
    (b"GET /echo HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400),          # the same twice
    (b"GET /echo HTTP/1.1\r\nHost: a b\r\n\r\n", 400),            # not a uri-host
    (b"GET /echo HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    (b"GET /echo HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
    (b"GET http://u@b/echo HTTP/1.1\r\nHost: b\r\n\r\n", 400),      # userinfo
    (b"GET ftp://b/echo HTTP/1.1\r\nHost: b\r\n\r\n", 400),
    (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),                 # asterisk-form not OPTIONS
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd", 400),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400),
    (b"POST /echo HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400),                                   # TE in HTTP/1.0
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),       # chunked twice
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400),                                   # chunked not last
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo\r\n\r\nabc", 400),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 501),                                   # a coding tide drops
]


def test_rfc9112_refused(stack):
    to_evil(stack)
    for raw, status in RFC9112_REFUSED:
        c = connect(stack.port)
        c.sendall(raw)
        r = Reader(c).response()
        assert r.status == status, (raw, r)
        assert r.header("Connection") == "close"
        assert closed_by_peer(c), "connection left open after %d: %r" % (status, raw)
        c.close()
        reached = [p for p in stack.ev.paths() if p != "/echo-victim"]
        assert reached == [], "a refused message reached the instance: %r" % raw
        # The next client gets its own answer.
        victim = json.loads(http_request(stack.port, "GET", "/echo-victim").body)
        assert victim["path"] == "/echo-victim", raw


def test_chunk_not_closed_by_crlf(stack):
    """http-parser takes any two bytes after a chunk's data; tide wants CRLF, in one read or
    split across reads, and closes the connection after the 400 (the head already went)."""
    to_evil(stack)
    for parts in ([b"3\r\nabcXX0\r\n\r\n"], [b"3\r\nabc", b"\rX0\r\n\r\n"]):
        c = connect(stack.port)
        c.sendall(b"POST /echo?chunk HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for p in parts:
            time.sleep(0.05)  # separate reads on the proxy's side; either order fails the same
            c.sendall(p)
        assert closed_by_peer(c), parts
        c.close()
    # A good chunked body still goes through, split anywhere.
    c = connect(stack.port)
    c.sendall(b"POST /echo?good HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r")
    time.sleep(0.05)
    c.sendall(b"\n0\r\n\r\n")
    r = Reader(c).response()
    assert r.status == 200 and json.loads(r.body)["body_len"] == 3
    c.close()


def test_framing_is_tides_own(stack):
    """What reaches the instance is framed by tide from what it parsed: a Content-Length is
    written anew, an absolute-form target becomes origin-form with its authority as Host, and
    trailing whitespace is not part of a value."""
    to_evil(stack)
    c = connect(stack.port)
    c.sendall(b"POST /echo?cl HTTP/1.1\r\nHost: a\r\nContent-Length: 003 \r\nX-V: v \t\r\n\r\nabc")
    r = Reader(c).response()
    assert r.status == 200
    c.close()
    req = stack.ev.last("/echo?cl")
    assert req.header_all("Content-Length") == ["3"] and req.body == b"abc"
    assert b"X-V: v\r\n" in req.raw
    r = http_request(stack.port, "POST", "/echo?zero", [("Content-Length", "0")])
    assert r.status == 200
    assert stack.ev.last("/echo?zero").header_all("Content-Length") == ["0"]
    c = connect(stack.port)
    c.sendall(b"GET http://Other.Test:81/echo?abs HTTP/1.1\r\nHost: a\r\n\r\n")
    assert Reader(c).response().status == 200
    c.close()
    req = stack.ev.last("/echo?abs")
    assert req.path == "/echo?abs" and req.header_all("Host") == ["Other.Test:81"]
    c = connect(stack.port)
    c.sendall(b"GET http://other.test?q HTTP/1.1\r\nHost: a\r\n\r\n")
    assert Reader(c).response().status in (200, 404)
    c.close()
    assert stack.ev.paths()[-1] == "/?q"
    # Bare LF line ends are read as CRLF and sent on as CRLF.
    c = connect(stack.port)
    c.sendall(b"GET /echo?lf HTTP/1.1\nHost: a\nX-L: 1\n\n")
    assert Reader(c).response().status == 200
    c.close()
    assert b"X-L: 1\r\n" in stack.ev.last("/echo?lf").raw


def test_smuggling_refused(stack):
    to_evil(stack)
    cases = [
        # Content-Length and Transfer-Encoding together, with a request hidden in the body.
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 30"
        b"\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        # Two different Content-Lengths.
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\n"
        b"abcGET /smuggled HTTP/1.1\r\n\r\n",
        # An invalid chunk size.
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"-5\r\nabc\r\n0\r\n\r\n",
        # A chunk size that overflows.
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        # Whitespace between a field name and its colon (RFC 9112 5.1): a server that reads
        # "Content-Length : 30" as no length sees the body as a second request.
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length : 30\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length\t: 30\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        # A space or a separator inside a field name.
        b"GET /echo HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: a\r\nX(y): x\r\n\r\n",
    ]
    echoed = stack.ev.count("/echo")
    for raw in cases:
        c = connect(stack.port)
        c.sendall(raw)
        rd = Reader(c)
        r = rd.response()
        assert r.status == 400, (raw, r)
        assert r.header("Connection") == "close"
        assert closed_by_peer(c), "connection left open after 400: %r" % raw
        c.close()
    assert stack.ev.count("/smuggled") == 0, stack.ev.paths()
    assert stack.ev.count("/echo") == echoed, "a refused message reached the instance"
    # A transfer coding tide would have to drop: refused, not silently re-framed.
    r = http_request(stack.port, "POST", "/echo", [("Transfer-Encoding", "gzip, chunked")],
                     body=b"3\r\nabc\r\n0\r\n\r\n")
    assert r.status == 501
    # CONNECT is not proxied.
    r = http_request(stack.port, "CONNECT", "example.com:443")
    assert r.status == 405
    stack.assert_alive()


def test_concurrent_clients(stack):
    """Many connections at once, each with several requests: every answer right and whole."""
    errors = []

    def client(k):
        try:
            c = connect(stack.port, 10)
            rd = Reader(c)
            for i in range(20):
                c.sendall(request_bytes("GET", "/bytes/%d" % (k * 100 + i)))
                r = rd.response()
                if r.status != 200 or len(r.body) != k * 100 + i:
                    errors.append((k, i, r.status, len(r.body)))
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(1, 31)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    assert time.monotonic() - t0 < 30
    stack.assert_alive()
