"""supervised.py - a private supervisord for the process driver's tests: its config in the
stack's temp dir, whose [include] holds the programs the process driver writes (as
deploy/supervisord.conf does), its process (a harness Proc, stopped by the stack's teardown)
and supervisorctl against it. tests/chaos adds the tide daemons as programs of its own."""

import os
import subprocess

SUPERVISORD_CONF = """\
; supervisord.conf written by tests/integration/test_process_driver.py: a private supervisord
; whose [include] holds the programs the process driver writes (as deploy/supervisord.conf).
[supervisord]
nodaemon=true
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
childlogdir={tmp}
loglevel=info

[unix_http_server]
file={tmp}/supervisor.sock
chmod=0700

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{tmp}/supervisor.sock
{extra}
[include]
files = {programs}/*.conf
"""


class Supervisor:
    """The test's supervisord: its config, its process (a harness Proc, so the stack's teardown
    sends it SIGTERM after the executor) and supervisorctl against it."""

    def __init__(self, st, extra=""):
        """extra: more sections for supervisord.conf (tests/chaos runs the daemons there)."""
        self.st = st
        self.state_dir = st.cfg["executor"]["state_dir"]
        self.programs_dir = os.path.join(self.state_dir, "programs")
        self.logs_dir = os.path.join(self.state_dir, "logs")
        self.conf = os.path.join(st.tmp, "supervisord.conf")
        os.makedirs(self.programs_dir, exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(SUPERVISORD_CONF.format(tmp=st.tmp, programs=self.programs_dir, extra=extra))
        self.proc = None

    def start(self):
        self.proc = self.st.start("supervisord", ["supervisord", "-c", self.conf])
        self.st.wait_until(lambda: self.ctl("pid").stdout.strip() == str(self.proc.pid), 20,
                           "supervisord (pid %d) answers supervisorctl" % self.proc.pid)
        return self.proc

    def ctl(self, *args, timeout=10):
        return subprocess.run(["supervisorctl", "-c", self.conf] + list(args), cwd=self.st.tmp,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def programs(self):
        """{name: state} from `supervisorctl status` (exit 3 = some program not running)."""
        r = self.ctl("status")
        if r.returncode not in (0, 3):
            raise AssertionError("supervisorctl status exited %d: %r %r" % (
                r.returncode, r.stdout[-500:], r.stderr[-500:]))
        out = {}
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                out[parts[0]] = parts[1]
        return out

    def conf_file(self, name):
        return os.path.join(self.programs_dir, name + ".conf")

    def describe(self):
        try:
            progs = self.programs()
        except Exception as e:  # noqa: BLE001
            progs = "(%s)" % e
        files = sorted(os.listdir(self.programs_dir)) if os.path.isdir(self.programs_dir) \
            else []
        return "supervisord programs: %r; program files: %r" % (progs, files)
