"""proxyharness.py - tide-proxy alone in front of test upstreams, for tests/proxy.

A ProxyStack is tests/integration/harness.Stack (temp dir, free ports, tide.yml, a real
redis-server, every process stopped by PID and its log checked for sanitizer reports at the
end) used for one tide-proxy whose pool the test writes straight into Redis, as the scaler
would. Upstreams are tide-sample-app instances (started here) and evil.EvilServer threads.

Also: raw-socket HTTP helpers (the tests must see exact bytes, and send broken ones), the
proxy's open file descriptors, and a small protobuf decoder for the ProxyStats it publishes.
"""

import os
import re
import signal
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import harness  # noqa: E402
import zmq  # noqa: E402


class ProxyStack:
    def __init__(self, name, workers=1, **proxy_overrides):
        self.st = harness.Stack(name)
        proxy = self.st.cfg["proxy"]
        proxy.update({"workers": workers, "pool_poll_ms": 100, "stats_interval_ms": 100,
                      "connect_timeout_ms": 500, "response_timeout_ms": 3000,
                      "down_backoff_ms": 200, "down_backoff_max_ms": 1000})
        proxy.update(proxy_overrides)
        self.st.write_config()
        self.port = self.st.ports["proxy"]
        self.proc = None
        self.version = 0
        self.apps = []
        self.evils = []

    # ---- lifecycle ----

    def start(self, pool=None, env=None):
        self.st.start_redis()
        if pool is not None:
            self.set_pool(pool, wait=False)
        argv = [harness.binary("tide-proxy"), "-c", self.st.config_path, "--id",
                "proxy-" + self.st.name]
        self.proc = self.st.start("proxy", argv, env=env)
        self.st.wait_until(lambda: 'msg="started"' in self.proc.stderr(), 10,
                           "tide-proxy has started (every worker listening)")
        if pool:
            self.wait_pool()
        return self

    def close(self, failed=False):
        for e in self.evils:
            e.stop()
        problems = self.st.close(failed=failed)
        return problems + tsan_reports(self.st.procs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        problems = self.close()
        if problems and exc[0] is None:
            raise AssertionError("teardown problems:\n" + "\n".join(problems))

    # ---- the pool ----

    def set_pool(self, pool, wait=True):
        """pool: {name: "ip:port"}. Written as the scaler does: one MULTI/EXEC."""
        r = self.st.redis
        pipe = r.pipeline(transaction=True)
        pipe.delete(self.st.key("pool"))
        if pool:
            pipe.hset(self.st.key("pool"), mapping=pool)
        pipe.incr(self.st.key("pool_version"))
        pipe.set(self.st.key("instances"), len(pool))
        self.version = pipe.execute()[-2]
        if wait:
            self.wait_pool()

    def wait_pool(self):
        """Waits until the proxy has logged the current pool version (it polls every 100 ms)."""
        want = "version=%d " % self.version
        self.st.wait_until(lambda: want in self.proc.stderr(), 10,
                           "the proxy applies pool version %d" % self.version)
        time.sleep(0.05)  # the watcher logs before the workers apply it

    # ---- upstreams ----

    def sample_app(self, name, *args):
        """Starts tide-sample-app on a free port; returns its "ip:port"."""
        port = harness.free_port()
        argv = [harness.binary("tide-sample-app"), "--listen", "127.0.0.1:%d" % port,
                "--name", name] + list(args)
        p = self.st.start("app-" + name, argv)
        self.st.wait_until(lambda: harness.port_answers(port), 10, "%s listens" % name)
        self.apps.append(p)
        return "127.0.0.1:%d" % port

    def evil(self, name="evil", port=0):
        import evil
        e = evil.EvilServer(port, name)
        self.evils.append(e)
        return e

    # ---- observation ----

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def sockets(self):
        n = 0
        for fd in os.listdir("/proc/%d/fd" % self.proc.pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (self.proc.pid, fd)).startswith("socket:"):
                    n += 1
            except OSError:
                pass
        return n

    def wait_fds(self, want, timeout=10):
        """Waits until the proxy holds at most want file descriptors."""
        return self.st.wait_until(lambda: self.fds() <= want, timeout,
                                  "the proxy holds at most %d fds (now %d)" % (want, self.fds()))

    def sigterm(self):
        """SIGTERM to the proxy, on purpose (teardown then expects it gone)."""
        self.proc.stopped_by_harness = True
        self.proc.signal(signal.SIGTERM)

    def assert_alive(self):
        assert self.proc.alive(), "tide-proxy died:\n" + self.proc.tail(60)

    def log(self):
        return self.proc.stderr()

    def get(self, path="/", timeout=5.0):
        return http_request(self.port, "GET", path, timeout=timeout)

    def stats_sub(self):
        """A SUB socket bound where the proxy publishes (endpoints.stats), as tide-metrics: with
        its key when bus.curve is on."""
        ctx = zmq.Context.instance()
        s = harness.bus_secure(ctx.socket(zmq.SUB), self.st.keys_dir, "metrics")
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SUBSCRIBE, b"stats")
        s.bind(self.st.endpoint("stats"))
        return s


