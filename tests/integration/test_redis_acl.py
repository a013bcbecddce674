"""test_redis_acl.py - issue 10, "Redis with least privilege": a real redis-server with the ACL
`make run` gives it (scripts/redis-acl). The proxy's (reader) credentials and an
unauthenticated client cannot change the pool, though both can read it; the scaler, with its
own credentials, scales up and writes the pool, also after Redis dropped its connections; the
proxy routes to what it wrote. Wrong or missing credentials are a clear error."""

import os
import stat
import subprocess

import pytest
import redis

from harness import REPO, binary

USERS = ("tide-scaler", "tide-reader", "tide-admin")


def make_acl(st):
    """Runs scripts/redis-acl into the stack's temp dir. Returns (secrets dir, aclfile)."""
    secrets = os.path.join(st.tmp, "secrets")
    aclfile = os.path.join(secrets, "redis.acl")
    r = subprocess.run([os.path.join(REPO, "scripts", "redis-acl"), secrets, aclfile],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, "scripts/redis-acl failed: %r %r" % (r.stdout, r.stderr)
    return secrets, aclfile


def password(secrets, user):
    with open(os.path.join(secrets, "redis-" + user)) as f:
        return f.read().strip()


def acl_config(secrets):
    return {"scaler_user": "tide-scaler",
            "scaler_password_file": os.path.join(secrets, "redis-tide-scaler"),
            "reader_user": "tide-reader",
            "reader_password_file": os.path.join(secrets, "redis-tide-reader")}


def start_acl_redis(st, aclfile):
    argv = ["redis-server", "--port", str(st.ports["redis"]), "--bind", "127.0.0.1",
            "--dir", st.tmp, "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--aclfile", aclfile]
    st.redis_proc = st.start("redis", argv)
    st.wait_until(st._redis_ping, 10, "redis-server (with the ACL) answers PING")


def client(st, user=None, pw=None):
    return redis.Redis(host="127.0.0.1", port=st.ports["redis"], username=user, password=pw,
                       decode_responses=True, socket_timeout=2, socket_connect_timeout=2)


def tide_users(admin):
    """The users of every connection to Redis but the test's own admin ones."""
    return sorted(c["user"] for c in admin.client_list() if c["user"] not in ("tide-admin",
                                                                             "default"))


def served_by(st, n=12):
    """The X-Instance of n requests through the proxy (None for a non-200)."""
    out = set()
    for _ in range(n):
        status, headers, _ = st.proxy_get()
        out.add(headers.get("x-instance") if status == 200 else None)
    return out


def assert_nopermission(fn, what):
    with pytest.raises(redis.exceptions.NoPermissionError):
        fn()
        raise AssertionError("%s was accepted" % what)


def test_acl_least_privilege(make_stack):
    st = make_stack("redis_acl", max_instances=6)
    secrets, aclfile = make_acl(st)

    # The files: a private directory, 0600 files, and no password in clear in the ACL file.
    assert stat.S_IMODE(os.stat(secrets).st_mode) == 0o700
    for name in ["redis-" + u for u in USERS] + ["redis.acl"]:
        mode = stat.S_IMODE(os.stat(os.path.join(secrets, name)).st_mode)
        assert mode == 0o600, "%s has mode %o, expected 600" % (name, mode)
    with open(aclfile) as f:
        acl_text = f.read()
    for u in USERS:
        assert password(secrets, u) not in acl_text, "%s's password in clear in %s" % (u, aclfile)
    # A second run keeps the passwords (they are made on the first run only).
    before = {u: password(secrets, u) for u in USERS}
    make_acl(st)
    assert {u: password(secrets, u) for u in USERS} == before

    start_acl_redis(st, aclfile)
    st.cfg["redis"].update(acl_config(secrets))
    st.write_config()
    st.start_stack()  # waits for the pool through st.redis: an unauthenticated client reads

    admin = client(st, "tide-admin", password(secrets, "tide-admin"))
    reader = client(st, "tide-reader", password(secrets, "tide-reader"))
    anon = client(st)
    # The scaler and the proxy are connected, each as its own role's user.
    st.wait_until(lambda: {"tide-scaler", "tide-reader"} <= set(tide_users(admin)), 10,
                  "Redis sees a tide-scaler and a tide-reader connection",
                  detail=lambda: admin.client_list())
    assert set(tide_users(admin)) == {"tide-scaler", "tide-reader"}, admin.client_list()

    pool0, version0, count0 = st.pool(), st.pool_version(), st.instances()
    assert count0 == 1 and len(pool0) == 1, (count0, pool0)

    # The proxy's credentials read the pool but cannot change it.
    assert reader.hgetall(st.key("pool")) == pool0
    assert reader.get(st.key("instances")) == "1"
    assert_nopermission(lambda: reader.hset(st.key("pool"), "production9", "127.0.0.1:1"),
                        "HSET pool as tide-reader")
    assert_nopermission(lambda: reader.delete(st.key("pool")), "DEL pool as tide-reader")
    assert_nopermission(lambda: reader.incr(st.key("pool_version")),
                        "INCR pool_version as tide-reader")
    assert_nopermission(lambda: reader.flushall(), "FLUSHALL as tide-reader")
    # Nor can a client that does not authenticate; it can GET.
    assert anon.get(st.key("instances")) == "1"
    assert anon.hgetall(st.key("pool")) == pool0
    assert_nopermission(lambda: anon.hset(st.key("pool"), "production9", "127.0.0.1:1"),
                        "HSET pool unauthenticated")
    assert_nopermission(lambda: anon.set(st.key("instances"), "9"), "SET instances unauthenticated")
    assert_nopermission(lambda: anon.set("elsewhere", "1"), "SET outside tide:* unauthenticated")
    # A writing transaction is refused whole.
    pipe = anon.pipeline(transaction=True)
    pipe.hset(st.key("pool"), "production9", "127.0.0.1:1")
    pipe.incr(st.key("pool_version"))
    with pytest.raises(redis.exceptions.RedisError):
        pipe.execute()
    assert (st.pool(), st.pool_version(), st.instances()) == (pool0, version0, count0), \
        "the pool changed under refused writes"
    assert served_by(st) == {"production0"}

    # The scaler, with its credentials, scales up and writes the pool; the proxy routes to it.
    r = st.tidectl("scale", 3)
    assert r.returncode == 0, (r.stdout, r.stderr)
    st.wait_until(lambda: st.instances() == 3 and len(st.pool()) == 3, 30,
                  "the scaler writes 3 instances to Redis")
    assert st.pool_version() > version0
    st.wait_until(lambda: served_by(st, 30) == {"production0", "production1", "production2"},
                  15, "the proxy routes to the 3 instances of the pool")

    # Every reconnect authenticates again: Redis drops both tide connections, and the scaler
    # still writes (scale down to 2) and the proxy follows.
    admin.execute_command("CLIENT", "KILL", "USER", "tide-scaler")
    admin.execute_command("CLIENT", "KILL", "USER", "tide-reader")
    r = st.tidectl("scale", 2)
    assert r.returncode == 0, (r.stdout, r.stderr)
    st.wait_until(lambda: st.instances() == 2 and sorted(st.pool()) == ["production0",
                                                                         "production1"], 30,
                  "after its connection was killed the scaler writes 2 instances")
    st.wait_until(lambda: served_by(st, 20) == {"production0", "production1"}, 20,
                  "the proxy routes to the 2 instances left")
    st.wait_until(lambda: {"tide-scaler", "tide-reader"} <= set(tide_users(admin)), 10,
                  "both reconnected as their own users", detail=lambda: admin.client_list())
    assert set(tide_users(admin)) == {"tide-scaler", "tide-reader"}, admin.client_list()
    for p in (st.scaler, st.proxy):
        assert "refused tide's credentials" not in p.stderr(), p.tail(20)


def test_wrong_password_is_logged(make_stack):
    """A proxy whose password Redis refuses says so (user and Redis's error) and keeps
    retrying; it writes nothing and the stack's pool stays as the scaler wrote it."""
    st = make_stack("redis_acl_wrong", max_instances=3)
    secrets, aclfile = make_acl(st)
    start_acl_redis(st, aclfile)
    wrong = os.path.join(st.tmp, "wrong-password")
    with open(wrong, "w") as f:
        f.write("not-the-password\n")
    os.chmod(wrong, 0o600)
    cfg = acl_config(secrets)
    cfg["reader_password_file"] = wrong
    st.cfg["redis"].update(cfg)
    st.write_config()
    st.start_stack(wait_ready=False)
    st.wait_until(lambda: st.instances() == 1, 30, "the scaler (right password) writes the pool")
    st.wait_until(lambda: "redis refused tide's credentials" in st.proxy.stderr(), 15,
                  "the proxy logs that Redis refused its credentials")
    line = [ln for ln in st.proxy.stderr().splitlines() if "refused tide's credentials" in ln][0]
    assert "user=tide-reader" in line and "WRONGPASS" in line, line
    assert st.proxy.alive()
    status, _, _ = st.proxy_get()
    assert status == 503, "a proxy that could not read the pool answered %s" % status


@pytest.mark.parametrize("role", ["scaler", "reader"])
@pytest.mark.parametrize("case", ["missing", "empty", "directory", "two_lines"])
def test_bad_password_file(make_stack, role, case):
    """The program of the role exits 2 at once, naming the key and the file."""
    st = make_stack("redis_acl_bad_%s_%s" % (role, case))
    path = os.path.join(st.tmp, "pw-" + case)
    if case == "empty":
        open(path, "w").close()
    elif case == "directory":
        os.mkdir(path)
    elif case == "two_lines":
        with open(path, "w") as f:
            f.write("one\ntwo\n")
    st.cfg["redis"].update({role + "_user": "tide-" + role, role + "_password_file": path})
    st.write_config()
    program = "tide-scaler" if role == "scaler" else "tide-proxy"
    r = subprocess.run([binary(program), "-c", st.config_path, "--id", "bad-pw"], cwd=st.tmp,
                       capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, (r.returncode, r.stderr[-1000:])
    assert "redis.%s_password_file" % role in r.stderr and path in r.stderr, r.stderr
    want = {"missing": "No such file", "empty": "empty", "directory": "not a regular file",
            "two_lines": "more than one line"}[case]
    assert want in r.stderr, r.stderr


def test_user_without_password_file(make_stack):
    st = make_stack("redis_acl_nofile")
    st.cfg["redis"]["scaler_user"] = "tide-scaler"
    st.write_config()
    r = subprocess.run([binary("tide-scaler"), "-c", st.config_path], cwd=st.tmp,
                       capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, (r.returncode, r.stderr[-1000:])
    assert "redis.scaler_user is set but redis.scaler_password_file is not" in r.stderr, r.stderr
