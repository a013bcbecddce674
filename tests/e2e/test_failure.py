"""test_failure.py - issue 3, "What must be shown" 4: a scale-up playbook that fails (the image
does not exist: the executor's config names one nobody built) leaves the pool and the count as
they were and no container behind; the failure and the playbook's output are visible in
`tidectl watch` (JSON, and the text form prints the output lines under the event); the scaler
backs off, doubling, and once the image is right again the scale up goes through."""

import copy

MISSING = "tide-e2e-missing:none"


def test_failing_playbook_backs_off(make_stack):
    st = make_stack("failure", scaler={"backoff_initial_ms": 2000, "backoff_max_ms": 8000})
    st.start_all()
    pool_before = st.pool()
    assert list(pool_before) == ["production0"]

    # The executor now runs with an image that is on no host.
    bad = copy.deepcopy(st.cfg)
    bad["app"]["image"] = MISSING
    bad_path = st.write_config("tide-bad-image.yml", bad)
    assert st.proc["executor"].stop() == 0
    st.daemon("executor", config=bad_path)
    watch = st.watch()
    text = st.watch(json_mode=False, topics=("exec.job",))

    st.control("scale", 2)
    failed = st.wait_until(lambda: watch.jobs(kind="JOB_SCALE_UP", event="JOB_EVENT_FINISHED",
                                              state="JOB_FAILED"),
                           90, "a failed scale-up job")
    rec = failed[0][1]["job"]
    tail = "\n".join(rec.get("output_tail", []))
    assert "is not on" in rec["error"] and MISSING in rec["error"], rec["error"]
    assert "FAILED!" in tail and MISSING in tail, tail
    assert [r["running"] for r in rec["results"]] == [False], rec["results"]

    # Nothing changed: the pool, the count, the containers.
    assert st.pool() == pool_before
    assert st.instances() == 1
    assert list(st.containers()) == ["production0"], st.containers()
    status = st.status()
    assert status["consecutive_failures"] >= 1 and MISSING in status["last_error"], status
    assert status["backoff_until_ms"] > 0, status

    # tidectl watch (text): the event, then the playbook's lines, one per line.
    st.wait_until(lambda: "    | fatal: [h" in text.text(), 10,
                  "the playbook's fatal line under the FINISHED event in tidectl watch")
    lines = text.text().splitlines()
    i = next(k for k, ln in enumerate(lines) if "state=JOB_FAILED" in ln)
    assert lines[i + 1].startswith("    | "), lines[i:i + 3]

    # Backoff: the next attempts wait 2 s, then 4 s after each failure.
    st.wait_until(lambda: len(watch.jobs(kind="JOB_SCALE_UP", event="JOB_EVENT_FINISHED",
                                         state="JOB_FAILED")) >= 3, 90,
                  "three failed attempts")
    # From the FINISHED records alone (each carries its job's start and end).
    recs = [m["job"] for _, m in watch.jobs(kind="JOB_SCALE_UP", event="JOB_EVENT_FINISHED")]
    gaps = [int(recs[k + 1]["started_ms"]) - int(recs[k]["finished_ms"]) for k in range(2)]
    assert gaps[0] >= 1900 and gaps[1] >= 3900, "retries came too early: %r ms" % gaps
    assert st.pool() == pool_before and list(st.containers()) == ["production0"]

    # The right image again: the scale up goes through after the backoff.
    assert st.proc["executor"].stop() == 0
    st.daemon("executor")
    st.wait_until(lambda: st.instances() == 2 and st.running_names() == ["production0",
                                                                          "production1"],
                  90, "the scale up succeeds with the image present")
    assert st.status()["consecutive_failures"] == 0
    print("\nretry gaps after failures: %r ms; error: %s" % (gaps, rec["error"]))
