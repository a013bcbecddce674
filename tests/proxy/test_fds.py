"""test_fds.py - file descriptors are the proxy's own (issue 9): it raises its soft limit to the
hard one and refuses to start when max_connections cannot fit; when it runs out (here: a hard
limit that holds the clients but not an upstream connection for each), the clients it cannot
serve get 503, no instance is marked down or charged an upstream error, and once connections
close it serves 200 again."""

import threading

import harness
from proxyharness import Reader, connect, next_stats, request_bytes

MAX_CONNECTIONS = 100
IDLE = 2


def need(s):
    """What tide-proxy reserves (proxy/main.c s_fd_limits): clients, idle pools, fixed."""
    return MAX_CONNECTIONS + 1 * IDLE * s.st.cfg["scaler"]["max"] + 64 + 8 * 1


def start_limited(s, nofile, pool, wait=True):
    s.st.start_redis()
    s.set_pool(pool, wait=False)
    argv = ["prlimit", "--nofile=%d:%d" % (nofile, nofile), harness.binary("tide-proxy"), "-c",
            s.st.config_path, "--id", "proxy-" + s.st.name]
    s.proc = s.st.start("proxy", argv, expect_exit0=wait, long_running=wait)
    if wait:
        s.st.wait_until(lambda: 'msg="started"' in s.proc.stderr(), 10, "tide-proxy started")
        s.wait_pool()


def test_refuses_when_clients_cannot_fit(proxy_stack):
    s = proxy_stack(workers=1, max_connections=MAX_CONNECTIONS, upstream_idle_per_instance=IDLE)
    ev = s.evil("evil")
    start_limited(s, need(s) - 1, {"evil": ev.addr}, wait=False)
    s.st.wait_until(lambda: not s.proc.alive(), 10, "tide-proxy refused to start",
                    check_alive=False)
    assert s.proc.returncode not in (None, 0)
    assert "open files limit cannot hold proxy.max_connections" in s.proc.stderr()


def test_out_of_fds_is_503_and_nobody_blamed(proxy_stack):
    s = proxy_stack(workers=1, max_connections=MAX_CONNECTIONS, upstream_idle_per_instance=IDLE,
                    response_timeout_ms=10000)
    ev = s.evil("evil")
    sub = s.stats_sub()
    n = need(s)
    start_limited(s, n, {"evil": ev.addr})
    assert "new=%d" % n in s.log()
    assert "not every client can have a request in flight at once" in s.log()
    # Every client connects first (the limit holds them all), then all ask for a slow answer:
    # the upstream connections run out of descriptors before the requests do.
    socks = [connect(s.port, 20) for _ in range(MAX_CONNECTIONS - 5)]
    statuses, errors = [], []
    lock = threading.Lock()

    def ask(c):
        try:
            c.sendall(request_bytes("GET", "/slow?ms=1500"))
            r = Reader(c).response()
            with lock:
                statuses.append(r.status)
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(repr(e))
        finally:
            c.close()

    threads = [threading.Thread(target=ask, args=(c,)) for c in socks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) > 0, "the limit never bit: %r" % statuses
    assert statuses.count(200) > 0, statuses
    log = s.log()
    assert 'msg="instance down"' not in log, "a healthy instance was marked down"
    # The instance is charged nothing; the 503s are counted as the proxy's own answers.
    st = None
    for _ in range(30):
        st = next_stats(sub)
        if st and st["totals"]["status_5xx"] >= statuses.count(503):
            break
    assert st and st["instances"]["evil"]["counters"]["upstream_errors"] == 0, st
    assert st["totals"]["upstream_errors"] == 0, st
    # Once the connections closed, everything is served again.
    for i in range(5):
        c = connect(s.port, 5)
        c.sendall(request_bytes("GET", "/echo?after%d" % i))
        assert Reader(c).response().status == 200
        c.close()
    s.assert_alive()
    sub.close()
