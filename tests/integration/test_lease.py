"""test_lease.py - issue 10, "One writer, and a standby": two scalers share one lease in Redis
(scaler/lease.c). Killed (SIGKILL) or hung (SIGSTOP) past its lease, the leader is replaced by
the standby within 5 s, which takes over the job in flight by its id (no duplicate job, no
orphan instance) and goes on scaling; the hung one, woken, writes nothing and is standby. A
FLUSHALL while running, or Redis restarted empty, is repaired within 2 s from the leader's
memory, with a pool version above the one before, and a proxy started afterwards routes; a
proxy that sees the version go backwards keeps its pool.

The scalers are listed in the config (`scalers:`, each with its own control and events
endpoints): tidectl, the proxy and tide-metrics use the list, so they reach whichever leads."""

import copy
import json
import os
import signal
import time

from harness import RawYaml, binary, free_port, http_get, write_yaml


def get_status(port):
    try:
        return http_get("127.0.0.1", port, "/", 2.0)[0]
    except OSError:
        return None


def scalers_entry(sid, control, events):
    return '{id: "%s", control: "%s", events: "%s"}' % (sid, control, events)


def two_scalers(st):
    """Configures a `scalers:` list of two (the harness's scaler, "scaler-<name>", on the
    stack's endpoints; "scaler-b" on two more ports), starts the stack and scaler-b; returns
    (scaler-b's proc, a tidectl config that reaches scaler-b alone). Proxies, tide-metrics and
    tidectl use the list."""
    a = scalers_entry("scaler-%s" % st.name, st.endpoint("scaler_control"),
                      st.endpoint("scaler_events"))
    b = scalers_entry("scaler-b", "tcp://127.0.0.1:%d" % free_port(),
                      "tcp://127.0.0.1:%d" % free_port())
    st.cfg["scalers"] = RawYaml("[%s, %s]" % (a, b))
    st.write_config()
    st.start_stack()
    proc = st.start("scaler-b", [binary("tide-scaler"), "-c", st.config_path, "--id", "scaler-b"])
    only_b = copy.deepcopy(st.cfg)
    only_b["scalers"] = RawYaml("[%s]" % b)
    path = os.path.join(st.tmp, "tidectl-b.yml")
    write_yaml(path, only_b)
    return proc, path


def status_via(st, config):
    """tidectl status --json through config: (dict or None, tidectl's error text)."""
    r = st.tidectl("--timeout-ms", "1000", "status", "--json", config=config, timeout=10)
    if r.returncode != 0:
        return None, (r.stderr + r.stdout).strip()
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    return json.loads(lines[-1]), ""


def leader(st):
    return st.redis.get(st.key("leader")) or ""


def stable(status):
    return status is not None and status.get("state") in ("STATE_IDLE", "STATE_UP")


def assert_no_orphan(st, count):
    """Redis's pool, the fake executor's children and the listening ports agree on count."""
    pool = st.pool()
    assert st.instances() == count, "instances=%s, expected %d" % (st.instances(), count)
    assert sorted(pool) == ["production%d" % i for i in range(count)], pool
    children = st.fake_children()
    assert children == sorted(pool), "fake executor children %r != pool %r (duplicate or " \
        "orphan instance)" % (children, sorted(pool))
    listeners = st.instance_listeners()
    assert set(listeners) == {st.instance_port(n) for n in pool}, \
        "ports listening %r, pool %r (orphan instance)" % (listeners, pool)
    for name, addr in pool.items():
        assert st.instance_answers(addr, name), "%s at %s does not answer" % (name, addr)


