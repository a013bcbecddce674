"""test_bad_config.py - issue 2, "What must be shown" 5: a config with an unknown key, a wrong
type, or a missing file makes each program exit 2 quickly, before binding anything, with a
message naming the key (and its line) or the file."""

import os
import subprocess
import time

import pytest

from harness import RawYaml, binary, port_is_free, write_yaml

# program -> (extra args, unknown key (section, key), wrong-type cases [(section, key, raw)])
PROGRAMS = {
    "tide-proxy": ([], ("proxy", "workerz"),
                   [("proxy", "workers", "two"), ("proxy", "stats_interval_ms", "250ms")]),
    "tide-metrics": ([], ("metrics", "stable_windw_s"),
                     [("metrics", "panic_window_s", "three"), ("metrics", "listen", "8081")]),
    "tide-scaler": ([], ("scaler", "targt_rps"),
                    [("scaler", "target_rps", "fast"), ("scaler", "min", '"1"')]),
    "tide-executor": ([], ("executor", "drivr"),
                      [("executor", "job_deadline_ms", "1.5"), ("executor", "driver", "k8s")]),
    "tide-fake-executor": (["--control", None], ("executor", "state_dirr"),
                           [("executor", "output_tail_lines", "many"),
                            ("endpoints", "executor_control", "7105")]),
    "tidectl": (["status", "--json"], ("endpoints", "scaler_contrl"),
                [("endpoints", "scaler_control", "7104"), ("redis", "port", "[6379]")]),
}

CASES = [(prog, kind) for prog in PROGRAMS for kind in ("unknown_key", "wrong_type",
                                                          "missing_file")]


def run(st, prog, config_path, tag):
    extra = []
    for a in PROGRAMS[prog][0]:
        extra.append(st.endpoint("fake_control") if a is None else a)
    if prog == "tidectl":
        argv = [binary(prog), "-c", config_path] + extra
    else:
        argv = [binary(prog), "-c", config_path, "--id", "bad-config"] + extra
    t0 = time.monotonic()
    p = st.start("%s-%s" % (prog, tag), argv, long_running=False)
    try:
        p.popen.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError("%s -c %s did not exit within 10 s\n%s" % (
            prog, config_path, p.tail(20)))
    p.stopped_by_harness = True
    return p, time.monotonic() - t0


def line_of(path, text):
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if text in line:
                return i
    raise AssertionError("%r not in %s" % (text, path))


def assert_nothing_listening(st):
    busy = [(k, p) for k, p in st.ports.items() if k != "redis" and not port_is_free(p)]
    assert not busy, "ports still bound after a bad-config exit: %r" % busy
    assert not st.instance_listeners(), st.instance_listeners()


@pytest.mark.parametrize("prog,kind", CASES, ids=["%s-%s" % c for c in CASES])
def test_bad_config(make_stack, prog, kind):
    st = make_stack("badcfg-%s-%s" % (prog, kind))
    _, unknown, wrong = PROGRAMS[prog]
    checks = []  # (config path, [texts stderr must contain])
    if kind == "unknown_key":
        cfg = dict(st.cfg)
        cfg[unknown[0]] = dict(cfg.get(unknown[0], {}), **{unknown[1]: 1})
        path = os.path.join(st.tmp, "unknown.yml")
        write_yaml(path, cfg)
        key = "%s.%s" % unknown
        checks.append((path, [key, "unknown key",
                              "%s:%d:" % (path, line_of(path, "  %s:" % unknown[1]))]))
    elif kind == "wrong_type":
        for i, (section, k, raw) in enumerate(wrong):
            cfg = {s: (dict(v) if isinstance(v, dict) else v) for s, v in st.cfg.items()}
            cfg.setdefault(section, {})[k] = RawYaml(raw)
            path = os.path.join(st.tmp, "wrong%d.yml" % i)
            write_yaml(path, cfg)
            checks.append((path, ["%s.%s" % (section, k),
                                  "%s:%d:" % (path, line_of(path, "  %s: %s" % (k, raw)))]))
    else:
        path = os.path.join(st.tmp, "no-such-dir", "tide.yml")
        checks.append((path, [path, "cannot open config file"]))

    for i, (path, wants) in enumerate(checks):
        p, took = run(st, prog, path, "%s%d" % (kind, i))
        err = p.stderr()
        assert p.returncode == 2, "%s -c %s exited %s, expected 2; stderr: %r" % (
            prog, path, p.returncode, err[-800:])
        assert took < 5, "%s took %.1fs to refuse a bad config" % (prog, took)
        for w in wants:
            assert w in err, "%s: stderr should contain %r; stderr: %r" % (prog, w, err[-800:])
        assert "AddressSanitizer" not in err and "runtime error" not in err, err[-2000:]
        assert_nothing_listening(st)
