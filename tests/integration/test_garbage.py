"""test_garbage.py - issue 2, "What must be shown" 6: garbage frames on every subscribed and every
REP socket are dropped and counted, and no process crashes; afterwards the stack still scales.

How each socket is reached (subscribers CONNECT to their publishers, so to reach a SUB this
test must be the publisher at that endpoint before the real one binds it):
  phase 0  this test binds XPUBs on endpoints.scaler_events and endpoints.executor_events, then
           starts tide-metrics, tide-proxy and `tidectl watch`: their SUBs connect to us.
           -> proxy's scaler_events SUB, metrics' scaler_events and executor_events SUBs,
              tidectl watch's SUBs. Then tide-metrics is stopped (SIGTERM -> exit 0).
  phase A  XPUBs on endpoints.metrics and endpoints.executor_events; tide-scaler starts
           (no executor yet) -> the scaler's metrics SUB and executor_events SUB. Garbage of
           different kinds goes to each so the scaler's "dropped ... kind=..." lines tell the
           two sockets apart.
  phase B  the XPUBs close; tide-metrics and the fake executor start (the real publishers).
           -> metrics' stats SUB (it binds: a PUB of ours connects), the REP sockets:
              scaler_control, the fake's executor_control and control socket, and a real
              tide-executor on its own endpoints.
Then: every PID alive, dropped frames visible (/api/snapshot dropped_frames, /metrics
tide_dropped_frames_total, "dropped a malformed message" in each log), and a load step still
scales the stack.
Not covered: the scaler's REQ socket to the executor (a client: the executor answers it) and
garbage replies on it; the sample app is not on the bus.
"""

import os
import random
import re
import time

import zmq

from harness import (PUBSUB_TOPICS, binary, bus_secure, free_port, metrics_snapshot, pb_field,
                     pb_header, port_is_free, prometheus_value, random_bytes)
from load import Load

DROP_LINE = "dropped a malformed message"
rng = random.Random(20261128)


def garbage_for(prefix, kinds):
    """Multipart garbage messages that pass a SUB filter on prefix, of the given kinds:
    frame-count, unknown-topic, protobuf, bad-values, topic, oversized."""
    p = prefix
    topics = [t.encode() for t in PUBSUB_TOPICS if t.encode().startswith(p)]
    out = []
    if "frame-count" in kinds:
        out.append([p + b"\xff\x00junk"])
        for t in topics:
            out.append([t])
            out.append([t, b"", b"extra"])
            out.append([t, random_bytes(30, rng), random_bytes(5, rng), b"x"])
    if "unknown-topic" in kinds:
        out.append([p + b"zz.unknown", b"\x0a\x02hi"])
        out.append([p + b"\xfe\xfd", random_bytes(20, rng)])
    if "protobuf" in kinds:
        for t in topics:
            out.append([t, b"\xff" * 16])            # wire type 7: never valid
            out.append([t, b"\x0a\x50abc"])          # length past the end
            out.append([t, b"\x08"])                 # truncated varint
    if "bad-values" in kinds:
        for t in topics:
            out.append([t, b""])                     # decodes to defaults: no header
            # A header without seq (seq must be > 0): decodes, fails the value checks. (Any
            # other field set to 99 can be a valid value for some topic: stats took it.)
            out.append([t, pb_field(1, pb_field(1, "integration/garbage")) + pb_field(2, 1)])
    if "topic" in kinds:
        for t in topics:
            out.append([t + b"\x00tail", pb_field(1, pb_header())])
    if "oversized" in kinds:
        for t in topics[:1]:
            out.append([t, b"\x00" * (5 << 20)])
    return out


class GarbagePub:
    """An XPUB bound where a real publisher would be; learns its subscribers' filters."""

    def __init__(self, ctx, endpoint, keys, role):
        self.endpoint = endpoint
        self.sock = bus_secure(ctx.socket(zmq.XPUB), keys, role)  # the real publisher's key
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100000)
        self.sock.bind(endpoint)
        self.prefixes = set()

    def poll_subs(self):
        while self.sock.poll(0):
            m = self.sock.recv()
            if m and m[0] == 1:
                self.prefixes.add(m[1:])
        return self.prefixes

    def spray(self, kinds):
        self.poll_subs()
        n = 0
        for pref in sorted(self.prefixes):
            for msg in garbage_for(pref, kinds):
                self.sock.send_multipart(msg)
                n += 1
        return n

    def close(self):
        """Closes the XPUB and waits (up to 5 s) until its port is free for the real
        publisher: libzmq closes a listener in its I/O thread, after close() returns."""
        self.sock.close(0)
        port = int(self.endpoint.rsplit(":", 1)[1])
        deadline = time.monotonic() + 5
        while not port_is_free(port) and time.monotonic() < deadline:
            time.sleep(0.02)


