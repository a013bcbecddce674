"""evil.py - an HTTP/1.1 upstream for the proxy tests that misbehaves on request.

The request path picks the behaviour (see EvilServer.dispatch): well-behaved answers (echo of
the request as received, a chunked answer with trailers, a WebSocket-style upgrade that echoes
bytes) and broken ones (closes mid-response, closes before answering, sends garbage, never
answers, an endless chunked body, a head or a body dripped byte by byte). Every request is
recorded with its raw bytes as received, and the server counts the connections it holds, so a
test can see what the proxy forwarded and whether it let go of its connections.

Standard library only; one thread per connection.
"""

import base64
import hashlib
import json
import socket
import socketserver
import threading
import time


class Closed(Exception):
    """The peer closed the connection (or it failed)."""


class Conn:
    """A socket with a read buffer."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _more(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed()
        self.buf += data

    def read_until(self, sep, limit=1 << 20):
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise Closed()
            self._more()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_some(self):
        if not self.buf:
            self._more()
        out, self.buf = self.buf, b""
        return out

    def send(self, data):
        self.sock.sendall(data)


class Request:
    def __init__(self, method, path, version, headers, raw_head):
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers  # list of (name, value), as received
        self.raw = raw_head     # head and body bytes exactly as received
        self.body = b""
        self.trailers = []
        self.t_head = time.monotonic()
        self.t_first_body = None

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def as_json(self):
        return json.dumps({"method": self.method, "path": self.path, "version": self.version,
                           "headers": self.headers, "body_len": len(self.body),
                           "body_sha1": hashlib.sha1(self.body).hexdigest(),
                           "trailers": self.trailers}).encode()


def parse_head(raw):
    lines = raw.decode("latin-1").split("\r\n")
    method, path, version = lines[0].split(" ", 2)
    headers = []
    for ln in lines[1:]:
        if not ln:
            continue
        k, v = ln.split(":", 1)
        headers.append((k.strip(), v.strip()))
    return method, path, version, headers


def read_head(conn):
    """Reads one request head. Returns None at a clean EOF."""
    try:
        raw = conn.read_until(b"\r\n\r\n")
    except Closed:
        return None
    method, path, version, headers = parse_head(raw)
    req = Request(method, path, version, headers, raw)
    req.expect = (req.header("Expect") or "").lower() == "100-continue"
    return req


def read_body(conn, req, on_body=None):
    te = (req.header("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        while True:
            line = conn.read_until(b"\r\n")
            req.raw += line
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers up to the empty line
                    t = conn.read_until(b"\r\n")
                    req.raw += t
                    if t == b"\r\n":
                        break
                    k, v = t.decode("latin-1").split(":", 1)
                    req.trailers.append((k.strip(), v.strip()))
                break
            data = conn.read_exact(size + 2)
            req.raw += data
            if req.t_first_body is None:
                req.t_first_body = time.monotonic()
            req.body += data[:-2]
            if on_body:
                on_body(req, data[:-2])
    else:
        n = int(req.header("Content-Length") or 0)
        while n > 0:
            if not conn.buf:
                conn._more()
            data = conn.buf[:n]
            conn.buf = conn.buf[n:]
            n -= len(data)
            req.raw += data
            if req.t_first_body is None:
                req.t_first_body = time.monotonic()
            req.body += data
            if on_body:
                on_body(req, data)


def response(status, body=b"", headers=(), reason="X"):
    head = "HTTP/1.1 %d %s\r\n" % (status, reason)
    for k, v in headers:
        head += "%s: %s\r\n" % (k, v)
    head += "Content-Length: %d\r\n\r\n" % len(body)
    return head.encode() + body


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


class EvilServer:
    """Listens on 127.0.0.1 (an ephemeral port unless given) in a background thread."""

    def __init__(self, port=0, name="evil"):
        self.name = name
        self.requests = []
        self.lock = threading.Lock()
        self.conns_open = 0
        self.accepted = 0
        self.release = threading.Event()  # /hold-* answers wait for it
        self.stopping = threading.Event()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                outer._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def paths(self):
        with self.lock:
            return [r.path for r in self.requests]

    def count(self, prefix=""):
        with self.lock:
            return sum(1 for r in self.requests if r.path.startswith(prefix))

    def last(self, prefix=""):
        with self.lock:
            for r in reversed(self.requests):
                if r.path.startswith(prefix):
                    return r
        return None

    # ---- serving ----

    def _serve(self, sock):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self.conns_open += 1
            self.accepted += 1
        conn = Conn(sock)
        try:
            while not self.stopping.is_set():
                req = read_head(conn)
                if req is None:
                    break
                with self.lock:
                    self.requests.append(req)  # visible while its body is still arriving
                if not req.expect:
                    read_body(conn, req)  # with Expect the handler decides whether to say 100
                if not self.dispatch(conn, req):
                    break
                if (req.header("Connection") or "").lower() == "close":
                    break
        except (Closed, OSError, ValueError):
            pass
        finally:
            with self.lock:
                self.conns_open -= 1
            try:
                sock.close()
            except OSError:
                pass

    def dispatch(self, conn, req):
        """Answers req; returns False to close the connection."""
        path = req.path
        if req.expect:
            if path.startswith("/continue"):
                if "slow" in path:
                    time.sleep(0.8)  # the client waits for the 100 meanwhile
                conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                read_body(conn, req)
                conn.send(response(200, b"got %d" % len(req.body)))
                return True
            # No 100: answer at once, the body is never read, so the connection closes.
            conn.send(response(417, b"no", [("Connection", "close")]))
            return False
        if path.startswith("/echo"):
            conn.send(response(200, req.as_json(), [("Content-Type", "application/json")]))
        elif path.startswith("/raw"):
            conn.send(response(200, req.raw))
        elif path.startswith("/slow"):
            ms = int(path.split("ms=")[1].split("&")[0]) if "ms=" in path else 500
            time.sleep(ms / 1000.0)
            conn.send(response(200, b"slow done"))
        elif path.startswith("/status/"):
            code = int(path[8:11])
            conn.send(response(code, b"" if code in (204, 304) else b"status"))
        elif path.startswith("/trailers"):
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                      b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\nX-Other: y\r\n\r\n")
        elif path.startswith("/hop-resp"):
            conn.send(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Resp-Hop\r\n"
                      b"X-Resp-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-Kept: 1\r\n"
                      b"Proxy-Authenticate: Basic\r\nContent-Length: 2\r\n\r\nok")
        elif path.startswith("/chunked"):
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        elif path.startswith("/hold-chunked"):
            # The first chunk now, the rest once the test releases it: proves streaming.
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            self.release.wait(20)
            conn.send(b"4\r\nlast\r\n0\r\n\r\n")
        elif path.startswith("/eof-body"):
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close")
            return False
        elif path.startswith("/close-mid"):
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
            time.sleep(0.05)
            return False
        elif path.startswith("/close-chunked-mid"):
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            time.sleep(0.05)
            return False
        elif path.startswith("/close-before"):
            return False
        elif path.startswith("/garbage"):
            conn.send(b"\x00\xffTHIS IS NOT HTTP\r\n\r\n\x13\x37" * 10)
            time.sleep(0.05)
            return False
        elif path.startswith("/bad-length"):
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello")
            return False
        elif path.startswith("/never"):
            # Read whatever comes until the peer closes or the server stops; never answer.
            conn.sock.settimeout(0.2)
            while not self.stopping.is_set():
                try:
                    if not conn.sock.recv(65536):
                        break
                except socket.timeout:
                    continue
            return False
        elif path.startswith("/endless"):
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"400\r\n" + b"e" * 1024 + b"\r\n"
            while not self.stopping.is_set():
                conn.send(chunk * 16)
            return False
        elif path.startswith("/drip-head"):
            for b in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Slow: yes\r\n\r\nok":
                if self.stopping.wait(0.1):
                    break
                conn.send(bytes([b]))
        elif path.startswith("/drip-body"):
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
            for b in b"0123456789":
                if self.stopping.wait(0.1):
                    break
                conn.send(bytes([b]))
        elif path.startswith("/ws"):
            return self._ws(conn, req)
        else:
            conn.send(response(200, b"evil " + self.name.encode()))
        return True

    def _ws(self, conn, req):
        """An upgrade: 101, then every byte received is echoed back. On the client's EOF it
        sends "bye" and closes (shows half-close). /ws-refuse answers 400 instead; /ws-close
        closes right after the switch."""
        up = (req.header("Upgrade") or "").lower()
        if req.path.startswith("/ws-refuse") or up != "websocket":
            conn.send(response(400, b"no upgrade here"))
            return True
        conn.send(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                   % ws_accept(req.header("Sec-WebSocket-Key") or "")).encode())
        if req.path.startswith("/ws-close"):
            conn.send(b"server says bye")
            return False
        if req.path.startswith("/ws-push"):
            conn.send(b"pushed before any client byte")
        while True:
            try:
                data = conn.read_some()
            except Closed:
                conn.send(b"bye")
                try:
                    conn.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return False
            conn.send(data)
