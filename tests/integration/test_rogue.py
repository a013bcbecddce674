"""test_rogue.py - a process without tide's keys gets nothing from the bus and changes nothing.

On every endpoint a rogue client, plain and with a CURVE key pair tide never made (the servers'
right public key, so only the allow list stops it), tries what issue 10 did as a hostile user:
forged stats on the stats endpoint, `bounds 0 0` and pause on scaler.control, a SCALE_DOWN of a
live instance and LIST jobs on executor.control, and subscribing to every publisher. The
scaler's state and bounds, Redis' count and pool, tide-metrics' proxies and dropped frames and
the executor's jobs and instances stay as they were; each server logs the refused handshakes.
A component's key that may not control (the proxy's) is answered with a refusal. The same
forged frames sent with a key holder's key do show up: the rogue ones were refused, not lost.

What each try got is written as a table to $TIDE_ROGUE_TABLE when set (ctest sets it to a
file under the build directory, which `make test` prints)."""

import os
import re

import zmq
import zmq.auth

from harness import bus_secure, metrics_snapshot, pb_field, pb_header

KINDS = ("plain", "wrong-key")


def rogue(ctx, st, kind, sock_type, server_role):
    s = ctx.socket(sock_type)
    s.setsockopt(zmq.LINGER, 0)
    if kind == "wrong-key":
        s.curve_publickey, s.curve_secretkey = zmq.curve_keypair()
        s.curve_serverkey = zmq.auth.load_certificate(
            os.path.join(st.keys_dir, "public", server_role + ".key"))[0]
    return s


def forged_stats():
    # ProxyStats{header from a proxy nobody runs, started_ms}; and garbage under the topic.
    return [[b"stats", pb_field(1, pb_header("proxy/rogue")) + pb_field(2, 1)],
            [b"stats", b"\xff" * 16]]


def bounds_request(lo, hi):
    # ControlRequest{header, command=CMD_BOUNDS, min, max}
    return [b"scaler.control", pb_field(1, pb_header()) + pb_field(2, 4) + pb_field(4, lo) +
            pb_field(5, hi)]


def pause_request():
    return [b"scaler.control", pb_field(1, pb_header()) + pb_field(2, 1)]


def exec_request(kind, job_id, instance=None):
    body = pb_field(1, pb_header()) + pb_field(2, kind) + pb_field(3, job_id)
    if instance:
        name, port = instance
        body += pb_field(4, pb_field(1, name) + pb_field(2, "127.0.0.1") + pb_field(3, port))
    return [b"exec.request", body]


def picture(st):
    """What a rogue must not change."""
    status = st.status()
    snap = metrics_snapshot(st)
    fake = st.fake_stats()
    return {
        "state": status.get("state"), "min": status.get("min"), "max": status.get("max"),
        "paused": status.get("paused"), "instances": st.redis.get(st.key("instances")),
        "pool": st.pool(), "pool_version": st.pool_version(),
        "proxies": snap.get("proxies"), "dropped_frames": snap.get("dropped_frames", 0),
        "executor_jobs": {k: v for k, v in fake.items() if k.startswith("jobs_") or
                          k == "lists_started"},
        "children": sorted(st.fake_children()),
    }


ROWS = []  # (client, endpoint, what it tried, what it got)


def write_table():
    path = os.environ.get("TIDE_ROGUE_TABLE")
    if not path:
        return
    head = ("client", "endpoint", "tried", "got")
    widths = [max(len(r[i]) for r in [head] + ROWS) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa
    with open(path, "w") as f:
        f.write("\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] +
                          [line(r) for r in ROWS]) + "\n")


def ask(sock, frames, timeout_ms):
    sock.send_multipart(frames)
    return sock.recv_multipart() if sock.poll(timeout_ms) else None


