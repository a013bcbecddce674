"""test_tunnel.py - `Connection: Upgrade` (WebSocket) passed through as a tunnel (issue 4,
"Behaviour"): the 101 goes back with its Upgrade headers, then bytes pass both ways untouched
(also bytes sent before the 101, and megabytes each way with backpressure), a half-close
reaches the other side, a refused upgrade is an ordinary response that ends the connection, a
quiet tunnel is closed after proxy.idle_timeout_ms, and nothing is left open afterwards."""

import socket
import threading
import time

import pytest

from proxyharness import Reader, closed_by_peer, connect, http_request, request_bytes

WS_HEADERS = [("Connection", "Upgrade"), ("Upgrade", "websocket"),
              ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]


@pytest.fixture
def stack(proxy_stack):
    s = proxy_stack(idle_timeout_ms=1500)
    s.ev = s.evil("evil")
    s.start({"evil": s.ev.addr})
    return s


def open_tunnel(s, path="/ws", early=b""):
    c = connect(s.port, 10)
    c.sendall(request_bytes("GET", path, WS_HEADERS) + early)
    rd = Reader(c)
    r = rd.response()
    return c, rd, r


def test_websocket_tunnel(stack):
    s = stack
    base = s.fds()
    # Bytes right behind the request, before the 101: they belong to the tunnel.
    c, rd, r = open_tunnel(s, early=b"early bird")
    assert r.status == 101, r
    assert r.header("Upgrade") == "websocket" and r.header("Connection").lower() == "upgrade"
    assert r.header("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    req = s.ev.last("/ws")
    assert req.header("Upgrade") == "websocket" and req.header("Connection") == "upgrade"
    assert req.header("X-Forwarded-For") == "127.0.0.1"
    assert rd.exact(10) == b"early bird"
    for msg in (b"ping", b"\x00\x01\x02\xff" * 100, b"x"):
        c.sendall(msg)
        assert rd.exact(len(msg)) == msg
    # Half-close: the instance hears the client's EOF, answers, closes; the client gets both.
    c.shutdown(socket.SHUT_WR)
    assert rd.rest() == b"bye"
    c.close()
    s.wait_fds(base + 1)  # at most... nothing of the tunnel: its connection is not reused
    s.st.wait_until(lambda: s.ev.conns_open == 0, 3, "the instance side of the tunnel closed")


def test_tunnel_bulk_both_ways(stack):
    s = stack
    c, rd, r = open_tunnel(s)
    assert r.status == 101
    data = bytes(range(256)) * 16384  # 4 MB, echoed: both directions at once
    got = bytearray()
    err = []

    def reader():
        try:
            while len(got) < len(data):
                got.extend(rd.exact(min(65536, len(data) - len(got))) if rd.buf else
                           c.recv(65536))
        except Exception as e:  # noqa: BLE001
            err.append(e)

    t = threading.Thread(target=reader)
    t.start()
    c.sendall(data)
    t.join(30)
    assert not err and bytes(got) == data
    c.close()
    s.st.wait_until(lambda: s.ev.conns_open == 0, 3, "the tunnel closed on both sides")


def test_instance_ends_tunnel(stack):
    s = stack
    c, rd, r = open_tunnel(s, "/ws-close")
    assert r.status == 101
    assert rd.rest() == b"server says bye"  # its last bytes, then the close
    c.close()
    # The instance speaks first.
    c, rd, r = open_tunnel(s, "/ws-push")
    assert rd.exact(29) == b"pushed before any client byte"
    c.close()


def test_upgrade_refused(stack):
    s = stack
    c, rd, r = open_tunnel(s, "/ws-refuse", early=b"would be websocket frames")
    assert r.status == 400 and r.body == b"no upgrade here"
    # What follows an upgrade request is not HTTP: the connection ends after the answer.
    assert r.header("Connection") == "close"
    assert closed_by_peer(c)
    c.close()
    # Upgrade without "Connection: upgrade" is no upgrade: Upgrade is hop-by-hop and goes.
    r = http_request(s.port, "GET", "/ws", [("Upgrade", "websocket")])
    assert r.status == 400
    assert s.ev.last("/ws").header("Upgrade") is None
    s.assert_alive()


def test_quiet_tunnel_closed(stack):
    s = stack
    c, rd, r = open_tunnel(s)
    assert r.status == 101
    c.sendall(b"a")
    assert rd.exact(1) == b"a"
    t0 = time.monotonic()
    assert closed_by_peer(c, 5)
    assert 1.2 < time.monotonic() - t0 < 4
    c.close()
    s.st.wait_until(lambda: s.ev.conns_open == 0, 3, "the instance side closed too")


def test_many_tunnels_no_leak(stack):
    s = stack
    assert http_request(s.port, "GET", "/echo").status == 200
    time.sleep(1.7)
    base = s.fds()
    socks = []
    for i in range(50):
        c, rd, r = open_tunnel(s)
        assert r.status == 101
        socks.append((c, rd))
    for i, (c, rd) in enumerate(socks):
        c.sendall(b"%d" % i)
        assert rd.exact(len(b"%d" % i)) == b"%d" % i
    assert s.fds() >= base + 98  # a client and an instance connection each
    for c, _ in socks[:25]:
        c.close()  # abrupt: no half-close dance
    for c, rd in socks[25:]:
        c.shutdown(socket.SHUT_WR)
        assert rd.rest() == b"bye"
        c.close()
    s.wait_fds(base)
    s.assert_alive()