def tsan_reports(procs):
    """The ThreadSanitizer reports of procs, as teardown problems. tests/tsan runs this suite
    with TSAN_OPTIONS=...log_path=P, so an instrumented process writes them to P.<pid> rather
    than among its log lines; without log_path (the ASan build) there is nothing to look at."""
    prefix = None
    for opt in re.split(r"[\s:,]+", os.environ.get("TSAN_OPTIONS", "")):
        if opt.startswith("log_path="):
            prefix = opt[len("log_path="):]
    out = []
    for p in procs if prefix else []:
        path = "%s.%d" % (prefix, p.pid)
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                out.append("%s (pid %d): ThreadSanitizer report in %s:\n%s" % (
                    p.name, p.pid, path, f.read()[:6000]))
    return out


# ---- raw HTTP ---------------------------------------------------------------------------

def connect(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Response:
    def __init__(self, status, reason, headers, body, raw_head, trailers=None):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value)
        self.body = body
        self.raw_head = raw_head
        self.trailers = trailers or []

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def has(self, name):
        return self.header(name) is not None

    def __repr__(self):
        return "<Response %s %r body=%r>" % (self.status, self.headers, self.body[:200])


class Reader:
    """Reads HTTP/1.x responses from a socket, keeping what is read past one."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _more(self):
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            raise EOFError("connection closed with %d bytes unread: %r" % (
                len(self.buf), self.buf[:200]))
        self.buf += data

    def until(self, sep):
        while sep not in self.buf:
            self._more()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exact(self, n):
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def rest(self):
        """Everything until the close."""
        try:
            while True:
                self._more()
        except EOFError:
            pass
        out, self.buf = self.buf, b""
        return out

    def response(self, head_only=False):
        """One response; interim 1xx ones are skipped (and kept in self.interim)."""
        self.interim = []
        while True:
            raw = self.until(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            status = int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            headers = []
            for ln in lines[1:]:
                if ln:
                    k, v = ln.split(":", 1)
                    headers.append((k.strip(), v.strip()))
            if 100 <= status < 200 and status != 101:
                self.interim.append(status)
                continue
            break
        r = Response(status, reason, headers, b"", raw)
        if head_only or status in (101, 204, 304):
            return r
        te = (r.header("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            body = b""
            while True:
                line = self.until(b"\r\n")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:
                        t = self.until(b"\r\n")
                        if t == b"\r\n":
                            break
                        k, v = t.decode("latin-1").split(":", 1)
                        r.trailers.append((k.strip(), v.strip()))
                    break
                body += self.exact(size + 2)[:-2]
            r.body = body
        elif r.header("Content-Length") is not None:
            r.body = self.exact(int(r.header("Content-Length")))
        else:
            r.body = self.rest()
        return r


def request_bytes(method, path, headers=None, body=b"", version="HTTP/1.1", host="tide.test"):
    hs = [("Host", host)] if host else []
    hs += list(headers or [])
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    head = "%s %s %s\r\n" % (method, path, version)
    head += "".join("%s: %s\r\n" % kv for kv in hs)
    return head.encode() + b"\r\n" + body


def http_request(port, method, path, headers=None, body=b"", timeout=5.0, version="HTTP/1.1"):
    """One request on a fresh connection; returns the Response (or raises)."""
    s = connect(port, timeout)
    try:
        s.sendall(request_bytes(method, path, headers, body, version))
        return Reader(s).response(head_only=method == "HEAD")
    finally:
        s.close()


def closed_by_peer(sock, timeout=3.0):
    """True when the peer closes (EOF or reset) within timeout, reading and dropping data."""
    sock.settimeout(timeout)
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


# ---- protobuf (ProxyStats) ------------------------------------------------------------------

def pb_decode(data):
    """{field number: [values]}: varints as int, length-delimited as bytes."""
    out = {}
    for num, v in harness.pb_fields(data):
        out.setdefault(num, []).append(v)
    return out


COUNTER_FIELDS = {1: "requests", 2: "status_1xx", 3: "status_2xx", 4: "status_3xx",
                  5: "status_4xx", 6: "status_5xx", 7: "upstream_errors", 8: "bytes_in",
                  9: "bytes_out"}


def counters(raw):
    f = pb_decode(raw)
    return {name: f.get(num, [0])[0] for num, name in COUNTER_FIELDS.items()}


def proxy_stats(payload):
    """The parts of a ProxyStats the tests look at."""
    f = pb_decode(payload)
    out = {"totals": counters(f.get(4, [b""])[0]), "in_flight": f.get(5, [0])[0],
           "connections": f.get(8, [0])[0], "pool_version": f.get(3, [0])[0], "instances": {}}
    for raw in f.get(6, []):
        i = pb_decode(raw)
        name = i[1][0].decode()
        out["instances"][name] = {"counters": counters(i.get(3, [b""])[0]),
                                  "in_flight": i.get(4, [0])[0]}
    return out


def next_stats(sub, timeout=3.0):
    """The next ProxyStats received on sub, decoded (None when none came in time)."""
    if not sub.poll(int(timeout * 1000)):
        return None
    frames = sub.recv_multipart()
    return proxy_stats(frames[1])
