"""harness.py - fixture library for tide's integration tests: a real stack in a temp dir.

A Stack owns a temp dir, a set of free ports, a tide.yml, a real redis-server and every tide
process a test starts. Processes are started by PID with stdout/stderr in files in the temp
dir; conditions are waited on with deadlines (wait_until raises with what was awaited, the last
value seen and the tail of the logs); teardown stops EVERY process it started by PID (SIGTERM,
wait, SIGKILL), also the sample-app instances the fake executor started, and reports what went
wrong on the way out (a daemon that did not exit 0 on SIGTERM, a sanitizer report in a log, an
instance still listening after its executor is gone).

Only the standard library, pyzmq and redis-py from Debian are used (run with /usr/bin/python3).
"""

import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import redis
import zmq
import zmq.auth

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# Absolute: the programs run with their stack's temp dir as working directory.
BIN_DIR = os.path.abspath(os.environ.get("TIDE_BIN_DIR") or os.path.join(REPO, "build", "bin"))

# Every daemon; the test asserts each exists before starting anything.
DAEMONS = ("tide-proxy", "tide-metrics", "tide-scaler", "tide-fake-executor", "tide-executor")

# The topics of the bus (lib/tide_msg.h), for garbage generation.
PUBSUB_TOPICS = ("stats", "metrics.snapshot", "scaler.state", "scaler.decision", "scaler.pool",
                 "exec.job")

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: UndefinedBehaviorSanitizer", "AddressSanitizer:DEADLYSIGNAL")


def binary(name):
    """Path of a tide binary; fails the test with a clear message when it was not built."""
    path = os.path.join(BIN_DIR, name)
    if not os.access(path, os.X_OK):
        raise AssertionError("binary %s not found or not executable (TIDE_BIN_DIR=%s): "
                             "build it first" % (name, BIN_DIR))
    return path


# ---- processes die with the test ------------------------------------------------------

try:
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl = _libc.prctl
except (OSError, AttributeError):  # pragma: no cover
    _prctl = None
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """preexec_fn: SIGTERM the child when the test process goes away (ctest's timeout kill,
    a crash), so a killed test run leaves no daemon behind. Only calls an already resolved
    libc function, which is safe between fork and exec."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# ---- ports -------------------------------------------------------------------------------

_handed_out = set()
_ports_lock = threading.Lock()


def port_is_free(port):
    """True when a server could listen on 127.0.0.1:port now (SO_REUSEADDR, as every tide
    program and redis-server bind: TIME_WAIT leftovers do not count, listeners do)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port():
    """A port the kernel says is free now (bind to 0), never handed out twice by this process."""
    with _ports_lock:
        for _ in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free port")


def ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = f.read().split()
            return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port_range(n):
    """n consecutive free ports for the instances (app.base_port ...). Returns the first.

    Taken below the kernel's ephemeral range, so no outgoing connection (the proxy's, the load
    generator's) can hold one of them when an instance starts later; each is checked free."""
    lo, _ = ephemeral_range()
    top = lo if lo > 12000 + n else 60000
    for _ in range(500):
        base = random.randrange(10000, top - n)
        ports = list(range(base, base + n))
        with _ports_lock:
            if any(p in _handed_out for p in ports):
                continue
        if all(port_is_free(p) for p in ports):
            with _ports_lock:
                _handed_out.update(ports)
            return base
    raise RuntimeError("no range of %d free ports" % n)


