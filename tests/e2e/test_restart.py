"""test_restart.py - issue 3, "What must be shown" 5: the scaler restarted while containers run
adopts them instead of starting duplicates: after a crash (SIGKILL, Redis intact) and after a
restart with its Redis state gone (so the list alone says what runs)."""

import time

from e2e import http_get


def _ids(st):
    return {n: c["id"] for n, c in st.containers().items()}


def test_scaler_restart_adopts(make_stack):
    st = make_stack("restart")
    st.start_all()
    st.control("scale", 3)
    names = ["production0", "production1", "production2"]
    st.wait_until(lambda: st.instances() == 3 and st.running_names() == names, 120,
                  "three containers running")
    st.wait_until(lambda: st.status()["state"] == "STATE_UP", 20, "the scaler UP")
    ids = _ids(st)
    pool = st.pool()
    watch = st.watch()

    # 1. A crash: the new scaler reads Redis, lists, finds them all running, starts nothing.
    st.proc["scaler"].kill()
    t1 = time.monotonic()
    st.daemon("scaler")
    st.wait_until(lambda: [m for t, m in watch.msgs("scaler.state") if t > t1 and
                           m.get("reason", "").startswith("reconciled: 3 in pool")],
                  60, "the restarted scaler reconciled with 3 in the pool")
    st.wait_until(lambda: st.status()["state"] == "STATE_UP", 20, "UP again")
    assert _ids(st) == ids and st.pool() == pool and st.instances() == 3
    assert not [m for t, m in watch.msgs("exec.job") if t > t1 and
                (m.get("job") or {}).get("kind") in ("JOB_SCALE_UP", "JOB_SCALE_DOWN")]

    # 2. The scaler stopped and its Redis state lost: the list alone tells what runs, and all
    # three are adopted into the pool at their addresses.
    assert st.proc["scaler"].stop() == 0
    st.redis.delete(*[st.key(k) for k in ("instances", "pool", "pool_version", "state")])
    t2 = time.monotonic()
    st.daemon("scaler")
    rec = st.wait_until(lambda: [m for t, m in watch.msgs("scaler.state") if t > t2 and
                                 m.get("reason", "").startswith("reconciled:")],
                        60, "the restarted scaler reconciled")
    assert "3 in pool, 0 removed (not running), 3 adopted" in rec[0]["reason"], rec
    assert st.pool() == pool and st.instances() == 3, st.pool()
    assert _ids(st) == ids
    for name, addr in pool.items():
        assert http_get(int(addr.rsplit(":", 1)[1]), "/health")[0] == 200
    # No duplicate was started: the only jobs since are the list (and, with the pinned count
    # gone with Redis, the policy may later scale down: never up).
    kinds = [(m.get("job") or {}).get("kind") for t, m in watch.msgs("exec.job")
             if t > t1 and m.get("type") == "JOB_EVENT_STARTED"]
    assert "JOB_SCALE_UP" not in kinds, kinds
    print("\njobs after the restarts: %r" % kinds)
