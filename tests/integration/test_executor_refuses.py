"""test_executor_refuses.py - issue 10, "The executor refuses what it should":
- a burst of 200 LIST requests to the real tide-executor runs at most executor.max_jobs
  ansible-playbook processes at once; the rest are refused as busy, with the reason;
- a job id is idempotent only for the same request: a LIST registered under the id of the
  scaler's next scale up makes that scale up refused (not recorded as done), and the scaler
  retries under a new id; the same LIST again gets its record and starts nothing;
- a list entry at an address that is not the instance's own (wrong port, wrong host) is
  neither adopted nor stopped, and never reaches the pool;
- the scaler takes a busy refusal as any refusal: nothing recorded, retried after the backoff."""

import os
import re
import stat
import time

import zmq

from harness import bus_secure, pb_field, pb_fields, pb_header

JOB_LIST, JOB_STATUS = 4, 5


# ---- ExecRequest by hand, ExecReply read by hand -------------------------------------------

def exec_request(kind, job_id, seq=1):
    return pb_field(1, pb_header("integration/refuses", seq)) + pb_field(2, kind) + \
        pb_field(3, job_id)


def exec_reply(frames):
    """(accepted, reason, record fields) of an [exec.reply][ExecReply] message."""
    assert frames[0] == b"exec.reply", frames
    f = dict(pb_fields(frames[1]))
    record = dict(pb_fields(f[4])) if 4 in f else {}
    return bool(f.get(2, 0)), f.get(3, b"").decode(), record


class ExecClient:
    """A REQ socket on executor_control, with the scaler's bus key (the executor acts on the
    scaler's and tidectl's only): one request, one reply."""

    def __init__(self, st):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        bus_secure(self.sock, st.keys_dir, "scaler", "executor")
        self.sock.connect(st.endpoint("executor_control"))
        self.seq = 0

    def ask(self, kind, job_id, timeout=5.0):
        self.seq += 1
        self.sock.send_multipart([b"exec.request", exec_request(kind, job_id, self.seq)])
        assert self.sock.poll(int(timeout * 1000)), "no exec.reply to %s within %.1fs" % (
            job_id, timeout)
        return exec_reply(self.sock.recv_multipart())

    def close(self):
        self.sock.close(0)


# ---- at most executor.max_jobs at once --------------------------------------------------------

MAX_JOBS = 3
BURST = 200

# Stands in for ansible-playbook: notes that it runs, waits for the test's release file (or
# gives up after 60 s, so nothing outlives a failed test for long) and fails the job.
STUB = """#!/bin/sh
echo "start $$" >> '{log}'
n=0
while [ ! -e '{release}' ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n + 1)); done
echo "end $$" >> '{log}'
exit 1
"""


def running_stubs(log):
    if not os.path.exists(log):
        return 0, 0
    lines = open(log).read().split()
    started = sum(1 for w in lines if w == "start")
    ended = sum(1 for w in lines if w == "end")
    return started, started - ended


