"""chaos_stack.py - the one stack the chaos scenarios share: a real redis-server (started by the
harness, so a scenario can SIGSTOP it), and a private supervisord that runs tide-executor
(process driver, real ansible-playbook), tide-metrics, tide-scaler and tide-proxy as programs
with autorestart, as deploy/supervisord.conf does, plus every instance the process driver adds
through its [include]. A daemon killed by a scenario is restarted by supervisord, as in
production; the harness only ever signals PIDs that supervisorctl names.

Two scalers are configured (`scalers:`, as deploy/tide-run.yml has them): tide-scaler and
tide-scaler-b, the standby, which supervisord does not start until start_standby(); so the
first scenarios run one scaler and the later ones a leader with a standby, on the same stack.

census() is the "no orphan, no duplicate" check: every tide-sample-app process of the stack,
who its parent is, and which name and port it runs as; a CensusWatch runs it all through a
scenario, so an orphan or a duplicate that lives only for a moment is seen too."""

import os
import re
import shutil
import signal
import threading
import time
import xmlrpc.client

from supervisor.xmlrpc import SupervisorTransport

from harness import REPO, SANITIZER_MARKERS, RawYaml, Stack, binary, free_port, pid_alive
from supervised import Supervisor

DAEMONS = ("tide-executor", "tide-metrics", "tide-scaler", "tide-proxy")
STANDBY = "tide-scaler-b"  # the second scaler, started by start_standby()

PROGRAM = """
[program:{name}]
command={bin} -c {config} --id {short}-chaos
autostart={autostart}
autorestart=true
startsecs=1
startretries=1000
stopasgroup=true
killasgroup=true
stopwaitsecs=15
redirect_stderr=true
stdout_logfile={tmp}/{name}.log
stdout_logfile_maxbytes=0
"""

MIN = 2           # instances at rest: one can die and the proxy still has somewhere to go
MAX = 4
JOB_DEADLINE_MS = 60000  # a real playbook takes 3-7 s here, more on a busy machine


def ppid(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[1])


