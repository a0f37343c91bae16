# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What others control cannot crash the watchdog or fool `onekvm status`.

The state file lives in /run and outlives the service; ustreamer's socket belongs to
whoever owns /run/kvmd. Each case runs the real code: the service's start, a real unix
socket answering /state, and the box command in a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils import _watchdog
from ansible_collections.onekvm.fleet.tests.support.boxpkg import cli_argv, package_root, run_cli
from ansible_collections.onekvm.fleet.tests.support.unixhttp import UnixHttpServer

HOSTILE_STATES = {
    "array": "[]",
    "string": '"x"',
    "null": "null",
    "number": "5",
    "fields": json.dumps({"counters": [], "recent_actions": "x", "backoff": "soon", "last_failure": "x",
                          "last_action": 5, "status": ["ok"], "pid": "one"}),
    "numbers": '{"counters": {"checks": NaN, "failures": -3, "actions": {"ioctl": {"ok": 1e999}}},'
               ' "recent_actions": [NaN, -1, 1e999], "backoff": NaN}',
    "domains": json.dumps({"domains": {"capture": [], "hid": "x", "other": {"counters": 5}}}),
    "domains_list": json.dumps({"domains": [1, 2]}),
    "deep": "[" * 200000 + "]" * 200000,
    "not_utf8": b"\xff\xfe{}",
}


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


def service_for(tmp_path, state_file, probes=None, **raw):
    config = _watchdog.parse_config(dict({
        "interval": 1, "grace": 0, "video_node": "", "ustreamer": {"socket": str(tmp_path / "ustreamer.sock")},
        "ladder": ["restart_streamer"], "streamer_patterns": ["kvmd/streamer: none-%d" % os.getpid()],
        "state_file": str(state_file), "metrics_file": str(tmp_path / "wd.prom")}, **raw))
    out = io.StringIO()
    service = _watchdog.Service(config, probes=probes, reporter=_watchdog.Reporter(config, out=out),
                                notify=lambda message: True)
    return service, out


def journal(out):
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("name", sorted(HOSTILE_STATES))
def test_service_starts_on_a_hostile_state_file(tmp_path, name):
    state_file = tmp_path / "run" / "wd.json"
    write(state_file, HOSTILE_STATES[name])
    service, out = service_for(tmp_path, state_file, probes={"capture": lambda cfg: (True, "fine")})
    service.start()
    service.check_once()
    lines = journal(out)
    assert lines[-1]["event"] != "crashed"
    state = json.loads(state_file.read_text())  # replaced by a sane one
    assert state["status"] == "ok" and state["pid"] == os.getpid()
    counts = {k: v for k, v in state["counters"].items() if k not in ("actions", "last_recovery_seconds")}
    assert all(isinstance(v, int) and v >= 0 for v in counts.values())
    if name in ("array", "string", "null", "number", "deep", "not_utf8"):
        ignored = [e for e in lines if e["event"] == "state_ignored"]
        assert len(ignored) == 1 and ignored[0]["level"] == "warning" and str(state_file) in ignored[0]["error"]


def test_service_starts_when_the_state_file_is_dev_zero(tmp_path):
    state_file = tmp_path / "run" / "wd.json"
    state_file.parent.mkdir()
    os.symlink("/dev/zero", str(state_file))
    service, out = service_for(tmp_path, state_file, probes={"capture": lambda cfg: (True, "fine")})
    began = time.monotonic()
    service.start()
    assert time.monotonic() - began < 10  # the old code read /dev/zero until memory ran out
    assert [e["event"] for e in journal(out)][:2] == ["state_ignored", "started"]
    assert "not a regular file" in journal(out)[0]["error"]


def deep_ustreamer(path, depth=200000):
    """A unix socket that answers GET /state with JSON nested ``depth`` levels deep."""
    body = ('{"ok": true, "result": ' + "[" * depth + "]" * depth + "}").encode()
    answer = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    return UnixHttpServer(path, lambda head: answer)


def test_ustreamer_state_nested_200000_deep_is_a_clear_failure(tmp_path):
    server = deep_ustreamer(tmp_path / "ustreamer.sock")
    try:
        service, out = service_for(tmp_path, tmp_path / "run" / "wd.json")
        assert list(service.probes) == ["ustreamer"]
        service.start()
        events = service.check_once()
        service.check_once()  # still running
    finally:
        server.close()
    assert events[0]["event"] == "failure_detected"
    assert events[0]["reasons"] == ["ustreamer: ustreamer on %s sent /state nested too deeply to be ustreamer's answer"
                                    % (tmp_path / "ustreamer.sock")]


def test_a_probe_raising_the_unforeseen_does_not_end_the_service(tmp_path):
    def broken(cfg):
        raise TypeError("'NoneType' object is not subscriptable")

    service, out = service_for(tmp_path, tmp_path / "run" / "wd.json", probes={"capture": broken})
    service.start()
    service.check_once()
    state = json.loads((tmp_path / "run" / "wd.json").read_text())
    detail = "probe failed unexpectedly: TypeError: 'NoneType' object is not subscriptable"
    assert state["probes"]["capture"] == {"ok": None, "detail": detail}