def test_max_jobs_bounds_a_burst(make_stack):
    st = make_stack("max_jobs", max_instances=4)
    log = os.path.join(st.tmp, "stub.log")
    release = os.path.join(st.tmp, "release")
    stub = os.path.join(st.tmp, "ansible-playbook-stub")
    with open(stub, "w") as f:
        f.write(STUB.format(log=log, release=release))
    os.chmod(stub, stat.S_IRWXU)
    books = os.path.join(st.tmp, "books")
    os.makedirs(os.path.join(books, "process"))
    open(os.path.join(books, "process", "list.yml"), "w").close()
    st.cfg["executor"].update({"ansible_playbook": stub, "playbooks_dir": books,
                               "max_jobs": MAX_JOBS, "driver": "process"})
    st.write_config()
    executor = st.daemon("tide-executor")
    client = ExecClient(st)
    try:
        st.wait_until(lambda: client.ask(JOB_STATUS, "nothing", 1.0)[1] == "unknown job", 15,
                      "tide-executor answers on executor_control")
        t0 = time.monotonic()
        replies = [(i,) + client.ask(JOB_LIST, "burst-%d" % i) for i in range(BURST)]
        took = time.monotonic() - t0
        accepted = [r for r in replies if r[1]]
        refused = [r for r in replies if not r[1]]
        print("\n%d LIST requests in %.2fs: %d accepted, %d refused; first refusal: %r" % (
            BURST, took, len(accepted), len(refused), refused[0][2] if refused else None))
        assert took < 5, "the burst took %.1fs: replies must come at once" % took
        assert [r[0] for r in accepted] == list(range(MAX_JOBS)), \
            "the first %d lists run, no other: %r" % (MAX_JOBS, [r[0] for r in accepted])
        want = "busy: %d jobs running, at most %d at once (executor.max_jobs)" % (MAX_JOBS,
                                                                                 MAX_JOBS)
        bad = [r for r in refused if r[2] != want]
        assert not bad, "refusals should all say %r: %r" % (want, bad[:3])
        assert all(not r[3] for r in refused), "a refusal carries no job record"

        started = st.wait_until(lambda: (lambda s: s if s[0] == MAX_JOBS else None)(
            running_stubs(log)), 15, "the %d accepted lists run their playbook" % MAX_JOBS)
        # The refused ones never start one: the count stays at MAX_JOBS while they all run.
        st.hold(lambda: running_stubs(log) == (MAX_JOBS, MAX_JOBS), 1.0,
                "exactly %d playbooks run" % MAX_JOBS)
        print("playbooks started/running:", started)
        ok, reason, _ = client.ask(JOB_LIST, "one-more")
        assert not ok and reason == want, (ok, reason)
        # A resend of a running job is not a new job: its record, nothing started.
        ok, reason, rec = client.ask(JOB_LIST, "burst-1")
        assert ok and rec.get(1) == b"burst-1", (ok, reason, rec)

        open(release, "w").close()
        st.wait_until(lambda: running_stubs(log) == (MAX_JOBS, 0), 15,
                      "the playbooks end once released")
        st.wait_until(lambda: all(client.ask(JOB_STATUS, "burst-%d" % i)[2].get(3) == 3
                                  for i in range(MAX_JOBS)), 10,
                      "the three lists are FAILED (the stub exits 1)")
        ok, reason, _ = client.ask(JOB_LIST, "after")
        assert ok, "with the slots free a list is accepted again: %r" % reason
        st.wait_until(lambda: running_stubs(log)[0] == MAX_JOBS + 1, 15,
                      "the list after the burst runs its playbook")
        assert "busy: 3 jobs running" in executor.stderr()
    finally:
        open(release, "w").close()
        client.close()


# ---- a job id names one request ---------------------------------------------------------------

def job_prefix(scaler):
    m = re.search(r"job_prefix=(\S+)", scaler.stderr())
    assert m, "the scaler logs its job_prefix at start\n%s" % scaler.tail()
    return m.group(1)


def test_job_id_taken_by_a_list(make_stack):
    st = make_stack("job_id_taken", max_instances=6)
    st.start_stack()
    mon = st.start_monitor()
    prefix = job_prefix(st.scaler)
    # At start the scaler ran its reconcile list (-1) and the scale up to min (-2).
    seen = set(re.findall(r"job sent\" job_id=(\S+)", st.scaler.stderr()))
    assert seen == {prefix + "-1", prefix + "-2"}, seen
    taken = prefix + "-3"
    client = ExecClient(st)
    try:
        base = st.fake_stats()
        ok, reason, rec = client.ask(JOB_LIST, taken)
        assert ok and rec.get(2) == JOB_LIST, (ok, reason, rec)
        # The same request again is a resend: the same record, no second list.
        ok, reason, rec = client.ask(JOB_LIST, taken)
        assert ok and rec.get(1) == taken.encode(), (ok, reason, rec)
        st.wait_until(lambda: st.fake_stats()["lists_started"] == base["lists_started"] + 1, 5,
                      "the fake ran the one list")

        r = st.tidectl("scale", 3)
        assert r.returncode == 0, r.stderr
        st.wait_until(lambda: st.instances() == 3 and len(st.pool()) == 3, 30,
                      "the scale up to 3 happens, under a new id")
        err = st.scaler.stderr()
        refusal = "job id %s is a list job; this request is a scale up" % taken
        assert refusal in err, "the scaler's scale up under %s was refused with the reason\n%s" \
            % (taken, st.scaler.tail(30))
        assert "job sent\" job_id=%s-4 kind=SCALE_UP" % prefix in err, st.scaler.tail(30)
        print("\nrefused as it should be: %r" % refusal)
        # The pool holds what runs: a scale up recorded without running would leave entries
        # nothing listens on (the bug: 502s).
        for name, addr in st.pool().items():
            assert st.instance_answers(addr, name), "pool entry %s=%s does not answer" % (
                name, addr)
        assert mon.max_instances <= 3, mon.describe()
        stats = st.fake_stats()
        assert stats["jobs_started"] == base["jobs_started"] + 1, \
            "one scale up ran (the refused one never did): %r" % stats
        assert sorted(st.fake_children()) == sorted(st.pool()), (stats, st.pool())
    finally:
        client.close()


