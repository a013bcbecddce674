"""chaos_load.py - the chaos suite's open-loop load generator: requests at a fixed rate through
the proxy whatever the answers, each one's outcome and times recorded.

Request k is due at t0 + k / rate (open loop: a fault does not slow the offered load down);
THREADS workers each keep one keep-alive connection. Every request ends as one of:

- "ok": a 2xx answer.
- "refused": connect() got ECONNREFUSED. Nothing listened on the proxy's port (a proxy being
  restarted), so the request was never accepted by anyone; counted apart from failures.
- "failed": anything else: the connection was accepted (or reused) and then the answer was not
  a 2xx, or the connection broke or timed out before a whole answer came.

A keep-alive connection the server has already closed (a proxy that drains on SIGTERM closes
its idle connections; a killed one's connections are reset) is found before a request is
written on it: the socket is readable and a peek reads EOF or an error. The worker then opens a
new connection for that request, as any HTTP client does with a stale pooled connection, and
the request is judged on the new one (refused if nothing listens yet). So a request counts as
failed only when it was written on a connection that was open at the time: one the proxy had
accepted and had not closed.
"""

import errno
import http.client
import select
import socket
import threading
import time


class Outcome:
    __slots__ = ("t", "t_end", "kind", "status", "instance", "error", "reused")

    def __init__(self, t, t_end, kind, status, instance, error, reused):
        self.t = t              # monotonic time the request was due to be sent (and was)
        self.t_end = t_end      # monotonic time its outcome was known
        self.kind = kind        # "ok", "refused" or "failed"
        self.status = status    # the HTTP status, or None
        self.instance = instance
        self.error = error      # None, or "ExceptionType: text"
        self.reused = reused    # written on a kept-alive connection


def _closed_by_peer(sock):
    """True when the server has closed (or reset) the idle connection sock."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""  # data on an idle connection: also bad
    except OSError:
        return True


class ChaosLoad:
    def __init__(self, port, rate, threads=6, timeout=8.0, path="/"):
        self.port = port
        self.rate = float(rate)
        self.threads_n = threads
        self.timeout = timeout
        self.path = path
        self.outcomes = []
        self.stale_reconnects = 0  # kept-alive connections found closed before a request
        self._lock = threading.Lock()
        self._sched = threading.Lock()
        self._next_t = None
        self._stop = threading.Event()
        self._threads = []

    def start(self):
        self._next_t = time.monotonic()
        for i in range(self.threads_n):
            t = threading.Thread(target=self._worker, name="chaos-load-%d" % i, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 2)
        self._threads = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _take_slot(self):
        """The due time of this thread's next request (waited for), or None when stopping.
        Slots are never skipped: a request due while every worker was busy goes out late and
        its lateness shows in its outcome's t."""
        with self._sched:
            due = self._next_t
            self._next_t += 1.0 / self.rate
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= due:
                return due
            self._stop.wait(min(due - now, 0.05))
        return None

    def _connect(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _worker(self):
        conn = None
        while True:
            if self._take_slot() is None:
                break
            t0 = time.monotonic()
            reused = conn is not None
            if reused and _closed_by_peer(conn.sock):
                conn.close()
                conn = None
                reused = False
                with self._lock:
                    self.stale_reconnects += 1
            kind = status = instance = error = None
            if conn is None:
                try:
                    conn = self._connect()
                except ConnectionRefusedError as e:
                    kind, error = "refused", "%s: %s" % (type(e).__name__, e)
                except OSError as e:
                    kind = "refused" if e.errno == errno.ECONNREFUSED else "failed"
                    error = "%s: %s" % (type(e).__name__, e)
                if kind is not None:
                    conn = None
            if kind is None:
                try:
                    conn.request("GET", self.path, headers={"Connection": "keep-alive"})
                    resp = conn.getresponse()
                    resp.read()
                    status = resp.status
                    instance = resp.getheader("X-Instance")
                    kind = "ok" if 200 <= status < 300 else "failed"
                    if resp.will_close:
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException) as e:
                    kind, error = "failed", "%s: %s" % (type(e).__name__, e)
                    conn.close()
                    conn = None
            with self._lock:
                self.outcomes.append(Outcome(t0, time.monotonic(), kind, status, instance,
                                             error, reused))
        if conn is not None:
            conn.close()

    def count(self):
        with self._lock:
            return len(self.outcomes)

    def all(self):
        with self._lock:
            return list(self.outcomes)

    def wait_more(self, n, timeout):
        """Waits until n more outcomes than now are recorded; False on timeout."""
        goal = self.count() + n
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.count() >= goal:
                return True
            time.sleep(0.05)
        return False


def summarize(outcomes):
    by_kind = {"ok": 0, "refused": 0, "failed": 0}
    by_status = {}
    by_instance = {}
    for o in outcomes:
        by_kind[o.kind] += 1
        if o.status is not None:
            by_status[o.status] = by_status.get(o.status, 0) + 1
        if o.instance is not None:
            by_instance[o.instance] = by_instance.get(o.instance, 0) + 1
    failures = [o for o in outcomes if o.kind == "failed"]
    return {
        "total": len(outcomes), "ok": by_kind["ok"], "refused": by_kind["refused"],
        "failed": by_kind["failed"], "by_status": by_status, "by_instance": by_instance,
        "first_failures": [(round(o.t, 3), o.status, o.error, "reused" if o.reused else "new")
                           for o in failures[:10]],
    }
