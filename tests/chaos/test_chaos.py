"""test_chaos.py - the chaos suite (issue 10): one real stack (tide-proxy, tide-metrics,
tide-scaler, the real tide-executor with ansible-playbook and the process driver, the sample
app as supervisord programs, all under one private supervisord with autorestart, as
deploy/supervisord.conf runs them), steady open-loop load through the proxy, one fault per
scenario, in the order of SCENARIOS below (each starts where the one before left the stack).

Each scenario asserts, on what a user would notice:
- failed requests: none, except for a kill -9 on the requests' path (the proxy, an
  instance), where only requests in flight on the killed process may fail: sent before all
  its threads had ended, unanswered when the signal went ("in flight" in the table), and never
  more than one per load connection;
- every request sent once the stack stands again succeeds;
- recovery: the stack stands again within a deadline at the expected count, every daemon
  RUNNING, Redis's count and pool equal to the instances that run, nothing left to stop, the
  scaler stable, every pool entry answering as itself;
- no orphan and no duplicate instance (ChaosStack.census: every tide-sample-app on the
  instance ports is a child of supervisord, runs under its own port's name, once).

"refused" requests (connect() refused: nothing listened on the proxy's port, so nobody
accepted them) are counted apart from failed ones; chaos_load.py says how each outcome is
judged. "recovery s" is from the fault (for Redis stopped, from SIGCONT, the fault's end) to the
later of: the last request that did not succeed, and the stack standing again.

"Redis restarted empty": the scaler notices the lost epoch and rewrites count, pool and
state (scaler/lease.c), above the pool version it knew; the proxies keep routing to their last
pool meanwhile.

The scaler scenarios run twice (SCALERS): first with one scaler (the standby program is not
started yet), then with tide-scaler-b started as the standby and the leader, whichever holds the
lease, killed: the lease must move to a running scaler under a higher epoch (no write from the
dead one's epoch can land after), with the scale up in flight taken over by its job id and run
once.
"""

import os
import re
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest

from conftest import ROWS
from chaos_load import ChaosLoad, summarize
from chaos_stack import MIN, CensusWatch
from harness import children_of, cmdline, http_get, pid_alive

RATE = 20        # req/s, open loop: ceil(20 / target_rps 20) = 1, below scaler.min = 2
THREADS = 6      # connections of the load generator; at most one request in flight on each
WARMUP_S = 2     # load before the fault
TAIL_S = 3       # load after recovery, which must all succeed
RECOVERY_S = 60  # deadline for the stack to stand again after a fault


@dataclass
class Ctx:
    """What a scenario's inject and check functions share."""
    chaos: object
    load: Optional[ChaosLoad] = None
    t_fault: float = 0.0
    notes: dict = field(default_factory=dict)


@dataclass
class Scenario:
    fault: str                      # the table's name for it
    inject: Callable                # (ctx) -> monotonic time the fault hit (or ended)
    count: int = MIN                # instances once recovered
    max_failed: int = 0             # failed requests allowed
    may_refuse: bool = False        # the proxy's port may go unanswered (it is the fault)
    data_path: bool = False         # a kill -9 on the requests' path: only those in flight
                                    # on the killed process may fail (failed_only_in_flight)
    recovered: Callable = None      # (ctx) -> truthy when this fault is over (beyond steady)
    check: Callable = None          # (ctx, outcomes) -> None, asserts
    recovery_s: float = RECOVERY_S
    prepare: Callable = None        # (chaos) -> None, run before the stack is waited for


# ---- helpers -----------------------------------------------------------------------------

def instance_pids(chaos):
    names, _ = chaos.census()
    return {n: sorted(p) for n, p in names.items()}


def playbook_of(chaos, book):
    """PID of the executor's ansible-playbook child running <book>.yml, or None."""
    ex = chaos.pid("tide-executor")
    if ex is None:
        return None
    for c in children_of(ex):
        if "process/%s.yml" % book in cmdline(c):
            return c
    return None


