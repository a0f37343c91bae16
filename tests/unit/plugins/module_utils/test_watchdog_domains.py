# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two failure domains: the capture and the HID each have their own probes and ladder.

The USB/serial hardware is the edge mocked here (steps are recorded, the bus is a dict);
kvmd's GET /hid is a real unix socket speaking HTTP as kvmd's api/hid.py and api/auth.py do.
"""

from __future__ import annotations

import io
import json
import os

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils import _watchdog
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import InvalidArgument
from ansible_collections.onekvm.fleet.tests.support.unixhttp import UnixHttpServer
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.ch9329_support import (  # noqa: F401  # pylint: disable=unused-import
    box_env, sim)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Device:
    def __init__(self, port):
        self.port = port


class Box:
    """The world the probes see and the steps change."""

    def __init__(self):
        self.capture = True
        self.chip = True
        self.bus = {"capture": "1-1.2", "hid": "1-1.3"}
        self.ran = []
        self.heals = {}  # step -> what it heals

    def run(self, step):
        self.ran.append(step)
        healed = self.heals.get(step)
        if healed:
            setattr(self, healed, True)
        if step == self.takes_the_adapter_down:
            self.bus["hid"] = None
            self.chip = False
        if step in ("ioctl", "authorize", "power_cycle"):
            return {"port": self.port_acted or self.bus["capture"], "method": step, "hub": "1-1",
                    "hub_power_mode": self.hub_mode}
        return {"step": step}

    port_acted = None
    hub_mode = "individual"
    takes_the_adapter_down = None

    def finder(self, domain):
        return lambda usb_id, port: [Device(self.bus[domain])] if self.bus.get(domain) else []


def make(tmp_path, box, **raw):
    config = dict({"interval": 1, "grace": 2, "dongle": {"port": "1-1.2"}, "video_node": "",
                   "ustreamer": {"enabled": False}, "ladder": ["restart_streamer", "ioctl", "power_cycle"],
                   "waits": {"restart_streamer": 3, "ioctl": 3, "power_cycle": 3},
                   "hid": {"enabled": True, "adapter_port": "1-1.3", "grace": 2,
                           "waits": {"ch9329": 3, "hid_adapter": 3}},
                   "state_file": str(tmp_path / "wd.json"), "metrics_file": str(tmp_path / "wd.prom"), "backoff": 0},
                  **raw)
    config = _watchdog.parse_config(config)
    probes = {"capture": {"capture": lambda cfg: (box.capture, "capture")}, "hid": {"hid": lambda cfg: (box.chip, "chip")}}
    clock = Clock()
    out = io.StringIO()
    service = _watchdog.Service(config, probes=probes, actions=box, reporter=_watchdog.Reporter(config, out=out),
                                clock=clock, wall=lambda: clock.now + 1.7e9, notify=lambda m: True,
                                find_devices={"capture": box.finder("capture"), "hid": box.finder("hid")})
    service.start()
    return service, clock, out


def run_for(service, clock, seconds):
    for dummy in range(int(seconds)):
        service.check_once()
        clock.now += 1


def journal(out):
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_silent_chip_never_touches_a_healthy_capture(tmp_path):
    """The issue's case: chip silent, capture healthy -> only the HID ladder acts."""
    box = Box()
    box.heals = {"hid_adapter": "chip"}
    service, clock, out = make(tmp_path, box)
    box.chip = False
    run_for(service, clock, 15)
    assert box.ran == ["ch9329", "hid_adapter"]
    events = [(e["domain"], e["event"]) for e in journal(out) if "domain" in e]
    assert ("capture", "failure_detected") not in events
    assert events[:3] == [("hid", "failure_detected"), ("hid", "action_started"), ("hid", "action_done")]
    state = json.loads(open(service.config.state_file).read())
    assert state["domains"]["capture"]["counters"]["failures"] == 0
    assert state["domains"]["hid"]["counters"]["recoveries"] == 1 and state["status"] == "ok"
    metrics = open(service.config.metrics_file).read()
    assert 'onekvm_watchdog_resets_total{domain="hid",method="hid_adapter"} 1\n' in metrics
    assert 'onekvm_watchdog_failures_total{domain="capture"} 0\n' in metrics
    assert 'onekvm_watchdog_actions_total{domain="capture",step="restart_streamer",result="ok"} 0\n' in metrics


