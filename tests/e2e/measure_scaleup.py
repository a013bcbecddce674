#!/usr/bin/python3
"""measure_scaleup.py - how long a scale up takes on the docker driver, from the scaler's
decision to the first request served by the new container, split by stage. Not a test (no
pass/fail): a measurement, run by hand.

    TIDE_BIN_DIR=build/bin /usr/bin/python3 tests/e2e/measure_scaleup.py [--runs 8] [--rate 40]

A stack on the docker driver (three inventory hosts, all 127.0.0.1) under a steady load; each run
pins the count one higher with `tidectl scale N` (1 -> 2 -> ... -> 5, then back to 1 and again).
Times are the arrival times (time.monotonic) of the bus messages at a `tidectl watch --json`
and the load generator's own clock for the responses:

  decision   scaler.state to BUSY, "scale up ..."        (the scaler decided and sent the job)
  started    exec.job STARTED                             (the executor spawned ansible-playbook)
  container  OUTPUT "TASK [Start each container ..."     (ansible started, placement done)
  health     OUTPUT "TASK [Wait until each instance ..."  (docker has started the container)
  ready      OUTPUT "TASK [Decide whether the job ..."    (the health path answered 200)
  finished   exec.job FINISHED SUCCEEDED                  (placement written, playbook ended)
  pool       scaler.pool naming the new instance         (Redis written, proxies told)
  served     first response with X-Instance: <new name>   (send time + latency)

playbook time = decision -> health (ansible's start, placement, the container started);
readiness time = health -> ready (until the new container answers its health path); then
the rest = ready -> served (the playbook's last tasks, the pool update, the first request).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import e2e  # noqa: E402

STAGES = ("started", "container", "health", "ready", "finished", "pool", "served")


def first(seq, pred):
    for x in seq:
        if pred(x):
            return x
    return None


def one_run(st, watch, load, target):
    t_cmd = time.monotonic()
    st.control("scale", target)
    new = "production%d" % (target - 1)
    st.wait_until(lambda: st.instances() == target and
                  [r for r in list(load.results) if r.instance == new and r.t > t_cmd],
                  120, "%s serving" % new)
    msgs = watch.msgs("scaler.state")
    dec = first(msgs, lambda tm: tm[0] >= t_cmd and tm[1].get("state") == "STATE_BUSY" and
                "scale up" in tm[1].get("reason", ""))
    started = first(watch.jobs(kind="JOB_SCALE_UP", event="JOB_EVENT_STARTED"),
                    lambda tm: tm[0] >= dec[0])
    job_id = started[1]["job_id"]
    out = [(t, m.get("line", "")) for t, m in watch.msgs("exec.job")
           if m.get("job_id") == job_id and m.get("type") == "JOB_EVENT_OUTPUT"]
    container = first(out, lambda tl: tl[1].startswith("TASK [Start each container"))
    health = first(out, lambda tl: tl[1].startswith("TASK [Wait until each instance"))
    ready = first(out, lambda tl: tl[1].startswith("TASK [Decide whether the job"))
    finished = first(watch.jobs(event="JOB_EVENT_FINISHED"), lambda tm: tm[1]["job_id"] == job_id)
    pool = first(watch.msgs("scaler.pool"), lambda tm: tm[0] >= finished[0] and
                 new in {e["name"] for e in tm[1].get("entries", [])})
    served = min(r.t + r.latency for r in list(load.results) if r.instance == new and r.t > t_cmd)
    t0 = dec[0]
    return {"started": started[0] - t0, "container": container[0] - t0,
            "health": health[0] - t0, "ready": ready[0] - t0, "finished": finished[0] - t0,
            "pool": pool[0] - t0,
            "served": served - t0, "host": st.containers()[new]["labels"]["tide.host"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--rate", type=float, default=40.0, help="steady load, requests/s")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="tide-measure-")
    eng = e2e.Engine(tmp).start()
    eng.remove_leftovers()
    eng.build_image()
    st = e2e.Stack("measure", max_instances=6, scaler={"target_rps": 1000})
    rows = []
    try:
        st.start_all()
        watch = st.watch()
        with e2e.Load("127.0.0.1", st.ports["proxy"], args.rate, threads=8) as load:
            target = 1
            while len(rows) < args.runs:
                if target == 5:
                    st.control("scale", 1)
                    st.wait_until(lambda: st.instances() == 1 and
                                  list(st.containers()) == ["production0"], 120, "back to 1")
                    st.wait_until(lambda: st.status()["state"] == "STATE_IDLE", 30, "IDLE")
                    target = 1
                target += 1
                row = one_run(st, watch, load, target)
                rows.append(row)
                print("run %d (-> %d, on %s): %s" % (len(rows), target, row["host"], "  ".join(
                    "%s %.2f" % (k, row[k]) for k in STAGES)), flush=True)
                st.wait_until(lambda: st.status()["state"] == "STATE_UP", 30, "UP")
            stats = load.stats()
    finally:
        st.close()
        eng.remove_leftovers()
        eng.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(key):
        return statistics.median(r[key] for r in rows)
    print("\nmedian of %d scale ups (s from the decision):" % len(rows))
    for k in STAGES:
        print("  %-9s %.2f" % (k, med(k)))
    print("playbook time (decision -> readiness checks begin): median %.2f s" % med("health"))
    print("readiness time (readiness checks begin -> the container answered): median %.2f s" %
          statistics.median(r["ready"] - r["health"] for r in rows))
    print("the rest (-> first request served): median %.2f s: playbook end %.2f, "
          "job end -> pool %.3f, pool -> served %.3f" % (
              statistics.median(r["served"] - r["ready"] for r in rows),
              statistics.median(r["finished"] - r["ready"] for r in rows),
              statistics.median(r["pool"] - r["finished"] for r in rows),
              statistics.median(r["served"] - r["pool"] for r in rows)))
    print("total decision -> served: median %.2f s (min %.2f, max %.2f)" % (
        med("served"), min(r["served"] for r in rows), max(r["served"] for r in rows)))
    print("load: %d requests, %d failed" % (stats["total"], stats["failed"]))


if __name__ == "__main__":
    main()