def drop_kinds(proc):
    """The kinds in proc's "dropped a malformed message" log lines."""
    return set(re.findall(r"kind=([\w-]+)", "\n".join(
        ln for ln in proc.stderr().splitlines() if DROP_LINE in ln)))


def req_garbage(ctx, endpoint, frames, timeout=3.0, keys=None, server=None):
    """Sends frames on a fresh REQ (with tidectl's key for server's endpoint when keys is
    given); returns the reply frames, or None on no reply."""
    s = bus_secure(ctx.socket(zmq.REQ), keys, "tidectl", server) if server else ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    try:
        s.connect(endpoint)
        s.send_multipart(frames)
        if not s.poll(int(timeout * 1000)):
            return None
        return s.recv_multipart()
    finally:
        s.close(0)


REQ_GARBAGE = [
    [b"\xde\xad\xbe\xef"],                              # one frame
    [b"scaler.control", b"\x00", b"extra"],             # three frames
    [b"nope.topic", b"\x08\x01"],                       # unknown topic
    [b"\xff" * 40, b"\xff" * 40],                       # binary topic
    [b"", b""],                                         # empty topic
]


def rep_checks(st, ctx, endpoint, topic, reply_topic, who, server):
    """Every garbage request on a REP gets an error reply [reply_topic][...malformed
    request...] and the socket keeps answering."""
    msgs = REQ_GARBAGE + [
        [topic, b"\xff" * 16],                          # valid topic, undecodable payload
        [topic, b""],                                   # valid topic, no header
        [topic, pb_field(1, pb_header()) + pb_field(2, 77)],  # out-of-range enum
    ]
    # Oversized: a REP may cap the message size (ZMQ_MAXMSGSIZE), and then libzmq drops the
    # connection without the message ever reaching the program: no reply is fine then, as
    # long as the socket keeps answering (the caller checks with a valid request).
    rep = req_garbage(ctx, endpoint, [topic, b"\x01" * (5 << 20)], keys=st.keys_dir,
                      server=server)
    assert rep is None or (rep[0] == reply_topic and b"malformed request" in rep[1]), \
        "%s: reply to an oversized request: %r" % (who, [f[:60] for f in rep])
    for frames in msgs:
        rep = req_garbage(ctx, endpoint, frames, keys=st.keys_dir, server=server)
        assert rep is not None, "%s: no reply to garbage %r (a REP that does not answer is " \
            "stuck)\n%s" % (who, [f[:20] for f in frames], st.logs_tail())
        assert len(rep) == 2 and rep[0] == reply_topic, "%s: reply to garbage %r is %r, " \
            "expected [%r][...]" % (who, [f[:20] for f in frames], [f[:60] for f in rep],
                                    reply_topic)
        assert b"malformed request" in rep[1], "%s: reply to garbage %r does not say " \
            "'malformed request': %r" % (who, [f[:20] for f in frames], rep[1][:200])
    st.assert_alive()


def exec_status_request(job_id="no-such-job"):
    # ExecRequest{header, kind=JOB_STATUS(5), job_id}
    return pb_field(1, pb_header()) + pb_field(2, 5) + pb_field(3, job_id)


def test_garbage(make_stack):
    st = make_stack("garbage", max_instances=6)
    for b in ("tide-proxy", "tide-metrics", "tide-scaler", "tide-fake-executor",
              "tide-executor", "tide-sample-app", "tidectl"):
        binary(b)
    st.start_redis()
    ctx = zmq.Context()
    try:
        run_phases(st, ctx)
    finally:
        ctx.destroy(0)


