# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watchdog's service loop, probes, reports, systemd notification and box commands.

USB hardware is the one edge mocked here (probe results and ladder steps are injected);
the real resets are exercised on the simulated box in tests/vm/test_watchdog.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils import _watchdog
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import DeviceError, NotFound, PermissionDenied, Timeout
from ansible_collections.onekvm.fleet.plugins.module_utils._ustreamer import StreamerNotRunning
from ansible_collections.onekvm.fleet.tests.support.boxpkg import run_cli


class Clock:
    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class RecordingActions:
    """Stands in for the USB/serial hardware: records the steps, heals on a chosen one."""

    def __init__(self, world: dict, heal_on: str | None = None, errors: dict | None = None) -> None:
        self.world = world
        self.heal_on = heal_on
        self.errors = errors or {}
        self.ran = []

    def run(self, step):
        self.ran.append(step)
        if step in self.errors:
            raise self.errors[step]
        if step == self.heal_on:
            self.world["capture"] = True
        return {"step": step}


def config_for(tmp_path, **overrides):
    raw = {"interval": 1, "grace": 2, "dongle": {"port": "1-1.2"}, "ladder": ["restart_streamer", "ioctl", "authorize"],
           "waits": {"restart_streamer": 3, "ioctl": 3, "authorize": 3}, "state_file": str(tmp_path / "run" / "wd.json"),
           "metrics_file": str(tmp_path / "prom" / "onekvm_watchdog.prom"), "backoff": 0}
    raw.update(overrides)
    return _watchdog.parse_config(raw)


def make_service(tmp_path, world, actions, **overrides):
    config = config_for(tmp_path, **overrides)
    probes = {"capture": lambda cfg: (True, "fine") if world["capture"] else (False, "offline")}
    out = io.StringIO()
    notes = []
    clock = Clock()
    service = _watchdog.Service(config, probes=probes, actions=actions, reporter=_watchdog.Reporter(config, out=out),
                                clock=clock, wall=lambda: clock.now + 1.7e9, notify=notes.append)
    return service, clock, out, notes


def journal(out):
    return [json.loads(line) for line in out.getvalue().splitlines()]


def run_for(service, clock, seconds):
    for dummy in range(int(seconds / service.config.interval)):
        service.check_once()
        clock.now += service.config.interval


def test_loop_heals_with_the_second_step_and_reports_it(tmp_path):
    world = {"capture": True}
    actions = RecordingActions(world, heal_on="ioctl")
    service, clock, out, notes = make_service(tmp_path, world, actions)
    service.start()
    run_for(service, clock, 3)
    world["capture"] = False
    run_for(service, clock, 15)
    assert actions.ran == ["restart_streamer", "ioctl"]
    events = [e["event"] for e in journal(out)]
    assert events == ["started", "failure_detected", "action_started", "action_done", "action_started",
                      "action_done", "recovered"]
    assert notes[0].startswith("READY=1") and notes[-1] == "WATCHDOG=1\nSTATUS=capture ok"
    state = json.loads(open(service.config.state_file).read())
    assert state["status"] == "ok" and state["verdict"] == "ok"
    assert state["last_action"]["step"] == "ioctl" and state["last_failure"]["outcome"] == "recovered"
    assert state["counters"]["recoveries"] == 1
    metrics = open(service.config.metrics_file).read()
    assert 'onekvm_watchdog_resets_total{domain="capture",method="ioctl"} 1\n' in metrics
    assert 'onekvm_watchdog_resets_total{domain="capture",method="authorize"} 0\n' in metrics
    assert 'onekvm_watchdog_up{domain="capture"} 1\n' in metrics
    assert 'onekvm_watchdog_last_recovery_seconds{domain="capture"} 6.0\n' in metrics  # grace 2 + restart wait 3 + next check 1


