"""test_redis_sentinel.py - issue 10, Redis Sentinel: with redis.sentinel set, tide finds the
primary through a real redis-sentinel and follows a failover to the replica. Under steady load
through the proxy the replica is promoted (SENTINEL FAILOVER); no request fails, the pool
written before is all there on the new primary, and the scaler goes on scaling (writes to the
new primary, which the proxy routes by)."""

import os
import shutil
import subprocess

import pytest
import redis

from harness import binary, free_port
from load import Load

MASTER = "tide"


def start_redis(st, name, port, *extra):
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", st.tmp,
            "--dbfilename", "%s.rdb" % name, "--save", "", "--appendonly", "no",
            "--daemonize", "no"] + list(extra)
    return st.start(name, argv)


def start_sentinel(st, port, primary_port):
    conf = os.path.join(st.tmp, "sentinel-%d.conf" % port)  # Sentinel rewrites it: its own
    with open(conf, "w") as f:
        f.write("port %d\nbind 127.0.0.1\ndir %s\n"
                "sentinel monitor %s 127.0.0.1 %d 1\n"
                "sentinel down-after-milliseconds %s 2000\n"
                "sentinel failover-timeout %s 10000\n" % (
                    port, st.tmp, MASTER, primary_port, MASTER, MASTER))
    return st.start("sentinel", ["redis-sentinel", conf])


def client(port):
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2,
                       socket_connect_timeout=2)


def served_by(st, n=20):
    out = set()
    for _ in range(n):
        status, headers, _ = st.proxy_get()
        out.add(headers.get("x-instance") if status == 200 else None)
    return out


@pytest.mark.skipif(shutil.which("redis-sentinel") is None,
                    reason="redis-sentinel is missing: run scripts/setup-deps")
def test_sentinel_failover(make_stack):
    st = make_stack("redis_sentinel", max_instances=6)
    primary_port, replica_port, sentinel_port = st.ports["redis"], free_port(), free_port()
    st.redis_proc = start_redis(st, "redis", primary_port)
    st.wait_until(st._redis_ping, 10, "the primary answers PING")
    start_redis(st, "redis-replica", replica_port, "--replicaof", "127.0.0.1", str(primary_port))
    replica = client(replica_port)
    st.wait_until(lambda: replica.info("replication").get("master_link_status") == "up", 15,
                  "the replica is in sync with the primary")
    start_sentinel(st, sentinel_port, primary_port)
    sentinel = client(sentinel_port)
    st.wait_until(lambda: len(sentinel.sentinel_slaves(MASTER)) == 1, 20,
                  "the sentinel has found the replica")

    # tide knows only the sentinel: host and port name a port nothing listens on.
    st.cfg["redis"].update({"host": "127.0.0.1", "port": free_port(),
                            "sentinel": "127.0.0.1:%d" % sentinel_port,
                            "sentinel_master": MASTER})
    st.write_config()
    st.start_stack()
    r = st.tidectl("scale", 2)
    assert r.returncode == 0, (r.stdout, r.stderr)
    st.wait_until(lambda: len(st.pool()) == 2 and st.instances() == 2, 30,
                  "the scaler writes 2 instances to the primary, found through the sentinel")
    before = (st.pool(), st.pool_version())
    # Replication is asynchronous: wait until the replica has what the scaler wrote.
    st.wait_until(lambda: replica.hgetall(st.key("pool")) == before[0], 10,
                  "the replica has the pool")

    with Load("127.0.0.1", st.ports["proxy"], 15, threads=4) as load:
        st.wait_until(lambda: load.stats()["ok"] >= 15, 10, "load flows through the proxy")
        assert sentinel.execute_command("SENTINEL", "FAILOVER", MASTER)
        st.wait_until(lambda: sentinel.sentinel_get_master_addr_by_name(MASTER) ==
                      ("127.0.0.1", replica_port), 30, "the sentinel names the replica primary")
        st.wait_until(lambda: replica.info("replication").get("role") == "master", 15,
                      "the replica is promoted")
        new = client(replica_port)
        # Nothing written was lost, and the scaler writes to the new primary.
        assert new.hgetall(st.key("pool")) == before[0]
        assert int(new.get(st.key("pool_version"))) == before[1]
        r = st.tidectl("scale", 3)
        assert r.returncode == 0, (r.stdout, r.stderr)
        st.wait_until(lambda: len(new.hgetall(st.key("pool"))) == 3 and
                      new.get(st.key("instances")) == "3", 30,
                      "the scaler writes 3 instances to the new primary",
                      detail=lambda: st.scaler.tail(20))
        assert int(new.get(st.key("pool_version"))) > before[1]
        st.wait_until(lambda: "production2" in served_by(st), 20,
                      "the proxy routes to the instance written to the new primary")
        mark = load.mark()
        st.wait_until(lambda: load.since(mark)["ok"] >= 15, 10, "load still flows")
        # The proxy follows too: the demoted primary drops its connection, and it asks the
        # sentinel again.
        st.wait_until(lambda: "redis primary named by sentinel\" addr=127.0.0.1:%d" %
                      replica_port in st.proxy.stderr(), 30,
                      "the proxy reconnects to the new primary")
        r = st.tidectl("scale", 2)
        assert r.returncode == 0, (r.stdout, r.stderr)
        st.wait_until(lambda: sorted(new.hgetall(st.key("pool"))) ==
                      ["production0", "production1"], 30,
                      "the scaler scales down on the new primary")
        st.wait_until(lambda: served_by(st) == {"production0", "production1"}, 20,
                      "the proxy routes by the pool of the new primary")
    stats = load.stats()
    assert stats["failed"] == 0 and stats["total"] > 0, stats
    assert "redis primary moved\" from=127.0.0.1:%d to=127.0.0.1:%d" % (
        primary_port, replica_port) in st.scaler.stderr(), st.scaler.tail(30)
    print("\nload through the failover: %r" % {k: stats[k] for k in (
        "total", "ok", "failed", "p50_ms", "p99_ms", "max_ms")})


@pytest.mark.parametrize("value", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:26379,",
                                   "a:1,,b:2", "127.0.0.1:26379;127.0.0.1:26380"])
def test_bad_sentinel_list(make_stack, value):
    """A sentinel list that is not host:port[,host:port...] stops a program with exit 2,
    naming the key and its line."""
    st = make_stack("redis_sentinel_bad")
    st.cfg["redis"]["sentinel"] = value
    st.write_config()
    r = subprocess.run([binary("tide-proxy"), "-c", st.config_path], cwd=st.tmp,
                       capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, (r.returncode, r.stderr[-1000:])
    assert "redis.sentinel: expected host:port[,host:port...]" in r.stderr, r.stderr
