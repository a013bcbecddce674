"""test_kill.py - issue 3, "What must be shown" 3: a container killed from outside (docker kill)
is noticed through its failed requests (the proxies retry them elsewhere and count an upstream
error against it), checked with a LIST job, taken out of the pool and replaced by a new
container, and the count is restored."""

import time

from e2e import Load, docker


def test_killed_container_is_replaced(make_stack):
    st = make_stack("kill")
    st.start_all()
    st.control("scale", 2)
    st.wait_until(lambda: st.instances() == 2 and st.running_names() == ["production0",
                                                                          "production1"],
                  90, "two containers running")
    watch = st.watch()
    before = st.containers()
    victim = before["production1"]

    with Load("127.0.0.1", st.ports["proxy"], 20, threads=8) as load:
        st.wait_until(lambda: load.stats()["by_instance"].get("production1", 0) > 5, 20,
                      "traffic reaching production1")
        t_kill = time.monotonic()
        docker("kill", "production1")

        # Noticed: a health check names it, and it leaves the pool.
        st.wait_until(lambda: [m for t, m in watch.msgs("scaler.state") if t >= t_kill and
                               "health check: production1 failing requests" in m.get("reason", "")],
                      60, "the scaler starts a health check naming production1")
        st.wait_until(lambda: [m for t, m in watch.msgs("scaler.pool") if t >= t_kill and
                               "production1" not in {e["name"] for e in m.get("entries", [])}],
                      60, "production1 taken out of the pool")
        t_out = time.monotonic()
        # Replaced: a new container under the same name, and the count is back.
        st.wait_until(lambda: st.instances() == 2 and sorted(st.pool()) == ["production0",
                                                                             "production1"]
                      and st.containers().get("production1", {}).get("state") == "running"
                      and st.containers()["production1"]["id"] != victim["id"],
                      90, "production1 replaced by a new container and the count restored")
        t_back = time.monotonic()
        st.wait_until(lambda: [r for r in list(load.results) if r.t > t_back and
                               r.instance == "production1"],
                      20, "the new production1 serving requests")
    stats = load.stats()

    after = st.containers()
    assert after["production0"]["id"] == before["production0"]["id"], "production0 was touched"
    ups = watch.jobs(kind="JOB_SCALE_UP", event="JOB_EVENT_FINISHED")
    assert [[i["name"] for i in m["job"]["instances"]] for _, m in ups] == [["production1"]], ups
    checks = [m for _, m in watch.msgs("scaler.state") if "health check:" in m.get("reason", "")]
    print("\nnoticed and out of the pool %.1fs after the kill, replaced after %.1fs; "
          "requests: %r\nchecks: %r" % (t_out - t_kill, t_back - t_kill,
                                        {k: stats[k] for k in ("total", "failed", "errors",
                                                               "by_status")},
                                        [c["reason"] for c in checks]))
    # The proxies retried the killed container's requests on production0.
    assert stats["failed"] == 0, stats
