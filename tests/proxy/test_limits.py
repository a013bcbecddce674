"""test_limits.py - the proxy's limits, each from the config, each with its status (issue 4,
"Limits"): header size 431 (414 for the target), body size 413, slow client head and body 408, instance connect and
response timeouts 504, the client idle keep-alive timeout, and max_connections (503 past it,
while the listener keeps accepting up to it)."""

import socket
import time

import pytest

from proxyharness import Reader, closed_by_peer, connect, http_request, request_bytes


@pytest.fixture
def stack(proxy_stack):
    s = proxy_stack(max_header_size=4096, max_body_size=10000, client_header_timeout_ms=600,
                    client_body_timeout_ms=600, idle_timeout_ms=1500, response_timeout_ms=1000,
                    connect_timeout_ms=400, max_connections=20)
    s.ev = s.evil("evil")
    s.start({"evil": s.ev.addr})
    return s


def expect_status_and_close(c, status):
    rd = Reader(c)
    r = rd.response()
    assert r.status == status, r
    assert r.header("Connection") == "close", r
    assert rd.eof or closed_by_peer(c), "the connection stayed open after %d" % status
    return r


def test_header_size_431(stack):
    c = connect(stack.port)
    c.sendall(request_bytes("GET", "/echo", [("X-Big", "a" * 5000)]))
    expect_status_and_close(c, 431)
    c.close()
    c = connect(stack.port)  # a huge URL counts against the same limit, and is 414 (RFC 9112 3)
    c.sendall(request_bytes("GET", "/echo?" + "q" * 5000))
    expect_status_and_close(c, 414)
    c.close()
    assert stack.ev.count() == 0
    assert http_request(stack.port, "GET", "/echo", [("X-Fine", "a" * 3000)]).status == 200


def test_body_size_413(stack):
    # Content-Length over the limit: refused at once, before any body byte is read or sent on.
    c = connect(stack.port)
    c.sendall(request_bytes("POST", "/echo", [("Content-Length", "20000")]))
    expect_status_and_close(c, 413)
    c.close()
    # With Expect: 100-continue the client is told before it sends the body.
    c = connect(stack.port)
    c.sendall(request_bytes("PUT", "/continue", [("Content-Length", "20000"),
                                                 ("Expect", "100-continue")]))
    rd = Reader(c)
    r = rd.response()
    assert r.status == 413 and rd.interim == []
    c.close()
    assert stack.ev.count() == 0
    # Chunked: counted as it comes; past the limit the exchange ends with 413.
    c = connect(stack.port)
    c.sendall(request_bytes("POST", "/echo", [("Transfer-Encoding", "chunked")]))
    for _ in range(12):
        c.sendall(b"3e8\r\n" + b"z" * 1000 + b"\r\n")
    expect_status_and_close(c, 413)
    c.close()
    # At the limit: fine.
    assert http_request(stack.port, "POST", "/echo", body=b"k" * 10000).status == 200
    stack.assert_alive()


def test_slow_client_head_408(stack):
    c = connect(stack.port)
    c.sendall(b"GET /echo HTTP/1.1\r\nHost: slow\r\n")  # ... and never the end of the head
    t0 = time.monotonic()
    expect_status_and_close(c, 408)
    took = time.monotonic() - t0
    assert 0.4 < took < 2.5, took
    c.close()
    # Dripping the head byte by byte does not extend the deadline.
    c = connect(stack.port)
    t0 = time.monotonic()
    got = b""
    c.settimeout(0.1)
    for b in b"GET /echo HTTP/1.1\r\nHost: drip\r\nX-A: " + b"a" * 100:
        try:
            c.sendall(bytes([b]))
        except OSError:
            break
        try:
            got += c.recv(4096)
            if got:
                break
        except socket.timeout:
            pass
    c.settimeout(3)
    try:
        while b"\r\n\r\n" not in got:
            more = c.recv(4096)
            if not more:
                break
            got += more
    except OSError:
        pass
    assert got.startswith(b"HTTP/1.1 408"), got
    assert time.monotonic() - t0 < 2.5
    c.close()
    assert stack.ev.count() == 0


