"""test_workers.py - workers and stats (issue 4, "Workers"): `workers` left out means one per
core, each worker has its own SO_REUSEPORT listener, the counters of every worker add up in one
ProxyStats (per instance too, and tide's own 4xx/5xx), and `proxy.stats: off` publishes
nothing while the proxy serves as usual."""

import os
import threading

from proxyharness import Reader, connect, http_request, next_stats, request_bytes


def listeners(port):
    """LISTEN sockets on 127.0.0.1:port, from /proc/net/tcp."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


def test_workers_auto(proxy_stack):
    s = proxy_stack()
    del s.st.cfg["proxy"]["workers"]  # the default: auto
    s.st.write_config()
    ev = s.evil()
    s.start({"evil": ev.addr})
    cores = os.sysconf("SC_NPROCESSORS_ONLN")
    assert "workers=%d " % cores in s.log(), s.log()
    assert listeners(s.port) == cores  # one SO_REUSEPORT listener per worker


def test_stats_merged_across_workers(proxy_stack):
    s = proxy_stack(workers=2, max_body_size=10)
    a = s.evil("a")
    b = s.evil("b")
    s.start({"a": a.addr, "b": b.addr})
    assert listeners(s.port) == 2
    sub = s.stats_sub()
    errors = []

    def client(n):
        try:
            for _ in range(n):  # a connection each: SO_REUSEPORT spreads them over the workers
                c = connect(s.port)
                c.sendall(request_bytes("GET", "/echo"))
                if Reader(c).response().status != 200:
                    errors.append("status")
                c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(25,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    # tide's own answers count too: 413 (4xx) and, with no instance, 503 (5xx).
    for _ in range(3):
        assert http_request(s.port, "POST", "/echo", body=b"x" * 100).status == 413
    s.set_pool({})
    for _ in range(2):
        assert http_request(s.port, "GET", "/echo").status == 503

    def settled():
        st = next_stats(sub)
        return st if st and st["totals"]["requests"] == 205 else None
    st = s.st.wait_until(settled, 5, "ProxyStats counts every request")
    t = st["totals"]
    assert t["status_2xx"] == 200 and t["status_4xx"] == 3 and t["status_5xx"] == 2, t
    per = {k: v["counters"]["requests"] for k, v in st["instances"].items()}
    assert per["a"] + per["b"] == 200 and per["a"] > 50 and per["b"] > 50, per
    assert per["a"] == a.count("/echo") and per["b"] == b.count("/echo")
    sub.close()


def test_stats_off(proxy_stack):
    s = proxy_stack(stats="off")
    ev = s.evil()
    sub = s.stats_sub()
    s.start({"evil": ev.addr})
    assert "stats=off" in s.log()
    for _ in range(20):
        assert http_request(s.port, "GET", "/echo").status == 200
    assert next_stats(sub, timeout=1.5) is None
    sub.close()


def test_stats_on(proxy_stack):
    s = proxy_stack(stats="on")
    ev = s.evil()
    sub = s.stats_sub()
    s.start({"evil": ev.addr})
    for _ in range(20):
        assert http_request(s.port, "GET", "/echo").status == 200
    st = s.st.wait_until(lambda: (lambda m: m if m and m["totals"]["requests"] == 20
                                  else None)(next_stats(sub)), 5, "stats published")
    assert st["instances"]["evil"]["counters"]["status_2xx"] == 20
    sub.close()