def spawns(chaos, name):
    with open(os.path.join(chaos.st.tmp, "supervisord.log"), errors="replace") as f:
        return len(re.findall(r"spawned: '%s' with pid" % re.escape(name), f.read()))


def new_pid(program):
    """recovered(): program runs again under a PID other than the one killed."""
    def fn(ctx):
        pid = ctx.chaos.pid(program)
        return pid is not None and pid != ctx.notes["killed"]
    return fn


def threads_gone(pid):
    """True when no thread of pid runs any more. The process's own state is not enough: its
    main thread becomes a zombie while its other threads still tear down, and its sockets
    close only when the last one has exited."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return True
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] not in "ZX":
            return False
    return True


def kill_pid(ctx, pid):
    """SIGKILL to pid; notes the signal's time and the time it was gone (every thread ended,
    its sockets closed): a request is in flight on the dead process when it was sent before it
    was gone and had no answer when the signal went. Returns the time it was gone."""
    ctx.notes["killed"] = pid
    ctx.notes["t_signal"] = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    ctx.chaos.st.wait_until(lambda: threads_gone(pid), 5, "pid %d is gone" % pid,
                            interval=0.002, check_alive=False)
    ctx.notes["t_dead"] = time.monotonic()
    return ctx.notes["t_dead"]


def kill9(program):
    def fn(ctx):
        ctx.notes["instances"] = instance_pids(ctx.chaos)
        pid = ctx.chaos.pid(program)
        assert pid is not None, "%s is not running: %s" % (program, ctx.chaos.sv.describe())
        return kill_pid(ctx, pid)
    return fn


def instances_untouched(ctx, outcomes):
    """The instances that ran before the fault still run, as the same processes."""
    after = instance_pids(ctx.chaos)
    assert after == ctx.notes["instances"], \
        "instances were restarted or replaced: before %r, after %r" % (
            ctx.notes["instances"], after)


def in_flight(ctx, outcomes):
    """The requests in flight on the killed process: sent before it was gone, unanswered
    when the signal went."""
    return [o for o in outcomes if o.t <= ctx.notes["t_dead"] and
            o.t_end >= ctx.notes["t_signal"]]


def failed_only_in_flight(ctx, outcomes):
    """The failed requests are only (some of) those in flight on the killed process."""
    flying = set(map(id, in_flight(ctx, outcomes)))
    ctx.notes["in_flight"] = len(flying)
    other = [(round(o.t - ctx.t_fault, 3), o.status, o.error) for o in outcomes
             if o.kind == "failed" and id(o) not in flying]
    assert not other, "requests not in flight on the killed process failed " \
        "(times from its death): %r" % other


# ---- tide-metrics ----

def metrics_serves(ctx):
    status, _, _ = http_get("127.0.0.1", ctx.chaos.st.ports["metrics_http"], "/api/snapshot",
                            2.0)
    return new_pid("tide-metrics")(ctx) and status == 200


# ---- the scaler, in the topologies of SCALERS ----

@dataclass
class Topology:
    leader: Callable                # (chaos) -> the program to kill
    prepare: Callable = None        # (chaos) -> None, sets the topology up


def the_leader(chaos):
    program, _ = chaos.lease()
    assert program is not None and chaos.pid(program) is not None, \
        "no running scaler holds the lease: %r" % (chaos.lease(),)
    return program


SCALERS = {
    "one scaler": Topology(lambda chaos: "tide-scaler"),
    "leader, with a standby": Topology(the_leader, prepare=lambda chaos: chaos.start_standby()),
}


def kill_scaler(ctx, topology):
    """kill -9 of the topology's leader; notes which program and the lease's epoch."""
    chaos = ctx.chaos
    program = SCALERS[topology].leader(chaos)
    ctx.notes["program"] = program
    ctx.notes["epoch"] = chaos.lease()[1]
    ctx.notes["killed"] = chaos.kill(program, signal.SIGKILL)
    return time.monotonic()


def kill_scaler_idle(topology):
    def fn(ctx):
        ctx.notes["instances"] = instance_pids(ctx.chaos)
        return kill_scaler(ctx, topology)
    return fn


def scaler_replaced(ctx):
    """recovered(): the killed scaler runs again (supervisord restarted it) and a running
    scaler holds the lease under an epoch above the dead one's (its fence: a write of the dead
    one cannot land after)."""
    chaos = ctx.chaos
    pid = chaos.pid(ctx.notes["program"])
    program, epoch = chaos.lease()
    if pid is None or pid == ctx.notes["killed"] or program is None or \
            chaos.pid(program) is None or epoch <= ctx.notes["epoch"]:
        return False
    if "took_over" not in ctx.notes:
        ctx.notes["took_over"] = time.monotonic() - ctx.t_fault
        print("\nthe lease moved to %s (epoch %d -> %d) %.1f s after kill -9 of %s" % (
            program, ctx.notes["epoch"], epoch, ctx.notes["took_over"], ctx.notes["program"]))
    return True


def kill_scaler_in_scale_up(topology):
    """tidectl scale 3, then kill -9 of the scaler while the scale up's playbook runs."""
    def fn(ctx):
        chaos = ctx.chaos
        ctx.notes["spawns"] = spawns(chaos, "production2")
        r = chaos.st.tidectl("scale", 3)
        assert r.returncode == 0, "tidectl scale 3: %r %r" % (r.stdout, r.stderr)
        pb = chaos.st.wait_until(lambda: playbook_of(chaos, "scale_up"), 30,
                                 "the executor runs scale_up.yml", interval=0.05)
        ctx.notes["playbook"] = pb
        return kill_scaler(ctx, topology)
    return fn


