"""test_scale.py - issue 3, "What must be shown" 1 and 2, on the docker driver: a load step scales
the service from one container to the count the target policy computes (docker ps shows
production0..N-1, Redis holds their ip:port, each gets traffic, each on the inventory host that
had the fewest); when the load falls the extra containers are drained, stopped and removed; not
one request fails in either transition. Prints how long the scale up took, split by stage."""

import math
import time

from e2e import Load, http_get, results_after

TARGET_RPS = 20
RATE = 50   # ceil(50 / 20) = 3, away from the 2/3 and 3/4 boundaries
EXPECTED = math.ceil(RATE / TARGET_RPS)
LOW_RATE = 5  # after the step: one instance's worth, so requests flow through the scale down


def _first(seq, pred):
    for x in seq:
        if pred(x):
            return x
    return None


def test_scale_up_then_down(make_stack):
    st = make_stack("scale", scaler={"target_rps": TARGET_RPS})
    st.start_all()
    assert st.running_names() == ["production0"], st.containers()
    watch = st.watch()

    with Load("127.0.0.1", st.ports["proxy"], RATE, threads=16) as load:
        st.wait_until(lambda: st.instances() == EXPECTED and len(st.pool()) == EXPECTED, 120,
                      "Redis instances == %d under %d req/s" % (EXPECTED, RATE))
        t_reached = time.monotonic()
        st.wait_until(lambda: time.monotonic() - t_reached > 4, 10, "4 s of traffic at %d" %
                      EXPECTED)

        # 1. docker ps: production0..N-1 running, one per inventory host (fewest first).
        cs = st.containers()
        names = ["production%d" % i for i in range(EXPECTED)]
        assert sorted(cs) == names, cs
        assert all(c["state"] == "running" for c in cs.values()), cs
        hosts = sorted(c["labels"]["tide.host"] for c in cs.values())
        assert hosts == sorted(st.hosts[:EXPECTED]), \
            "placement should spread %d instances over %s: %r" % (EXPECTED, st.hosts, hosts)
        # Redis: the count and each one's ip:port (the placed host's address).
        pool = st.pool()
        assert sorted(pool) == names, pool
        for name, addr in pool.items():
            assert addr == "127.0.0.1:%d" % st.instance_port(name), (name, addr)
            assert cs[name]["labels"]["tide.addr"] == addr, (name, cs[name]["labels"])
            status, headers, _ = http_get(st.instance_port(name), "/health")
            assert status == 200 and headers.get("x-instance") == name, (name, status, headers)
        # Each one served requests through the proxy.
        after = results_after(load, t_reached)
        for name in names:
            assert after["by_instance"].get(name, 0) > 0, (name, after["by_instance"])
        up_stats = load.stats()

        # 2. The load falls: back to one instance, the others stopped and removed.
        mark = load.mark()
        load.set_rate(LOW_RATE)
        st.wait_until(lambda: st.instances() == 1 and list(st.containers()) == ["production0"],
                      120, "back to production0 alone, the others removed")
        st.wait_until(lambda: st.status()["state"] == "STATE_IDLE", 20, "the scaler IDLE")
        down_stats = load.since(mark)
    stats = load.stats()

    assert st.pool() == {"production0": "127.0.0.1:%d" % st.base_port}
    downs = watch.jobs(kind="JOB_SCALE_DOWN", event="JOB_EVENT_FINISHED")
    assert downs and all(m["job"]["state"] == "JOB_SUCCEEDED" for _, m in downs), downs
    # Drained first: every scale-down job started after the pool lost its instances.
    for _, m in watch.jobs(kind="JOB_SCALE_DOWN", event="JOB_EVENT_STARTED"):
        gone = {i["name"] for i in m["job"]["instances"]}
        pools = [p for _, p in watch.msgs("scaler.pool") if not
                 gone & {e["name"] for e in p.get("entries", [])}]
        assert pools, "scale down of %s started with them still in the pool" % gone

    print("\nscale up: %r\nscale down: %r" % (
        {k: up_stats[k] for k in ("total", "failed", "by_instance", "p50_ms", "p99_ms")},
        {k: down_stats[k] for k in ("total", "failed", "by_instance", "p50_ms", "p99_ms")}))
    _print_timing(watch, load)
    assert stats["failed"] == 0, "failed requests: %r" % stats
    assert stats["total"] >= RATE * 5, stats


def _print_timing(watch, load):
    """Decision -> job started -> readiness checks begin -> job finished -> pool published ->
    first request served by the new container, from the arrival times of the bus messages and
    the load generator's own clock (both time.monotonic)."""
    decision = _first(watch.msgs("scaler.state"), lambda tm: tm[1].get("state") == "STATE_BUSY"
                      and "scale up" in tm[1].get("reason", ""))
    if not decision:
        return
    started = _first(watch.jobs(kind="JOB_SCALE_UP", event="JOB_EVENT_STARTED"),
                     lambda tm: tm[0] >= decision[0])
    if not started:
        return
    job_id = started[1]["job_id"]
    out = [(t, m.get("line", "")) for t, m in watch.msgs("exec.job")
           if m.get("job_id") == job_id and m.get("type") == "JOB_EVENT_OUTPUT"]
    health = _first(out, lambda tl: "Wait until each instance answers" in tl[1])
    finished = _first(watch.jobs(event="JOB_EVENT_FINISHED"), lambda tm: tm[1]["job_id"] == job_id)
    if not finished:
        return
    new = {i["name"] for i in finished[1]["job"]["instances"]}
    pool = _first(watch.msgs("scaler.pool"), lambda tm: tm[0] >= finished[0] and
                  new <= {e["name"] for e in tm[1].get("entries", [])})
    with load._lock:
        first_hit = min((r.t for r in load.results if r.instance in new), default=None)
    t0 = decision[0]
    print("scale-up timing (s from the decision): job started %.2f, health checks begin %s, "
          "job finished %.2f, pool published %s, first request served by %s %s" % (
              started[0] - t0, "%.2f" % (health[0] - t0) if health else "?", finished[0] - t0,
              "%.2f" % (pool[0] - t0) if pool else "?", sorted(new),
              "%.2f" % (first_hit - t0) if first_hit else "?"))
