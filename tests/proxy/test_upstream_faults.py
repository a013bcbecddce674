"""test_upstream_faults.py - a deliberately misbehaving instance (issue 4, "Tests"): one that
closes mid-response, closes before answering, sends garbage, never answers, sends an endless
chunked body, drips its head or its body. For each: the client gets the right status (or, once
part of the response is out, the close), the proxy keeps serving the other clients meanwhile,
does not crash, and ends up holding no more file descriptors than before."""

import threading
import time

import pytest

from proxyharness import Reader, closed_by_peer, connect, http_request, request_bytes


class Background:
    """Plain requests through the proxy, one after another, while a fault plays: every one
    must succeed (from whichever instance answers it), and none may take long."""

    def __init__(self, port):
        self.port = port
        self.ok = 0
        self.errors = []
        self.worst = 0.0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        c, rd = None, None
        while not self.stop_ev.is_set():
            try:
                if c is None:
                    c = connect(self.port, 5)
                    rd = Reader(c)
                t0 = time.monotonic()
                c.sendall(request_bytes("GET", "/good"))
                r = rd.response()
                self.worst = max(self.worst, time.monotonic() - t0)
                if r.status != 200:
                    self.errors.append(r)
                else:
                    self.ok += 1
            except Exception as e:  # noqa: BLE001
                self.errors.append(repr(e))
                c = None
            time.sleep(0.01)
        if c:
            c.close()

    def stop(self):
        self.stop_ev.set()
        self.t.join(10)
        assert not self.errors, self.errors[:5]
        assert self.ok > 0
        assert self.worst < 1.0, "a good request took %.2fs while the fault played" % self.worst


@pytest.fixture
def stack(proxy_stack):
    s = proxy_stack(response_timeout_ms=1000, idle_timeout_ms=2000)
    s.app = s.sample_app("production0")
    s.ev = s.evil("evil")
    s.start({"production0": s.app})
    return s


def warm_baseline(s):
    """fds once the background client's connections exist; the evil instance not in use."""
    time.sleep(0.3)
    return s.fds()


def route_evil(s):
    s.set_pool({"production0": s.app, "evil": s.ev.addr})


def test_faults_keep_others_served(stack):
    s = stack
    base = warm_baseline(s)
    # Both instances in the pool: a fault request is sent until it reaches the evil one (the
    # balancer picks one of the two); /good is answered well by both.
    bg = Background(s.port)
    route_evil(s)

    def to_evil(method, path, expect_status=None, body=b""):
        """Sends method path until the evil instance gets it; returns its response or the
        exception the client saw."""
        for _ in range(40):
            before = s.ev.count(path)
            try:
                r = http_request(s.port, method, path, body=body, timeout=8)
            except Exception as e:  # noqa: BLE001
                r = e
            if s.ev.count(path) > before:
                return r
        raise AssertionError("%s never reached the evil instance" % path)

    try:
        # Closed in the middle of the body: the client cannot get a whole response; it sees
        # the connection close (a status was already sent, only the close can tell).
        r = to_evil("GET", "/close-mid")
        assert isinstance(r, EOFError), r
        r = to_evil("GET", "/close-chunked-mid")
        assert isinstance(r, EOFError), r
        # Garbage and a response with two Content-Lengths: 502.
        assert to_evil("GET", "/garbage").status == 502
        assert to_evil("GET", "/bad-length").status == 502
        # Never answers: 504 after response_timeout_ms.
        t0 = time.monotonic()
        assert to_evil("GET", "/never").status == 504
        assert time.monotonic() - t0 < 3
        # Drips its head: 504 too. Drips its body within the silence limit: delivered whole.
        assert to_evil("GET", "/drip-head").status == 504
        r = to_evil("GET", "/drip-body")
        assert r.status == 200 and r.body == b"0123456789"
        # Closes before any byte: a POST is not retried elsewhere: 502.
        r = to_evil("POST", "/close-before", body=b"data")
        assert r.status == 502
        s.assert_alive()
    finally:
        bg.stop()
    s.set_pool({"production0": s.app})
    s.wait_fds(base + 1)


def test_closed_before_answer_idempotent_retried(stack):
    """A GET whose fresh connection closes before any byte goes to another instance."""
    s = stack
    s.set_pool({"evil": s.ev.addr, "production0": s.app})
    statuses = set()
    for _ in range(20):
        r = http_request(s.port, "GET", "/close-before")
        statuses.add((r.status, r.header("X-Instance")))
    # Every one answered by the app, either directly or after the evil one closed on it.
    assert statuses == {(200, "production0")}, statuses
    assert s.ev.count("/close-before") > 0


def test_endless_chunked_body(stack):
    s = stack
    s.set_pool({"evil": s.ev.addr})
    base = s.fds()
    # A client that reads 4 MB of it, then hangs up: the proxy drops the instance connection.
    c = connect(s.port, 10)
    c.sendall(request_bytes("GET", "/endless"))
    got = 0
    while got < 4 << 20:
        data = c.recv(1 << 16)
        assert data
        got += len(data)
    c.close()
    s.st.wait_until(lambda: s.ev.conns_open == 0, 5,
                    "the instance connection closed after the client left")
    # A client that stops reading: the proxy stops reading the instance (its memory stays
    # bounded) and closes both once nothing moved for idle_timeout_ms.
    c = connect(s.port, 10)
    c.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 65536)
    c.sendall(request_bytes("GET", "/endless"))
    time.sleep(1.0)
    rss0 = rss_kb(s.proc.pid)
    time.sleep(0.5)
    assert rss_kb(s.proc.pid) - rss0 < 4096, "the proxy buffers an endless body it cannot send"
    s.st.wait_until(lambda: s.ev.conns_open == 0, 8,
                    "both sides closed once the client stalled past idle_timeout_ms")
    c.close()
    s.assert_alive()
    s.wait_fds(base)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_many_faults_no_fd_leak(stack):
    """Rounds of every fault at once, from several clients: afterwards the proxy holds what
    it held before."""
    s = stack
    s.set_pool({"evil": s.ev.addr})
    assert http_request(s.port, "GET", "/echo").status == 200
    time.sleep(2.5)  # the upstream idle timeout (2 s here) empties the idle pool
    base = s.fds()
    paths = ["/close-mid", "/close-chunked-mid", "/garbage", "/bad-length", "/never",
             "/close-before", "/drip-body", "/echo", "/endless", "/trailers", "/eof-body"]
    errors = []

    def one(path):
        try:
            c = connect(s.port, 6)
            c.sendall(request_bytes("GET", path))
            rd = Reader(c)
            if path == "/endless":
                rd.exact(100000)
            else:
                try:
                    rd.response()
                except EOFError:
                    pass
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append((path, repr(e)))

    for _ in range(3):
        threads = [threading.Thread(target=one, args=(p,)) for p in paths for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    assert not errors, errors
    s.assert_alive()
    s.wait_fds(base + 1, timeout=10)  # at most the one idle keep-alive connection
    s.st.wait_until(lambda: s.fds() <= base, 10, "every instance connection closed")
    assert http_request(s.port, "GET", "/echo").status == 200