def test_slow_client_body_408(stack):
    c = connect(stack.port)
    c.sendall(request_bytes("POST", "/echo", [("Content-Length", "100")]) + b"x" * 10)
    t0 = time.monotonic()
    expect_status_and_close(c, 408)
    assert 0.4 < time.monotonic() - t0 < 2.5
    c.close()
    # A body that keeps moving is not cut, however long it takes in total.
    c = connect(stack.port)
    c.sendall(request_bytes("POST", "/echo", [("Content-Length", "8")]))
    for b in b"12345678":
        time.sleep(0.25)
        c.sendall(bytes([b]))
    r = Reader(c).response()
    assert r.status == 200
    c.close()
    # A client waiting for the instance's 100 Continue is not the one being slow.
    c = connect(stack.port)
    c.sendall(request_bytes("POST", "/continue-slow", [("Content-Length", "3"),
                                                      ("Expect", "100-continue")]))
    rd = Reader(c)
    assert rd.until(b"\r\n\r\n").startswith(b"HTTP/1.1 100")
    c.sendall(b"abc")
    r = rd.response()
    assert r.status == 200 and r.body == b"got 3"
    c.close()
    # The instance's side of the abandoned exchange was closed.
    stack.st.wait_until(lambda: stack.ev.conns_open <= 1, 5, "the proxy let go of the "
                        "upstream connection of the timed-out request")


def test_idle_keepalive_timeout(stack):
    c = connect(stack.port)
    c.sendall(request_bytes("GET", "/echo"))
    rd = Reader(c)
    assert rd.response().status == 200
    t0 = time.monotonic()
    assert closed_by_peer(c, 5), "an idle keep-alive connection was not closed"
    took = time.monotonic() - t0
    assert 1.2 < took < 3.5, took
    c.close()
    # A connection that never sends anything is closed after the idle timeout, silently.
    c = connect(stack.port)
    c.settimeout(5)
    t0 = time.monotonic()
    assert c.recv(100) == b""
    assert 1.2 < time.monotonic() - t0 < 3.5


def test_upstream_response_timeout_504(stack):
    t0 = time.monotonic()
    r = http_request(stack.port, "GET", "/never")
    assert r.status == 504
    assert 0.8 < time.monotonic() - t0 < 3
    # A head dripped slower than the deadline: 504, even though bytes keep coming.
    t0 = time.monotonic()
    r = http_request(stack.port, "GET", "/drip-head")
    assert r.status == 504
    assert time.monotonic() - t0 < 3
    assert http_request(stack.port, "GET", "/echo").status == 200


def test_upstream_connect_timeout_504(stack):
    # A listener whose accept queue is full: the kernel drops the proxy's SYN, so the connect
    # hangs (nothing refuses it).
    bh = socket.socket()
    bh.bind(("127.0.0.1", 0))
    bh.listen(0)
    fill = []
    for _ in range(3):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(bh.getsockname())
        except BlockingIOError:
            pass
        fill.append(f)
    try:
        stack.set_pool({"blackhole": "127.0.0.1:%d" % bh.getsockname()[1]})
        t0 = time.monotonic()
        r = http_request(stack.port, "GET", "/echo")
        assert r.status == 504
        assert 0.3 < time.monotonic() - t0 < 2
        # With another instance in the pool the idempotent request goes there instead.
        stack.set_pool({"blackhole2": "127.0.0.1:%d" % bh.getsockname()[1],
                        "evil": stack.ev.addr})
        for _ in range(6):
            assert http_request(stack.port, "GET", "/echo").status == 200
    finally:
        for f in fill:
            f.close()
        bh.close()


def test_max_connections_503(stack):
    held = []
    for i in range(20):  # max_connections: all of them served
        c = connect(stack.port)
        c.sendall(request_bytes("GET", "/echo?c=%d" % i))
        held.append((c, Reader(c)))
    for c, rd in held:
        assert rd.response().status == 200
    # One more: accepted, told 503, closed.
    c = connect(stack.port)
    expect_status_and_close(c, 503)
    c.close()
    # The held connections are still served.
    c0, rd0 = held[0]
    c0.sendall(request_bytes("GET", "/echo"))
    assert rd0.response().status == 200
    # One goes: the listener takes a new one again.
    c0.close()
    time.sleep(0.2)
    stack.st.wait_until(lambda: http_request(stack.port, "GET", "/echo").status == 200, 5,
                        "a new connection is served once one closed")
    for c, _ in held[1:]:
        c.close()
    stack.assert_alive()


def test_max_connections_across_workers(proxy_stack):
    """The limit is the process's, whichever worker a connection lands on."""
    s = proxy_stack(workers=2, max_connections=10, idle_timeout_ms=5000)
    ev = s.evil("evil")
    s.start({"evil": ev.addr})
    held = []
    for i in range(10):
        c = connect(s.port)
        c.sendall(request_bytes("GET", "/echo"))
        held.append(c)
        assert Reader(c).response().status == 200
    for _ in range(4):  # SO_REUSEPORT spreads these over both workers: each one is refused
        c = connect(s.port)
        assert Reader(c).response().status == 503
        c.close()
    for c in held:
        c.close()
    s.st.wait_until(lambda: http_request(s.port, "GET", "/echo").status == 200, 5,
                    "served again once connections closed")
