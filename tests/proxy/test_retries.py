"""test_retries.py - retries and failures that are the proxy's own (issue 9): a request that
may have reached the instance is not sent twice unless it is idempotent (or
proxy.retry_non_idempotent is on); an instance that joins the pool is used at once even when an
earlier one at its address was marked down."""

import time

import evil
import harness
from proxyharness import Reader, connect, http_request, request_bytes


class ClosesReused(evil.EvilServer):
    """Answers /close-reused with 200 on a fresh connection; on a connection that served a
    request before it reads the request, then closes without a byte: the keep-alive race, as
    seen from the proxy, with the request delivered."""

    def dispatch(self, conn, req):
        served = getattr(conn, "served", 0)
        conn.served = served + 1
        if req.path.startswith("/close-reused") and served > 0:
            return False
        conn.send(evil.response(200, b"ok " + req.method.encode()))
        return True


def closes_reused_stack(proxy_stack, **overrides):
    s = proxy_stack(workers=1, **overrides)
    s.ev = ClosesReused(0, "evil")
    s.evils.append(s.ev)
    s.start({"evil": s.ev.addr})
    return s


def one_on_reused(s, method, path, body=b""):
    """A warm-up GET leaves one idle upstream connection; then method path goes out on it."""
    c = connect(s.port, 8)
    rd = Reader(c)
    c.sendall(request_bytes("GET", "/warm"))
    assert rd.response().status == 200
    c.sendall(request_bytes(method, path, body=body))
    r = rd.response()
    c.close()
    return r


def test_post_on_reused_connection_not_sent_twice(proxy_stack):
    s = closes_reused_stack(proxy_stack)
    r = one_on_reused(s, "POST", "/close-reused?p", body=b"pay once")
    assert r.status == 502, r
    assert s.ev.count("/close-reused?p") == 1, s.ev.paths()
    # A GET in the same spot is retried on a fresh connection and answered.
    r = one_on_reused(s, "GET", "/close-reused?g")
    assert r.status == 200 and r.body == b"ok GET", r
    assert s.ev.count("/close-reused?g") == 2, s.ev.paths()
    s.assert_alive()


def test_post_retried_when_configured(proxy_stack):
    s = closes_reused_stack(proxy_stack, retry_non_idempotent="on")
    r = one_on_reused(s, "POST", "/close-reused?p", body=b"pay twice")
    assert r.status == 200 and r.body == b"ok POST", r
    assert s.ev.count("/close-reused?p") == 2, s.ev.paths()
    s.assert_alive()


def test_joining_instance_usable_at_once(proxy_stack):
    """A down mark belongs to the pool entry that earned it: an entry that stays in the pool
    keeps it (until a probe), one that joins (a replacement at the address, or the same name
    back after it left) is used at once, not after the next probe."""
    s = proxy_stack(workers=1, down_backoff_ms=8000, down_backoff_max_ms=8000)
    port = harness.free_port()
    addr = "127.0.0.1:%d" % port
    s.start({"production0": addr})
    assert http_request(s.port, "GET", "/echo?dead").status == 502
    assert 'msg="instance down" instance=production0' in s.log()
    other = s.evil("other")
    s.set_pool({"production0": addr, "other": other.addr})
    back = s.evil("production0", port=port)  # listening again, but no probe for 8 s
    for i in range(10):
        assert http_request(s.port, "GET", "/echo?kept%d" % i).status == 200
    assert back.count("/echo?kept") == 0, "an instance still marked down got requests"
    # Replaced at the same address under a new name: used at once.
    s.set_pool({"production1": addr, "other": other.addr})
    t0 = time.monotonic()
    for i in range(20):
        assert http_request(s.port, "GET", "/echo?new").status == 200
    assert back.count("/echo?new") > 0, "the replacement got no request"
    # Marked down again, out of the pool, back under its old name: used at once too.
    port2 = harness.free_port()
    addr2 = "127.0.0.1:%d" % port2
    s.set_pool({"production2": addr2})
    assert http_request(s.port, "GET", "/echo?dead2").status == 502
    assert 'msg="instance down" instance=production2' in s.log()
    s.set_pool({"other": other.addr})
    back2 = s.evil("production2", port=port2)
    s.set_pool({"production2": addr2, "other": other.addr})
    for i in range(20):
        assert http_request(s.port, "GET", "/echo?again").status == 200
    assert back2.count("/echo?again") > 0, "the instance back in the pool got no request"
    assert time.monotonic() - t0 < 8, "waited for a probe"
    s.assert_alive()