# ---- list entries are checked before the pool --------------------------------------------------

def test_list_entry_not_ours_is_left_alone(make_stack):
    st = make_stack("list_check", max_instances=6)
    st.start_stack(with_scaler=False, with_proxy=False, wait_ready=False)
    wrong_port = "production4 127.0.0.1 %d" % (st.base_port + 9)
    wrong_host = "production5 127.0.0.9 %d" % (st.base_port + 5)
    for extra in (wrong_port, wrong_host):
        assert st.fake_cmd("list-extra " + extra) == "ok"
    assert st.fake_cmd("list-extra production7 localhost 1").startswith("error:")
    mon = st.start_monitor()
    st.scaler = st.daemon("tide-scaler")
    st.proxy = st.daemon("tide-proxy")
    st.wait_ready()
    err = st.scaler.stderr()
    for name, why in (("production4", "port %d is not app.base_port + 4 (%d)" % (
            st.base_port + 9, st.base_port + 4)),
            ("production5", "host '127.0.0.9' is not app.host (127.0.0.1)")):
        line = [ln for ln in err.splitlines()
                if "listed instance left alone" in ln and "name=%s " % name in ln]
        assert line and why in line[0], "the scaler logs why %s is left alone (%s)\n%s" % (
            name, why, st.scaler.tail(30))
        print("\n" + line[0])
    assert "2 left alone" in err, st.scaler.tail(30)
    # Neither adopted (never in the pool) nor stopped (no scale down was sent).
    assert all("production4" not in p and "production5" not in p for _, _, p in mon.history), \
        mon.describe()
    assert st.pool() == {"production0": "127.0.0.1:%d" % st.base_port}, st.pool()
    assert "kind=SCALE_DOWN" not in err, st.scaler.tail(30)
    # Left alone, they hold no index: the next scale up takes the lowest free one.
    r = st.tidectl("scale", 2)
    assert r.returncode == 0, r.stderr
    st.wait_until(lambda: st.instances() == 2 and len(st.pool()) == 2, 30, "scaled to 2")
    assert sorted(st.pool()) == ["production0", "production1"], st.pool()
    assert st.fake_cmd("reset") == "ok"


# ---- the scaler takes a busy refusal in its stride ---------------------------------------------

def test_scaler_retries_when_the_executor_is_busy(make_stack):
    st = make_stack("exec_busy", max_instances=6, executor={"max_jobs": 2})
    st.start_stack()
    mon = st.start_monitor()
    client = ExecClient(st)
    try:
        # Two slow lists from someone else take both slots.
        assert st.fake_cmd("delay 3000") == "ok"
        for i in range(2):
            ok, reason, _ = client.ask(JOB_LIST, "other-%d" % i)
            assert ok, reason
        assert st.fake_cmd("delay 0") == "ok"  # only jobs started from now on
        t0 = time.monotonic()
        r = st.tidectl("scale", 3)
        assert r.returncode == 0, r.stderr
        want = "busy: 2 jobs running, at most 2 at once (executor.max_jobs)"
        st.wait_until(lambda: want in st.scaler.stderr(), 5,
                      "the scaler's scale up is refused as busy")
        # Nothing recorded meanwhile: the count and the pool stay at 1 while refused.
        assert st.instances() == 1 and len(st.pool()) == 1, (st.instances(), st.pool())
        st.wait_until(lambda: st.instances() == 3 and len(st.pool()) == 3, 30,
                      "the scale up is retried once the slots are free, and succeeds")
        print("\nscaled to 3 %.1fs after tidectl scale 3 (the lists held the slots for 3 s)" % (
            time.monotonic() - t0))
        assert mon.max_instances <= 3 and all(i in (1, 3) for i in mon.counts()), \
            mon.describe()
        for name, addr in st.pool().items():
            assert st.instance_answers(addr, name), (name, addr)
        assert sorted(st.fake_children()) == sorted(st.pool())
        s = st.status()
        assert s["state"] in ("STATE_READY", "STATE_UP"), s
    finally:
        client.close()
