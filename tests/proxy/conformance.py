"""conformance.py - the pieces of the HTTP/1.1 conformance suite (test_conformance.py).

Recorder: the deliberately lenient instance every proxy forwards to. It records, per upstream
connection, every byte it receives, and it frames requests the way careless servers do, so
that a proxy which passes on an ambiguous message desynchronises it where a strict one would
not: lines end at LF (a CR before it is dropped, a bare CR is an ordinary byte), a field name
is everything before the first colon (so "Content-Length : 5" is not a length to it), a
Content-Length is its leading digits (none: 0), Transfer-Encoding counts only when its whole
value is "chunked" (anything else is ignored and the Content-Length used), a chunk size is its
leading hex digits, obs-fold lines are read as fields of their own, and the connection is kept
after every answer (also after one to a garbled request). Each request it frames gets
"200, answer to <target>", so a client that receives an answer to another target has been
handed somebody else's response.

strict_parse: the reference reading of what reached the recorder (RFC 9112 sections 2-7,
RFC 9110 5.x): a proxy that forwards is judged on whether the bytes it sent are a sequence of
valid requests.

Peers: nginx and HAProxy from Debian, configured as reverse proxies with upstream keep-alive
(and HAProxy reusing idle server connections across clients), so that a desynchronised
upstream connection is handed to the next client just as tide-proxy would hand it.
"""

import os
import pwd
import re
import socket
import subprocess
import threading
import time

# ---- the lenient recording instance --------------------------------------------------------