def port_answers(port, timeout=0.5):
    """True when something accepts a TCP connection on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(host, port, path="/", timeout=3.0):
    """One GET on a fresh connection. Returns (status, headers dict (lower-case keys), body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def listeners_on(port):
    """PIDs of processes with a LISTEN socket on port (any address), found through /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, st, inode = parts[1], parts[3], parts[9]
                    if st == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except OSError:
            pass
    if not inodes:
        return set()
    pids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = "/proc/%s/fd" % pid
        try:
            for fd in os.listdir(fd_dir):
                try:
                    target = os.readlink(os.path.join(fd_dir, fd))
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    pids.add(int(pid))
                    break
        except OSError:
            continue
    return pids


def children_of(pid):
    """PIDs whose parent is pid."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid == pid:
                out.append(int(p))
        except (OSError, ValueError):
            continue
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        return stat[stat.rindex(")") + 2] != "Z"
    except OSError:
        return False


# ---- a tiny protobuf encoder and decoder (hand-made valid and invalid messages) ----------

def pb_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_field(num, value):
    """Encodes one field: int -> varint, bytes/str -> length-delimited (also for sub-messages)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return pb_varint(num << 3) + pb_varint(value)
    if isinstance(value, str):
        value = value.encode()
    return pb_varint((num << 3) | 2) + pb_varint(len(value)) + value


def pb_header(sender="integration/test", seq=1):
    return pb_field(1, sender) + pb_field(2, seq) + pb_field(3, int(time.time() * 1000))


def pb_fields(data):
    """Top-level fields of a protobuf message, in order: [(number, value)], value an int
    (varint) or bytes (length-delimited, fixed64, fixed32)."""
    out, i = [], 0
    while i < len(data):
        key, i = _pb_read_varint(data, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _pb_read_varint(data, i)
        elif wt == 2:
            n, i = _pb_read_varint(data, i)
            v, i = data[i:i + n], i + n
        elif wt == 1:
            v, i = data[i:i + 8], i + 8
        elif wt == 5:
            v, i = data[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        out.append((num, v))
    return out


def _pb_read_varint(data, i):
    n = shift = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def pb_contains_string(payload, text):
    """True when payload (protobuf bytes) carries text as a string field's value."""
    return text.encode() in payload


# ---- the YAML writer ---------------------------------------------------------------------

def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, RawYaml):
        return v.text
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


class RawYaml:
    """A value written to tide.yml exactly as given (for wrong-type tests)."""

    def __init__(self, text):
        self.text = text


def write_yaml(path, cfg):
    lines = ["# tide.yml written by tests/integration/harness.py"]
    for key, val in cfg.items():
        if isinstance(val, dict):
            lines.append("%s:" % key)
            for k, v in val.items():
                lines.append("  %s: %s" % (k, yaml_scalar(v)))
        else:
            lines.append("%s: %s" % (key, yaml_scalar(val)))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# ---- processes ---------------------------------------------------------------------------

