"""test_scale_down.py - issue 2, "What must be shown" 2: when the load stops the system returns to
the minimum, the stopped instances no longer answer, and not one request failed during either
transition. A low background load keeps running through the scale down, so draining (pool
removal, proxies applying it, in-flight requests finishing, then the stop) is exercised."""

import math
import time

from harness import job_events, ts_ms
from load import Load

TARGET_RPS = 20
HIGH = 50        # ceil(50 / 20) = 3
LOW = 5          # ceil(5 / 20) = 1 = scaler.min
UP_TO = math.ceil(HIGH / TARGET_RPS)


def test_scale_down(make_stack):
    # A slower request (60 ms) keeps requests in flight on every instance while it drains.
    # scale_down_delay_s 5 with the 10 s stable window: as the stable rate decays from 50 to 5
    # req/s, the policy wants 2 for about 4.5 s and then 1, so the way down takes two steps
    # and the second is wanted while the first one's delay is still running.
    st = make_stack("scale_down", max_instances=6,
                    scaler={"target_rps": TARGET_RPS, "scale_down_delay_s": 5},
                    app={"args": "--delay-ms 60 --concurrency 8"})
    st.start_stack()
    mon = st.start_monitor()
    watch = st.watch()

    with Load("127.0.0.1", st.ports["proxy"], HIGH, threads=16) as load:
        st.wait_until(lambda: st.instances() == UP_TO and len(st.pool()) == UP_TO, 45,
                      "scale up to %d under %d req/s" % (UP_TO, HIGH), detail=mon.describe)
        up_pool = st.pool()
        st.wait_until(lambda: st.status()["state"] == "STATE_UP", 10, "STATE_UP after settle")
        # Hold the high load until the stable window is full of it (and the count holds).
        st.hold(lambda: st.instances() == UP_TO, st.cfg["metrics"]["stable_window_s"],
                "%d instances under %d req/s" % (UP_TO, HIGH))
        mark_up = load.mark()
        t_drop = time.monotonic()
        load.set_rate(LOW)

        st.wait_until(lambda: st.instances() == 1 and len(st.pool()) == 1, 60,
                      "back to scaler.min = 1 after the load dropped to %d req/s" % LOW,
                      detail=lambda: "Redis history: %s\nlast decisions: %r" % (
                          mon.describe(), watch.msgs("scaler.decision")[-3:]))
        t_down = time.monotonic()
        removed = {n: a for n, a in up_pool.items() if n not in st.pool()}
        st.wait_until(lambda: not any(st.instance_answers(a) for a in removed.values()), 20,
                      "the removed instances %r stop answering" % removed)
        st.wait_until(lambda: st.status()["state"] == "STATE_IDLE", 10,
                      "tidectl status shows STATE_IDLE at the minimum")
        # Keep the low load going a little after the last stop, still counted.
        n = load.mark()
        assert load.wait_count(n + 2 * LOW, 10), "the load generator stalled"
    stats = load.stats()
    during_down = load.since(mark_up)

    pool = st.pool()
    assert list(pool) == ["production0"], \
        "scale down must remove the highest-numbered instances first; pool is %r" % pool
    assert len(removed) == UP_TO - 1, (up_pool, pool)
    for name, addr in removed.items():
        port = int(addr.rsplit(":", 1)[1])
        assert not st.instance_answers(addr), "%s (%s) still answers after scale down" % (
            name, addr)
        assert not st.instance_listeners().get(port), "port %d still has a listener" % port
    assert st.instance_answers(pool["production0"], "production0")

    status = st.status()
    assert status["current"] == 1 and status["desired"] == 1, status
    assert [e["name"] for e in status["pool"]] == ["production0"], status
    children = st.fake_children()
    assert children == ["production0"], "fake executor still runs %r" % children

    # The count only went down after the drop: no flapping back up.
    after = [c for t, c, _ in mon.history if t >= t_drop and c is not None]
    assert after == sorted(after, reverse=True), "instances went up during the scale down: " \
        "%s" % mon.describe()

    # Draining was visible on the bus: a scaler.pool message listing the removed names as
    # draining before they were stopped.
    draining = [m for m in watch.msgs("scaler.pool") if m.get("draining")]
    assert draining, "no scaler.pool message with a non-empty 'draining' list was seen " \
        "(pool messages: %r)" % watch.msgs("scaler.pool")[-5:]
    drained_names = set(n for m in draining for n in m["draining"])
    assert drained_names == set(removed), (drained_names, removed)
    # Order: an instance leaves the pool (scaler.pool without it) before the SCALE_DOWN job
    # that stops it starts.
    downs = [m for m in job_events(watch, "JOB_EVENT_STARTED")
             if (m.get("job") or {}).get("kind") == "JOB_SCALE_DOWN"]
    stopped = set()
    for job in downs:
        names = [i["name"] for i in job["job"].get("instances") or []]
        stopped.update(names)
        for name in names:
            out_first = [m for m in watch.msgs("scaler.pool") if ts_ms(m) <= ts_ms(job) and
                         name not in [e["name"] for e in m.get("entries") or []]
                         and name in (m.get("draining") or [])]
            assert out_first, "%s was stopped by job %s before a scaler.pool without it was " \
                "published" % (name, job["job_id"])
    assert stopped == set(removed), "SCALE_DOWN jobs stopped %r, removed %r" % (stopped,
                                                                                 removed)

    print("\nload: %r\nduring scale down: %r\nmonitor: %s\nscale down took %.1fs" % (
        {k: stats[k] for k in ("total", "ok", "failed", "errors", "p99_ms", "slowest")},
        during_down["by_instance"], mon.describe(), t_down - t_drop))
    # Not one failed request during either transition.
    assert stats["failed"] == 0, "failed requests: %r" % stats
    assert during_down["total"] > 0 and during_down["failed"] == 0, during_down
    st.assert_alive()
