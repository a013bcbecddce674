"""load.py - open-loop HTTP load generator for the integration tests.

N worker threads, each with its own keep-alive http.client connection, share one schedule:
request k is due at t0 + k / rate, whatever happened to the earlier ones (open loop), so a
slow system does not slow the offered load down. Requests whose due time passed more than
max_late seconds ago (every thread was busy, or the machine stalled) are skipped and counted,
not sent in a burst: a catch-up burst would raise the short-window rate the scaler reacts to
above the rate the test asked for. Every response is counted by status and by its X-Instance
header; every connection error and timeout is a failure. stats() and since(mark) give counts
for the whole run or since a mark.
"""

import http.client
import socket
import threading
import time


class Result:
    __slots__ = ("t", "status", "instance", "error", "latency")

    def __init__(self, t, status, instance, error, latency):
        self.t = t              # monotonic time the request was sent
        self.status = status    # int, or None on error
        self.instance = instance
        self.error = error      # None, or "ExceptionType: text"
        self.latency = latency


class Load:
    def __init__(self, host, port, rate, threads=16, timeout=10.0, path="/", max_late=0.25):
        self.host = host
        self.port = port
        self.rate = float(rate)
        self.threads_n = threads
        self.timeout = timeout
        self.path = path
        self.results = []
        self.max_late = max_late
        self.late = 0     # requests sent more than 100 ms after their due time
        self.skipped = 0  # requests not sent: due more than max_late ago
        self._lock = threading.Lock()
        self._sched = threading.Condition()
        self._next_t = None
        self._stop = threading.Event()
        self._threads = []

    # ---- control ----

    def start(self):
        with self._sched:
            self._next_t = time.monotonic()
        for i in range(self.threads_n):
            t = threading.Thread(target=self._worker, name="load-%d" % i, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def set_rate(self, rate):
        with self._sched:
            self.rate = float(rate)
            self._next_t = max(self._next_t or 0, time.monotonic())
            self._sched.notify_all()

    def stop(self):
        self._stop.set()
        with self._sched:
            self._sched.notify_all()
        for t in self._threads:
            t.join(self.timeout + 2)
        self._threads = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- the workers ----

    def _take_slot(self):
        """Blocks until this thread's next request is due; returns its due time or None."""
        with self._sched:
            while not self._stop.is_set() and self.rate <= 0:
                self._sched.wait(0.2)
            if self._stop.is_set():
                return None
            now = time.monotonic()
            if now - self._next_t > self.max_late:
                self.skipped += int((now - self._next_t) * self.rate)
                self._next_t = now
            due = self._next_t
            self._next_t += 1.0 / self.rate
        while True:
            now = time.monotonic()
            if now >= due or self._stop.is_set():
                break
            self._stop.wait(min(due - now, 0.05))
        if self._stop.is_set():
            return None
        return due

    def _worker(self):
        conn = None
        while True:
            due = self._take_slot()
            if due is None:
                break
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            t0 = time.monotonic()
            if t0 - due > 0.1:
                with self._lock:
                    self.late += 1
            status = instance = error = None
            try:
                conn.request("GET", self.path, headers={"Connection": "keep-alive"})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                instance = resp.getheader("X-Instance")
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, socket.timeout) as e:
                error = "%s: %s" % (type(e).__name__, e)
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
                conn = None
            r = Result(t0, status, instance, error, time.monotonic() - t0)
            with self._lock:
                self.results.append(r)
        if conn is not None:
            conn.close()

    # ---- results ----

    def mark(self):
        """A position in the results, for since()."""
        with self._lock:
            return len(self.results)

    def since(self, mark=0, until=None):
        with self._lock:
            rs = self.results[mark:until]
        return summarize(rs)

    def stats(self):
        return self.since(0)

    def wait_count(self, n, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if len(self.results) >= n:
                    return True
            time.sleep(0.05)
        return False


def summarize(rs):
    by_status = {}
    by_instance = {}
    errors = {}
    failures = []
    for r in rs:
        if r.error is not None:
            key = r.error.split(":", 1)[0]
            errors[key] = errors.get(key, 0) + 1
            failures.append(r)
            continue
        by_status[r.status] = by_status.get(r.status, 0) + 1
        if r.instance is not None:
            by_instance[r.instance] = by_instance.get(r.instance, 0) + 1
        if not 200 <= r.status < 300:
            failures.append(r)
    lat = sorted(r.latency for r in rs if r.error is None)
    slow = sorted((r for r in rs if r.error is None), key=lambda r: -r.latency)[:5]
    return {
        "total": len(rs),
        "ok": sum(v for k, v in by_status.items() if 200 <= k < 300),
        "failed": len(failures),
        "by_status": by_status,
        "by_instance": by_instance,
        "errors": errors,
        "first_failures": [(round(f.t, 3), f.status, f.error) for f in failures[:10]],
        "p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1) if lat else None,
        "max_ms": round(lat[-1] * 1000, 1) if lat else None,
        # the slowest: (monotonic send time, ms, status, instance)
        "slowest": [(round(r.t, 2), round(r.latency * 1000), r.status, r.instance)
                    for r in slow],
    }


def results_after(load, t):
    """Results sent at or after monotonic time t, summarized."""
    with load._lock:
        rs = [r for r in load.results if r.t >= t]
    return summarize(rs)