def run_phases(st, ctx):
    # ---- phase 0: proxy, metrics and tidectl watch subscribe to our XPUBs ----------------
    xs = GarbagePub(ctx, st.endpoint("scaler_events"), st.keys_dir, "scaler")
    xe = GarbagePub(ctx, st.endpoint("executor_events"), st.keys_dir, "executor")
    metrics0 = st.daemon("tide-metrics")
    proxy = st.daemon("tide-proxy")
    st.proxy = proxy
    watch = st.watch()
    st.wait_until(lambda: len(xs.poll_subs()) > 0 and len(xe.poll_subs()) > 0, 15,
                  "subscriptions on our scaler_events and executor_events XPUBs")
    print("\nsubscriptions: scaler_events %r, executor_events %r" % (xs.prefixes, xe.prefixes))
    # Sprayed repeatedly until each effect shows; the 5 MB frames only once per socket.
    kinds_all = ("frame-count", "unknown-topic", "protobuf", "bad-values", "topic")

    def metrics_dropped():
        return metrics_snapshot(st).get("dropped_frames", 0)

    st.wait_until(lambda: (xs.spray(kinds_all), drop_kinds(proxy))[1], 15,
                  "tide-proxy logs '%s' for garbage on its scaler_events SUB" % DROP_LINE,
                  interval=0.3)
    d1 = st.wait_until(lambda: (xs.spray(kinds_all), metrics_dropped())[1], 15,
                       "tide-metrics counts dropped frames (scaler_events SUB) in "
                       "/api/snapshot dropped_frames", interval=0.3)
    st.wait_until(lambda: (xe.spray(kinds_all), metrics_dropped() > d1)[1], 15,
                  "tide-metrics' dropped_frames grows for garbage on its executor_events SUB",
                  interval=0.3)
    xs.spray(("oversized",))
    xe.spray(("oversized",))
    prom = prometheus_value(st, "tide_dropped_frames_total")
    assert prom is not None and prom > 0, "tide_dropped_frames_total in /metrics: %r" % prom
    assert DROP_LINE in metrics0.stderr(), metrics0.tail()
    st.assert_alive()
    print("proxy dropped kinds %r; metrics dropped_frames %s" % (drop_kinds(proxy),
                                                                 metrics_dropped()))
    xs.close()
    rc = metrics0.stop()
    assert rc == 0, "tide-metrics exited %r on SIGTERM" % rc

    # ---- phase A: the scaler's SUBs (metrics, executor_events) -----------------------------
    xm = GarbagePub(ctx, st.endpoint("metrics"), st.keys_dir, "metrics")
    st.scaler = st.daemon("tide-scaler")
    st.wait_until(lambda: len(xm.poll_subs()) > 0, 15, "the scaler subscribes to our "
                  "metrics XPUB")
    # Distinct kinds per socket, so the scaler's log tells which socket dropped what.
    st.wait_until(lambda: (xm.spray(("frame-count", "unknown-topic")),
                           {"frame-count", "unknown-topic"} <= drop_kinds(st.scaler))[1], 15,
                  "tide-scaler logs frame-count and unknown-topic drops (metrics SUB)",
                  interval=0.3)
    st.wait_until(lambda: (xe.spray(("protobuf", "bad-values", "topic")),
                           {"protobuf", "bad-values"} <= drop_kinds(st.scaler))[1], 15,
                  "tide-scaler logs protobuf and bad-values drops (executor_events SUB)",
                  interval=0.3)
    xm.spray(kinds_all + ("oversized",))
    xe.spray(kinds_all + ("oversized",))
    print("scaler dropped kinds %r" % drop_kinds(st.scaler))
    st.assert_alive()
    xm.close()
    xe.close()

    # ---- phase B: the real publishers; the stats SUB and the REP sockets ------------------
    st.metrics = st.daemon("tide-metrics")
    st.fake = st.start_fake_executor()
    st.wait_ready(timeout=40)

    # metrics' stats SUB binds: connect a PUB of ours and spray until it counts.
    pub = bus_secure(ctx.socket(zmq.PUB), st.keys_dir, "proxy", "metrics")
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(st.endpoint("stats"))

    def spray_stats():
        for msg in garbage_for(b"", kinds_all):
            pub.send_multipart(msg)
        return metrics_dropped()
    st.wait_until(spray_stats, 15, "tide-metrics counts garbage on its stats SUB",
                  interval=0.3)
    for msg in garbage_for(b"stats", ("oversized",)):
        pub.send_multipart(msg)
    pub.close(0)
    snap = metrics_snapshot(st)
    assert snap.get("proxies") == 1, "garbage on stats must not count as a proxy: %r" % snap
    prom = prometheus_value(st, "tide_dropped_frames_total")
    assert prom is not None and prom > 0, "tide_dropped_frames_total in /metrics: %r" % prom

    # REP sockets.
    rep_checks(st, ctx, st.endpoint("scaler_control"), b"scaler.control",
               b"scaler.control.reply", "tide-scaler scaler_control", "scaler")
    assert st.status()["state"] in ("STATE_IDLE", "STATE_UP"), "tidectl status after garbage"
    rep_checks(st, ctx, st.endpoint("executor_control"), b"exec.request", b"exec.reply",
               "tide-fake-executor executor_control", "executor")
    rep = req_garbage(ctx, st.endpoint("executor_control"),
                      [b"exec.request", exec_status_request()], keys=st.keys_dir, server="executor")
    assert rep and rep[0] == b"exec.reply" and b"unknown job" in rep[1], \
        "fake executor: JOB_STATUS for an unknown job after garbage: %r" % rep
    for junk in ([b"\xff\xfe\x00"], [b"fail", b"2", b"x"], [b""], [b"fail many"]):
        rep = req_garbage(ctx, st.endpoint("fake_control"), junk)
        assert rep is not None, "fake control socket: no reply to %r" % junk
    assert st.fake_cmd("reset"), "fake control socket: empty reply to 'reset' after garbage"
    assert isinstance(st.fake_stats(), dict)

    # A real tide-executor on its own endpoints (its REP is not otherwise reachable here).
    ex_ports = {"executor_control": free_port(), "executor_events": free_port()}
    cfg2 = {s: (dict(v) if isinstance(v, dict) else v) for s, v in st.cfg.items()}
    cfg2["endpoints"]["executor_control"] = "tcp://127.0.0.1:%d" % ex_ports["executor_control"]
    cfg2["endpoints"]["executor_events"] = "tcp://127.0.0.1:%d" % ex_ports["executor_events"]
    cfg2["executor"]["state_dir"] = os.path.join(st.tmp, "real-executor")
    path2 = st.write_config(os.path.join(st.tmp, "executor.yml"), cfg2)
    executor = st.daemon("tide-executor", config=path2)
    ep = "tcp://127.0.0.1:%d" % ex_ports["executor_control"]
    st.wait_until(lambda: req_garbage(ctx, ep, [b"exec.request", exec_status_request()], 1.0,
                                      keys=st.keys_dir, server="executor"),
                  15, "tide-executor answers on its executor_control")
    rep_checks(st, ctx, ep, b"exec.request", b"exec.reply", "tide-executor executor_control",
               "executor")
    rep = req_garbage(ctx, ep, [b"exec.request", exec_status_request()], keys=st.keys_dir,
                      server="executor")
    assert rep and b"unknown job" in rep[1], "tide-executor JOB_STATUS after garbage: %r" % rep

    for p, who in ((st.scaler, "tide-scaler"), (st.fake, "tide-fake-executor"),
                   (executor, "tide-executor"), (st.metrics, "tide-metrics")):
        assert DROP_LINE in p.stderr(), "%s did not log '%s'\n%s" % (who, DROP_LINE, p.tail())

    # ---- the stack still scales, and every process is alive ------------------------------
    with Load("127.0.0.1", st.ports["proxy"], 50, threads=16) as load:  # ceil(50/20) = 3
        st.wait_until(lambda: st.instances() == 3 and len(st.pool()) == 3, 45,
                      "after the garbage the stack still scales to 3 under 50 req/s")
        st.wait_until(lambda: st.fake_children() == sorted(st.pool()), 10,
                      "fake children == pool")
    stats = load.stats()
    assert stats["failed"] == 0, stats
    st.assert_alive()
    assert watch.proc.alive(), "tidectl watch died on garbage\n%s" % watch.proc.tail()
    assert not watch.bad_lines, "tidectl watch printed non-JSON lines: %r" % watch.bad_lines[:5]
    assert watch.msgs("scaler.state"), "tidectl watch saw no scaler.state after the garbage"
    snap = metrics_snapshot(st)
    assert snap.get("dropped_frames", 0) > 0, snap
