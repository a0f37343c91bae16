# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""onekvm2_config against the One-KVM 0.2 simulator (tests/testbed/onekvm2_sim.py, written from
One-KVM's source): GET, compare, PATCH only what differs; check mode and diff; refusals before
any request carry One-KVM's own rule, the same words the simulator answers with."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from ansible_collections.onekvm.fleet.plugins.modules import onekvm2_config
from ansible_collections.onekvm.fleet.tests.testbed import onekvm2_sim as sim
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.module_runner import run_module

PASSWORD = "vault-secret-1"


@pytest.fixture
def box(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sim.Box(str(data)).add_user("fleet", PASSWORD)
    server, state = sim.make_server(str(data), 0)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    state.dev = tmp_path / "dev"
    state.dev.mkdir()
    for name in ("onekvm-ch9329", "onekvm-video", "onekvm-relay"):
        (state.dev / name).write_text("")
    yield state
    server.shutdown()
    server.server_close()


def args(box, settings, **extra):
    return dict(url=box.url, username="fleet", password=PASSWORD, settings=settings, **extra)


def fleet_settings(box):
    return {
        "hid": {"backend": "ch9329", "ch9329_port": str(box.dev / "onekvm-ch9329"), "ch9329_baudrate": 9600},
        "video": {"device": str(box.dev / "onekvm-video"), "fps": 30},
        "atx": {"enabled": True, "driver": "serial", "device": str(box.dev / "onekvm-relay"), "baud_rate": 9600,
                "power": {"enabled": True, "pin": 1}, "reset": {"enabled": True, "pin": 2}},
    }


def patches(box):
    return [r for r in box.requests if r[0] == "PATCH"]


def test_sets_sections_then_second_run_changes_nothing(box):
    first = run_module(onekvm2_config.main, args(box, fleet_settings(box)))
    assert not first.get("failed"), first
    assert first["changed"] is True
    # only what differs from One-KVM's defaults is sent (baud 9600 and fps 30 are the defaults)
    assert first["patches"]["hid"] == {"backend": "ch9329", "ch9329_port": str(box.dev / "onekvm-ch9329")}
    assert "ch9329_baudrate" not in first["patches"]["hid"]
    assert first["patches"]["atx"]["power"] == {"enabled": True}  # pin 1 is the default
    assert box.config["atx"]["reset"] == {"enabled": True, "device": "", "pin": 2, "active_level": "high"}
    assert box.config["hid"]["backend"] == "ch9329"
    sent = len(patches(box))
    assert sent == 3
    second = run_module(onekvm2_config.main, args(box, fleet_settings(box)))
    assert (second["changed"], second["patches"]) == (False, {})
    assert len(patches(box)) == sent  # nothing sent the second time


def test_one_field_changed_is_the_only_field_sent(box):
    run_module(onekvm2_config.main, args(box, fleet_settings(box)))
    settings = fleet_settings(box)
    settings["hid"]["ch9329_baudrate"] = 115200
    result = run_module(onekvm2_config.main, args(box, settings))
    assert result["patches"] == {"hid": {"ch9329_baudrate": 115200}}
    assert patches(box)[-1] == ("PATCH", "/api/config/hid")
    assert result["config"]["hid"]["ch9329_baudrate"] == 115200


def test_check_mode_and_diff_send_nothing(box):
    before = json.dumps(box.config, sort_keys=True)
    result = run_module(onekvm2_config.main, args(box, fleet_settings(box)), check_mode=True, diff=True)
    assert result["changed"] is True
    assert set(result["patches"]) == {"hid", "video", "atx"}
    assert patches(box) == []
    assert json.dumps(box.config, sort_keys=True) == before
    assert result["diff"]["before"]["hid"]["backend"] == "none"
    assert set(result["diff"]["before"]) == {"hid", "video", "atx"}


def test_diff_shows_before_and_after(box):
    result = run_module(onekvm2_config.main, args(box, {"audio": {"quality": "high"}}), diff=True)
    assert result["diff"]["before"]["audio"]["quality"] == "balanced"
    assert result["diff"]["after"]["audio"]["quality"] == "high"


def raw_patch(box, section, body):
    """The same value sent to One-KVM (the simulator) directly: its own answer."""
    opener = urllib.request.Request(box.url + "/api/auth/login", method="POST",
                                    data=json.dumps({"username": "fleet", "password": PASSWORD}).encode(),
                                    headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(opener) as resp:
        cookie = resp.headers["Set-Cookie"].split(";")[0]
    req = urllib.request.Request(box.url + f"/api/config/{section}", method="PATCH", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Cookie": cookie})
    try:
        urllib.request.urlopen(req)
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())["message"]
    return None


@pytest.mark.parametrize("section, value", [
    ("hid", {"ch9329_baudrate": 14400}),
    ("video", {"width": 100, "device": "/dev/null"}),
    ("video", {"fps": 121, "device": "/dev/null"}),
    ("video", {"quality": 0, "device": "/dev/null"}),
    ("atx", {"enabled": True}),
    ("atx", {"baud_rate": 0}),
    ("audio", {"quality": "best"}),
    ("stream", {"stun_server": "stun.example.com"}),
    ("stream", {"turn_server": "http://turn"}),
    ("web", {"http_port": 0}),
    ("web", {"bind_address": "localhost"}),
    ("hid", {"backend": "ch9329", "ch9329_descriptor": {"product": "x" * 24}}),
])
def test_refused_before_the_request_with_one_kvms_rule(box, section, value):
    if section == "hid" and "ch9329_descriptor" in value:
        value = dict(value, ch9329_port=str(box.dev / "onekvm-ch9329"))
    result = run_module(onekvm2_config.main, args(box, {section: value}))
    assert result["failed"] and result["error"] == "InvalidArgument"
    assert patches(box) == []
    one_kvm_says = raw_patch(box, section, value)
    assert one_kvm_says.startswith("Bad request: ")
    assert f"\"{one_kvm_says[len('Bad request: '):]}\"" in result["msg"], (result["msg"], one_kvm_says)
    assert "src/web/handlers/config/types.rs" in result["msg"]


def test_relay_channel_and_device_rules(box):
    settings = fleet_settings(box)
    settings["atx"]["power"]["pin"] = 9
    result = run_module(onekvm2_config.main, args(box, settings))
    assert "power channel must be between 1 and 8" in result["msg"]
    settings = fleet_settings(box)
    settings["atx"]["device"] = "/nonexistent/relay"
    result = run_module(onekvm2_config.main, args(box, settings))
    assert "ATX LCUS serial relay device '/nonexistent/relay' does not exist" in result["msg"]
    assert patches(box) == []


def test_relay_on_the_ch9329_port_is_refused(box):
    settings = fleet_settings(box)
    settings["atx"]["device"] = settings["hid"]["ch9329_port"]
    result = run_module(onekvm2_config.main, args(box, settings))
    assert "conflicts with HID CH9329 serial device" in result["msg"]
    assert "src/web/handlers/config/atx.rs" in result["msg"]
    assert patches(box) == []  # not even the hid section: the whole plan is checked first


@pytest.mark.parametrize("settings, words", [
    ({"atx": {"led": {"enabled": True}, "driver": "serial"}}, "sensing is kept only with the gpio driver"),
    ({"hid": {"ch9329_descriptor": {"product": "X"}}}, "kept only with backend ch9329"),
    ({"video": {"fps": 25}}, "video_device is required"),
    ({"video": {"device": "/nonexistent/video9"}}, "/nonexistent/video9 does not exist on this box"),
    ({"hid": {"backend": "ch9329", "ch9329_port": "/nonexistent/tty"}}, "Failed to reload HID backend"),
])
def test_values_one_kvm_would_not_keep(box, settings, words):
    result = run_module(onekvm2_config.main, args(box, settings))
    assert result["failed"] and words in result["msg"], result["msg"]
    assert patches(box) == []


@pytest.mark.parametrize("settings, words", [
    ({"hid": {"ch9329_speed": 9600}}, "hid.ch9329_speed is not a One-KVM 0.2 setting"),
    ({"gpio": {"x": 1}}, "settings.gpio is not a One-KVM 0.2 config section"),
    ({"hid": {"ch9329_baudrate": "9600"}}, "wrong type"),
    ({"hid": {"ch9329_baudrate": True}}, "wrong type"),
    ({"hid": {"backend": "usb"}}, "one of otg, ch9329, none"),
    ({"video": {"width": -1}}, "wrong type"),
    ({"web": {"http_port": 70000}}, "0-65535"),
    ({"stream": {"bitrate_preset": {"type": "Custom"}}}, "BitratePreset"),
    ({"atx": "serial"}, "must be a mapping"),
])
def test_hostile_settings_are_refused_by_name(box, settings, words):
    result = run_module(onekvm2_config.main, args(box, settings))
    assert result["failed"] and words in result["msg"], result["msg"]
    assert "Traceback" not in result["msg"]
    assert box.requests == []  # refused before even logging in


def test_wrong_password_says_what_one_kvm_said(box):
    result = run_module(onekvm2_config.main, dict(args(box, {"audio": {"enabled": False}}), password="wrong"))
    assert result["failed"] and result["error"] == "PermissionDenied"
    assert "Authentication failed: Invalid username or password" in result["msg"]
    assert "wrong" not in json.dumps(result)


def test_password_is_no_log():
    spec = onekvm2_config.DOCUMENTATION
    assert "password" in spec
    import inspect
    assert "no_log=True" in inspect.getsource(onekvm2_config.main)


@pytest.mark.parametrize("url", ["ftp://box", "http://box/api", "http://user:pw@box", "127.0.0.1:8080", ""])
def test_bad_url(box, url):
    result = run_module(onekvm2_config.main, dict(args(box, {"audio": {}}), url=url))
    assert result["failed"] and "is not One-KVM's web address" in result["msg"]


def test_unreachable(box):
    result = run_module(onekvm2_config.main, dict(args(box, {"audio": {}}), url="http://127.0.0.1:9", timeout=2))
    assert result["failed"] and "Cannot reach One-KVM" in result["msg"]


def test_logs_out_at_the_end(box):
    run_module(onekvm2_config.main, args(box, {"audio": {"enabled": False}}))
    assert box.requests[-1] == ("POST", "/api/auth/logout")
    assert box.sessions == {}


def test_stream_empty_string_matches_cleared_value(box):
    """One-KVM turns '' into null (types.rs StreamConfigUpdate::apply_to): '' must compare equal."""
    run_module(onekvm2_config.main, args(box, {"stream": {"stun_server": "stun:a:3478"}}))
    first = run_module(onekvm2_config.main, args(box, {"stream": {"stun_server": ""}}))
    assert first["changed"] is True
    again = run_module(onekvm2_config.main, args(box, {"stream": {"stun_server": ""}}))
    assert again["changed"] is False


def test_not_kept_is_an_error(box, monkeypatch):
    """If One-KVM answers a PATCH without the value asked (a rule not modelled here), fail: the
    task would report a change on every run."""
    real = sim.apply_update

    def drop(section, config, req):
        real(section, config, {k: v for k, v in req.items() if k != "quality"})
    monkeypatch.setattr(sim, "apply_update", drop)
    result = run_module(onekvm2_config.main, args(box, {"audio": {"quality": "high"}}))
    assert result["failed"] and "did not keep {'quality': 'high'}" in result["msg"]