class Proc:
    """A process this harness started, by PID, with its output in files."""

    def __init__(self, name, argv, popen, out_path, err_path, expect_exit0=True,
                 long_running=True):
        self.name = name
        self.long_running = long_running  # False: expected to exit by itself
        self.argv = argv
        self.popen = popen
        self.pid = popen.pid
        self.out_path = out_path
        self.err_path = err_path
        self.expect_exit0 = expect_exit0  # on SIGTERM
        self.killed_on_purpose = False
        self.stopped_by_harness = False

    def alive(self):
        return self.popen.poll() is None

    @property
    def returncode(self):
        return self.popen.poll()

    def stderr(self):
        try:
            with open(self.err_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stdout(self):
        try:
            with open(self.out_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def tail(self, n=25):
        text = self.stderr().splitlines()
        out = self.stdout().splitlines() if self.out_path != self.err_path else []
        parts = ["--- %s (pid %d, %s) stderr, last %d lines:" % (
            self.name, self.pid, "alive" if self.alive() else "exit %s" % self.returncode, n)]
        parts += text[-n:]
        if out:
            parts.append("--- %s stdout, last %d lines:" % (self.name, min(n, 10)))
            parts += out[-min(n, 10):]
        return "\n".join(parts)

    def signal(self, sig):
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=8.0):
        """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit code."""
        self.stopped_by_harness = True
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed_on_purpose = False
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
                return "SIGKILL after %.0fs" % timeout
        return self.popen.returncode

    def kill(self):
        """SIGKILL (a crash on purpose) and reap."""
        self.killed_on_purpose = True
        self.stopped_by_harness = True
        self.signal(signal.SIGKILL)
        self.popen.wait(5)


def bus_keys(tmp):
    """The bus section of a test stack: CURVE on, with key pairs made by `tidectl keys init`
    under tmp/keys (what scripts/run-tide does on first run). $TIDE_TIDECTL names the tidectl
    to make them with when TIDE_BIN_DIR has none (tests/tsan builds only the proxy)."""
    keys = os.path.join(tmp, "keys")
    subprocess.run([os.environ.get("TIDE_TIDECTL") or binary("tidectl"), "keys", "init", keys],
                   check=True)
    return {"curve": "on", "keys_dir": keys}


def bus_secure(sock, keys_dir, role, server_role=None):
    """Gives a pyzmq socket role's tide key pair, as the CURVE server of its endpoint
    (server_role None) or as a client of server_role's. keys_dir None (bus.curve off): plain.
    Call before bind/connect. Returns sock."""
    if keys_dir:
        pub, sec = zmq.auth.load_certificate(
            os.path.join(keys_dir, "secret", role + ".key_secret"))
        sock.curve_publickey, sock.curve_secretkey = pub, sec
        if server_role is None:
            sock.curve_server = True
        else:
            sock.curve_serverkey = zmq.auth.load_certificate(
                os.path.join(keys_dir, "public", server_role + ".key"))[0]
    return sock


def stack_config(ports, base_port, max_instances, tmp, service="it"):
    """The tide.yml every test stack starts from (as a dict of sections): short windows and
    timeouts so scenarios run in seconds, the sample app as the service, the fake executor's
    defaults. ports: the names below to free ports. tests/e2e builds on it."""
    return {
        "service": service,
        "bus": bus_keys(tmp),
        "redis": {"host": "127.0.0.1", "port": ports["redis"],
                  "connect_timeout_ms": 300, "command_timeout_ms": 1000},
        "endpoints": {k: "tcp://127.0.0.1:%d" % ports[k] for k in (
            "stats", "metrics", "scaler_events", "scaler_control", "executor_control",
            "executor_events")},
        "app": {"host": "127.0.0.1", "base_port": base_port,
                "name_prefix": "production", "health_path": "/health",
                "health_timeout_ms": 10000,
                "command": os.path.join(BIN_DIR, "tide-sample-app"),
                "args": "--delay-ms 20 --concurrency 4"},
        "proxy": {"listen": "127.0.0.1:%d" % ports["proxy"], "workers": 1,
                  "stats_interval_ms": 250, "pool_poll_ms": 1000},
        "metrics": {"listen": "127.0.0.1:%d" % ports["metrics_http"],
                    "stable_window_s": 10, "panic_window_s": 3,
                    "snapshot_interval_ms": 500, "stale_after_ms": 2000},
        "scaler": {"policy": "target", "min": 1, "max": max_instances, "target_rps": 20,
                   "panic_threshold": 2, "max_step": 5, "scale_down_delay_s": 3,
                   "settle_ms": 500, "tick_ms": 100, "job_deadline_ms": 15000,
                   "backoff_initial_ms": 500, "backoff_max_ms": 4000,
                   "drain_deadline_ms": 5000, "request_timeout_ms": 1000,
                   "reconcile": "adopt",
                   # Off: a periodic list at an arbitrary moment would race the scenarios that
                   # watch for a particular job or check; test_health_check turns it on.
                   "health_check_interval_s": 0},
        "executor": {"state_dir": os.path.join(tmp, "executor"),
                     "job_deadline_ms": 15000},
        # Off: automatic profiles and flight recorders are what test_profile and
        # test_process_driver look at; elsewhere a profile job would be noise in the scenario.
        "profiling": {"enabled": "off"},
    }


class WaitTimeout(AssertionError):
    pass


class Stack:
    """A tide stack in a temp dir. Use as a context manager or call close()."""

    def __init__(self, name, max_instances=6, **overrides):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="tide-it-%s-" % name)
        self.procs = []
        self.problems = []
        self.redis_proc = None
        self._redis = None
        self.monitor = None
        self.ports = {k: free_port() for k in (
            "redis", "stats", "metrics", "scaler_events", "scaler_control", "executor_control",
            "executor_events", "fake_control", "proxy", "metrics_http")}
        self.base_port = free_port_range(max(10, max_instances))
        self.config_path = os.path.join(self.tmp, "tide.yml")
        self.cfg = self.default_config(max_instances)
        for section, vals in overrides.items():
            if isinstance(vals, dict):
                self.cfg.setdefault(section, {}).update(vals)
            else:
                self.cfg[section] = vals
        self.write_config()
        self.service = self.cfg["service"]
        self._fake_ctx = zmq.Context.instance()

    # ---- configuration ----

    @property
    def keys_dir(self):
        """The bus keys for pyzmq sockets (bus_secure), or None when bus.curve is off."""
        bus = self.cfg.get("bus", {})
        return bus.get("keys_dir") if bus.get("curve") == "on" else None

    def endpoint(self, key):
        return "tcp://127.0.0.1:%d" % self.ports[key]

    def default_config(self, max_instances):
        return stack_config(self.ports, self.base_port, max_instances, self.tmp)

    def write_config(self, path=None, cfg=None):
        write_yaml(path or self.config_path, cfg or self.cfg)
        return path or self.config_path

    # ---- process management ----

    def start(self, name, argv, expect_exit0=True, env=None, stdout_pipe=False,
              long_running=True):
        """Starts argv with cwd = the temp dir and output in <tmp>/<name>.{out,err}."""
        idx = sum(1 for p in self.procs if p.name.split("#")[0] == name)
        label = name if idx == 0 else "%s#%d" % (name, idx)
        out_path = os.path.join(self.tmp, label + ".out")
        err_path = os.path.join(self.tmp, label + ".err")
        full_env = dict(os.environ)
        full_env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        full_env.pop("TIDE_CONFIG", None)
        if env:
            full_env.update(env)
        err_f = open(err_path, "wb")
        if stdout_pipe:
            out_f = subprocess.PIPE
        else:
            out_f = open(out_path, "wb")
        popen = subprocess.Popen(argv, cwd=self.tmp, stdout=out_f, stderr=err_f,
                                 stdin=subprocess.DEVNULL, env=full_env,
                                 preexec_fn=_die_with_parent)
        err_f.close()
        if not stdout_pipe:
            out_f.close()
        p = Proc(label, argv, popen, out_path, err_path, expect_exit0, long_running)
        self.procs.append(p)
        return p

    def start_redis(self):
        argv = ["redis-server", "--port", str(self.ports["redis"]), "--bind", "127.0.0.1",
                "--dir", self.tmp, "--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.redis_proc = self.start("redis", argv)
        self.wait_until(self._redis_ping, 10, "redis-server answers PING")
        return self.redis_proc

    def _redis_ping(self):
        try:
            return self.redis.ping()
        except redis.RedisError:
            return False

    @property
    def redis(self):
        if self._redis is None:
            self._redis = redis.Redis(host="127.0.0.1", port=self.ports["redis"],
                                      decode_responses=True, socket_timeout=2,
                                      socket_connect_timeout=2)
        return self._redis

    def daemon(self, program, config=None, extra=()):
        argv = [binary(program), "-c", config or self.config_path,
                "--id", "%s-%s" % (program.replace("tide-", ""), self.name)] + list(extra)
        return self.start(program.replace("tide-", ""), argv)

    def start_fake_executor(self, config=None):
        return self.daemon("tide-fake-executor", config,
                           ["--control", self.endpoint("fake_control")])

    def start_stack(self, with_proxy=True, with_metrics=True, with_scaler=True,
                    with_fake=True, wait_ready=True):
        """Redis, the fake executor, metrics, the scaler, the proxy; waits until the stack
        stands at the minimum with the proxy answering 200."""
        for b in ("tide-proxy", "tide-metrics", "tide-scaler", "tide-fake-executor",
                  "tide-sample-app", "tidectl"):
            binary(b)
        if self.redis_proc is None:
            self.start_redis()
        if with_fake:
            self.fake = self.start_fake_executor()
        if with_metrics:
            self.metrics = self.daemon("tide-metrics")
        if with_scaler:
            self.scaler = self.daemon("tide-scaler")
        if with_proxy:
            self.proxy = self.daemon("tide-proxy")
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, count=None, timeout=30):
        count = self.cfg["scaler"]["min"] if count is None else count
        self.wait_until(lambda: self.instances() == count and len(self.pool()) == count,
                        timeout, "Redis instances == %d and pool has %d entries" % (count, count))
        if count > 0:
            self.wait_until(lambda: self.proxy_get()[0] == 200, timeout,
                            "the proxy answers 200 through the pool")
        self.wait_until(lambda: self.status(timeout=5).get("state") in ("STATE_IDLE",
                                                                        "STATE_UP"),
                        timeout, "tidectl status shows a stable state (IDLE/UP)")

    def proxy_get(self, path="/", timeout=3.0):
        try:
            return http_get("127.0.0.1", self.ports["proxy"], path, timeout)
        except OSError as e:
            return (None, {}, str(e).encode())

    def alive_procs(self):
        return [p for p in self.procs if p.alive()]

    def assert_alive(self, *procs):
        """Fails, with the logs, if any of procs (default: every long-running one) died."""
        procs = procs or [p for p in self.procs if not p.stopped_by_harness and
                          p.long_running]
        dead = [p for p in procs if not p.alive()]
        if dead:
            raise AssertionError("process(es) died: %s\n%s" % (
                ", ".join("%s (pid %d, exit %s)" % (p.name, p.pid, p.returncode) for p in dead),
                "\n".join(p.tail(40) for p in dead)))

    def unexpected_deaths(self):
        return [p for p in self.procs if not p.stopped_by_harness and not p.alive() and
                p.long_running]

    def logs_tail(self, n=15):
        return "\n".join(p.tail(n) for p in self.procs if p.name != "redis")

    def wait_until(self, fn, timeout, what, interval=0.1, check_alive=True, detail=None):
        """Calls fn until it returns something truthy (returned) or timeout seconds pass.

        Exceptions from fn count as "not yet". On timeout, or when a process the harness
        started dies meanwhile, raises WaitTimeout naming what was awaited, the last value or
        exception, detail() when given (e.g. the Redis history), and the tail of the logs."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                v = fn()
                if v:
                    return v
                last = v
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last = "%s: %s" % (type(e).__name__, e)
            if check_alive:
                dead = self.unexpected_deaths()
                if dead:
                    raise WaitTimeout("while waiting for: %s\nprocess(es) died: %s\n%s" % (
                        what, ", ".join("%s exit %s" % (p.name, p.returncode) for p in dead),
                        self.logs_tail(40)))
            if time.monotonic() >= deadline:
                extra = ""
                if detail is not None:
                    try:
                        extra = "\n" + str(detail())
                    except Exception as e:  # noqa: BLE001
                        extra = "\n(detail failed: %s)" % e
                raise WaitTimeout("timed out after %.1fs waiting for: %s\nlast value: %r%s\n%s"
                                  % (timeout, what, last, extra, self.logs_tail()))
            time.sleep(interval)

    def hold(self, fn, seconds, what, interval=0.1):
        """Asserts fn() stays truthy for the whole period (used for "does not flap")."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            v = None
            try:
                v = fn()
            except Exception as e:  # noqa: BLE001
                v = "%s: %s" % (type(e).__name__, e)
            if not v or isinstance(v, str):
                raise AssertionError("%s stopped holding: %r\n%s" % (what, v, self.logs_tail()))
            self.assert_alive()
            time.sleep(interval)

    # ---- Redis view ----

    def key(self, k):
        return "tide:%s:%s" % (self.service, k)

    def instances(self):
        v = self.redis.get(self.key("instances"))
        return None if v is None else int(v)

    def pool(self):
        return self.redis.hgetall(self.key("pool"))

    def pool_version(self):
        v = self.redis.get(self.key("pool_version"))
        return None if v is None else int(v)

    def state(self):
        return self.redis.hgetall(self.key("state"))

    def start_monitor(self, interval=0.1):
        self.monitor = RedisMonitor(self, interval)
        self.monitor.start()
        return self.monitor

    # ---- tidectl ----

    def tidectl(self, *args, timeout=15, config=None):
        argv = [binary("tidectl"), "-c", config or self.config_path] + [str(a) for a in args]
        return subprocess.run(argv, cwd=self.tmp, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def status(self, timeout=10):
        """tidectl status --json, parsed. Raises with tidectl's output when it fails."""
        r = self.tidectl("status", "--json", timeout=timeout)
        if r.returncode != 0:
            raise AssertionError("tidectl status --json exited %d: stdout=%r stderr=%r" % (
                r.returncode, r.stdout[-500:], r.stderr[-500:]))
        lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
        if len(lines) != 1:
            raise AssertionError("tidectl status --json printed %d lines, expected 1: %r" % (
                len(lines), r.stdout[-1000:]))
        return json.loads(lines[0])

    def watch(self):
        w = Watch(self)
        w.start()
        return w

    # ---- fake executor control ----

    def fake_cmd(self, text, timeout=5.0):
        """Sends one plain-text command to the fake executor's control socket; returns the
        reply text. Raises when no reply comes within timeout."""
        sock = self._fake_ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.endpoint("fake_control"))
            sock.send_string(text)
            if not sock.poll(int(timeout * 1000)):
                raise AssertionError("fake executor control: no reply to %r within %.1fs\n%s" % (
                    text, timeout, self.logs_tail()))
            return sock.recv().decode(errors="replace")
        finally:
            sock.close()

    def fake_stats(self):
        reply = self.fake_cmd("stats")
        try:
            return json.loads(reply)
        except ValueError:
            raise AssertionError("fake executor 'stats' reply is not JSON: %r" % reply)

    def fake_children(self):
        """Names of the instances the fake executor runs, from its 'stats' reply."""
        return child_names(self.fake_stats().get("children"))

    # ---- sample-app instances ----

    def instance_port(self, name):
        return self.base_port + int(name[len(self.cfg["app"]["name_prefix"]):])

    def instance_answers(self, addr, name=None):
        """GET /health straight to ip:port; True when 200 (and X-Instance == name if given)."""
        host, port = addr.rsplit(":", 1)
        try:
            status, headers, _ = http_get(host, int(port), self.cfg["app"]["health_path"], 1.0)
        except OSError:
            return False
        return status == 200 and (name is None or headers.get("x-instance") == name)

    def instance_listeners(self):
        """{port: pids} for every port of the instance range with a listener."""
        out = {}
        for i in range(max(10, self.cfg["scaler"]["max"])):
            pids = listeners_on(self.base_port + i)
            if pids:
                out[self.base_port + i] = pids
        return out

    # ---- teardown ----

    def close(self, failed=False):
        """Stops every process (proxy, scaler, metrics, executors, others, redis last), kills
        leftover instances and returns the list of problems found on the way out."""
        if self.monitor:
            self.monitor.stop()
        order = {"proxy": 0, "scaler": 1, "metrics": 2, "fake-executor": 3, "executor": 3,
                 "redis": 9}
        fake_children = []
        for p in self.procs:
            if p.name.startswith("fake-executor") or p.name.startswith("executor"):
                fake_children += [c for c in children_of(p.pid) if c not in fake_children]
        for p in sorted(self.procs, key=lambda p: order.get(p.name.split("#")[0], 5)):
            was_alive = p.alive()
            died_before = not was_alive and not p.stopped_by_harness
            rc = p.stop()
            base = p.name.split("#")[0]
            if died_before and p.long_running and base != "redis":
                self.problems.append("%s (pid %d) had died before teardown with exit %s" % (
                    p.name, p.pid, rc))
            elif was_alive and p.expect_exit0 and rc != 0 and base != "redis":
                self.problems.append("%s (pid %d) exited %s on SIGTERM, expected 0" % (
                    p.name, p.pid, rc))
        # Sample-app instances: the fake executor's children must be gone with it.
        time.sleep(0.2)
        for c in fake_children:
            if pid_alive(c):
                self.problems.append("instance pid %d (%s) still running after its executor "
                                     "stopped" % (c, cmdline(c)))
                try:
                    os.kill(c, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for port, pids in self.instance_listeners().items():
            for pid in pids:
                cl = cmdline(pid)
                if "tide-sample-app" in cl:
                    self.problems.append("port %d still served by pid %d (%s) after teardown" %
                                         (port, pid, cl))
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for p in self.procs:
            text = p.stderr()
            for marker in SANITIZER_MARKERS:
                if marker in text:
                    idx = text.index(marker)
                    self.problems.append("%s: sanitizer report in its log:\n%s" % (
                        p.name, text[max(0, idx - 200):idx + 1500]))
                    break
        if self._redis is not None:
            try:
                self._redis.close()
            except Exception:  # noqa: BLE001
                pass
        if failed or self.problems or os.environ.get("TIDE_KEEP_TMP"):
            print("\n[harness] logs kept in %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.problems

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        problems = self.close(failed=exc[0] is not None)
        if problems and exc[0] is None:
            raise AssertionError("teardown problems:\n" + "\n".join(problems))


def child_names(children):
    """The fake's 'children' field as a sorted list of instance names, whatever its shape."""
    if children is None:
        return None
    if isinstance(children, int):
        return children
    if isinstance(children, dict):
        return sorted(children.keys())
    names = []
    for c in children:
        if isinstance(c, str):
            names.append(c)
        elif isinstance(c, dict):
            names.append(c.get("name"))
    return sorted(names)


class RedisMonitor(threading.Thread):
    """Polls instances and pool every interval; keeps every change with its time."""

    def __init__(self, stack, interval):
        super().__init__(daemon=True)
        self.stack = stack
        self.interval = interval
        self.r = redis.Redis(host="127.0.0.1", port=stack.ports["redis"],
                             decode_responses=True, socket_timeout=2)
        self.history = []  # (t_monotonic, instances, pool dict)
        self.first_seen = {}  # instance name -> t_monotonic it first appeared in pool
        self.max_instances = 0
        self._stop_ev = threading.Event()

    def run(self):
        last = None
        while not self._stop_ev.is_set():
            try:
                pipe = self.r.pipeline(transaction=True)
                pipe.get(self.stack.key("instances"))
                pipe.hgetall(self.stack.key("pool"))
                inst, pool = pipe.execute()
                inst = None if inst is None else int(inst)
                now = time.monotonic()
                cur = (inst, tuple(sorted(pool.items())))
                if cur != last:
                    self.history.append((now, inst, dict(pool)))
                    last = cur
                for name in pool:
                    self.first_seen.setdefault(name, now)
                if inst is not None:
                    self.max_instances = max(self.max_instances, inst)
            except redis.RedisError:
                pass
            self._stop_ev.wait(self.interval)

    def stop(self):
        self._stop_ev.set()
        self.join(3)
        self.r.close()

    def counts(self):
        return [h[1] for h in self.history]

    def describe(self):
        t0 = self.history[0][0] if self.history else 0
        return "; ".join("t=%.1fs instances=%s pool=%s" % (t - t0, i, sorted(p))
                         for t, i, p in self.history)


class Watch:
    """`tidectl watch --json` as a subprocess; every line kept as (t_monotonic, obj)."""

    def __init__(self, stack):
        self.stack = stack
        self.events = []
        self.bad_lines = []
        self.lock = threading.Lock()
        self.proc = None

    def start(self):
        self.proc = self.stack.start("tidectl-watch", [binary("tidectl"), "-c",
                                                       self.stack.config_path, "watch", "--json"],
                                     stdout_pipe=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self):
        out_f = open(self.proc.out_path, "w")
        for line in self.proc.popen.stdout:
            line = line.decode(errors="replace")
            out_f.write(line)
            out_f.flush()
            now = time.monotonic()
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict) or "topic" not in obj or "msg" not in obj:
                    raise ValueError("no topic/msg")
            except ValueError:
                with self.lock:
                    self.bad_lines.append(line)
                continue
            with self.lock:
                self.events.append((now, obj))
        out_f.close()

    def all(self, topic=None):
        with self.lock:
            return [o for _, o in self.events if topic is None or o["topic"] == topic]

    def msgs(self, topic):
        return [o["msg"] for o in self.all(topic)]

    def jobs(self):
        """exec.job messages, in order."""
        return self.msgs("exec.job")

    def wait_for(self, pred, timeout, what):
        """Waits until pred(list of msgs) is truthy, returns its value."""
        return self.stack.wait_until(pred, timeout, what)


def folded(path):
    """{stack: samples} of a folded-stacks file ("a;b;c N" lines)."""
    out = {}
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            out[stack] = out.get(stack, 0) + int(n)
    return out


def stack_share(stacks, func):
    """The share of samples whose stack holds a frame named exactly func."""
    total = sum(stacks.values())
    return sum(n for s, n in stacks.items() if func in s.split(";")) / total if total else 0.0


def job_events(watch, event_type=None, state=None):
    """exec.job messages filtered by type (JOB_EVENT_STARTED...) and record state."""
    out = []
    for m in watch.jobs():
        if event_type and m.get("type") != event_type:
            continue
        if state and (m.get("job") or {}).get("state") != state:
            continue
        out.append(m)
    return out


def ts_ms(msg):
    return int((msg.get("header") or {}).get("ts_ms") or 0)


def metrics_snapshot(stack, timeout=3.0):
    status, _, body = http_get("127.0.0.1", stack.ports["metrics_http"], "/api/snapshot",
                               timeout)
    if status != 200:
        raise AssertionError("GET /api/snapshot answered %s: %r" % (status, body[:300]))
    return json.loads(body)


def prometheus_value(stack, metric, timeout=3.0):
    """Sum of every sample of metric in tide-metrics' /metrics, or None when absent."""
    status, _, body = http_get("127.0.0.1", stack.ports["metrics_http"], "/metrics", timeout)
    if status != 200:
        raise AssertionError("GET /metrics answered %s" % status)
    total = None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name == metric:
            total = (total or 0) + float(line.rsplit(" ", 1)[1])
    return total


def random_bytes(n, rng=random):
    return bytes(rng.getrandbits(8) for _ in range(n))