def one_scale_up(ctx, outcomes):
    """production2 was started once: the restarted scaler picked the job up, no second one."""
    n = spawns(ctx.chaos, "production2") - ctx.notes["spawns"]
    assert n == 1, "production2 was spawned %d times by supervisord (a duplicate job?)" % n


# ---- the executor ----

def kill_executor_in_scale_down(ctx):
    """tidectl scale 2 (from 3), then kill -9 of the executor while scale_down.yml runs."""
    chaos = ctx.chaos
    r = chaos.st.tidectl("scale", 2)
    assert r.returncode == 0, "tidectl scale 2: %r %r" % (r.stdout, r.stderr)
    pb = chaos.st.wait_until(lambda: playbook_of(chaos, "scale_down"), 40,
                             "the executor runs scale_down.yml", interval=0.05)
    ctx.notes["playbook"] = ctx.notes["orphan"] = pb
    ctx.notes["killed"] = chaos.kill("tide-executor", signal.SIGKILL)
    return time.monotonic()


def scale_down_done(ctx):
    chaos = ctx.chaos
    pb = ctx.notes["playbook"]
    # The killed executor's playbook goes on in its own process group until it ends (or
    # dies of its broken output pipe); the scenario waits for it, so nothing outlives it.
    return new_pid("tide-executor")(ctx) and not pid_alive(pb) and \
        not os.path.exists(chaos.sv.conf_file("production2"))


# ---- one instance ----

def kill_instance(ctx):
    pid = ctx.chaos.pid("production1")
    assert pid is not None, ctx.chaos.sv.describe()
    return kill_pid(ctx, pid)


def instance_replaced(ctx):
    pid = ctx.chaos.pid("production1")
    return pid is not None and pid != ctx.notes["killed"]


# ---- the proxy ----

def term_proxy(ctx):
    ctx.notes["killed"] = ctx.chaos.kill("tide-proxy", signal.SIGTERM)
    return time.monotonic()