def test_kill_leader_standby_takes_the_job_over(make_stack):
    st = make_stack("lease_kill", max_instances=6)
    b, b_only = two_scalers(st)
    st.wait_until(lambda: "another scaler leads" in b.stderr(), 10,
                  "scaler-b says it is standby")
    assert leader(st).startswith("scaler-lease_kill "), leader(st)
    s, err = status_via(st, b_only)
    assert s is None and "standby" in err, (s, err)
    watch = st.watch()
    st.wait_until(lambda: watch.msgs("metrics.snapshot"), 10, "tidectl watch receives messages")

    # A scale up in flight (slowed) when the leader dies.
    print("fake 'delay 3000' ->", st.fake_cmd("delay 3000"))
    r = st.tidectl("scale", "3")
    assert r.returncode == 0, (r.stdout, r.stderr)
    busy = st.wait_until(lambda: (lambda s: s if s["state"] == "STATE_BUSY" and s["job_id"]
                                  else None)(st.status()), 10, "a scale-up job in flight")
    started = st.fake_stats()["jobs_started"]
    st.scaler.kill()
    t0 = time.monotonic()
    st.wait_until(lambda: leader(st).startswith("scaler-b "), 6, "scaler-b holds the lease")
    st.wait_until(lambda: status_via(st, b_only)[0] is not None, 6,
                  "scaler-b answers tidectl status")
    took = time.monotonic() - t0
    print("\nstandby leads %.2f s after kill -9 of the leader (job %s in flight)" % (
        took, busy["job_id"]))
    assert took < 5.0, "the standby took %.2f s to lead" % took
    assert "asking the executor about job %s" % busy["job_id"] in b.stderr(), \
        "scaler-b should reconcile the job in flight by its id:\n" + b.tail(30)

    st.wait_until(lambda: st.instances() == 3 and len(st.pool()) == 3, 20,
                  "the job taken over brings the count to 3")
    # tidectl with the whole list finds the leader (the first entry is dead).
    st.wait_until(lambda: stable(status_via(st, st.config_path)[0]), 10, "stable at 3")
    assert st.fake_stats()["jobs_started"] == started, \
        "a scale-up job was started again: %r" % st.fake_stats()
    assert_no_orphan(st, 3)
    print("fake 'reset' ->", st.fake_cmd("reset"))

    # Scaling goes on under the new leader; its events reach tidectl watch (and the proxy).
    r = st.tidectl("--timeout-ms", "1000", "scale", "4")
    assert r.returncode == 0, (r.stdout, r.stderr)
    st.wait_until(lambda: st.instances() == 4 and len(st.pool()) == 4, 20, "scale up to 4")
    st.wait_until(lambda: st.proxy_get()[0] == 200, 5, "the proxy routes")
    assert st.fake_stats()["jobs_started"] == started + 1, st.fake_stats()
    assert_no_orphan(st, 4)
    st.wait_until(lambda: any("scaler-b" in json.dumps(m.get("header", {}))
                              for m in watch.msgs("scaler.pool")), 5,
                  "scaler-b's scaler.pool events reach tidectl watch")

    # The first scaler comes back as standby; a clean stop of scaler-b hands it the lease at
    # once (no lease period to wait), and the count stays.
    st.scaler = st.daemon("tide-scaler")
    st.wait_until(lambda: "another scaler leads" in st.scaler.stderr(), 10,
                  "the restarted scaler is standby")
    t0 = time.monotonic()
    assert b.stop() == 0, b.tail(20)
    st.wait_until(lambda: leader(st).startswith("scaler-lease_kill "), 3,
                  "the standby takes the lease scaler-b gave up")
    took = time.monotonic() - t0
    print("standby leads %.2f s after SIGTERM of the leader" % took)
    assert took < 1.5, took
    st.wait_until(lambda: stable(status_via(st, st.config_path)[0]), 10, "stable at 4")
    assert st.status()["current"] == 4
    assert_no_orphan(st, 4)
    st.assert_alive(st.scaler, st.proxy, st.fake)


