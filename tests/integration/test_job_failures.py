"""test_job_failures.py - issue 2, "What must be shown" 3: a failing job leaves the state machine
in its previous stable state and is retried with backoff; a job that never finishes hits the
deadline and the system recovers; an executor request that gets no reply is resent (lazy
pirate) without starting the job twice. Driven through the fake executor's control socket,
observed through `tidectl watch --json`, `tidectl status --json` and Redis."""

import time

from harness import job_events, ts_ms
from load import Load

BACKOFF = 1000      # scaler.backoff_initial_ms
DEADLINE = 4000     # scaler.job_deadline_ms
CLOCK_SLACK = 15    # ms: two processes' wall clocks read at different moments
REQUEST_TIMEOUT = 1000  # scaler.request_timeout_ms
CLEANUP = 1000      # executor.cleanup_deadline_ms
KILL_GRACE = 3000   # TIDE_EXEC_KILL_GRACE_MS (lib/tide_config.h)
# The scaler's own grace past job_deadline_ms for a scale up (fsm.c): the executor's kill grace
# and report, plus its cleanup run (scale_down of the job's instances) and that run's kill grace.
GRACE = KILL_GRACE + 2 * REQUEST_TIMEOUT + 1000 + CLEANUP + KILL_GRACE


def scale_up_jobs(watch, etype):
    return [m for m in job_events(watch, etype)
            if (m.get("job") or {}).get("kind") in ("JOB_SCALE_UP", None)]


def transitions(watch):
    return [(m.get("previous"), m.get("state"), m.get("reason"), m.get("current"))
            for m in watch.msgs("scaler.state")]