def proxy_exited_0(ctx, outcomes):
    notes = ctx.chaos.exits("tide-proxy")
    assert notes and notes[-1].startswith("exit status 0"), \
        "tide-proxy's exit on SIGTERM, by supervisord's log: %r" % notes[-1:]


# ---- Redis ----

REDIS_STOP_S = 20


def stop_redis(ctx):
    chaos = ctx.chaos
    ctx.notes["exits"] = {d: len(chaos.exits(d)) for d in
                          ("tide-proxy", "tide-metrics", "tide-scaler", "tide-executor")}
    chaos.st.redis_proc.signal(signal.SIGSTOP)
    t_stop = time.monotonic()
    try:
        # The fault lasts REDIS_STOP_S (its length, not a wait for something); meanwhile every
        # daemon must stay up.
        while time.monotonic() - t_stop < REDIS_STOP_S:
            now = {d: len(chaos.exits(d)) for d in ctx.notes["exits"]}
            assert now == ctx.notes["exits"], \
                "a daemon exited while Redis was stopped: %r -> %r\n%s" % (
                    ctx.notes["exits"], now, chaos.sv.describe())
            time.sleep(0.2)
    finally:
        chaos.st.redis_proc.signal(signal.SIGCONT)
    return time.monotonic()


def restart_redis_empty(ctx):
    """kill -9 of redis-server and a new one on the same port with nothing in it (the stack's
    Redis keeps no data on disk)."""
    st = ctx.chaos.st
    ctx.notes["version"] = st.pool_version()
    st.redis_proc.kill()
    t = time.monotonic()
    st.start_redis()
    assert st.redis.get(st.key("instances")) is None, "the new Redis is not empty"
    return t


def pool_version_went_up(ctx, outcomes):
    v = ctx.chaos.st.pool_version()
    assert v is not None and v > ctx.notes["version"], \
        "pool_version after the wipe %s, before %s: one version would name two pools" % (
            v, ctx.notes["version"])


def no_daemon_exited(ctx, outcomes):
    now = {d: len(ctx.chaos.exits(d)) for d in ctx.notes["exits"]}
    assert now == ctx.notes["exits"], "a daemon exited: %r -> %r" % (ctx.notes["exits"], now)


# ---- the table ----

def scaler_scenarios(topology, count):
    """The scaler scenarios of a topology, from count instances (the scale up goes to
    count + 1)."""
    prepare = SCALERS[topology].prepare
    return [
        Scenario("kill -9 scaler (%s)" % topology, kill_scaler_idle(topology), count=count,
                 recovered=scaler_replaced, check=instances_untouched, prepare=prepare),
        Scenario("kill -9 scaler in a scale up (%s)" % topology,
                 kill_scaler_in_scale_up(topology), count=count + 1,
                 recovered=scaler_replaced, check=one_scale_up, prepare=prepare),
    ]


SCENARIOS = [
    Scenario("kill -9 tide-metrics", kill9("tide-metrics"), recovered=metrics_serves,
             check=instances_untouched),
    Scenario("kill -9 tide-executor", kill9("tide-executor"),
             recovered=new_pid("tide-executor"), check=instances_untouched),
    # In flight on the dead instance when it died: at most one per load connection.
    Scenario("kill -9 one instance", kill_instance, max_failed=THREADS, data_path=True,
             recovered=instance_replaced, check=failed_only_in_flight),
    Scenario("kill -9 tide-proxy", kill9("tide-proxy"), max_failed=THREADS, data_path=True,
             may_refuse=True, recovered=new_pid("tide-proxy"), check=failed_only_in_flight),
    # Nothing accepted may fail: it drains, exits 0, and supervisord starts it again.
    Scenario("SIGTERM tide-proxy (restart)", term_proxy, may_refuse=True,
             recovered=new_pid("tide-proxy"), check=proxy_exited_0),
    Scenario("SIGSTOP redis %d s" % REDIS_STOP_S, stop_redis, recovery_s=30,
             check=no_daemon_exited),
    Scenario("redis restarted empty", restart_redis_empty, check=pool_version_went_up),
] + scaler_scenarios("one scaler", MIN) + [
    # From the scale up's 3 back to 2, so the next topology's scale up has one to make.
    Scenario("kill -9 tide-executor in a scale down", kill_executor_in_scale_down,
             recovered=scale_down_done),
] + scaler_scenarios("leader, with a standby", MIN)


