"""test_drain.py - draining (issue 4, "Draining"): an instance leaving the pool finishes the
requests already sent to it, its idle upstream connections close, no new request goes to it
(and ProxyStats shows it in flight, then drained); SIGTERM stops accepting, finishes the
requests in flight (up to proxy.drain_timeout_ms), answers a request already on an idle
keep-alive connection, then exits 0."""

import socket
import threading
import time

import pytest

from proxyharness import Reader, closed_by_peer, connect, http_request, next_stats, \
    request_bytes


def slow_requests(port, n, ms, results):
    def one(i):
        try:
            r = http_request(port, "GET", "/slow?ms=%d&i=%d" % (ms, i), timeout=15)
            results.append((r.status, r.header("Connection")))
        except Exception as e:  # noqa: BLE001
            results.append(("error", repr(e)))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def test_instance_leaves_pool(proxy_stack):
    s = proxy_stack()
    a = s.evil("a")
    b = s.evil("b")
    s.start({"a": a.addr})
    sub = s.stats_sub()
    for _ in range(3):  # an idle keep-alive connection to a
        assert http_request(s.port, "GET", "/echo").status == 200
    results = []
    threads = slow_requests(s.port, 2, 1500, results)
    s.st.wait_until(lambda: a.count("/slow") == 2, 5, "both slow requests reached a")
    assert a.conns_open == 2 or a.conns_open == 3
    s.set_pool({"b": b.addr})
    # Its idle connections close at once; the two in flight stay.
    s.st.wait_until(lambda: a.conns_open == 2, 3, "a's idle connection closed")
    st = None
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        st = next_stats(sub)
        if st and st["pool_version"] == s.version:
            break
    assert st["instances"]["a"]["in_flight"] == 2, st
    for _ in range(10):  # nothing new goes to a
        r = http_request(s.port, "GET", "/echo?new")
        assert r.status == 200
    assert a.count("/echo?new") == 0 and b.count("/echo?new") == 10
    for t in threads:
        t.join(10)
    assert results == [(200, None), (200, None)], results
    # Finished: a's connections are closed, not kept idle (it left the pool).
    s.st.wait_until(lambda: a.conns_open == 0, 3, "a's last connections closed")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        st = next_stats(sub)
        if st and st["instances"].get("a", {}).get("in_flight") == 0:
            break
    assert st["instances"]["a"]["in_flight"] == 0, st
    sub.close()


def test_sigterm_drains(proxy_stack):
    s = proxy_stack(drain_timeout_ms=5000, workers=2)
    ev = s.evil("evil")
    s.start({"evil": ev.addr})
    idle = connect(s.port)
    idle_rd = Reader(idle)
    idle.sendall(request_bytes("GET", "/echo"))
    assert idle_rd.response().status == 200
    results = []
    threads = slow_requests(s.port, 4, 1500, results)
    s.st.wait_until(lambda: ev.count("/slow") == 4, 5, "the slow requests reached the instance")
    s.sigterm()
    # A request already on its way on an idle keep-alive connection is still answered, with
    # Connection: close.
    idle.sendall(request_bytes("GET", "/echo?late"))
    r = idle_rd.response()
    assert r.status == 200 and r.header("Connection") == "close"
    assert closed_by_peer(idle)
    idle.close()
    # No new connection is accepted.
    time.sleep(0.5)
    with pytest.raises(OSError):
        c = socket.create_connection(("127.0.0.1", s.port), timeout=1)
        c.sendall(request_bytes("GET", "/echo"))
        if not c.recv(100):
            raise OSError("closed")
    for t in threads:
        t.join(10)
    # Every request accepted before the signal got its answer.
    assert sorted(results) == [(200, "close")] * 4, results
    s.proc.popen.wait(10)
    assert s.proc.returncode == 0, s.proc.tail()
    assert "forced=0" in s.log()


def test_sigterm_deadline(proxy_stack):
    s = proxy_stack(drain_timeout_ms=1000)
    ev = s.evil("evil")
    s.start({"evil": ev.addr})
    c = connect(s.port)
    c.sendall(request_bytes("GET", "/never"))
    s.st.wait_until(lambda: ev.count("/never") == 1, 5, "the request reached the instance")
    t0 = time.monotonic()
    s.sigterm()
    s.proc.popen.wait(10)
    took = time.monotonic() - t0
    assert s.proc.returncode == 0
    assert 0.8 < took < 4, took
    assert "forced=1" in s.log()
    c.close()