def test_nothing_heals_needs_human_and_metrics_say_down(tmp_path):
    world = {"capture": False}
    actions = RecordingActions(world, errors={"authorize": DeviceError("EPROTO")})
    service, clock, out, notes = make_service(tmp_path, world, actions)
    service.start()
    run_for(service, clock, 40)
    assert actions.ran == ["restart_streamer", "ioctl", "authorize"]
    lines = journal(out)
    human = [e for e in lines if e["event"] == "needs_human"]
    assert len(human) == 1 and human[0]["level"] == "warning"
    assert [e["result"] for e in lines if e["event"].startswith("action_") and "result" in e] == ["ok", "ok", "failed"]
    metrics = open(service.config.metrics_file).read()
    assert 'onekvm_watchdog_up{domain="capture"} 0\n' in metrics and 'onekvm_watchdog_needs_human{domain="capture"} 1\n' in metrics
    assert 'onekvm_watchdog_actions_total{domain="capture",step="authorize",result="failed"} 1\n' in metrics
    assert notes[-1].startswith("WATCHDOG=1\nSTATUS=needs human: capture: offline")


def test_skipped_steps_do_not_wait(tmp_path):
    world = {"capture": False}
    actions = RecordingActions(world, errors={"restart_streamer": NotFound("no streamer process")}, heal_on="ioctl")
    service, clock, out, notes = make_service(tmp_path, world, actions)
    service.start()
    run_for(service, clock, 5)
    assert actions.ran == ["restart_streamer", "ioctl"]
    assert journal(out)[-1]["event"] == "recovered"


def test_restart_keeps_the_rate_limit(tmp_path):
    world = {"capture": False}
    actions = RecordingActions(world)
    service, clock, out, notes = make_service(tmp_path, world, actions, max_actions_per_hour=2, grace=0)
    service.start()
    run_for(service, clock, 10)
    assert len(actions.ran) == 2
    again, clock2, out2, notes2 = make_service(tmp_path, world, RecordingActions(world), max_actions_per_hour=2, grace=0)
    clock2.now = clock.now + 5  # the same wall clock, five seconds after the crash
    again.start()
    run_for(again, clock2, 10)
    assert again.actions.ran == []
    assert "rate_limited" in [e["event"] for e in journal(out2)]
    assert json.loads(open(again.config.state_file).read())["counters"]["actions"]["restart_streamer"]["ok"] == 1


def test_unwritable_report_is_said_once_and_the_loop_goes_on(tmp_path):
    blocker = tmp_path / "prom"
    blocker.write_text("a file where the directory should be")
    world = {"capture": True}
    service, clock, out, notes = make_service(tmp_path, world, RecordingActions(world))
    service.start()
    run_for(service, clock, 5)
    failed = [e for e in journal(out) if e["event"] == "report_failed"]
    assert len(failed) == 1 and failed[0]["path"] == service.config.metrics_file
    assert os.path.exists(service.config.state_file)


def test_run_stops_on_request_and_sleeps_in_between(tmp_path):
    world = {"capture": True}
    service, clock, out, notes = make_service(tmp_path, world, RecordingActions(world))
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock.now += seconds

    service.run(should_stop=lambda: clock.now >= 105, sleep=sleep)
    assert service.ladder.counters["checks"] == 5
    assert max(slept) <= 1.0
    assert notes[-1] == "STOPPING=1" and journal(out)[-1]["event"] == "stopped"


def test_metrics_are_valid_textfile_format(tmp_path):
    world = {"capture": False}
    service, clock, out, notes = make_service(tmp_path, world, RecordingActions(world, heal_on="ioctl"))
    service.start()
    run_for(service, clock, 12)
    text = open(service.config.metrics_file).read()
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*",?)+\})? -?[0-9.e+-]+$')
    families = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in families
            families.add(name)
        elif not line.startswith("# HELP "):
            assert sample.match(line), line
            assert line.split("{")[0].split(" ")[0] in families
    assert text.endswith("\n")
    assert not [n for n in os.listdir(tmp_path / "prom") if n.startswith(".")]  # no temporary file left


# ---- probes ----------------------------------------------------------------------------

