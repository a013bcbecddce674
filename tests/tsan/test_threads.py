"""test_threads.py - every thread of tide-proxy busy at once, for the TSan build: four workers
serve fresh and keep-alive connections while the pool watcher hands them pool after pool
(instances leaving, coming back, new names for known addresses), the stats publisher sums
every slot for a subscriber, and SIGTERM drains the proxy under load. The other suites mostly
run one worker and change the pool while idle; this one is for the interleavings TSan checks.
It asserts that every answer before SIGTERM is a 200 from an instance and that the proxy exits
0; any TSan report fails it at teardown."""

import threading

from proxyharness import Reader, connect, next_stats, request_bytes

CHANGES = 25


def client(port, stop, statuses, errors):
    """Until stop: five requests on one keep-alive connection, then one on a fresh one."""
    while not stop.is_set():
        try:
            c = connect(port)
            rd = Reader(c)
            for i in range(5):
                c.sendall(request_bytes("GET", "/?i=%d" % i))
                statuses.append(rd.response().status)
            c.close()
            c = connect(port)
            c.sendall(request_bytes("GET", "/fresh", [("Connection", "close")]))
            statuses.append(Reader(c).response().status)
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))


def test_threads_under_load(proxy_stack):
    s = proxy_stack(workers=4, stats_interval_ms=50, drain_timeout_ms=5000)
    apps = {n: s.sample_app(n) for n in ("a", "b", "c")}
    s.start({"a": apps["a"]})
    sub = s.stats_sub()
    stop = threading.Event()
    statuses, errors = [], []
    threads = [threading.Thread(target=client, args=(s.port, stop, statuses, errors))
               for _ in range(6)]
    for t in threads:
        t.start()
    seen = set()
    try:
        for k in range(CHANGES):
            names = ("a", "b", "c")[k % 3:]
            pool = {n: apps[n] for n in names}
            if k % 4 == 0:
                pool["alias%d" % k] = apps["a"]  # a new stats record while others are read
            s.set_pool(pool)
            st = next_stats(sub, timeout=0.2)
            if st:
                seen |= set(st["instances"])
        assert not errors, errors[:3]
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
        assert {"a", "b", "c"} <= seen, seen
        # SIGTERM while the clients keep sending: drain with requests in flight.
        s.sigterm()
        rc = s.proc.popen.wait(15)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        sub.close()
    assert rc == 0, s.proc.tail(40)
    assert 'msg="stopped"' in s.log()
