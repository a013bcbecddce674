"""test_profile.py - issue 8 on the docker driver: the list keeps a flight recorder on the host
(perf on every CPU, detached, found again through its pid file; the harness stops it), and a
container told to fail half its requests gets an "errors" profile of the seconds before the
trigger, from that recorder's ring (the container's host PID), whose frames are named from the
static binary INSIDE the container (read through /proc/PID/root):
the failing function holds a large share of its samples and has grown against the healthy
sibling in the differential. `tidectl profile NAME --seconds N` works on a container too, and
an instance that runs nowhere is refused. Then production0's container crashes under load
(SIGSEGV): the list finds it exited, the scaler asks for a crash profile of its host PID, whose
samples (the recorder's seconds up to the exit) are named from a copy of the dead container's
filesystem, and whose record gives the core's stack or says why there is none; the scaler
replaces the container, and the load sees no failure but production1's own 500s. Last, a
profile of an instance whose container is gone from every host is refused with that cause."""

import datetime
import json
import os
import subprocess
import time
import urllib.request

from e2e import Load, docker
from harness import cmdline, folded, stack_share

FAIL_FUNC = "sample_fail_burn"
WORK_FUNC = "sample_request_work"
CRASH_FUNC = "sample_crash_now"


def post(port, path):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=b"",
                                 method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def profiles(st):
    r = st.tidectl("profiles", "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    return [json.loads(x) for x in r.stdout.splitlines() if x.strip()]


def test_profile_of_a_failing_container(make_stack):
    st = make_stack("profile", hosts=("h1",),
                    app={"args": "--cpu-us 300"},
                    scaler={"min": 2, "target_rps": 1000},
                    profiling={"enabled": "on", "rate_hz": 999, "window_s": 4,
                               "error_rate": 0.2, "error_for_s": 2, "min_interval_s": 600,
                               "max_seconds": 30})
    st.start_all(wait=False)
    st.wait_ready(2, timeout=120)
    rec = os.path.join(st.cfg["executor"]["state_dir"], "recorder")
    with open(os.path.join(rec, "recorder.pid")) as f:
        rec_pid = int(f.read())
    assert "tide-recorder.sh" in cmdline(rec_pid), cmdline(rec_pid)
    # the next list keeps it: the reconcile's and the health checks' lists start no second one
    with open(os.path.join(rec, "recorder.args")) as f:
        args = f.read().split()  # perf, rate, ring pages
    assert args[1] == "999", args
    r = subprocess.run(["sh", os.path.join(rec, "tide-recorder-keep.sh"), "on", rec] + args,
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stdout.strip() == "running %d" % rec_pid, (r.stdout, r.stderr)
    port1 = st.instance_port("production1")
    with Load("127.0.0.1", st.ports["proxy"], 40, threads=4) as load:
        req = urllib.request.Request("http://127.0.0.1:%d/_sample/fail?share=0.5" % port1,
                                     data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200
        t_fail = time.monotonic()
        found = st.wait_until(lambda: [p for p in profiles(st) if p["reason"] == "errors"], 90,
                              "an errors profile of production1")
        t_found = time.monotonic()
        p = found[0]
        assert p["instance"] == "production1" and p["baseline"] == "production0", p
        assert p["source"] == "ring" and 3.5 <= (p["to_ms"] - p["from_ms"]) / 1000 <= 4.5, p
        folder = os.path.join(st.cfg["executor"]["state_dir"], "profiles", p["id"])
        mine = folded(os.path.join(folder, "stacks.folded"))
        base = folded(os.path.join(folder, "baseline.folded"))
        # Named from the binary inside the container, not "[unknown]".
        got = stack_share(mine, FAIL_FUNC)
        assert got >= 0.3, (got, sum(mine.values()), mine)
        assert stack_share(base, FAIL_FUNC) == 0.0, base
        assert p["unknown_share"] < 0.5, p
        with open(os.path.join(folder, "diff.svg")) as f:
            head = f.read().split('data-n="%s"' % FAIL_FUNC, 1)[1].split("</g>", 1)[0]
        assert 'data-b="0.000"' in head and 'fill="rgb(255,' in head, head[:300]

        r = st.tidectl("profile", "production0", "--seconds", "2", timeout=120)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert [q for q in profiles(st) if q["reason"] == "manual"], profiles(st)
        r = st.tidectl("profile", "production5")
        assert r.returncode == 1 and "not an instance in the pool" in r.stderr, r.stderr

        # ---- production0's container crashes under load: a crash profile of its host PID,
        # its frames named from a copy of its filesystem, and a new production0 ----
        # production1 healthy again, and no health check in flight: a list that runs across the
        # crash finds production0 running but failing its health check, and the scaler stops it
        # as unhealthy before any list sees it exited (no crash profile then; docs/architecture.md,
        # "Crashes"). The checks production1's failures start end once its panic window is clean.
        assert post(port1, "/_sample/fail?share=0") == 200
        t_healed = time.monotonic()

        def settled():
            s = st.status()
            return time.monotonic() - t_healed > 4 and \
                s.get("state") in ("STATE_IDLE", "STATE_UP") and not s.get("job_id")
        st.wait_until(settled, 60, "no health check in flight after production1 healed")
        dead_pid = int(docker("inspect", "-f", "{{.State.Pid}}", "production0").strip())
        t_crash = time.monotonic()
        crash_ms = time.time() * 1000
        try:
            post(st.instance_port("production0"), "/_sample/crash")
        except OSError:
            pass  # it may die before its answer is read
        crashes = st.wait_until(lambda: [q for q in profiles(st) if q["reason"] == "crash"], 120,
                                "a crash profile of production0")
        t_crash_found = time.monotonic()
        c = crashes[0]
        assert c["instance"] == "production0" and c["source"] == "ring", c
        assert "pid %d exited: exit code 139 (killed by SIGSEGV)" % dead_pid in c["detail"], c
        assert abs(c["to_ms"] - crash_ms) < 2000, (c, crash_ms)
        cfolder = os.path.join(st.cfg["executor"]["state_dir"], "profiles", c["id"])
        cstacks = folded(os.path.join(cfolder, "stacks.folded"))
        # Named although the process and its container's root are gone (and the kernel's frames
        # from the host's symbols).
        assert stack_share(cstacks, WORK_FUNC) > 0.05 and c["unknown_share"] < 0.2, (c, cstacks)
        if c["has_crash"]:
            r = st.tidectl("profile", "get", c["id"], "--crash")
            assert r.returncode == 0 and CRASH_FUNC in r.stdout.split("== every thread")[0], \
                r.stdout[:2000]
        else:
            # This kernel wrote no core for the container's process: the record says so.
            assert c["crash_note"].startswith("no core in the container's working directory"), c
        # Replaced: a new production0 container (another host PID) in the pool.
        st.wait_until(lambda: "production0" in st.pool() and st.instances() == 2 and
                      int(docker("inspect", "-f", "{{.State.Pid}}", "production0").strip() or 0)
                      not in (0, dead_pid), 120, "a new production0 in the pool")
        crash_dir = os.path.join(st.cfg["executor"]["state_dir"], "crashes",
                                 "production0-%d" % dead_pid)
        assert not os.path.exists(os.path.join(crash_dir, "rootfs")), \
            "the copy of the container's filesystem was left behind"
    print("\nerrors profile %.1f s after the failures began; %d samples, %.0f%% in %s" % (
        t_found - t_fail, sum(mine.values()), 100 * stack_share(mine, FAIL_FUNC), FAIL_FUNC))
    # When the scaler noticed the crash (its "instance exited" line), for the closing note.
    scaler_log = [p for p in st.procs if p.name == "scaler"][0].text()
    noticed = [ln.split()[0][3:] for ln in scaler_log.splitlines()
               if 'msg="instance exited"' in ln and "instance=production0" in ln]
    noticed_ms = datetime.datetime.strptime(noticed[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp() * 1000 if noticed else float("nan")
    print("crash profile %.1f s after the crash, %.1f s after the scaler noticed it; %d samples, "
          "%.0f%% in %s; %s" % (t_crash_found - t_crash, (c["created_ms"] - noticed_ms) / 1000,
                               c["samples"], 100 * stack_share(cstacks, WORK_FUNC), WORK_FUNC,
                               c["crash_note"]))
    bad = [(x.status, x.instance) for x in load.results
           if x.error is not None or not 200 <= x.status < 300]
    assert bad and all(b == (500, "production1") for b in bad), bad[:10]

    # An instance in the pool that runs on no inventory host (its container removed behind
    # tide's back) is refused with the cause, and no profile is written. The scaler is paused so
    # that no health check takes it out of the pool first.
    st.control("pause")
    before = len(profiles(st))
    docker("rm", "-f", "production1")
    r = st.tidectl("profile", "production1", "--seconds", "1", timeout=120)
    assert r.returncode == 1 and "production1 runs on no inventory host" in r.stderr, \
        (r.stdout, r.stderr)
    assert len(profiles(st)) == before
    st.control("resume")