def test_probe_video_node(tmp_path):
    node = tmp_path / "kvmd-video"
    config = config_for(tmp_path, video_node=str(node))
    assert _watchdog.probe_video_node(config)[0] is False
    node.symlink_to(tmp_path / "video0")
    assert _watchdog.probe_video_node(config)[0] is False  # a dangling symlink is no capture device
    (tmp_path / "video0").write_text("")
    assert _watchdog.probe_video_node(config) == (True, "%s present" % node)


def test_probe_ustreamer_signals(tmp_path):
    config = config_for(tmp_path)

    def answer(result=None, exc=None):
        def get_state(path, timeout):
            assert path == "/run/kvmd/ustreamer.sock" and timeout == 2.0
            if exc:
                raise exc
            return result
        return get_state

    assert _watchdog.probe_ustreamer(config, answer(exc=StreamerNotRunning("gone")))[0] is None
    assert _watchdog.probe_ustreamer(config, answer(exc=Timeout("hung")))[0] is False
    assert _watchdog.probe_ustreamer(config, answer({"source": {"online": False, "captured_fps": 0}}))[0] is False
    assert _watchdog.probe_ustreamer(config, answer({"source": {"online": True, "captured_fps": 30}}))[0] is True


def test_probe_dongle(tmp_path):
    config = config_for(tmp_path, dongle={"id": "534d:2109", "port": "1-1.2"})
    seen = []

    def find(usb_id, port):
        seen.append((usb_id, port))
        return []

    ok, detail = _watchdog.probe_dongle(config, find)
    assert ok is False and detail == "capture dongle 534d:2109 at port 1-1.2 is not on the USB bus"
    assert seen == [("534d:2109", "1-1.2")]
    assert _watchdog.probe_dongle(config, lambda i, p: ["dev"])[0] is True


def test_hid_probe_never_competes_with_kvmd(tmp_path):
    config = config_for(tmp_path, hid={"enabled": True, "adapter_port": "1-1.1"})
    asked = []
    holders = [{"pid": 42, "comm": "kvmd"}]
    ok, detail = _watchdog.probe_hid(config, port_users=lambda dev: holders, get_info=lambda *a: asked.append(a))
    assert ok is None and "kvmd holds /dev/kvmd-hid" in detail and not asked
    ok, detail = _watchdog.probe_hid(config, port_users=lambda dev: [], get_info=lambda dev, timeout: {"version": "1.0"})
    assert ok is True and "version=1.0" in detail

    def silent(dev, timeout):
        raise Timeout("no answer")
    assert _watchdog.probe_hid(config, port_users=lambda dev: [], get_info=silent)[0] is False


def test_a_probe_that_cannot_run_is_not_a_failure(tmp_path):
    config = config_for(tmp_path)

    def broken(cfg):
        raise PermissionDenied("no access to sysfs")

    health = _watchdog.check_health(config, {"dongle": broken, "video": lambda cfg: (True, "ok")})
    assert health.verdict == "unknown" and health.probes["dongle"] == [None, "no access to sysfs"]


# ---- the streamer restart on real processes --------------------------------------------

def _spawn(title, ignore_term=False):
    trap = 'trap "" TERM; ' if ignore_term else ""
    proc = subprocess.Popen(["bash", "-c", '%sexec -a "%s" sleep 60' % (trap, title)])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # wait for the exec so the title is in place
        with open("/proc/%d/cmdline" % proc.pid, "rb") as f:
            if f.read().startswith(title.encode()):
                return proc
        time.sleep(0.01)
    raise AssertionError("the test process never took its title")


@pytest.mark.parametrize("ignore_term", [False, True])
def test_restart_streamer_stops_the_matching_process(tmp_path, ignore_term):
    title = "kvmd/streamer: onekvm-test-%d-%d" % (os.getpid(), ignore_term)
    bystander = _spawn("other-" + title)
    streamer = _spawn(title, ignore_term)
    try:
        config = config_for(tmp_path, streamer_patterns=[title])
        assert _watchdog.find_processes(config.streamer_patterns) == [streamer.pid]
        result = _watchdog.Actions(config).restart_streamer(wait=1.0)
        assert result["pids"] == [streamer.pid]
        assert result["sigkill"] == ([streamer.pid] if ignore_term else [])
        assert streamer.wait(5) == (-signal.SIGKILL if ignore_term else -signal.SIGTERM)
        assert bystander.poll() is None
    finally:
        for proc in (streamer, bystander):
            proc.kill()
            proc.wait()