def test_job_failures(make_stack):
    st = make_stack("job_failures", max_instances=6,
                    scaler={"backoff_initial_ms": BACKOFF, "backoff_max_ms": 8000,
                            "job_deadline_ms": DEADLINE,
                            "request_timeout_ms": REQUEST_TIMEOUT},
                    executor={"cleanup_deadline_ms": CLEANUP})
    st.start_stack()
    watch = st.watch()
    # tidectl watch is a late joiner: wait until it receives the periodic snapshot.
    st.wait_until(lambda: watch.msgs("metrics.snapshot"), 10, "tidectl watch receives messages")
    mon = st.start_monitor()
    reply = st.fake_cmd("fail 2")
    print("\nfake 'fail 2' ->", reply)
    base = st.fake_stats()

    with Load("127.0.0.1", st.ports["proxy"], 30, threads=12) as load:  # ceil(30/20) = 2
        # ---- phase 1: two failed scale-up jobs, then a success -------------------------
        st.wait_until(
            lambda: (lambda f: f if len(f) >= 1 else None)(
                job_events(watch, "JOB_EVENT_FINISHED", "JOB_FAILED")), 30,
            "the first scale-up job FINISHED FAILED (fake told 'fail 2')")
        s1 = st.wait_until(
            lambda: (lambda s: s if s["consecutive_failures"] >= 1 and s["last_error"]
                     else None)(st.status()), 5,
            "tidectl status shows consecutive_failures >= 1 and a last_error")
        print("status after the first failure:", s1)
        assert s1["current"] == 1, s1
        assert st.instances() == 1 and len(st.pool()) == 1, (st.instances(), st.pool())

        st.wait_until(lambda: len(job_events(watch, "JOB_EVENT_FINISHED", "JOB_FAILED")) >= 2,
                      30, "the second scale-up job FINISHED FAILED")
        s2 = st.wait_until(
            lambda: (lambda s: s if s["consecutive_failures"] >= 2 else None)(st.status()), 5,
            "tidectl status shows consecutive_failures >= 2")
        assert s2["last_error"], s2
        assert st.instances() == 1 and len(st.pool()) == 1
        st.wait_until(lambda: st.instances() == 2 and len(st.pool()) == 2, 30,
                      "the third attempt succeeds: instances == 2")
        s3 = st.wait_until(
            lambda: (lambda s: s if s["state"] == "STATE_UP" else None)(st.status()), 10,
            "STATE_UP after the successful retry")
        assert s3["consecutive_failures"] == 0, "consecutive_failures not reset by a " \
            "successful job: %r" % s3

        started = scale_up_jobs(watch, "JOB_EVENT_STARTED")
        finished = scale_up_jobs(watch, "JOB_EVENT_FINISHED")
        assert len(started) >= 3 and len(finished) >= 3, (started, finished)
        ids = [m["job_id"] for m in started[:3]]
        assert len(set(ids)) == 3, "a retry must be a new job (a resent id would get the " \
            "failed record back): job ids %r" % ids
        fin = {m["job_id"]: m for m in finished}
        for k, want in ((0, "JOB_FAILED"), (1, "JOB_FAILED"), (2, "JOB_SUCCEEDED")):
            assert fin[ids[k]]["job"]["state"] == want, (k, fin[ids[k]])
        # Backoff: the retry starts at least backoff_initial_ms after the failure, and the
        # wait doubles after the second failure in a row.
        gap1 = ts_ms(started[1]) - ts_ms(fin[ids[0]])
        gap2 = ts_ms(started[2]) - ts_ms(fin[ids[1]])
        print("retry gaps: %d ms, %d ms (backoff_initial_ms %d)" % (gap1, gap2, BACKOFF))
        assert gap1 >= BACKOFF - CLOCK_SLACK, "retry 1 came %d ms after the failure, " \
            "backoff_initial_ms is %d" % (gap1, BACKOFF)
        assert gap2 >= 2 * BACKOFF - CLOCK_SLACK, "retry 2 came %d ms after the second " \
            "failure; the backoff should have doubled to %d" % (gap2, 2 * BACKOFF)
        # ...and not more than doubled: the retry goes out within a few ticks (100 ms) of
        # the backoff's end.
        assert gap1 <= BACKOFF + 1000 and gap2 <= 2 * BACKOFF + 1000, \
            "retries came %d / %d ms after the failures; the backoff is %d then %d ms" % (
                gap1, gap2, BACKOFF, 2 * BACKOFF)
        # The state machine went back to its previous stable state (IDLE) after each failure.
        tr = transitions(watch)
        back = [t for t in tr if t[0] == "STATE_BUSY" and t[1] == "STATE_IDLE"]
        assert len(back) >= 2, "expected BUSY -> IDLE after each failed job; transitions: " \
            "%r" % tr
        assert max(c for c in mon.counts() if c is not None) == 2, mon.describe()
        stats_f = st.fake_stats()
        assert stats_f.get("jobs_failed", 0) - base.get("jobs_failed", 0) == 2, stats_f

        # ---- phase 2: a job that never finishes hits the scaler's deadline --------------
        n_started = len(scale_up_jobs(watch, "JOB_EVENT_STARTED"))
        print("fake 'stall 1' ->", st.fake_cmd("stall 1"))
        load.set_rate(70)  # ceil(70/20) = 4
        busy = st.wait_until(
            lambda: (lambda s: s if s["state"] == "STATE_BUSY" and s["job_id"] else None)(
                st.status()), 30, "a scale-up job in flight (STATE_BUSY) under 70 req/s")
        stalled_id = busy["job_id"]
        t_busy = time.monotonic()
        s_after = st.wait_until(
            lambda: (lambda s: s if s["state"] != "STATE_BUSY" or s["job_id"] != stalled_id
                     else None)(st.status()), (DEADLINE + GRACE) / 1000 + 10,
            "the stalled job %s hits scaler.job_deadline_ms (%d ms)" % (stalled_id, DEADLINE))
        waited = time.monotonic() - t_busy
        print("stalled job %s left BUSY after %.1fs: %r" % (stalled_id, waited, s_after))
        tr = transitions(watch)
        out_of_stall = [t for t in tr if t[0] == "STATE_BUSY" and t[1] == "STATE_UP"]
        assert out_of_stall, "after the deadline the state should go back to UP " \
            "(previous stable state); transitions: %r" % tr
        # Measured on the bus: from the stalled job's STARTED to the scaler leaving BUSY.
        # The scaler hands job_deadline_ms to the executor (which kills the job, cleans up and
        # reports) and fails the job itself only after GRACE (scaler/fsm.c), so the window is
        # [DEADLINE, DEADLINE + GRACE].
        st_ev = [m for m in job_events(watch, "JOB_EVENT_STARTED") if m["job_id"] == stalled_id]
        assert st_ev, "no exec.job STARTED for the stalled job %s" % stalled_id
        leave = [m for m in watch.msgs("scaler.state") if m.get("previous") == "STATE_BUSY"
                 and ts_ms(m) >= ts_ms(st_ev[0])]
        assert leave, "no scaler.state leaving BUSY after the stalled job started"
        dt = ts_ms(leave[0]) - ts_ms(st_ev[0])
        print("stalled job: STARTED -> leaving BUSY took %d ms (deadline %d, grace %d)" % (
            dt, DEADLINE, GRACE))
        # The stalled fake never reports, so the scaler waits out its whole grace.
        assert dt >= DEADLINE + GRACE - 500, "the stalled job was failed after %d ms, before " \
            "the %d ms deadline + %d ms grace" % (dt, DEADLINE, GRACE)
        assert dt <= DEADLINE + GRACE + 500, "the stalled job was failed only after %d ms " \
            "(deadline %d ms + grace %d ms)" % (dt, DEADLINE, GRACE)
        st.wait_until(lambda: st.status()["consecutive_failures"] >= 1, 5,
                      "the deadline counts as a failure in tidectl status")
        assert st.instances() == 2 and len(st.pool()) == 2, "a timed-out job changed the " \
            "pool: %r" % st.pool()
        st.wait_until(lambda: st.instances() == 4 and len(st.pool()) == 4, 40,
                      "the system recovers and scales to 4 after the stalled job")
        st.wait_until(lambda: st.status()["state"] == "STATE_UP", 10, "STATE_UP at 4")
        assert len(scale_up_jobs(watch, "JOB_EVENT_STARTED")) >= n_started + 2
        st.wait_until(lambda: st.fake_children() == sorted(st.pool()), 10,
                      "the fake executor runs exactly the pool's instances (no duplicate "
                      "or leftover from the stalled job)")

        # ---- phase 3: a request that gets no reply is resent, the job runs once --------
        before = st.fake_stats()
        print("fake 'hang 1' ->", st.fake_cmd("hang 1"))
        load.set_rate(90)  # ceil(90/20) = 5
        st.wait_until(lambda: st.instances() == 5 and len(st.pool()) == 5, 40,
                      "scale to 5 although the first executor request got no reply")
        after = st.fake_stats()
        assert after.get("jobs_started", 0) - before.get("jobs_started", 0) == 1, \
            "one scale-up to 5 should start exactly one job despite the resend: %r -> %r" % (
                before, after)
        st.wait_until(lambda: st.fake_children() == sorted(st.pool()), 10,
                      "fake children == pool names at 5")
    stats = load.stats()
    print("load: %r skipped=%d" % ({k: stats[k] for k in ("total", "ok", "failed", "errors",
                                                           "p99_ms")}, load.skipped))
    assert stats["failed"] == 0, "requests failed while jobs failed: %r" % stats
    assert not watch.bad_lines, "tidectl watch printed non-JSON lines: %r" % watch.bad_lines[:5]
    st.assert_alive()