def test_a_dead_capture_never_resets_the_chip(tmp_path):
    box = Box()
    service, clock, out = make(tmp_path, box)
    box.capture = False
    run_for(service, clock, 40)
    assert box.ran == ["restart_streamer", "ioctl", "power_cycle"]
    state = json.loads(open(service.config.state_file).read())
    assert state["status"] == "needs_human" and state["domains"]["hid"]["status"] == "ok"
    assert state["domains"]["capture"]["status"] == "needs_human"
    assert service.status_line().startswith("capture needs human: capture: capture; hid ok")


def test_each_domain_has_its_own_budget(tmp_path):
    box = Box()
    service, clock, out = make(tmp_path, box, max_actions_per_hour=1,
                               hid={"enabled": True, "adapter_port": "1-1.3", "grace": 2, "max_actions_per_hour": 5,
                                    "waits": {"ch9329": 3, "hid_adapter": 3}})
    box.capture = False
    box.chip = False
    run_for(service, clock, 30)
    assert box.ran.count("restart_streamer") == 1 and "ioctl" not in box.ran  # capture: budget of 1 used up
    assert box.ran.count("ch9329") >= 1 and box.ran.count("hid_adapter") >= 1  # the HID's budget is its own


def test_a_power_cycle_above_the_adapter_rechecks_the_hid_and_resets_the_chip_when_it_is_back(tmp_path):
    """The dongle's step switched a port the adapter sits below (a hub feeding both): the
    HID does not escalate on its own while the adapter comes back; then the chip is reset."""
    box = Box()
    box.port_acted = "1-1"  # the capture "device" configured is the hub both sit on
    box.takes_the_adapter_down = "power_cycle"
    service, clock, out = make(tmp_path, box, dongle={"port": "1-1"}, ladder=["power_cycle"])
    box.capture = False
    run_for(service, clock, 3)  # grace, then the power cycle
    assert box.ran == ["power_cycle"]
    run_for(service, clock, 3)
    assert "ch9329" not in box.ran and "hid_adapter" not in box.ran  # deferred, not escalated
    box.bus["hid"] = "1-1.3"  # the adapter is back
    box.heals = {"ch9329": "chip"}
    box.capture = True
    run_for(service, clock, 2)
    assert box.ran == ["power_cycle", "ch9329"]
    events = journal(out)
    disturbed = [e for e in events if e["event"] == "disturbed"]
    assert len(disturbed) == 1 and disturbed[0]["domain"] == "hid" and disturbed[0]["by"] == "capture/power_cycle"
    reset = [e for e in events if e["event"] == "chip_reset_after_usb"]
    assert len(reset) == 1 and reset[0]["result"] == "ok"


def test_a_ganged_hub_disturbs_its_other_ports(tmp_path):
    box = Box()
    box.hub_mode = "ganged"
    service, clock, out = make(tmp_path, box, ladder=["ioctl"])
    box.capture = False
    run_for(service, clock, 4)
    assert [e["device_port"] for e in journal(out) if e["event"] == "disturbed"] == ["1-1.3"]


def test_a_sibling_port_on_a_per_port_power_hub_is_not_disturbed(tmp_path):
    box = Box()
    service, clock, out = make(tmp_path, box, ladder=["power_cycle"])
    box.capture = False
    run_for(service, clock, 4)
    assert box.ran == ["power_cycle"] and not [e for e in journal(out) if e["event"] == "disturbed"]


def test_a_state_file_from_before_the_domains_is_taken_over_by_the_capture(tmp_path):
    (tmp_path / "wd.json").write_text(json.dumps({"counters": {"failures": 7, "checks": 3}, "backoff": 600}))
    service, clock, out = make(tmp_path, Box())
    assert service.domains["capture"].ladder.counters["failures"] == 7
    assert service.domains["hid"].ladder.counters["failures"] == 0