def test_hung_leader_is_fenced_and_steps_down(make_stack):
    st = make_stack("lease_stop", max_instances=6)
    b, b_only = two_scalers(st)
    st.wait_until(lambda: "another scaler leads" in b.stderr(), 10, "scaler-b is standby")
    a_fence = leader(st)
    assert a_fence.startswith("scaler-lease_stop "), a_fence

    st.scaler.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        st.wait_until(lambda: leader(st).startswith("scaler-b "), 6, "scaler-b takes the lease",
                      check_alive=False)
        took = time.monotonic() - t0
        print("\nstandby leads %.2f s after SIGSTOP of the leader" % took)
        assert took < 5.0, took
        st.wait_until(lambda: stable(status_via(st, b_only)[0]), 15, "scaler-b stable",
                      check_alive=False)
        # The new leader changes the pool while the old one is frozen.
        r = st.tidectl("scale", "2", config=b_only)
        assert r.returncode == 0, (r.stdout, r.stderr)
        st.wait_until(lambda: st.instances() == 2 and len(st.pool()) == 2, 20,
                      "scaler-b scales to 2", check_alive=False)
        st.wait_until(lambda: stable(status_via(st, b_only)[0]), 10, "scaler-b stable at 2",
                      check_alive=False)
    finally:
        st.scaler.signal(signal.SIGCONT)
    b_fence = leader(st)
    pool, version = st.pool(), st.pool_version()
    st.wait_until(lambda: "stepping down to standby" in st.scaler.stderr(), 5,
                  "the woken scaler steps down")
    only_a = copy.deepcopy(st.cfg)
    only_a["scalers"] = RawYaml("[%s]" % scalers_entry(
        "scaler-lease_stop", st.endpoint("scaler_control"), st.endpoint("scaler_events")))
    a_only = write_yaml(os.path.join(st.tmp, "tidectl-a.yml"), only_a) or \
        os.path.join(st.tmp, "tidectl-a.yml")
    s, err = status_via(st, a_only)
    assert s is None and "standby" in err and "scaler-b" in err, (s, err)
    # With the whole list, tidectl passes over the standby (first) to the leader.
    s, err = status_via(st, st.config_path)
    assert stable(s) and s["current"] == 2, (s, err)
    # Nothing it decided before the freeze reaches Redis: the lease, the pool and the state
    # are scaler-b's.
    st.hold(lambda: leader(st) == b_fence and st.pool() == pool and
            st.pool_version() == version and st.instances() == 2 and
            st.redis.hget(st.key("state"), "leader") == b_fence, 3,
            "lease, pool and state stay scaler-b's")
    assert "lease taken" not in st.scaler.stderr().split("stepping down")[-1]
    assert_no_orphan(st, 2)
    st.wait_until(lambda: st.proxy_get()[0] == 200, 5, "the proxy routes")
    st.assert_alive()


def test_flushall_is_repaired_from_memory(make_stack):
    st = make_stack("lease_flush", max_instances=6)
    st.start_stack()
    r = st.tidectl("scale", "2")
    assert r.returncode == 0, (r.stdout, r.stderr)
    st.wait_until(lambda: st.instances() == 2 and len(st.pool()) == 2, 20, "scale to 2")
    st.wait_until(lambda: st.status()["state"] in ("STATE_UP", "STATE_IDLE"), 10, "stable")
    pool, version = st.pool(), st.pool_version()
    state = st.state()
    lists = st.fake_stats()["lists_started"]

    st.redis.flushall()
    t0 = time.monotonic()
    # A write right after the wipe, before the scaler's renewal sees it: refused (no lease key),
    # which must make the scaler look, not step down.
    r = st.tidectl("bounds", "1", "5")
    assert r.returncode == 0, (r.stdout, r.stderr)
    st.wait_until(lambda: st.instances() == 2 and st.pool() == pool and
                  (st.pool_version() or 0) > version and st.state().get("state"), 2.5,
                  "count, pool and state back in Redis")
    took = time.monotonic() - t0
    print("\nRedis repaired %.2f s after FLUSHALL; pool_version %d -> %d" % (
        took, version, st.pool_version()))
    assert took < 2.0, took
    assert st.state().get("pinned") == state.get("pinned") == "1", (state, st.state())
    st.wait_until(lambda: st.state().get("bounds") == "control" and st.state().get("max") == "5",
                  3, "the bounds set right after the wipe are in Redis")
    assert leader(st).startswith("scaler-lease_flush "), leader(st)
    assert "stepping down" not in st.scaler.stderr(), st.scaler.tail(30)
    # Confirmed by a list, which finds the same two instances.
    st.wait_until(lambda: st.fake_stats()["lists_started"] > lists, 10, "a list after the wipe")
    st.wait_until(lambda: st.status()["state"] in ("STATE_UP", "STATE_IDLE"), 10, "stable")
    st.hold(lambda: st.pool() == pool and st.instances() == 2, 2, "the pool stays")
    assert_no_orphan(st, 2)

    # A proxy started after the wipe gets the pool.
    cfg = copy.deepcopy(st.cfg)
    port = free_port()
    cfg["proxy"]["listen"] = "127.0.0.1:%d" % port
    path = os.path.join(st.tmp, "tide-proxy2.yml")
    write_yaml(path, cfg)
    st.start("proxy2", [binary("tide-proxy"), "-c", path, "--id", "proxy2"])
    st.wait_until(lambda: get_status(port) == 200, 10, "the new proxy answers 200")
    st.assert_alive()