@pytest.fixture(scope="module")
def expected():
    """The count the stack stands at between scenarios (a scenario may change it)."""
    return {"count": MIN}


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.fault for s in SCENARIOS])
def test_chaos(chaos, expected, sc):
    st = chaos.st
    if sc.prepare is not None:
        sc.prepare(chaos)
    chaos.wait_steady(expected["count"], 90, "the stack stands at %d before '%s'" % (
        expected["count"], sc.fault))
    ctx = Ctx(chaos)
    row = [sc.fault, 0, 0, 0, None, None, "not run"]
    ROWS.append(row)
    load = ctx.load = ChaosLoad(st.ports["proxy"], RATE, THREADS).start()
    census = CensusWatch(chaos)
    census.start()
    try:
        assert load.wait_more(WARMUP_S * RATE, WARMUP_S + 10), "the load generator stalled"
        ctx.t_fault = sc.inject(ctx)
        last = []

        def over():
            if sc.recovered is not None and not sc.recovered(ctx):
                last[:] = ["%s not over" % sc.fault]
                return False
            last[:] = [chaos.steady(sc.count)]
            return last[0] is None
        st.wait_until(over, sc.recovery_s, "the stack stands again at %d after '%s'" % (
            sc.count, sc.fault), check_alive=False, interval=0.2,
            detail=lambda: "last: %s\n%s" % (last[0] if last else None, chaos.sv.describe()))
        t_steady = time.monotonic()
        assert load.wait_more(TAIL_S * RATE, TAIL_S + 10), "the load generator stalled"
    finally:
        load.stop()
        census_problems = census.stop()
        orphan = ctx.notes.get("orphan")
        if orphan is not None and pid_alive(orphan):
            # The killed executor's playbook never ended: stop its process group, say so.
            chaos.problems.append("the killed executor's playbook (pid %d) was still running"
                                  % orphan)
            os.killpg(os.getpgid(orphan), signal.SIGKILL)
        # A scenario that did not recover still shows what its load saw.
        outcomes = load.all()
        s = summarize(outcomes)
        row[1:4] = [s["total"], s["failed"], s["refused"]]
        row[6] = "FAILED"
    expected["count"] = sc.count
    bad = [o for o in outcomes if o.kind != "ok" and o.t >= ctx.t_fault - 1]
    t_last_bad = max((o.t_end for o in bad), default=ctx.t_fault)
    recovery = max(t_steady, t_last_bad) - ctx.t_fault
    flying = len(in_flight(ctx, outcomes)) if sc.data_path else None
    row[4:6] = [flying, recovery]
    print("\n%s: %r; recovery %.1f s; stale connections reopened: %d; in flight on the "
          "killed process: %s" % (sc.fault, s, recovery, load.stale_reconnects, flying))
    assert not census_problems, "orphan or duplicate instances during the scenario " \
        "(%d censuses): %r" % (census.samples, census_problems)
    tail = [o for o in outcomes if o.t > t_steady]
    assert all(o.kind == "ok" for o in tail), \
        "requests after recovery did not succeed: %r" % summarize(tail)
    assert s["failed"] <= sc.max_failed, "%d failed requests (at most %d allowed): %r" % (
        s["failed"], sc.max_failed, s)
    if not sc.may_refuse:
        assert s["refused"] == 0, "refused connections with the proxy up: %r" % s
    if sc.check is not None:
        sc.check(ctx, outcomes)
    row[6] = "ok"