class Recorder:
    """Listens on 127.0.0.1 (an ephemeral port) in background threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.streams = []  # one bytearray per accepted connection, in accept order
        self.framed = []   # (connection index, target) of every request it framed
        self.socks = []
        self.stopping = False
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(128)
        self.port = self.ls.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                sock, _ = self.ls.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                idx = len(self.streams)
                self.streams.append(bytearray())
                self.socks.append(sock)
            threading.Thread(target=self._serve, args=(sock, idx), daemon=True).start()

    def mark(self):
        """A point in what was received, for since()."""
        with self.lock:
            return [len(s) for s in self.streams]

    def since(self, mark):
        """The bytes received after mark, per connection (those with none left out)."""
        with self.lock:
            out = []
            for i, s in enumerate(self.streams):
                start = mark[i] if i < len(mark) else 0
                if len(s) > start:
                    out.append(bytes(s[start:]))
            return out

    def drop_connections(self):
        """Closes every upstream connection, so the next case starts on fresh ones."""
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def stop(self):
        self.stopping = True
        self.ls.close()
        self.drop_connections()

    # ---- serving ----

    def _serve(self, sock, idx):
        buf = bytearray()

        def more():
            data = sock.recv(65536)
            if not data:
                raise EOFError
            with self.lock:
                self.streams[idx] += data
            buf.extend(data)

        def line():
            while b"\n" not in buf:
                more()
            i = buf.index(b"\n")
            out = bytes(buf[:i])
            del buf[:i + 1]
            return out[:-1] if out.endswith(b"\r") else out

        def exact(n):
            while len(buf) < n:
                more()
            out = bytes(buf[:n])
            del buf[:n]
            return out

        try:
            while True:
                first = line()
                while first == b"":
                    first = line()
                headers = []
                while True:
                    ln = line()
                    if ln == b"":
                        break
                    if b":" in ln:
                        name, value = ln.split(b":", 1)
                        headers.append((name.lower(), value.strip(b" \t")))
                parts = first.split()
                target = parts[1] if len(parts) >= 2 else b"?"
                with self.lock:
                    self.framed.append((idx, target))
                te = [v for k, v in headers if k == b"transfer-encoding"]
                cl = [v for k, v in headers if k == b"content-length"]
                if te and te[0].lower() == b"chunked":
                    while True:
                        m = re.match(rb"[0-9a-fA-F]*", line())
                        size = int(m.group(0), 16) if m.group(0) else 0
                        if size == 0:
                            while line() != b"":
                                pass
                            break
                        exact(size)
                        line()  # whatever ends the chunk's data
                elif cl:
                    m = re.match(rb"\d*", cl[0])
                    exact(int(m.group(0)) if m.group(0) else 0)
                body = b"answer to " + target
                if len(parts) < 3:
                    body = b"garbled request: " + first[:100]
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        except (EOFError, OSError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def upstream_sockets(self):
        """Connections to the recorder still open on the proxies' side (ESTABLISHED or
        CLOSE_WAIT in /proc/net/tcp): 0 once every proxy let go of the dropped ones."""
        n = 0
        want = ":%04X" % self.port
        with open("/proc/net/tcp") as f:
            next(f)
            for row in f:
                cols = row.split()
                if cols[2].endswith(want) and cols[3] in ("01", "08"):
                    n += 1
        return n


class NaiveRelay:
    """The proxy the suite must catch: each client's first read is passed on verbatim over one
    shared upstream connection and one response (framed by Content-Length) is read back for
    it. Only for checking that the harness sees a desync (test_harness_sees_a_desync)."""

    def __init__(self, upstream_port):
        self.up = socket.create_connection(("127.0.0.1", upstream_port))
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.buf = b""
        threading.Thread(target=self._run, daemon=True).start()

    def _response(self):
        while b"\r\n\r\n" not in self.buf:
            data = self.up.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        while len(rest) < n:
            rest += self.up.recv(65536)
        self.buf = rest[n:]
        return head + b"\r\n\r\n" + rest[:n]

    def _run(self):
        while True:
            try:
                c, _ = self.ls.accept()
                with c:
                    data = c.recv(65536)
                    self.up.sendall(data)
                    c.sendall(self._response())
            except (OSError, EOFError, AttributeError):
                return

    def stop(self):
        self.ls.close()
        self.up.close()


# ---- the reference (strict) parser ---------------------------------------------------------

TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                  b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
CODINGS = (b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress")
HOST_RE = re.compile(rb"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(:[0-9]*)?$")
TARGET_RE = re.compile(rb"^[\x21-\x7e]+$")


class Invalid(Exception):
    pass


def is_token(b):
    return len(b) > 0 and all(c in TCHAR for c in b)


def _value_ok(v):
    return all(c == 9 or 0x20 <= c <= 0x7e or c >= 0x80 for c in v)


def _fields(lines, what):
    out = []
    for ln in lines:
        if ln[:1] in (b" ", b"\t"):
            raise Invalid("obs-fold or whitespace-led line in the %s: %r" % (what, ln[:60]))
        name, sep, value = ln.partition(b":")
        if not sep or not is_token(name):
            raise Invalid("field name is not a token in the %s: %r" % (what, ln[:60]))
        value = value.strip(b" \t")
        if not _value_ok(value):
            raise Invalid("control character in field value: %r" % ln[:60])
        out.append((name.lower(), value))
    return out


def _line(data, i, what):
    j = data.find(b"\r\n", i)
    if j < 0:
        raise Invalid("%s not terminated: %r" % (what, data[i:i + 60]))
    return data[i:j], j + 2


def _chunked(data, i):
    body = b""
    while True:
        ln, i = _line(data, i, "chunk size line")
        size, _, ext = ln.partition(b";")
        size = size.rstrip(b" \t")
        if not re.match(rb"^[0-9a-fA-F]{1,15}$", size) or not _value_ok(ext):
            raise Invalid("bad chunk size line %r" % ln[:60])
        n = int(size, 16)
        if n == 0:
            trailers = []
            while True:
                ln, i = _line(data, i, "trailer section")
                if ln == b"":
                    _fields(trailers, "trailer section")
                    return body, i
                trailers.append(ln)
        if len(data) < i + n + 2:
            raise Invalid("chunk data cut short")
        body += data[i:i + n]
        if data[i + n:i + n + 2] != b"\r\n":
            raise Invalid("chunk data not followed by CRLF")
        i += n + 2


def strict_parse(data):
    """The requests in data, read as RFC 9112 says: a list of dicts (method, target,
    version, headers as [(lower name, value)], body). Raises Invalid with the reason at the
    first thing a strict recipient must refuse (or that no sender may generate)."""
    reqs = []
    i = 0
    while i < len(data):
        j = data.find(b"\r\n\r\n", i)
        if j < 0:
            raise Invalid("head not terminated: %r" % data[i:i + 60])
        lines = data[i:j].split(b"\r\n")
        i = j + 4
        for ln in lines:
            if b"\r" in ln or b"\n" in ln or b"\0" in ln:
                raise Invalid("bare CR, LF or NUL in the head: %r" % ln[:60])
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise Invalid("request line is not three words: %r" % lines[0][:60])
        method, target, version = parts
        if not is_token(method):
            raise Invalid("method is not a token: %r" % method)
        if not TARGET_RE.match(target):
            raise Invalid("request target has a control character: %r" % target[:60])
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise Invalid("version %r" % version)
        headers = _fields(lines[1:], "head")
        hosts = [v for k, v in headers if k == b"host"]
        if len(hosts) > 1 or (version == b"HTTP/1.1" and not hosts):
            raise Invalid("%d Host fields" % len(hosts))
        if hosts and not HOST_RE.match(hosts[0]):
            raise Invalid("invalid Host %r" % hosts[0])
        te = [v for k, v in headers if k == b"transfer-encoding"]
        cl = [v for k, v in headers if k == b"content-length"]
        if te:
            if version == b"HTTP/1.0":
                raise Invalid("Transfer-Encoding in an HTTP/1.0 request")
            if cl:
                raise Invalid("both Transfer-Encoding and Content-Length")
            codings = [c.strip(b" \t").lower() for c in b",".join(te).split(b",")]
            if codings[-1] != b"chunked" or codings.count(b"chunked") != 1 or \
                    any(c not in CODINGS for c in codings[:-1]):
                raise Invalid("Transfer-Encoding %r" % b", ".join(te))
            body, i = _chunked(data, i)
        elif cl:
            if len(cl) != 1 or not re.match(rb"^[0-9]{1,15}$", cl[0]):
                raise Invalid("Content-Length %r" % b", ".join(cl))
            n = int(cl[0])
            if len(data) < i + n:
                raise Invalid("body shorter than its Content-Length")
            body, i = data[i:i + n], i + n
        else:
            body = b""
        reqs.append({"method": method, "target": target, "version": version,
                     "headers": headers, "body": body})
    return reqs


def header(req, name):
    for k, v in req["headers"]:
        if k == name:
            return v
    return None


# ---- the raw clients ------------------------------------------------------------------------

def _read_response(sock, deadline):
    """(status, reason) of the first response on sock; "close" when the peer closed (or reset)
    first, "no answer" at the deadline, "garbage" for bytes that are not a status line."""
    buf = b""
    while b"\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return "no answer", None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return "no answer", None
        except ConnectionError:
            return "close", None
        if not data:
            return "close", None
        buf += data
    m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    if not m:
        return "garbage", buf[:80]
    return int(m.group(1)), buf


def _read_body(sock, raw, deadline, default_len):
    """The body of the response whose first bytes are raw: read until its head has ended and
    Content-Length bytes (default_len without one) followed, EOF or the deadline."""
    def more(buf, enough):
        while not enough(buf) and time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except (socket.timeout, ConnectionError):
                break
            if not data:
                break
            buf += data
        return buf

    raw = more(raw, lambda b: b"\r\n\r\n" in b)
    head, _, body = raw.partition(b"\r\n\r\n")
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    n = int(m.group(1)) if m else default_len
    return more(body, lambda b: len(b) >= n)[:n]


def attack(port, raw, timeout):
    """Sends raw on a fresh connection; returns the first status (or close / no answer). The
    whole of that response is read first, so that the proxy is done with its upstream
    connection (and has it back in its idle pool) before the victim comes: the victim then
    meets the attack's upstream connection whatever the machine's speed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(raw)
        except ConnectionError:
            pass  # refused mid-send: the answer (or the close) is read below
        deadline = time.monotonic() + timeout
        status, first = _read_response(s, deadline)
        if isinstance(status, int):
            _read_body(s, first, deadline, 0)
        return status
    finally:
        s.close()