# ---- onekvm status -----------------------------------------------------------------------

STATUS_CASES = {
    "array": ("[]", "holds a JSON array"),
    "string": ('"x"', "holds a JSON string"),
    "null": ("null", "holds a JSON null"),
    "deep": ("[" * 200000 + "]" * 200000, "nested too deeply"),
    "not_json": ("{", "is not valid JSON"),
    "not_utf8": (b"\xff{}", "is not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(STATUS_CASES))
def test_status_on_a_file_that_is_no_state_is_a_clear_error(tmp_path, name):
    content, says = STATUS_CASES[name]
    write(tmp_path / "wd.json", content)
    res = run_cli("status", "--state-file", str(tmp_path / "wd.json"))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and says in res.stderr
    assert "Traceback" not in res.stderr and str(tmp_path / "wd.json") in res.stderr


def test_status_reads_dev_zero_and_a_fifo_without_hanging(tmp_path):
    os.symlink("/dev/zero", str(tmp_path / "zero.json"))
    os.mkfifo(str(tmp_path / "fifo.json"))
    for name in ("zero.json", "fifo.json"):
        res = run_cli("status", "--state-file", str(tmp_path / name), timeout=10)
        assert res.returncode == 2 and "is not a regular file" in res.stderr, res.stderr
    write(tmp_path / "big.json", b" " * (2 * 1024 * 1024) + b"{}")
    res = run_cli("status", "--state-file", str(tmp_path / "big.json"))
    assert res.returncode == 2 and "larger than" in res.stderr


def test_status_survives_fields_of_the_wrong_type(tmp_path):
    write(tmp_path / "wd.json", json.dumps({"status": ["failing"], "last_failure": "x", "last_action": 5, "pid": "one"}))
    res = run_cli("--json", "status", "--state-file", str(tmp_path / "wd.json"))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["running"] is False and out["message"].startswith("watchdog: not running")
    wrong = {"status": "failing", "last_failure": {"reasons": [1, {"a": 2}]}, "last_action": {"step": None, "result": []},
             "pid": os.getpid()}
    write(tmp_path / "wd.json", json.dumps(wrong))
    res = run_cli("status", "--state-file", str(tmp_path / "wd.json"))
    assert res.returncode == 0 and "failing (1; {\"a\": 2}); last action null: []" in res.stdout, res.stderr


# stable ids: under pytest-xdist every worker must collect the same test names
@pytest.mark.parametrize("pid", [1, os.getpid()], ids=["init", "this-process"])
def test_a_pid_that_is_not_the_watchdog_is_not_running(tmp_path, pid):
    """init (pid 1) and a process that is no watchdog are alive, but not our service."""
    write(tmp_path / "wd.json", json.dumps({"pid": pid, "status": "ok"}))
    out = json.loads(run_cli("--json", "status", "--state-file", str(tmp_path / "wd.json")).stdout)
    assert out["running"] is False


def test_running_means_the_watchdog_process_that_wrote_the_file(tmp_path):
    """The real service in a subprocess: while it runs its file says running; a forged
    start time for the same pid, or the same file after it stopped, does not."""
    config = tmp_path / "watchdog.json"
    config.write_text(json.dumps({
        "interval": 1, "grace": 0, "video_node": str(tmp_path), "ustreamer": {"enabled": False}, "ladder": ["restart_streamer"],
        "state_file": str(tmp_path / "wd.json"), "metrics_file": ""}))
    env = dict(os.environ, PYTHONPATH=package_root())
    proc = subprocess.Popen(cli_argv("watchdog", "--config", str(config)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "wd.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        out = json.loads(run_cli("--json", "status", "--state-file", str(tmp_path / "wd.json")).stdout)
        assert out["running"] is True and out["pid"] == proc.pid and out["message"] == "watchdog: ok"
        state = json.loads((tmp_path / "wd.json").read_text())
        write(tmp_path / "forged.json", json.dumps(dict(state, pid_start=state["pid_start"] + 1)))
        out = json.loads(run_cli("--json", "status", "--state-file", str(tmp_path / "forged.json")).stdout)
        assert out["running"] is False
    finally:
        proc.terminate()
        proc.wait(10)
    out = json.loads(run_cli("--json", "status", "--state-file", str(tmp_path / "wd.json")).stdout)
    assert out["running"] is False


def test_status_survives_domains_of_the_wrong_type(tmp_path):
    for domains in ({"capture": [], "hid": "x"}, [1, 2], {"capture": {"status": 5, "last_failure": []}, "hid": {}}):
        write(tmp_path / "wd.json", json.dumps({"status": "ok", "domains": domains, "pid": 0}))
        res = run_cli("--json", "status", "--state-file", str(tmp_path / "wd.json"))
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["message"].startswith("watchdog: not running")