def test_proxy_does_not_trust_a_version_going_backwards(make_stack):
    """A pool_version below the proxy's (a replica that missed writes, before the scaler repairs
    it) with another pool: the proxy keeps its pool and reads again, it does not route to it."""
    st = make_stack("lease_back", max_instances=6)
    st.start_stack()
    r = st.tidectl("scale", "2")
    assert r.returncode == 0, (r.stdout, r.stderr)
    st.wait_until(lambda: len(st.pool()) == 2, 20, "scale to 2")
    st.wait_until(lambda: st.status()["state"] in ("STATE_UP", "STATE_IDLE"), 10, "stable")
    pool, version = st.pool(), st.pool_version()
    assert version >= 2, (pool, version)
    st.scaler.signal(signal.SIGSTOP)  # no scaler to repair anything meanwhile
    try:
        tx = st.redis.pipeline(transaction=True)
        tx.delete(st.key("pool"))
        tx.hset(st.key("pool"), "production0", "127.0.0.1:1")  # nothing listens there
        tx.set(st.key("pool_version"), version - 1)
        tx.execute()
        st.wait_until(lambda: "pool_version went backwards" in st.proxy.stderr(), 5,
                      "the proxy sees the version go backwards", check_alive=False)
        st.hold(lambda: st.proxy_get()[0] == 200, 2, "the proxy keeps routing to its pool")
        # The pool comes back above the version the proxy has: it takes it.
        tx = st.redis.pipeline(transaction=True)
        tx.delete(st.key("pool"))
        tx.hset(st.key("pool"), mapping=pool)
        tx.set(st.key("pool_version"), version + 5)
        tx.execute()
    finally:
        st.scaler.signal(signal.SIGCONT)
    st.wait_until(lambda: "version=%d" % (version + 5) in st.proxy.stderr(), 5,
                  "the proxy reads the pool at the higher version")
    st.wait_until(lambda: st.proxy_get()[0] == 200, 5, "the proxy routes")
    st.assert_alive()


def test_redis_restarted_empty_is_repaired(make_stack):
    """Redis killed and started again with nothing (no persistence): within 2 s of it answering
    the scaler has rewritten count, pool and state, above the pool version it had."""
    st = make_stack("lease_empty", max_instances=6)
    st.start_stack()
    r = st.tidectl("scale", "2")
    assert r.returncode == 0, (r.stdout, r.stderr)
    st.wait_until(lambda: st.instances() == 2 and len(st.pool()) == 2, 20, "scale to 2")
    st.wait_until(lambda: st.status()["state"] in ("STATE_UP", "STATE_IDLE"), 10, "stable")
    pool, version = st.pool(), st.pool_version()
    st.redis_proc.kill()
    st.start_redis()  # same port, empty: it answers PING when this returns
    t0 = time.monotonic()
    st.wait_until(lambda: st.instances() == 2 and st.pool() == pool and
                  (st.pool_version() or 0) > version and st.state().get("pinned") == "1", 3,
                  "count, pool and state back in the restarted Redis")
    took = time.monotonic() - t0
    print("\nRedis restarted empty: repaired %.2f s after it answered; pool_version %d -> %d" % (
        took, version, st.pool_version()))
    assert took < 2.0, took
    assert leader(st).startswith("scaler-lease_empty "), leader(st)
    st.wait_until(lambda: st.proxy_get()[0] == 200, 5, "the proxy routes")
    st.hold(lambda: st.pool() == pool and st.instances() == 2, 2, "the pool stays")
    assert_no_orphan(st, 2)
    st.assert_alive()
