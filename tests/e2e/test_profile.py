"""test_profile.py - issue 8 on the docker driver: a container told to fail half its requests
gets an "errors" profile taken with real perf on the host (the container's host PID), whose
frames are named from the static binary INSIDE the container (read through /proc/PID/root):
the failing function holds a large share of its samples and has grown against the healthy
sibling in the differential. `tidectl profile NAME --seconds N` works on a container too, and
an instance that runs nowhere is refused."""

import json
import os
import time
import urllib.request

from e2e import Load
from harness import folded, stack_share

FAIL_FUNC = "sample_fail_burn"


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
    print("\nerrors profile %.1f s after the failures began; %d samples, %.0f%% in %s" % (
        t_found - t_fail, sum(mine.values()), 100 * stack_share(mine, FAIL_FUNC), FAIL_FUNC))
    bad = [(x.status, x.instance) for x in load.results
           if x.error is not None or not 200 <= x.status < 300]
    assert bad and all(b == (500, "production1") for b in bad), bad[:10]