def test_rogue_clients_change_nothing(make_stack):
    st = make_stack("rogue")
    assert st.keys_dir, "the integration stack runs with bus.curve on"
    st.start_stack()
    name = sorted(st.pool())[0]
    before = picture(st)
    ctx = zmq.Context()
    socks = []
    try:
        for kind in KINDS:
            # Subscribers on every publisher.
            subs = []
            for ep, server in (("metrics", "metrics"), ("scaler_events", "scaler"),
                               ("executor_events", "executor")):
                s = rogue(ctx, st, kind, zmq.SUB, server)
                s.setsockopt(zmq.SUBSCRIBE, b"")
                s.connect(st.endpoint(ep))
                subs.append((ep, s))
            socks += [s for _, s in subs]
            # Forged stats.
            pub = rogue(ctx, st, kind, zmq.PUB, "metrics")
            pub.connect(st.endpoint("stats"))
            socks.append(pub)
            # Requests: each on its own REQ (a REQ holds one request at a time).
            reqs = [("scaler_control", "scaler", "bounds 0 0", bounds_request(0, 0)),
                    ("scaler_control", "scaler", "pause", pause_request()),
                    ("executor_control", "executor", "SCALE_DOWN %s" % name,
                     exec_request(2, "rogue-down-%s" % kind, (name, st.instance_port(name)))),
                    ("executor_control", "executor", "LIST",
                     exec_request(4, "rogue-list-%s" % kind))]
            for ep, server, what, frames in reqs:
                s = rogue(ctx, st, kind, zmq.REQ, server)
                s.connect(st.endpoint(ep))
                socks.append(s)
                assert ask(s, frames, 1500) is None, \
                    "%s rogue got an answer on %s" % (kind, ep)
                ROWS.append((kind, ep, what, "no answer in 1.5 s"))

            def nothing_reached():
                for msg in forged_stats():
                    pub.send_multipart(msg)
                for ep, s in subs:
                    if s.poll(0):
                        return "%s rogue received %r on %s" % (kind, s.recv_multipart(), ep)
                return picture(st) == before or "changed: %r" % picture(st)
            # Long enough for several snapshots (500 ms) and proxy stats (250 ms) to go by.
            st.hold(nothing_reached, 3, "nothing from the %s rogue reaches tide" % kind)
            ROWS.append((kind, "stats", "forged ProxyStats and garbage, 3 s",
                         "not counted: metrics' proxies and dropped frames unchanged"))
            for ep, _ in subs:
                ROWS.append((kind, ep, "subscribe to everything, 3 s", "nothing received"))
            ROWS.append((kind, "-", "all of the above",
                         "state, bounds, pause, Redis count/pool/version, jobs: unchanged"))

        # Each server saw and logged the refused handshakes.
        for proc, who in ((st.metrics, "tide-metrics"), (st.scaler, "tide-scaler"),
                          (st.fake, "tide-fake-executor")):
            err = proc.stderr()
            assert "refused a bus peer" in err, "%s logged no refused handshake\n%s" % (
                who, proc.tail())

        # The proxy's key gets through the handshake but may not control.
        for ep, server, frames, allowed in (
                ("scaler_control", "scaler", bounds_request(0, 0), "tidectl"),
                ("executor_control", "executor", exec_request(4, "proxy-list"), "scaler")):
            s = bus_secure(ctx.socket(zmq.REQ), st.keys_dir, "proxy", server)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(st.endpoint(ep))
            socks.append(s)
            rep = ask(s, frames, 5000)
            assert rep is not None, "no answer to the proxy's key on %s" % ep
            assert b"not allowed to control" in rep[1], \
                "%s: the proxy's key must be refused: %r" % (ep, rep)
            ROWS.append(("proxy's key", ep, "bounds 0 0" if server == "scaler" else "LIST",
                         "refused: " + re.search(rb"not allowed to control[ -~]*",
                                                 rep[1]).group(0).decode()))
        assert picture(st) == before, "a refused control request changed something"

        # Control: the same forged stats with the proxy's key are seen (a new proxy or a
        # dropped frame), so the rogue's were refused, not missed.
        pub = bus_secure(ctx.socket(zmq.PUB), st.keys_dir, "proxy", "metrics")
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(st.endpoint("stats"))
        socks.append(pub)

        def seen():
            for msg in forged_stats():
                pub.send_multipart(msg)
            snap = metrics_snapshot(st)
            return snap.get("dropped_frames", 0) > before["dropped_frames"]
        st.wait_until(seen, 15, "tide-metrics counts the key holder's garbage stats")
        ROWS.append(("proxy's key", "stats", "the same garbage stats", "counted as dropped"))
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
        write_table()