class ChaosStack:
    def __init__(self):
        missing = [t for t in ("supervisord", "supervisorctl", "ansible-playbook",
                               "redis-server") if shutil.which(t) is None]
        assert not missing, "the chaos suite needs %s on PATH" % ", ".join(missing)
        self.st = Stack(
            "chaos", max_instances=MAX,
            # 150 ms a request: about 3 of the load's 20 req/s are in flight at any moment,
            # so a kill -9 of the proxy or of an instance has requests to catch in flight.
            app={"args": "--delay-ms 150 --concurrency 8"},
            scaler={"min": MIN, "max": MAX, "job_deadline_ms": JOB_DEADLINE_MS,
                    "request_timeout_ms": 3000},
            executor={"driver": "process",
                      "playbooks_dir": os.path.join(REPO, "playbooks"),
                      "inventory": os.path.join(REPO, "playbooks", "inventory", "local.ini"),
                      "job_deadline_ms": JOB_DEADLINE_MS})
        st = self.st
        extra = "".join(PROGRAM.format(name=d, bin=binary(d), config=st.config_path,
                                       short=d.replace("tide-", ""), tmp=st.tmp,
                                       autostart="true")
                        for d in DAEMONS)
        extra += PROGRAM.format(name=STANDBY, bin=binary("tide-scaler"), config=st.config_path,
                                short=STANDBY.replace("tide-", ""), tmp=st.tmp,
                                autostart="false")
        # The scalers by their --id: tidectl, the proxy and tide-metrics use the list and reach
        # whichever leads.
        self.scaler_ids = {"scaler-chaos": "tide-scaler", "scaler-b-chaos": STANDBY}
        st.cfg["scalers"] = RawYaml("[%s, %s]" % (
            '{id: "scaler-chaos", control: "%s", events: "%s"}' % (
                st.endpoint("scaler_control"), st.endpoint("scaler_events")),
            '{id: "scaler-b-chaos", control: "tcp://127.0.0.1:%d", events: '
            '"tcp://127.0.0.1:%d"}' % (free_port(), free_port())))
        self.daemons = list(DAEMONS)  # what must be RUNNING (the standby, once started)
        self.sv = Supervisor(st, extra=extra)
        st.cfg["executor"]["supervisor_config"] = self.sv.conf
        st.write_config()
        self.problems = []

    def start(self):
        self.st.start_redis()
        self.sv.start()
        self.st.wait_ready(count=MIN, timeout=120)

    # ---- the daemons, as supervisord runs them ----

    def processes(self):
        """{program: (state, pid)} from supervisord's XML-RPC interface (what supervisorctl
        asks, without starting a Python per question, so recovery is timed to a few ms)."""
        rpc = xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(
                None, None, "unix://" + os.path.join(self.st.tmp, "supervisor.sock")))
        return {p["name"]: (p["statename"], p["pid"])
                for p in rpc.supervisor.getAllProcessInfo()}

    def pid(self, program):
        """The PID supervisord runs program as, or None while it is not running."""
        state, pid = self.processes().get(program, (None, 0))
        return pid if state == "RUNNING" and pid else None

    def kill(self, program, sig=signal.SIGKILL):
        """Sends sig to program's current process; returns that PID."""
        pid = self.pid(program)
        assert pid is not None, "%s is not running: %s" % (program, self.sv.describe())
        os.kill(pid, sig)
        return pid

    def daemons_running(self, procs=None):
        """True when every daemon is RUNNING under supervisord."""
        procs = self.processes() if procs is None else procs
        return all(procs.get(d, ("",))[0] == "RUNNING" for d in self.daemons)

    # ---- the scalers ----

    def lease(self):
        """(program, epoch) of the scaler holding the lease (tide:<svc>:leader is "<id>
        <epoch>"), or (None, 0) when nobody holds it."""
        v = self.st.redis.get(self.st.key("leader")) or ""
        sid, _, epoch = v.partition(" ")
        return (self.scaler_ids.get(sid), int(epoch)) if epoch.isdigit() else (None, 0)

    def start_standby(self):
        """Starts tide-scaler-b (once) and waits until it runs as the standby: tide-scaler still
        holds the lease."""
        if STANDBY in self.daemons:
            return
        r = self.sv.ctl("start", STANDBY, timeout=30)
        assert "started" in r.stdout, "supervisorctl start %s: %r %r" % (
            STANDBY, r.stdout, r.stderr)
        self.daemons.append(STANDBY)
        self.st.wait_until(lambda: self.pid(STANDBY) is not None, 10,
                           "%s is RUNNING" % STANDBY, check_alive=False)
        assert self.lease()[0] == "tide-scaler", \
            "the standby's start moved the lease: %r" % (self.lease(),)

    def exits(self, program):
        """supervisord's "exited: PROGRAM (...)" notes, in order."""
        try:
            with open(os.path.join(self.st.tmp, "supervisord.log"), errors="replace") as f:
                text = f.read()
        except OSError:
            return []
        return re.findall(r"exited: %s \(([^)]*)\)" % re.escape(program), text)

    # ---- instances ----

    def census(self):
        """({name: [pid, ...]}, problems) over every tide-sample-app process of this stack (its
        --listen is a port of the instance range), found by /proc's command lines, so one that
        could not bind its port counts too. Problems: a process that is not a child of our
        supervisord (an orphan), one whose name is not its port's, a name run twice."""
        names = {}
        problems = []
        ports = range(self.st.base_port, self.st.base_port + MAX + 2)
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if not argv or not argv[0].endswith("tide-sample-app"):
                continue
            listen = argv[argv.index("--listen") + 1] if "--listen" in argv[:-1] else ""
            port = int(listen.rsplit(":", 1)[1]) if listen.rsplit(":", 1)[-1].isdigit() else 0
            if port not in ports:
                continue
            pid = int(d)
            name = argv[argv.index("--name") + 1] if "--name" in argv[:-1] else "?"
            names.setdefault(name, []).append(pid)
            try:
                parent = ppid(pid)
            except (OSError, ValueError):
                continue  # it has just exited
            if parent != self.sv.proc.pid:
                problems.append("%s (pid %d) is not supervisord's child (parent %d): an orphan"
                                % (name, pid, parent))
            if name != "production%d" % (port - self.st.base_port):
                problems.append("%s (pid %d) listens on %d, another instance's port" % (
                    name, pid, port))
        for name, pids in names.items():
            if len(pids) > 1:
                problems.append("%s runs twice: pids %r" % (name, pids))
        return names, problems

    def steady(self, count):
        """None when the stack stands at count instances with nothing out of place, else what
        is not yet so (a string, for wait_until's "last value")."""
        st = self.st
        procs = self.processes()
        if not self.daemons_running(procs):
            return "daemons: %r" % procs
        pool = st.pool()
        want = ["production%d" % i for i in range(count)]
        if st.instances() != count or sorted(pool) != want:
            return "Redis instances=%s pool=%r, want %d" % (st.instances(), sorted(pool), count)
        if st.state().get("stopping"):
            return "still stopping: %r" % st.state().get("stopping")
        names, problems = self.census()
        if problems:
            return "; ".join(problems)
        if sorted(names) != want:
            return "running instances %r != pool %r" % (sorted(names), want)
        progs = {k: v[0] for k, v in procs.items() if k.startswith("production")}
        if progs != {n: "RUNNING" for n in want}:
            return "supervisord instance programs %r" % progs
        status = st.status(timeout=5)
        if status.get("state") not in ("STATE_IDLE", "STATE_UP") or \
                status.get("current") != count:
            return "scaler: state=%s current=%s" % (status.get("state"), status.get("current"))
        for name, addr in pool.items():
            if not st.instance_answers(addr, name):
                return "%s at %s does not answer its health path" % (name, addr)
        return None

    def wait_steady(self, count, timeout, what):
        last = []

        def ok():
            last[:] = [self.steady(count)]
            return last[0] is None
        self.st.wait_until(ok, timeout, what, check_alive=False,
                           detail=lambda: "last: %s\n%s" % (last[0] if last else None,
                                                            self.sv.describe()))

    # ---- teardown ----

    def close(self, failed=False):
        """Stops the daemons through supervisorctl (proxy first, executor last), checks each
        exited 0 and that no log holds a sanitizer report, then stops supervisord (and with it
        the instances) and Redis. Returns the problems found."""
        st = self.st
        problems = list(self.problems)
        if self.sv.proc is not None and self.sv.proc.alive():
            for d in reversed(self.daemons):
                r = self.sv.ctl("stop", d, timeout=30)
                if "stopped" not in r.stdout and "not running" not in r.stdout:
                    problems.append("supervisorctl stop %s: %r %r" % (d, r.stdout, r.stderr))
                # supervisord logs "stopped: NAME (exit status N)" for a stop it asked for.
                deadline = time.monotonic() + 5
                notes = []
                while time.monotonic() < deadline:
                    with open(os.path.join(st.tmp, "supervisord.log"), errors="replace") as f:
                        notes = re.findall(r"stopped: %s \(([^)]*)\)" % re.escape(d), f.read())
                    if notes:
                        break
                    time.sleep(0.1)
                if not notes:
                    problems.append("supervisord logged no stop of %s" % d)
                elif notes[-1] != "exit status 0":
                    problems.append("%s ended with %r on SIGTERM, expected exit status 0" % (
                        d, notes[-1]))
            logs = [os.path.join(st.tmp, d + ".log") for d in self.daemons]
            if os.path.isdir(self.sv.logs_dir):  # the instances' own
                logs += [os.path.join(self.sv.logs_dir, f) for f in os.listdir(self.sv.logs_dir)]
            for path in logs:
                with open(path, errors="replace") as f:
                    text = f.read()
                for marker in SANITIZER_MARKERS:
                    if marker in text:
                        i = text.index(marker)
                        problems.append("%s: sanitizer report:\n%s" % (
                            os.path.basename(path), text[max(0, i - 200):i + 1500]))
                        break
            instance_pids = [p for pids in self.census()[0].values() for p in pids]
            rc = self.sv.proc.stop(timeout=20)
            if rc != 0:
                problems.append("supervisord exited %s on SIGTERM" % rc)
            for p in instance_pids:
                if pid_alive(p):
                    problems.append("instance pid %d outlived supervisord" % p)
                    os.kill(p, signal.SIGKILL)
        problems += st.close(failed=failed or bool(problems))
        return problems


class CensusWatch(threading.Thread):
    """Runs chaos.census() every interval until stopped; keeps each problem seen (first time)."""

    def __init__(self, chaos, interval=0.25):
        super().__init__(daemon=True, name="census")
        self.chaos = chaos
        self.interval = interval
        self.seen = {}  # problem text -> monotonic time first seen
        self.samples = 0
        self._stop_ev = threading.Event()

    def run(self):
        while not self._stop_ev.is_set():
            _, problems = self.chaos.census()
            self.samples += 1
            now = time.monotonic()
            for p in problems:
                self.seen.setdefault(p, now)
            self._stop_ev.wait(self.interval)

    def stop(self):
        self._stop_ev.set()
        self.join(5)
        return self.seen
