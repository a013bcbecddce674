"""test_scale_up.py - issue 2, "What must be shown" 1: a load step well above one instance's
target scales the system up to the count the target policy computes, Redis holds that count and
one ip:port per instance, and every new instance receives traffic; no request fails."""

import math
import time

from harness import metrics_snapshot
from load import Load, results_after

TARGET_RPS = 20
RATE = 70  # 3.5 instances' worth: ceil(70 / 20) = 4, far from the 3/4 and 4/5 boundaries
EXPECTED = math.ceil(RATE / TARGET_RPS)
MAX = 6    # above EXPECTED, so an overshoot is visible instead of clamped


def test_scale_up(make_stack):
    st = make_stack("scale_up", max_instances=MAX, scaler={"target_rps": TARGET_RPS})
    st.start_stack()
    assert st.instances() == 1, "the stack starts at scaler.min = 1"
    assert len(st.pool()) == 1
    mon = st.start_monitor()
    watch = st.watch()

    with Load("127.0.0.1", st.ports["proxy"], RATE, threads=16) as load:
        st.wait_until(lambda: st.instances() == EXPECTED and len(st.pool()) == EXPECTED, 45,
                      "Redis instances == %d and pool has %d entries under %d req/s" % (
                          EXPECTED, EXPECTED, RATE),
                      detail=lambda: "Redis history: %s\nlast decisions: %r" % (
                          mon.describe(), watch.msgs("scaler.decision")[-3:]))
        t_reached = time.monotonic()
        # The count stays: no overshoot, no scale down while the load holds. The window is
        # longer than the stable window so a policy lagging on it would show.
        st.hold(lambda: st.instances() == EXPECTED and len(st.pool()) == EXPECTED,
                st.cfg["metrics"]["stable_window_s"] + 1,
                "instances == %d under steady load" % EXPECTED)
        status = st.wait_until(
            lambda: (lambda s: s if s["state"] == "STATE_UP" else None)(st.status()), 10,
            "tidectl status shows STATE_UP")
        snap = metrics_snapshot(st)
        t_end = time.monotonic()
    stats = load.stats()

    # Redis: the count and one distinct 127.0.0.1:port per instance, on the configured ports.
    pool = st.pool()
    names = sorted(pool)
    assert names == ["production%d" % i for i in range(EXPECTED)], pool
    assert len(set(pool.values())) == EXPECTED, "duplicate addresses in the pool: %r" % pool
    for name, addr in pool.items():
        assert addr == "127.0.0.1:%d" % st.instance_port(name), (name, addr)
        assert st.instance_answers(addr, name), "%s at %s does not answer %s with " \
            "X-Instance: %s" % (name, addr, st.cfg["app"]["health_path"], name)
    state = st.state()
    assert state.get("state") == "UP" and state.get("current") == str(EXPECTED), state

    # No overshoot and no flapping over the whole run.
    assert mon.max_instances == EXPECTED, "instances went up to %d: %s" % (
        mon.max_instances, mon.describe())
    counts = [c for c in mon.counts() if c is not None]
    assert counts == sorted(counts), "instances went down under steady load: %s" % \
        mon.describe()

    # tidectl agrees with Redis.
    assert status["current"] == EXPECTED and status["desired"] == EXPECTED, status
    assert sorted((e["name"], e["addr"]) for e in status["pool"]) == sorted(pool.items()), \
        (status["pool"], pool)
    assert status["policy"] == "target", status
    assert status["min"] == 1 and status["max"] == MAX, status

    # Every instance served requests after it joined the pool.
    for name in names:
        after = results_after(load, mon.first_seen[name])
        assert after["by_instance"].get(name, 0) > 0, \
            "%s joined the pool but served no request afterwards: %r" % (name, after)
    last = results_after(load, t_reached)
    print("\nload: %r\nsteady-state spread over %.1fs: %r\nmetrics: rps_stable=%s "
          "rps_panic=%s\nmonitor: %s" % (
              {k: stats[k] for k in ("total", "ok", "failed", "errors", "p50_ms", "p99_ms",
                                     "slowest")},
              t_end - t_reached, last["by_instance"], snap.get("rps_stable"),
              snap.get("rps_panic"), mon.describe()))
    decisions = watch.msgs("scaler.decision")
    assert decisions, "tidectl watch saw no scaler.decision message"
    assert all(d.get("desired", 0) <= EXPECTED for d in decisions), \
        "a decision wanted more than %d: %r" % (EXPECTED, decisions)

    # Zero failed requests, and the load really was offered at the rate.
    assert stats["failed"] == 0, "failed requests: %r" % stats
    assert stats["total"] >= RATE * 10, stats
    assert load.skipped <= stats["total"] * 0.05, "load generator fell behind: %d skipped" % \
        load.skipped
    st.assert_alive()
