"""test_profile.py - flamegraphs of failing instances, on the process driver with the REAL
tide-executor, ansible-playbook, perf and a private supervisord (issue 8, tests 1, 3 and 4):

1. production1 told to fail half its requests (POST /_sample/fail?share=0.5) under load through
   the proxy: the scaler sends a profile job with reason "errors" and a profile appears in
   `tidectl profiles --json`; the failing function holds a large share of its samples; the
   differential against production0 (healthy) shows that function grown; the SVG opens in
   headless Chromium and its search (?s=) finds the function; `tidectl watch` saw the
   `profile` event; the load saw no failure from any other instance.
2. production2 crashes under load (POST /_sample/crash: a SIGSEGV in sample_crash_now): the
   list of the health check finds it exited, the scaler asks for a "crash" profile of the pid
   that died, and the profile holds the seconds before the crash from the flight recorder (the
   dead process's frames named, its request function among them) and crash.txt, the stack of
   the thread that took the signal, read from its core. The scaler replaces the instance, and
   the load through the proxy sees no failure from the crash.
3. `tidectl profile production0 --seconds 3` on a busy instance writes a "manual" profile whose
   stacks hold the app's own request function, and `tidectl profile get ID -o FILE` copies it.
4. Bad input is refused with a clear reason and changes nothing: an instance not in the pool,
   seconds out of bounds, and perf missing (the job fails naming perf, scaling goes on).
"""

import datetime
import json
import os
import shutil
import subprocess
import time
import urllib.request

from harness import REPO, binary, folded, http_get, listeners_on, stack_share
from load import Load
from supervised import Supervisor

FAIL_FUNC = "sample_fail_burn"
WORK_FUNC = "sample_request_work"
CRASH_FUNC = "sample_crash_now"
RATE = 40               # req/s through the proxy: ~20 per instance
JOB_DEADLINE_MS = 60000


def post(port, path):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=b"",
                                 method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, r.read().decode()


def profiles(st):
    r = st.tidectl("profiles", "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def p_job_id(watch, profile_id):
    """The id of the job that wrote profile_id (from its FINISHED event), or None."""
    for m in watch.jobs():
        job = m.get("job") or {}
        if m.get("type") == "JOB_EVENT_FINISHED" and job.get("profile_id") == profile_id:
            return m.get("job_id")
    return None


def chromium_matched(svg, term):
    """Opens svg?s=term in headless Chromium and returns the share its search reports."""
    chromium = shutil.which("chromium")
    assert chromium, "headless Chromium is needed to open the SVG (scripts/setup-deps)"
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--user-data-dir=" + os.path.join(os.path.dirname(svg), ".chromium"),
                        "--dump-dom", "file://%s?s=%s" % (svg, term)],
                       capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    shutil.rmtree(os.path.join(os.path.dirname(svg), ".chromium"), ignore_errors=True)
    assert r.returncode == 0, r.stderr[-2000:]
    marker = 'data-matched="'
    assert marker in r.stdout, "the page's search set no result: %s" % r.stdout[:500]
    return float(r.stdout.split(marker, 1)[1].split('"', 1)[0]) / 100.0


