"""test_process_driver.py - the default deployment path end to end: the REAL tide-executor with
the `process` driver runs real `ansible-playbook` on playbooks/process/*.yml against a REAL
supervisord the test starts in its temp dir. The stack reconciles to the minimum (production0 a
RUNNING supervisord program), `tidectl scale 2` adds production1 as a program that joins the
pool and serves traffic, `tidectl resume` with only a low load takes it back out (program gone
from supervisord, its .conf file gone, its port closed), and not one request of the background
load through the proxy fails. exec.job OUTPUT lines prove ansible really ran."""

import os
import shutil
import time

from harness import REPO, SANITIZER_MARKERS, cmdline, job_events, listeners_on, port_is_free
from supervised import Supervisor
from load import Load, results_after

RATE = 4          # req/s of background load: ceil(4 / 20) = 1 instance, scaler.min
MAX = 4
JOB_DEADLINE_MS = 60000  # a real playbook takes 3-7 s here, more on a busy machine
STEP_TIMEOUT = 60        # seconds for one scale step (a job, the drain, the pool change)

def ppid(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def served_by_supervisord(st, sv, name):
    """True when the instance's port is served by a tide-sample-app child of our supervisord."""
    pids = listeners_on(st.instance_port(name))
    return bool(pids) and all("tide-sample-app" in cmdline(p) and ppid(p) == sv.proc.pid
                              for p in pids)


def children(pid):
    """PIDs whose parent is pid."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if ppid(int(d)) == pid:
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def assert_recording(st, sv):
    """The host's flight recorder, started by the reconcile's list, is perf sampling every CPU
    into a ring: the supervisord program is tide-recorder.sh, perf its child."""
    def perf_argv():
        pid = sv.ctl("pid", "tide-recorder").stdout.strip()
        if not pid.isdigit() or pid == "0":
            return None
        for c in children(int(pid)):
            argv = cmdline(c)
            if " record " in argv and os.path.basename(argv.split(" ", 1)[0]).startswith("perf"):
                return argv
        return None
    argv = st.wait_until(perf_argv, 15, "tide-recorder runs perf", detail=sv.describe)
    assert " -a " in argv and "cpu-clock/overwrite/" in argv and "-F 49" in argv, argv


def finished_jobs(watch, kind, name):
    """FINISHED exec.job records of kind naming instance name."""
    out = []
    for m in job_events(watch, "JOB_EVENT_FINISHED"):
        job = m.get("job") or {}
        if job.get("kind") == kind and \
                name in [i.get("name") for i in job.get("instances") or []]:
            out.append(job)
    return out


def test_process_driver(make_stack):
    missing = [t for t in ("supervisord", "supervisorctl", "ansible-playbook")
               if shutil.which(t) is None]
    assert not missing, "the process driver needs %s on PATH" % ", ".join(missing)
    t_start = time.monotonic()
    st = make_stack(
        "process_driver", max_instances=MAX,
        scaler={"job_deadline_ms": JOB_DEADLINE_MS, "request_timeout_ms": 3000},
        executor={"driver": "process",
                  "playbooks_dir": os.path.join(REPO, "playbooks"),
                  "inventory": os.path.join(REPO, "playbooks", "inventory", "local.ini"),
                  "job_deadline_ms": JOB_DEADLINE_MS},
        # The flight recorders start and stop with their instances.
        profiling={"enabled": "on", "error_rate": 1, "error_for_s": 3600})
    sv = Supervisor(st)
    st.cfg["executor"]["supervisor_config"] = sv.conf
    st.write_config()
    assert os.path.isfile(os.path.join(REPO, "playbooks", "process", "scale_up.yml"))

    st.start_redis()
    sv.start()
    st.daemon("tide-executor")
    watch = st.watch()  # before the scaler, so the first jobs' output is seen too
    mon = st.start_monitor()
    st.start_stack(with_fake=False, wait_ready=False)

    # ---- start: a LIST, then a SCALE_UP through ansible, to scaler.min = 1 ----
    st.wait_ready(timeout=STEP_TIMEOUT)
    t_ready = time.monotonic()
    progs = sv.programs()
    assert progs == {"production0": "RUNNING", "tide-recorder": "RUNNING"}, sv.describe()
    assert_recording(st, sv)
    assert os.path.isfile(sv.conf_file("production0")), sv.describe()
    assert served_by_supervisord(st, sv, "production0"), \
        "production0's port %d is not served by a tide-sample-app child of supervisord: %r" % (
            st.instance_port("production0"), listeners_on(st.instance_port("production0")))
    assert st.instances() == 1 and list(st.pool()) == ["production0"], st.pool()
    status, headers, _ = st.proxy_get()
    assert status == 200 and headers.get("x-instance") == "production0", (status, headers)

    with Load("127.0.0.1", st.ports["proxy"], RATE, threads=4) as load:
        # ---- tidectl scale 2: production1 becomes a supervisord program in the pool ----
        r = st.tidectl("scale", 2)
        assert r.returncode == 0, "tidectl scale 2: %r %r" % (r.stdout, r.stderr)
        st.wait_until(lambda: st.instances() == 2 and len(st.pool()) == 2, STEP_TIMEOUT,
                      "Redis instances == 2 after tidectl scale 2",
                      detail=lambda: "%s\nRedis history: %s" % (sv.describe(), mon.describe()))
        assert sv.programs() == {"production0": "RUNNING", "production1": "RUNNING",
                                 "tide-recorder": "RUNNING"}, sv.describe()
        assert os.path.isfile(sv.conf_file("production1")), sv.describe()
        assert served_by_supervisord(st, sv, "production1")
        pool = st.pool()
        assert pool.get("production1") == "127.0.0.1:%d" % st.instance_port("production1"), pool
        assert st.instance_answers(pool["production1"], "production1")
        joined = mon.first_seen["production1"]
        st.wait_until(lambda: results_after(load, joined)["by_instance"].get("production1"), 20,
                      "production1 serves requests through the proxy",
                      detail=lambda: results_after(load, joined))

        # ---- tidectl resume with only the low load: back to 1, production1 removed ----
        r = st.tidectl("resume")
        assert r.returncode == 0, "tidectl resume: %r %r" % (r.stdout, r.stderr)
        t_resume = time.monotonic()
        st.wait_until(lambda: st.instances() == 1 and list(st.pool()) == ["production0"],
                      STEP_TIMEOUT, "back to 1 instance after tidectl resume at %d req/s" % RATE,
                      detail=lambda: "%s\nRedis history: %s" % (sv.describe(), mon.describe()))
        st.wait_until(lambda: "production1" not in sv.programs() and
                      not os.path.exists(sv.conf_file("production1")) and
                      port_is_free(st.instance_port("production1")), STEP_TIMEOUT,
                      "production1 removed from supervisord, its .conf file gone, port closed",
                      detail=sv.describe)
        st.wait_until(lambda: st.status()["state"] == "STATE_IDLE", 20,
                      "tidectl status shows STATE_IDLE at the minimum")
        t_down = time.monotonic()
        # The low load goes on a little after the stop, still counted.
        n = load.mark()
        assert load.wait_count(n + 2 * RATE, 10), "the load generator stalled"
    stats = load.stats()

    # The host's flight recorder outlives the instances it watched.
    assert sv.programs() == {"production0": "RUNNING", "tide-recorder": "RUNNING"}, \
        sv.describe()
    assert_recording(st, sv)
    assert sorted(os.listdir(sv.programs_dir)) == ["production0.conf", "tide-recorder.conf"], \
        sv.describe()
    assert st.instance_answers(st.pool()["production0"], "production0")
    assert not st.instance_answers("127.0.0.1:%d" % st.instance_port("production1"))
    counts = [c for t, c, _ in mon.history if t >= t_resume and c is not None]
    assert counts == sorted(counts, reverse=True), "instances went up after resume: %s" % \
        mon.describe()

    # ---- the jobs were real ansible runs ----
    ups = finished_jobs(watch, "JOB_SCALE_UP", "production1")
    downs = finished_jobs(watch, "JOB_SCALE_DOWN", "production1")
    assert ups and ups[-1].get("state") == "JOB_SUCCEEDED", ups
    assert downs and downs[-1].get("state") == "JOB_SUCCEEDED", downs
    lines = [m.get("line") or "" for m in job_events(watch, "JOB_EVENT_OUTPUT")]
    plays = [ln for ln in lines if ln.startswith("PLAY") or ln.startswith("TASK")]
    assert plays, "no exec.job OUTPUT line from ansible (PLAY/TASK) was seen: %r" % lines[-20:]
    assert any("scale up (process driver)" in ln for ln in plays), plays[:10]
    assert any("scale down (process driver)" in ln for ln in plays), plays[:10]
    assert any(ln.startswith("PLAY RECAP") for ln in plays), plays[-10:]

    # ---- the instances' own logs (supervisord's stdout_logfile) hold no sanitizer report ----
    for log in sorted(os.listdir(sv.logs_dir)):
        with open(os.path.join(sv.logs_dir, log), errors="replace") as f:
            text = f.read()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, "%s: %s" % (log, text[text.index(marker) - 200:][:1500])

    print("\nload: %r\nmonitor: %s\nready %.1fs after start; scale down took %.1fs after "
          "resume; %d exec.job OUTPUT lines" % (
              {k: stats[k] for k in ("total", "ok", "failed", "by_instance", "errors", "p99_ms")},
              mon.describe(), t_ready - t_start, t_down - t_resume, len(lines)))
    assert stats["failed"] == 0, "failed requests: %r" % stats
    assert stats["by_instance"].get("production0", 0) > 0, stats
    st.assert_alive()

    # ---- teardown by hand, in the stack's order, so its result is asserted here: supervisord
    # exits 0 on SIGTERM and takes every instance program it ran with it ----
    for p in sorted(st.procs, key=lambda p: {"proxy": 0, "scaler": 1, "metrics": 2,
                                             "executor": 3}.get(p.name, 4)):
        if p.name in ("proxy", "scaler", "metrics", "executor", "supervisord"):
            rc = p.stop(timeout=15)
            assert rc == 0, "%s exited %s on SIGTERM\n%s" % (p.name, rc, p.tail())
    left = {port: [cmdline(pid) for pid in pids]
            for port, pids in st.instance_listeners().items()}
    assert not left, "instance ports still served after supervisord stopped: %r" % left