def victim(port, target, timeout):
    """A well-behaved GET of target on a fresh connection. Returns None when it got its own
    answer, else what it got instead."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: victim.test\r\n\r\n" % target)
        deadline = time.monotonic() + timeout
        status, raw = _read_response(s, deadline)
        if not isinstance(status, int):
            return status
        want = b"answer to " + target
        body = _read_body(s, raw, deadline, len(want))
        if status == 200 and body == want:
            return None
        return "%s %r" % (status, body[:60])
    finally:
        s.close()


# ---- the peers -----------------------------------------------------------------------------

def version_of(argv):
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=10)
    except OSError:
        return "not installed"
    return r.stdout.strip().splitlines()[0] if r.stdout.strip() else "?"


def nginx_argv(tmp, port, upstream_port, timeout_s):
    """nginx as a reverse proxy in front of 127.0.0.1:upstream_port, everything in tmp.
    Host is $host: the authority of an absolute-form target, else the Host field (what RFC
    9112 3.2.2 asks of a proxy); upstream keep-alive so one connection serves every client."""
    d = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(d, "temp"), exist_ok=True)
    temps = "".join("  %s_temp_path %s/temp/%s;\n" % (k, d, k)
                    for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = ("daemon off;\n"
            "master_process on;\n"
            "worker_processes 1;\n"
            "user %s;\n"
            "pid %s/nginx.pid;\n"
            "error_log %s/error.log info;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            "  access_log %s/access.log;\n"
            "%s"
            "  upstream instance {\n"
            "    server 127.0.0.1:%d;\n"
            "    keepalive 16;\n"
            "  }\n"
            "  server {\n"
            "    listen 127.0.0.1:%d;\n"
            "    location / {\n"
            "      proxy_pass http://instance;\n"
            "      proxy_http_version 1.1;\n"
            "      proxy_set_header Connection \"\";\n"
            "      proxy_set_header Host $host;\n"
            "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            "      proxy_read_timeout %ds;\n"
            "      proxy_send_timeout %ds;\n"
            "    }\n"
            "  }\n"
            "}\n") % (pwd.getpwuid(os.geteuid()).pw_name, d, d, d, temps, upstream_port, port,
                      timeout_s, timeout_s)
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return ["nginx", "-p", d, "-e", os.path.join(d, "error.log"), "-c", path]


def haproxy_argv(tmp, port, upstream_port, timeout_s):
    """HAProxy in http mode in front of 127.0.0.1:upstream_port; http-reuse always, so an idle
    server connection goes to the next client whichever it is (the way tide-proxy and nginx
    share theirs); one thread, so there is one idle list (as tide-proxy and nginx here have one
    worker each) and the victim meets the attack's connection however the threads race."""
    path = os.path.join(tmp, "haproxy.cfg")
    conf = ("global\n"
            "  maxconn 256\n"
            "  nbthread 1\n"
            "defaults\n"
            "  mode http\n"
            "  option http-keep-alive\n"
            "  timeout connect 2s\n"
            "  timeout client %ds\n"
            "  timeout server %ds\n"
            "  timeout http-request %ds\n"
            "  timeout http-keep-alive 30s\n"
            "frontend fe\n"
            "  bind 127.0.0.1:%d\n"
            "  option forwardfor\n"
            "  default_backend be\n"
            "backend be\n"
            "  http-reuse always\n"
            "  server instance 127.0.0.1:%d\n") % (timeout_s, timeout_s, timeout_s, port,
                                                    upstream_port)
    with open(path, "w") as f:
        f.write(conf)
    return ["haproxy", "-db", "-f", path]