@pytest.mark.parametrize("raw", [{"ladder": ["restart_streamer", "ch9329"]}, {"waits": {"ch9329": 10}}])
def test_the_ch9329_step_in_the_capture_ladder_names_its_new_home(raw):
    with pytest.raises(InvalidArgument) as exc:
        _watchdog.parse_config(dict(raw, dongle={"port": "1-1.2"}))
    assert "hid.ladder" in exc.value.msg and "onekvm_watchdog_hid_ladder" in exc.value.msg


def test_hid_ladder_steps_are_checked():
    with pytest.raises(InvalidArgument) as exc:
        _watchdog.parse_config({"hid": {"enabled": True, "ladder": ["ioctl"]}})
    assert exc.value.msg == "hid.ladder step 'ioctl' is unknown; choose from ch9329, hid_adapter"
    with pytest.raises(InvalidArgument) as exc:
        _watchdog.parse_config({"hid": {"enabled": True}, "ladder": ["restart_streamer"]})
    assert "hid.adapter_id and/or hid.adapter_port" in exc.value.msg
    config = _watchdog.parse_config({"hid": {"enabled": True, "ladder": ["ch9329"]}, "ustreamer": {"enabled": False},
                                     "video_node": ""})
    assert list(config.domains) == ["hid"]


# ---- kvmd's view of the HID ----------------------------------------------------------------

class Kvmd(UnixHttpServer):
    """kvmd's unix socket as far as GET /hid goes: api/hid.py returns get_state() wrapped by
    make_json_response ({"ok": true, "result": {...}}); api/auth.py's _check_xhdr checks the
    X-KVMD-User/X-KVMD-Passwd headers and answers 403 on a wrong password, 401 without."""

    def __init__(self, path, online=True, user="watchdog", passwd="s3cret"):
        self.online, self.user, self.passwd = online, user, passwd
        super().__init__(path, self.respond)

    def respond(self, head):
        headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        if "X-KVMD-User" not in headers:
            status, body = 401, {"ok": False, "result": {"error": "UnauthorizedError"}}
        elif (headers["X-KVMD-User"], headers.get("X-KVMD-Passwd")) != (self.user, self.passwd):
            status, body = 403, {"ok": False, "result": {"error": "ForbiddenError"}}
        elif head.startswith("GET /hid "):
            status, body = 200, {"ok": True, "result": {"enabled": True, "online": self.online, "busy": False,
                                                        "connected": None, "keyboard": {}, "mouse": {}}}
        else:
            status, body = 404, {"ok": False}
        data = json.dumps(body).encode()
        return b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
            status, len(data)) + data


def hid_config(tmp_path, credentials, name="kvmd-credentials.json"):
    path = tmp_path / name
    path.write_text(json.dumps(credentials))
    os.chmod(str(path), 0o600)
    return _watchdog.parse_config({"hid": {"enabled": True, "adapter_port": "1-1.3", "device": "/dev/ttyUSB7",
                                           "kvmd_socket": str(tmp_path / "kvmd.sock"), "kvmd_credentials": str(path)},
                                   "dongle": {"port": "1-1.2"}})


def probe(config):
    return _watchdog.probe_hid(config, port_users=lambda device: [{"pid": 1, "comm": "kvmd"}],
                               get_info=lambda *a: pytest.fail("the port is held: the chip must not be asked"))


def test_while_kvmd_holds_the_port_its_hid_state_is_the_evidence(tmp_path):
    kvmd = Kvmd(tmp_path / "kvmd.sock")
    try:
        config = hid_config(tmp_path, {"user": "watchdog", "passwd": "s3cret"})
        assert probe(config) == (True, "kvmd reports the CH9329 online")
        kvmd.online = False
        assert probe(config) == (False, "kvmd reports the CH9329 offline (GET /api/hid online=false)")
        assert "X-KVMD-User: watchdog\r\n" in kvmd.requests[0] and "X-KVMD-Passwd: s3cret\r\n" in kvmd.requests[0]
        wrong = hid_config(tmp_path, {"user": "watchdog", "passwd": "nope"}, name="wrong.json")
        ok, detail = probe(wrong)
        assert ok is None and "refused the watchdog's credentials (HTTP 403)" in detail
    finally:
        kvmd.close()
    os.unlink(str(tmp_path / "kvmd.sock"))  # kvmd stopped (its unix_rm removes the socket): no evidence either way
    ok, detail = probe(config)
    assert ok is None and "kvmd is not running" in detail