def test_profiles(make_stack):
    missing = [t for t in ("supervisord", "supervisorctl", "ansible-playbook", "perf")
               if shutil.which(t) is None]
    assert not missing, "profiles need %s on PATH" % ", ".join(missing)
    st = make_stack(
        "profile", max_instances=4,
        app={"args": "--cpu-us 300"},
        scaler={"min": 2, "job_deadline_ms": JOB_DEADLINE_MS, "request_timeout_ms": 3000,
                "target_rps": 1000},
        executor={"driver": "process",
                  "playbooks_dir": os.path.join(REPO, "playbooks"),
                  "inventory": os.path.join(REPO, "playbooks", "inventory", "local.ini"),
                  "job_deadline_ms": JOB_DEADLINE_MS},
        # A high rate so a few seconds of a lightly loaded instance give enough samples.
        profiling={"enabled": "on", "rate_hz": 999, "window_s": 4, "error_rate": 0.2,
                   "error_for_s": 2, "min_interval_s": 600, "max_seconds": 30})
    # perf through a link the test controls, so "perf missing" is the real thing.
    bin_dir = os.path.join(st.tmp, "bin")
    os.makedirs(bin_dir)
    perf_link = os.path.join(bin_dir, "perf")
    os.symlink(shutil.which("perf"), perf_link)
    st.cfg["profiling"]["perf"] = perf_link
    sv = Supervisor(st)
    st.cfg["executor"]["supervisor_config"] = sv.conf
    st.write_config()
    st.start_redis()
    sv.start()
    st.daemon("tide-executor")
    watch = st.watch()
    st.start_stack(with_fake=False, wait_ready=False)
    st.wait_ready(count=2, timeout=90)
    port1 = st.instance_port("production1")
    port0 = st.instance_port("production0")

    # ---- 4. bad input: refused at once, nothing changes ----
    r = st.tidectl("profile", "production3")
    assert r.returncode == 1 and "production3: not an instance in the pool" in r.stderr, \
        (r.stdout, r.stderr)
    r = st.tidectl("profile", "production0", "--seconds", "31")
    assert r.returncode == 1 and "seconds 31 out of bounds (1..30" in r.stderr, \
        (r.stdout, r.stderr)
    r = st.tidectl("profile", "get", "../etc")
    assert r.returncode == 1 and "is not a profile id" in r.stderr, (r.stdout, r.stderr)
    assert profiles(st) == []

    with Load("127.0.0.1", st.ports["proxy"], RATE, threads=4) as load:
        # ---- 1. production1 fails half its requests: an "errors" profile ----
        status, body = post(port1, "/_sample/fail?share=0.5")
        assert status == 200, (status, body)
        t_fail = time.monotonic()
        found = st.wait_until(
            lambda: [p for p in profiles(st) if p["reason"] == "errors"], 60,
            "an errors profile of production1 in tidectl profiles",
            detail=lambda: st.logs_tail())
        t_profile = time.monotonic()
        p = found[0]
        assert p["instance"] == "production1" and p["baseline"] == "production0", p
        assert p["has_diff"] and p["samples"] > 0, p
        assert "error rate" in p["detail"], p
        # The seconds before the trigger, from the flight recorders' rings.
        assert p["source"] == "ring", p
        assert 3.5 <= (p["to_ms"] - p["from_ms"]) / 1000 <= 4.5, p
        folder = os.path.join(st.cfg["executor"]["state_dir"], "profiles", p["id"])
        files = sorted(os.listdir(folder))
        assert files == ["baseline.folded", "diff.svg", "flame.svg", "record.json",
                         "stacks.folded"], files
        mine = folded(os.path.join(folder, "stacks.folded"))
        base = folded(os.path.join(folder, "baseline.folded"))
        assert stack_share(mine, FAIL_FUNC) >= 0.3, "%s holds %.0f%% of %d samples: %r" % (
            FAIL_FUNC, 100 * stack_share(mine, FAIL_FUNC), sum(mine.values()), mine)
        assert stack_share(base, FAIL_FUNC) == 0.0, base
        # The differential: the function's frame is drawn red, its baseline share 0.
        with open(os.path.join(folder, "diff.svg")) as f:
            diff = f.read()
        frame = diff.split('data-n="%s"' % FAIL_FUNC, 1)
        assert len(frame) == 2, "no %s frame in diff.svg" % FAIL_FUNC
        head = frame[1].split("</g>", 1)[0]
        assert 'data-b="0.000"' in head and 'fill="rgb(255,' in head, head[:300]
        # Opened in a real browser, its search finds the function.
        matched = chromium_matched(os.path.join(folder, "flame.svg"), FAIL_FUNC)
        want = stack_share(mine, FAIL_FUNC)
        assert abs(matched - want) < 0.05, (matched, want)
        # Served by tide-metrics: the list, and the files as they are on disk.
        mport = st.ports["metrics_http"]
        listed = json.loads(http_get("127.0.0.1", mport, "/api/profiles")[2])
        assert [q["id"] for q in listed] == [p["id"]], listed
        status, headers, body = http_get("127.0.0.1", mport, "/profiles/%s/diff.svg" % p["id"])
        assert status == 200 and headers.get("content-type") == "image/svg+xml", (status, headers)
        assert body == diff.encode(), "the served diff.svg differs from the file"
        assert http_get("127.0.0.1", mport, "/profiles/%s/nope.txt" % p["id"])[0] == 404
        assert http_get("127.0.0.1", mport, "/profiles/..%2f/flame.svg")[0] in (400, 404)
        # Announced on the bus.
        st.wait_until(lambda: [m for m in watch.msgs("profile") if m.get("id") == p["id"]],
                      10, "tidectl watch prints the profile event")
        # Fixed: no more failures, and no second automatic profile within min_interval_s.
        assert post(port1, "/_sample/fail?share=0")[0] == 200

        # ---- 3. on demand, on a busy instance ----
        r = st.tidectl("profile", "production0", "--seconds", "3", timeout=120)
        assert r.returncode == 0, (r.stdout, r.stderr)
        manual = [q for q in profiles(st) if q["reason"] == "manual"]
        assert len(manual) == 1 and manual[0]["instance"] == "production0", manual
        assert manual[0]["source"] == "live", manual
        assert manual[0]["id"] in r.stdout, r.stdout
        assert 2.5 <= (manual[0]["to_ms"] - manual[0]["from_ms"]) / 1000 <= 6, manual[0]
        mfolder = os.path.join(st.cfg["executor"]["state_dir"], "profiles", manual[0]["id"])
        assert stack_share(folded(os.path.join(mfolder, "stacks.folded")), WORK_FUNC) > 0.05
        out_svg = os.path.join(st.tmp, "copy.svg")
        r = st.tidectl("profile", "get", manual[0]["id"], "-o", out_svg)
        assert r.returncode == 0, (r.stdout, r.stderr)
        with open(out_svg, "rb") as a, open(os.path.join(mfolder, "flame.svg"), "rb") as b:
            assert a.read() == b.read()

        # ---- 4. perf missing: the job fails with the cause, scaling and serving go on ----
        os.unlink(perf_link)
        r = st.tidectl("profile", "production0", "--seconds", "1", timeout=120)
        assert r.returncode == 1 and "cannot run" in r.stderr and "perf" in r.stderr, \
            (r.stdout, r.stderr)
        os.symlink(shutil.which("perf"), perf_link)
        assert len(profiles(st)) == 2
        assert st.status()["state"] in ("STATE_IDLE", "STATE_UP")
        status, _, _ = http_get("127.0.0.1", st.ports["proxy"], "/")
        assert status == 200

        # ---- profiling never delays scaling: a scale up runs while production1 is profiled
        # for 20 s, and is done (production2 in the pool) before that profile is ----
        prof = st.start("tidectl-profile", [binary("tidectl"), "-c", st.config_path, "profile",
                                            "production1", "--seconds", "20"],
                        long_running=False)
        st.wait_until(lambda: [m for m in watch.jobs() if m.get("type") == "JOB_EVENT_STARTED"
                               and (m.get("job") or {}).get("kind") == "JOB_PROFILE"
                               and "production1" in m.get("job_id", "")
                               and m.get("job_id") != p_job_id(watch, p["id"])], 20,
                      "the 20 s profile job of production1 started")
        r = st.tidectl("scale", 3)
        assert r.returncode == 0, (r.stdout, r.stderr)
        st.wait_until(lambda: st.instances() == 3 and "production2" in st.pool(), 60,
                      "production2 in the pool while production1 is profiled")
        assert prof.alive(), "the profile ended before the scale up: nothing was shown"
        assert prof.popen.wait(90) == 0, prof.stderr()

        # ---- 2. production2 crashes under load: a "crash" profile, and a new production2 ----
        port2 = st.instance_port("production2")
        dead = listeners_on(port2)
        assert len(dead) == 1, dead
        dead_pid = next(iter(dead))
        t_crash = time.monotonic()
        crash_ms = time.time() * 1000
        try:
            post(port2, "/_sample/crash")
        except OSError:
            pass  # it may die before its answer is read
        crashes = st.wait_until(
            lambda: [q for q in profiles(st) if q["reason"] == "crash"], 90,
            "a crash profile of production2 in tidectl profiles",
            detail=lambda: st.logs_tail())
        t_crash_profile = time.monotonic()
        c = crashes[0]
        assert c["instance"] == "production2" and c["source"] == "ring", c
        assert "pid %d exited: terminated by SIGSEGV (core dumped); core kept" % dead_pid \
            in c["detail"], c
        assert c["has_crash"] and "core kept" in c["crash_note"], c
        # The recorder's seconds end when the process died (supervisord's stamp), not later.
        assert abs(c["to_ms"] - crash_ms) < 2000 and \
            3.5 <= (c["to_ms"] - c["from_ms"]) / 1000 <= 4.5, (c, crash_ms)
        cfolder = os.path.join(st.cfg["executor"]["state_dir"], "profiles", c["id"])
        cstacks = folded(os.path.join(cfolder, "stacks.folded"))
        assert c["samples"] > 0 and stack_share(cstacks, WORK_FUNC) > 0.05, \
            "a dead process's frames lost their names: %r" % cstacks
        r = st.tidectl("profile", "get", c["id"], "--crash")
        assert r.returncode == 0, (r.stdout, r.stderr)
        signalled = r.stdout.split("== every thread", 1)[0]
        assert "SIGSEGV" in r.stdout and CRASH_FUNC in signalled, r.stdout[:2000]
        # Replaced: a new production2 (another pid) serves in the pool; the crash was logged.
        st.wait_until(lambda: "production2" in st.pool() and st.instances() == 3 and
                      listeners_on(port2) and listeners_on(port2) != dead, 90,
                      "a new production2 in the pool", detail=lambda: st.logs_tail())
        scaler_log = [p for p in st.procs if p.name == "scaler"][0].stderr()
        exited = [ln for ln in scaler_log.splitlines()
                  if 'msg="instance exited"' in ln and "instance=production2" in ln]
        assert exited, "the scaler did not log the crash"
        noticed_ms = datetime.datetime.strptime(exited[0].split()[0][3:], "%Y-%m-%dT%H:%M:%S.%fZ") \
            .replace(tzinfo=datetime.timezone.utc).timestamp() * 1000
    stats = load.stats()
    # When production1's error rate first passed the threshold, by the snapshots' stamps, and
    # when its profile was written (a figure for the closing note, not a pass condition).
    crossed = [m["header"]["ts_ms"] for m in watch.msgs("metrics.snapshot")
               if any(i.get("name") == "production1" and i.get("error_rate", 0) >= 0.2
                      for i in m.get("instances", []))]
    print("\nerrors profile on disk %.1f s after production1's error rate passed 0.2 (%.1f s "
          "after the failures began); load %r" % (
              (p["created_ms"] - int(crossed[0])) / 1000 if crossed else float("nan"),
              t_profile - t_fail,
              {k: stats[k] for k in ("total", "ok", "failed", "by_instance")}))
    print("crash profile on disk %.1f s after production2 was told to crash, %.1f s after the "
          "scaler noticed it" % (t_crash_profile - t_crash, (c["created_ms"] - noticed_ms) / 1000))
    # The only failures are production1's own 500s: profiling failed no other request.
    bad = [(r.status, r.instance, r.error) for r in load.results
           if r.error is not None or not 200 <= r.status < 300]
    assert bad and all(b == (500, "production1", None) for b in bad), bad[:10]
    assert stats["by_instance"].get("production0", 0) > 0, stats
