"""e2e.py - the harness of tide's end-to-end tests: a real Docker engine, real ansible-playbook,
the real tide-executor (docker driver), tide-scaler, tide-metrics, tide-proxy and a real
redis-server, all on 127.0.0.1.

Engine: makes sure a Docker engine answers (scripts/start-dockerd: starts
`dockerd --bridge=none --iptables=false --ip-forward=false` when none does, and stops it again
at the end if it started it) and builds the sample app's FROM scratch image
(scripts/build-app-image). Containers use host networking and listen on 127.0.0.1 ports.

Stack: a temp dir with tide.yml, an Ansible inventory of several host names that all reach this
machine (ansible_connection=local, ansible_host=127.0.0.1), free ports, and every process it
starts, by PID. close() removes every container of its service (docker rm -f, by label), stops
every process (SIGTERM, then SIGKILL) and reports a daemon that did not exit 0, a sanitizer
report in a log, or a container left behind.

The load generator is tests/integration/load.py, imported read-only.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from load import Load, results_after  # noqa: E402,F401 (re-exported for the tests)
# The integration harness's generic parts: binaries, ports, the YAML writer, waiting.
from harness import (SANITIZER_MARKERS, WaitTimeout, _die_with_parent,  # noqa: E402
                     binary, free_port, free_port_range, write_yaml)
import harness  # noqa: E402

# Absolute: the programs run with their stack's temp dir as working directory.
BIN_DIR = os.path.abspath(os.environ.get("TIDE_BIN_DIR") or os.path.join(REPO, "build", "bin"))
IMAGE = os.environ.get("TIDE_E2E_IMAGE", "tide-sample-app:e2e")
APP_BUILD_DIR = os.environ.get("TIDE_E2E_BUILD_DIR") or os.path.join(REPO, "build-app-static")
# Every stack's service is named e2e-<something>: containers of a crashed earlier run are found
# (and removed) by this prefix of their tide.service label.
SERVICE_PREFIX = "e2e-"
HOSTS = ("h1", "h2", "h3")


def docker(*args, timeout=60, check=True):
    """Runs the docker CLI; returns stdout. Raises with its stderr when check and it fails."""
    r = subprocess.run(["docker"] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError("docker %s exited %d: %s" % (" ".join(map(str, args)),
                                                          r.returncode, r.stderr.strip()))
    return r.stdout


def containers(label_filter=None, all_states=True):
    """Containers (any state unless all_states is False) as dicts: id, name, state, labels,
    started (State.StartedAt). label_filter: "key=value" passed to docker ps."""
    args = ["ps", "-q", "--no-trunc"] + (["-a"] if all_states else [])
    if label_filter:
        args += ["--filter", "label=" + label_filter]
    ids = docker(*args).split()
    if not ids:
        return []
    out = []
    # A container may disappear between ps and inspect: inspect what is left.
    r = subprocess.run(["docker", "inspect"] + ids, capture_output=True, text=True, timeout=60)
    for c in json.loads(r.stdout or "[]"):
        out.append({"id": c["Id"], "name": c["Name"].lstrip("/"),
                    "state": c["State"]["Status"], "labels": c["Config"]["Labels"] or {},
                    "started": c["State"]["StartedAt"]})
    return out


# ---- the engine ------------------------------------------------------------------------------

class Engine:
    """The Docker engine and the image, for a whole test session."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.pid = None  # dockerd's pid when this session started it
        self.log = os.path.join(tmp, "dockerd.log")

    def start(self):
        r = subprocess.run([os.path.join(REPO, "scripts", "start-dockerd"), "--offline",
                            "--log", self.log, "--pidfile", os.path.join(self.tmp, "dockerd.pid")],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise AssertionError("no Docker engine: scripts/start-dockerd exited %d:\n%s%s" % (
                r.returncode, r.stdout, r.stderr))
        words = r.stdout.split()
        if len(words) == 2 and words[0] == "started":
            self.pid = int(words[1])
        return self

    def build_image(self):
        t0 = time.monotonic()
        r = subprocess.run([os.path.join(REPO, "scripts", "build-app-image"), "--build-dir",
                            APP_BUILD_DIR, "--tag", IMAGE], capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            raise AssertionError("scripts/build-app-image exited %d:\n%s%s" % (
                r.returncode, r.stdout, r.stderr))
        return time.monotonic() - t0

    def remove_leftovers(self):
        """Containers of earlier e2e runs (by their service label) are removed; a container
        named like an instance that is not ours makes the session fail: two tide stacks would
        fight over the names."""
        gone = []
        for c in containers("tide.service"):
            if c["labels"].get("tide.service", "").startswith(SERVICE_PREFIX):
                docker("rm", "-f", c["id"], check=False)
                gone.append(c["name"])
        return gone

    def stop(self):
        """Stops dockerd if this session started it (its containers are already gone)."""
        if not self.pid:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(300):
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)


def http_get(port, path="/", timeout=3.0):
    """GET 127.0.0.1:port path on a fresh connection: (status, headers (lower-case), body)."""
    return harness.http_get("127.0.0.1", port, path, timeout)


# ---- processes -------------------------------------------------------------------------------

class Proc:
    def __init__(self, name, argv, popen, log):
        self.name, self.argv, self.popen, self.log = name, argv, popen, log
        self.pid = popen.pid
        self.stopped = False  # by the harness (or on purpose by a test)

    def alive(self):
        return self.popen.poll() is None

    def text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def tail(self, n=20):
        lines = self.text().splitlines()[-n:]
        return "--- %s (pid %d, %s), last %d lines:\n%s" % (
            self.name, self.pid, "alive" if self.alive() else "exit %s" % self.popen.poll(),
            len(lines), "\n".join(lines))

    def stop(self, timeout=15.0):
        """SIGTERM, wait, SIGKILL. Returns the exit status (or a text when it had to kill)."""
        self.stopped = True
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
                return "SIGKILL after %.0fs" % timeout
        return self.popen.returncode

    def kill(self):
        self.stopped = True
        if self.alive():
            self.popen.kill()
        self.popen.wait(5)


class Stack:
    """A tide stack on the docker driver, in a temp dir."""

    def __init__(self, name, max_instances=6, hosts=HOSTS, **overrides):
        self.name = name
        self.service = SERVICE_PREFIX + "%s-%d" % (name.replace("_", "-"), os.getpid())
        self.tmp = tempfile.mkdtemp(prefix="tide-e2e-%s-" % name)
        self.procs = []
        self.problems = []
        self.proc = {}  # role -> the latest Proc
        self._redis = None
        self.ports = {k: free_port() for k in (
            "redis", "stats", "metrics", "scaler_events", "scaler_control", "executor_control",
            "executor_events", "proxy", "metrics_http")}
        self.base_port = free_port_range(max(10, max_instances))
        self.hosts = hosts
        self.inventory = os.path.join(self.tmp, "inventory.ini")
        with open(self.inventory, "w") as f:
            f.write("# every host reaches this machine's Docker engine; containers listen on "
                    "127.0.0.1\n")
            for h in hosts:
                f.write("%s ansible_connection=local ansible_host=127.0.0.1 "
                        "ansible_python_interpreter=/usr/bin/python3\n" % h)
        # The integration suite's settings, with the docker driver's slower jobs.
        self.cfg = harness.stack_config(self.ports, self.base_port, max_instances, self.tmp,
                                        service=self.service)
        del self.cfg["app"]["command"]
        self.cfg["app"].update({"health_timeout_ms": 15000, "image": IMAGE})
        self.cfg["scaler"].update({"job_deadline_ms": 90000, "backoff_initial_ms": 2000,
                                   "backoff_max_ms": 8000, "drain_deadline_ms": 10000,
                                   "request_timeout_ms": 1500})
        self.cfg["executor"].update({"driver": "docker",
                                     "playbooks_dir": os.path.join(REPO, "playbooks"),
                                     "inventory": self.inventory, "job_deadline_ms": 90000,
                                     "output_tail_lines": 40})
        for section, vals in overrides.items():
            if isinstance(vals, dict):
                self.cfg.setdefault(section, {}).update(vals)
            else:
                self.cfg[section] = vals
        self.config_path = self.write_config("tide.yml", self.cfg)

    def write_config(self, filename, cfg):
        path = os.path.join(self.tmp, filename)
        write_yaml(path, cfg)
        return path

    # ---- processes ----

    def start(self, role, argv):
        idx = sum(1 for p in self.procs if p.name.split("#")[0] == role)
        label = role if idx == 0 else "%s#%d" % (role, idx)
        log = os.path.join(self.tmp, label + ".log")
        env = dict(os.environ)
        env.pop("TIDE_CONFIG", None)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        with open(log, "wb") as f:
            popen = subprocess.Popen(argv, cwd=self.tmp, stdout=f, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env,
                                     preexec_fn=_die_with_parent)
        p = Proc(label, argv, popen, log)
        self.procs.append(p)
        self.proc[role] = p
        return p

    def daemon(self, role, config=None):
        return self.start(role, [binary("tide-" + role), "-c", config or self.config_path,
                                 "--id", "%s-%s" % (role, self.name)])

    def start_redis(self):
        self.start("redis", ["redis-server", "--port", str(self.ports["redis"]), "--bind",
                             "127.0.0.1", "--dir", self.tmp, "--save", "", "--appendonly", "no",
                             "--daemonize", "no"])
        self.wait_until(lambda: self.redis.ping(), 10, "redis-server answers PING")

    def start_all(self, wait=True):
        for b in ("tide-proxy", "tide-metrics", "tide-scaler", "tide-executor", "tidectl"):
            binary(b)
        self.start_redis()
        self.daemon("executor")
        self.daemon("metrics")
        self.daemon("scaler")
        self.daemon("proxy")
        if wait:
            self.wait_ready(self.cfg["scaler"]["min"], timeout=90)

    def wait_ready(self, count, timeout=60):
        self.wait_until(lambda: self.instances() == count and len(self.pool()) == count,
                        timeout, "Redis instances == %d and a pool of %d" % (count, count))
        self.wait_until(lambda: self.status()["state"] in ("STATE_IDLE", "STATE_UP"), timeout,
                        "the scaler in a stable state")
        if count:
            self.wait_until(lambda: http_get(self.ports["proxy"])[0] == 200, timeout,
                            "the proxy answers 200")

    def unexpected_deaths(self):
        return [p for p in self.procs if not p.stopped and not p.alive()]

    def logs_tail(self, n=15):
        return "\n".join(p.tail(n) for p in self.procs if p.name != "redis")

    def wait_until(self, fn, timeout, what, interval=0.2):
        """Calls fn until it returns something truthy (returned). Exceptions count as not yet.
        Raises WaitTimeout with the last value and the logs on timeout or when a process died."""
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
            dead = self.unexpected_deaths()
            if dead:
                raise WaitTimeout("while waiting for %s: %s died\n%s" % (
                    what, ", ".join(p.name for p in dead), self.logs_tail(40)))
            if time.monotonic() >= deadline:
                raise WaitTimeout("timed out after %ds waiting for %s; last value %r\n%s" % (
                    timeout, what, last, self.logs_tail()))
            time.sleep(interval)

    # ---- views ----

    @property
    def redis(self):
        if self._redis is None:
            self._redis = redis.Redis(host="127.0.0.1", port=self.ports["redis"],
                                      decode_responses=True, socket_timeout=2)
        return self._redis

    def key(self, k):
        return "tide:%s:%s" % (self.service, k)

    def instances(self):
        v = self.redis.get(self.key("instances"))
        return None if v is None else int(v)

    def pool(self):
        return self.redis.hgetall(self.key("pool"))

    def tidectl(self, *args, timeout=20):
        return subprocess.run([binary("tidectl"), "-c", self.config_path] + [str(a) for a in args],
                              cwd=self.tmp, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def status(self):
        r = self.tidectl("status", "--json")
        if r.returncode != 0:
            raise AssertionError("tidectl status exited %d: %s" % (r.returncode, r.stderr))
        return json.loads(r.stdout.strip().splitlines()[-1])

    def control(self, *args):
        r = self.tidectl(*args)
        assert r.returncode == 0, "tidectl %s: %s %s" % (" ".join(map(str, args)), r.stdout,
                                                         r.stderr)
        return r.stdout

    def containers(self, running_only=False):
        """This stack's containers (its service label), by name."""
        cs = containers("tide.service=" + self.service, all_states=not running_only)
        return {c["name"]: c for c in cs}

    def running_names(self):
        return sorted(n for n, c in self.containers().items() if c["state"] == "running")

    def instance_port(self, name):
        return self.base_port + int(name[len("production"):])

    def watch(self, json_mode=True, topics=()):
        """A running `tidectl watch`, subscribed: it has printed a metrics.snapshot (so its
        sockets are connected; pub/sub drops what is sent before that)."""
        w = Watch(self, json_mode, tuple(topics) + (("metrics.snapshot",) if topics else ()))
        w.start()
        self.wait_until(lambda: w.items(), 15, "tidectl watch receiving")
        return w

    # ---- teardown ----

    def close(self, failed=False):
        """Removes every container of the service, stops every process, returns problems."""
        order = {"proxy": 0, "scaler": 1, "metrics": 2, "executor": 3, "redis": 9}
        for p in sorted(self.procs, key=lambda p: order.get(p.name.split("#")[0], 5)):
            if p.name.startswith("watch"):
                p.kill()
                continue
            if p.stopped:
                continue  # stopped or killed on purpose by the test: checked there
            died = not p.alive()
            rc = p.stop()
            if died and not p.name.startswith("redis"):
                self.problems.append("%s (pid %d) had died before teardown, exit %s" % (
                    p.name, p.pid, rc))
            elif rc not in (0, None) and not p.name.startswith("redis") and not died:
                self.problems.append("%s (pid %d) exited %s on SIGTERM, expected 0" % (
                    p.name, p.pid, rc))
        # With the executor gone no list can start one again: stop the hosts' flight recorder
        # (all the inventory's hosts are this machine, so one recorder, in the state dir).
        rec = os.path.join(self.cfg["executor"]["state_dir"], "recorder")
        keep = os.path.join(rec, "tide-recorder-keep.sh")
        if os.path.exists(keep):
            r = subprocess.run(["sh", keep, "off", rec], capture_output=True, text=True,
                               timeout=30, stdin=subprocess.DEVNULL)
            words = r.stdout.split()  # "stopped PID" or "not running"
            if r.returncode != 0 or (words[:1] == ["stopped"] and
                                     harness.pid_alive(int(words[1]))):
                self.problems.append("the flight recorder did not stop: %s %s" % (
                    r.stdout, r.stderr))
        # With the executor gone no playbook can start one again: remove them all.
        left = self.containers()
        if left:
            docker("rm", "-f", *[c["id"] for c in left.values()], check=False)
        still = self.containers()
        if still:
            self.problems.append("containers left after docker rm -f: %s" % sorted(still))
        for p in self.procs:
            text = p.text()
            for m in SANITIZER_MARKERS:
                if m in text:
                    i = text.index(m)
                    self.problems.append("%s: sanitizer report:\n%s" % (
                        p.name, text[max(0, i - 200):i + 1500]))
                    break
        if self._redis is not None:
            self._redis.close()
        if failed or self.problems or os.environ.get("TIDE_KEEP_TMP"):
            print("\n[e2e] logs kept in %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.problems


class Watch:
    """`tidectl watch` as a subprocess; every line kept with the time it arrived."""

    def __init__(self, stack, json_mode=True, topics=()):
        self.stack = stack
        self.json = json_mode
        self.topics = topics
        self.events = []  # (t_monotonic, obj) in JSON mode, (t, line) in text mode
        self.lock = threading.Lock()

    def start(self):
        argv = [binary("tidectl"), "-c", self.stack.config_path, "watch"]
        argv += ["--json"] if self.json else []
        for t in self.topics:
            argv += ["--topic", t]
        role = "watch" if self.json else "watch-text"
        log = os.path.join(self.stack.tmp, role + ".err")
        with open(log, "wb") as err:
            popen = subprocess.Popen(argv, cwd=self.stack.tmp, stdout=subprocess.PIPE,
                                     stderr=err, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        self.proc = Proc(role, argv, popen, log)
        self.stack.procs.append(self.proc)
        self.out_path = os.path.join(self.stack.tmp, role + ".out")
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        with open(self.out_path, "w") as out:
            for raw in self.proc.popen.stdout:
                line = raw.decode(errors="replace")
                out.write(line)
                out.flush()
                now = time.monotonic()
                if self.json:
                    try:
                        item = json.loads(line)
                    except ValueError:
                        continue
                else:
                    item = line.rstrip("\n")
                with self.lock:
                    self.events.append((now, item))

    def items(self):
        with self.lock:
            return list(self.events)

    def msgs(self, topic):
        return [(t, o["msg"]) for t, o in self.items() if o.get("topic") == topic]

    def jobs(self, kind=None, event=None, state=None):
        """exec.job messages [(t, msg)], filtered by record kind, event type and record state."""
        out = []
        for t, m in self.msgs("exec.job"):
            job = m.get("job") or {}
            if event and m.get("type") != event:
                continue
            if kind and job.get("kind") != kind:
                continue
            if state and job.get("state") != state:
                continue
            out.append((t, m))
        return out

    def text(self):
        with self.lock:
            return "\n".join(line for _, line in self.events)


def ts_ms(msg):
    return int((msg.get("header") or {}).get("ts_ms") or 0)