def test_restart_streamer_without_streamer_is_skipped(tmp_path):
    config = config_for(tmp_path, streamer_patterns=["kvmd/streamer: nothing-like-this-%d" % os.getpid()])
    with pytest.raises(NotFound):
        _watchdog.Actions(config).restart_streamer()


# ---- systemd notification ----------------------------------------------------------------

@pytest.mark.parametrize("abstract", [False, True])
def test_sd_notify_reaches_the_socket(tmp_path, abstract):
    name = "onekvm-test-notify-%d" % os.getpid()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name if abstract else str(tmp_path / "notify"))
        listener.settimeout(2)
        env = {"NOTIFY_SOCKET": "@" + name if abstract else str(tmp_path / "notify")}
        assert _watchdog.sd_notify("READY=1\nSTATUS=hi", env) is True
        assert listener.recv(100) == b"READY=1\nSTATUS=hi"
    assert _watchdog.sd_notify("READY=1", {}) is False
    assert _watchdog.sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_watchdog_interval_from_systemd_environment():
    pid = str(os.getpid())
    assert _watchdog.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert _watchdog.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert _watchdog.watchdog_interval({}) is None


# ---- the box commands --------------------------------------------------------------------

def test_cli_invalid_config_fails_once_with_code_2(tmp_path):
    path = tmp_path / "watchdog.json"
    path.write_text('{"interval": 0}')
    res = run_cli("watchdog", "--config", str(path))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "onekvm watchdog: error: watchdog config %s: interval must be a number from 0.5 to 3600 (seconds between "
        "health checks), got 0.0; give a value in that range" % path]


def test_cli_once_and_status(tmp_path):
    node = tmp_path / "video0"
    raw = {"interval": 1, "grace": 0, "video_node": str(node), "ladder": ["restart_streamer"],
           "streamer_patterns": ["kvmd/streamer: none-%d" % os.getpid()],
           "ustreamer": {"socket": str(tmp_path / "ustreamer.sock")},
           "state_file": str(tmp_path / "wd.json"), "metrics_file": str(tmp_path / "wd.prom")}
    path = tmp_path / "watchdog.json"
    path.write_text(json.dumps(raw))
    res = run_cli("--json", "watchdog", "--check-config", "--config", str(path))
    assert res.returncode == 0 and json.loads(res.stdout)["config"]["grace"] == 0.0
    res = run_cli("--json", "watchdog", "--once", "--config", str(path))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert [e["event"] for e in out["events"]] == ["failure_detected", "action_started", "action_skipped"]
    # the --once run has ended: its state is reported as history
    res = run_cli("--json", "status", "--state-file", str(tmp_path / "wd.json"))
    assert res.returncode == 0 and json.loads(res.stdout)["running"] is False
    res = run_cli("status", "--state-file", str(tmp_path / "wd.json"))
    assert res.returncode == 0
    assert res.stdout.startswith("watchdog: not running (pid %d is gone); its last state: recovering "
                                 "(video_node: video node %s is missing)" % (out["state"]["pid"], node))
    assert "last action restart_streamer: skipped" in res.stdout.splitlines()[0]
    # a live process that is not the watchdog which wrote the file (this one) is no news either;
    # the live service itself is in test_watchdog_hostile.py
    state = json.loads((tmp_path / "wd.json").read_text())
    (tmp_path / "wd.json").write_text(json.dumps(dict(state, pid=os.getpid())))
    res = run_cli("status", "--state-file", str(tmp_path / "wd.json"))
    assert res.returncode == 0
    assert res.stdout.startswith("watchdog: not running (pid %d is another process, not the watchdog that wrote "
                                 "this); its last state: recovering (video_node: video node %s is missing)"
                                 % (os.getpid(), node))
    missing = run_cli("status", "--state-file", str(tmp_path / "absent.json"))
    assert missing.returncode == 3 and "is onekvm-watchdog.service running?" in missing.stderr


