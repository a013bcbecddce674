"""test_health_check.py - an instance that dies while no request reaches it is found by the
scaler's periodic health check (scaler.health_check_interval_s) and replaced. With no traffic
no proxy sees an error, so nothing else would notice it before the next user's requests fail."""

import os
import signal
import time

from harness import listeners_on

INTERVAL_S = 2


def test_dead_instance_replaced_without_traffic(make_stack):
    st = make_stack("health_check", max_instances=4,
                    scaler={"min": 2, "health_check_interval_s": INTERVAL_S})
    st.start_stack()
    st.wait_until(lambda: st.instances() == 2 and len(st.pool()) == 2, 30,
                  "the minimum of 2 instances")
    watch = st.watch()
    victim = "production1"
    port = st.instance_port(victim)
    pids = listeners_on(port)
    assert len(pids) == 1, "one process should listen on %s's port %d: %r" % (
        victim, port, pids)
    old_pid = next(iter(pids))

    os.kill(old_pid, signal.SIGKILL)
    t_kill = time.monotonic()

    # Found by a periodic list (no request was sent, so no error rate points at it): the
    # transition that reports it ends the BUSY that a "health check: periodic" one began.
    def found_by_periodic():
        states = watch.msgs("scaler.state")
        for i, m in enumerate(states):
            reason = m.get("reason", "")
            if "health check" in reason and "not running: " + victim in reason:
                began = [x.get("reason", "") for x in states[:i]
                         if x.get("state") == "STATE_BUSY"]
                return (reason, began[-1] if began else None)
        return None
    reason, began = st.wait_until(found_by_periodic, 3 * INTERVAL_S + 10,
                                  "a health check reporting %s not running" % victim)
    assert began and began.startswith("health check: periodic"), \
        "the list that found %s should be a periodic one; it began with %r" % (victim, began)
    print("found:", reason, "after %.1fs" % (time.monotonic() - t_kill))

    # Replaced: two instances again, each answering as itself, the dead one's port served by
    # a new process (or the replacement on another port).
    def replaced():
        pool = st.pool()
        if st.instances() != 2 or len(pool) != 2:
            return None
        if not all(st.instance_answers(addr, name) for name, addr in pool.items()):
            return None
        if old_pid in listeners_on(port):
            return None
        return pool
    pool = st.wait_until(replaced, 30, "2 live instances again after the health check")
    assert sorted(st.fake_children()) == sorted(pool), (st.fake_children(), pool)
    print("replaced: %r after %.1fs" % (pool, time.monotonic() - t_kill))
    assert st.proxy_get()[0] == 200