@pytest.mark.parametrize("credentials, mode, says", [
    ({"user": "a", "passwd": "b"}, 0o644, "mode 0600"),
    ({"user": "a\r\nX-Evil: 1", "passwd": "b"}, 0o600, "printable text"),
    ([1], 0o600, "printable text"),
])
def test_credentials_are_checked_before_use(tmp_path, credentials, mode, says):
    kvmd = Kvmd(tmp_path / "kvmd.sock")
    try:
        config = hid_config(tmp_path, credentials)
        os.chmod(config.hid["kvmd_credentials"], mode)
        ok, detail = probe(config)
    finally:
        kvmd.close()
    assert ok is None and says in detail and not kvmd.requests


def test_without_credentials_a_held_port_is_no_evidence(tmp_path):
    config = _watchdog.parse_config({"hid": {"enabled": True, "adapter_port": "1-1.3"}, "dongle": {"port": "1-1.2"}})
    ok, detail = probe(config)
    assert ok is None and "give the watchdog kvmd credentials" in detail


def test_status_names_each_domain(tmp_path):
    from ansible_collections.onekvm.fleet.tests.support.boxpkg import run_cli
    box = Box()
    service, clock, out = make(tmp_path, box)
    box.chip = False
    run_for(service, clock, 4)
    res = run_cli("status", "--state-file", service.config.state_file)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].endswith(
        "its last state: capture ok; hid recovering (hid: chip); last action ch9329: ok")


# ---- the HID probe never pauses kvmd, not even when kvmd opens the port after the check ----

def test_the_chip_probe_opens_the_port_read_only(sim, box_env):  # pylint: disable=redefined-outer-name
    """kvmd (pikvm/kvmd ``plugins/hid/ch9329``) keeps the port open and polls it: a probe that
    finds it held says "no evidence" and sends nothing, and kvmd is neither stopped nor warned about."""
    from ansible_collections.onekvm.fleet.plugins.module_utils import _watchdog_probes
    box_env["systemd"].add_unit_holding("kvmd.service", sim.port)
    frames = sim.counters["frames"]
    with pytest.raises(InvalidArgument, match="HID not probed: kvmd.service holds"):
        _watchdog_probes._ch9329_get_info(sim.port, 0.3)  # pylint: disable=protected-access
    assert sim.counters["frames"] == frames and box_env["systemd"].calls == []


def test_kvmd_taking_the_port_between_check_and_open_is_no_evidence(sim, box_env):  # pylint: disable=redefined-outer-name
    """The probe looks for holders first; if kvmd opens the port just after, open_chip's own
    read-only check still keeps the probe off it: the verdict is unknown, nothing is sent."""
    from ansible_collections.onekvm.fleet.plugins.module_utils import _watchdog_probes
    box_env["systemd"].add_unit_holding("kvmd.service", sim.port)
    config = _watchdog.parse_config({"hid": {"enabled": True, "device": sim.port, "timeout": 0.3, "ladder": ["ch9329"]},
                                    "dongle": {"port": "1-1.2"}})
    frames = sim.counters["frames"]
    ok, detail = _watchdog_probes.probe_hid(config, port_users=lambda device: [])
    assert ok is None and "kvmd.service holds" in detail, detail
    assert sim.counters["frames"] == frames and box_env["systemd"].calls == []
    box_env["systemd"].holders[0].kill()
    box_env["systemd"].holders[0].wait()
    box_env["systemd"].set_unit("kvmd.service", active=True, pid=1)
    assert _watchdog_probes.probe_hid(config, port_users=lambda device: [])[0] is True  # nobody holds it: asked