# ---- finding the dongle cheaply ------------------------------------------------------------

class FakeUsb:
    """The sysfs edge of _usb: devices by port; counts the whole-bus scans."""

    class Device:
        def __init__(self, port, usb_id):
            self.port, self.id = port, usb_id

    def __init__(self, devices):
        self.devices = {d.port: d for d in devices}
        self.scans = 0

    def read_device(self, port, lazy=False):
        assert lazy  # presence checks must not walk sysfs for device nodes
        return self.devices.get(port)

    def list_devices(self):
        self.scans += 1
        return list(self.devices.values())

    def select_devices(self, devices, id=None, allow_many=False, allow_none=False):  # pylint: disable=redefined-builtin
        assert allow_many and allow_none
        return [d for d in devices if d.id == id]


def test_dongle_finder_reads_one_port_and_scans_only_to_learn_it():
    usb = FakeUsb([FakeUsb.Device("1-1.2", "534d:2109"), FakeUsb.Device("1-1.3", "0627:0001")])
    finder = _watchdog.DongleFinder(usb)
    assert [d.port for d in finder("534d:2109", "1-1.2")] == ["1-1.2"] and usb.scans == 0
    assert finder("0627:0001", "1-1.2") == []  # another device at the configured port is not the dongle
    for dummy in range(3):
        assert [d.port for d in finder("534d:2109", "")] == ["1-1.2"]
    assert usb.scans == 1  # the port learnt by the first scan serves the next checks
    usb.devices["1-2"] = usb.devices.pop("1-1.2")
    usb.devices["1-2"].port = "1-2"
    assert [d.port for d in finder("534d:2109", "")] == ["1-2"] and usb.scans == 2


def test_files_are_rewritten_on_change_and_once_a_minute_when_idle(tmp_path):
    world = {"capture": True}
    service, clock, dummy_out, dummy_notes = make_service(tmp_path, world, RecordingActions(world))
    state_file = service.config.state_file

    def written_at():
        return json.loads(open(state_file).read())["checked_at"] - 1.7e9

    service.check_once()
    assert written_at() == clock.now  # the first check writes
    first = clock.now
    run_for(service, clock, 30)
    assert written_at() == first  # an unchanged idle check leaves the files alone
    run_for(service, clock, 31)
    assert first + 60 <= written_at() <= first + 61  # ... but not for longer than the heartbeat
    world["capture"] = False
    service.check_once()  # failure_detected: written at once
    state = json.loads(open(state_file).read())
    assert written_at() == clock.now and state["verdict"] == "failing" and state["status"] == "failing"
    assert 'onekvm_watchdog_up{domain="capture"} 0\n' in open(service.config.metrics_file).read()


def test_run_acts_when_the_grace_period_ends_and_sees_the_healing_within_a_second(tmp_path):
    world = {"capture": False}
    actions = RecordingActions(world)  # runs the steps; the capture comes back by itself later
    service, clock, out, dummy_notes = make_service(tmp_path, world, actions, interval=5, grace=7,
                                                    waits={"restart_streamer": 10, "ioctl": 3, "authorize": 3})

    def sleep(seconds):
        clock.now += seconds
        if actions.ran and clock.now >= 109.5:  # the restarted streamer is back 2.5 s after the action
            world["capture"] = True

    service.run(should_stop=lambda: clock.now >= 130, sleep=sleep)
    events = {e["event"]: e for e in journal(out)}
    assert actions.ran == ["restart_streamer"]
    assert events["action_started"]["failing_for"] == 7.0  # at the end of the grace, not at the next 5 s tick
    assert events["recovered"]["failing_for"] <= 10.5  # within a second of the return, not at the next tick (15)
