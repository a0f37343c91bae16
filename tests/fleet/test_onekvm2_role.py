# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role's One-KVM 0.2 step (tasks/onekvm2.yml) run by ansible-playbook against the One-KVM 0.2
simulator (tests/testbed/onekvm2_sim.py): the role variables become One-KVM's config sections, a
second run is changed=0, a refused value stops the run with One-KVM's rule."""

from __future__ import annotations

import io
import json
import os
import re
import sys
import threading

import pytest
import yaml

from ansible_collections.onekvm.fleet.tests.fleet.conftest import run
from ansible_collections.onekvm.fleet.tests.fleet.test_validate import ansible_env
from ansible_collections.onekvm.fleet.tests.testbed import onekvm2_sim as sim


@pytest.fixture
def one_kvm(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sim.Box(str(data)).add_user("fleet", "pw-from-vault")
    server, state = sim.make_server(str(data), 0)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    state.data_dir_path = data
    for name in ("kvmd-hid", "kvmd-video", "onekvm-relay"):
        (tmp_path / name).write_text("")
    yield state
    server.shutdown()
    server.server_close()


def play(coll_path, tmp_path, one_kvm, **overrides):
    variables = {
        "onekvm_onekvm2_url": one_kvm.url, "onekvm_onekvm2_username": "fleet",
        "onekvm_onekvm2_password": "pw-from-vault",
        "onekvm_onekvm2_hid_port": str(tmp_path / "kvmd-hid"), "onekvm_onekvm2_video_device": str(tmp_path / "kvmd-video"),
        "onekvm_onekvm2_atx_enabled": True, "onekvm_onekvm2_atx_device": str(tmp_path / "onekvm-relay"),
    }
    variables.update(overrides)
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "One-KVM 0.2 box", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "The role's One-KVM 0.2 step", "ansible.builtin.include_role": {
            "name": "onekvm.fleet.onekvm", "tasks_from": "onekvm2"}, "vars": variables}]}]))
    return run(["ansible-playbook", "-i", "localhost,", str(playbook)], env=ansible_env(coll_path), cwd=str(tmp_path))


def recap(done):
    match = re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=(\d+)", done.stdout)
    assert match, done.stdout[-3000:] + done.stderr[-2000:]
    return int(match.group(1)), int(match.group(2))


def test_role_sets_one_kvm_then_changes_nothing(coll_path, tmp_path, one_kvm):
    first = play(coll_path, tmp_path, one_kvm)
    assert recap(first) == (1, 0), first.stdout[-3000:]
    config = one_kvm.config
    assert (config["hid"]["backend"], config["hid"]["ch9329_port"]) == ("ch9329", str(tmp_path / "kvmd-hid"))
    assert config["video"]["device"] == str(tmp_path / "kvmd-video")
    atx = config["atx"]
    assert (atx["enabled"], atx["driver"], atx["device"], atx["power"]["pin"], atx["reset"]["pin"]) == \
        (True, "serial", str(tmp_path / "onekvm-relay"), 1, 2)
    patches = len([r for r in one_kvm.requests if r[0] == "PATCH"])
    second = play(coll_path, tmp_path, one_kvm)
    assert recap(second) == (0, 0), second.stdout[-3000:]
    assert len([r for r in one_kvm.requests if r[0] == "PATCH"]) == patches
    assert "pw-from-vault" not in first.stdout + second.stdout


def test_extra_settings_are_merged(coll_path, tmp_path, one_kvm):
    done = play(coll_path, tmp_path, one_kvm, onekvm_onekvm2_settings={"video": {"fps": 25}, "audio": {"quality": "high"}})
    assert recap(done)[1] == 0, done.stdout[-3000:]
    assert (one_kvm.config["video"]["fps"], one_kvm.config["audio"]["quality"]) == (25, "high")
    assert one_kvm.config["video"]["device"] == str(tmp_path / "kvmd-video")  # merged, not replaced


def test_refused_value_stops_with_one_kvms_rule(coll_path, tmp_path, one_kvm):
    done = play(coll_path, tmp_path, one_kvm, onekvm_onekvm2_atx_power_channel=9)
    assert recap(done)[1] == 1
    assert "power channel must be between 1 and 8" in done.stdout
    assert [r for r in one_kvm.requests if r[0] == "PATCH"] == []


def test_missing_credentials_are_named(coll_path, tmp_path, one_kvm):
    done = play(coll_path, tmp_path, one_kvm, onekvm_onekvm2_password="")
    assert recap(done)[1] == 1
    assert "set onekvm_onekvm2_username and onekvm_onekvm2_password" in done.stdout
    assert one_kvm.requests == []


def test_the_health_report_shows_a_one_kvm_02_screen(coll_path, tmp_path, one_kvm):
    """health.yml on a One-KVM 0.2 box: its screen from GET /api/snapshot (src/web/handlers/stream.rs),
    with the login the role keeps for the watchdog, scaled into the report; no frame is "stopped"."""
    image = pytest.importorskip("PIL.Image")
    frame = io.BytesIO()
    image.new("RGB", (800, 600), (0, 0, 200)).save(frame, "JPEG")
    (one_kvm.data_dir_path / sim.FRAME_FILE).write_bytes(frame.getvalue())
    creds = tmp_path / "watchdog-onekvm2.json"
    creds.write_text(json.dumps({"user": "fleet", "passwd": "pw-from-vault"}))
    os.chmod(creds, 0o600)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"onekvm2-box": {
        "ansible_connection": "local", "ansible_become": False, "ansible_python_interpreter": sys.executable,
        "onekvm_flavour": "onekvm2", "onekvm_onekvm2_url": one_kvm.url, "onekvm_onekvm2_username": "fleet",
        "onekvm_watchdog_onekvm2_credentials_file": str(creds), "onekvm_watchdog_enabled": False}}}}))

    def report():
        done = run(["ansible-playbook", "-i", str(inventory), "onekvm.fleet.health", "-e", "fleet_hosts=all",
                    "-e", "fleet_health_dir=%s" % tmp_path], env=ansible_env(coll_path), cwd=str(tmp_path))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert "pw-from-vault" not in done.stdout
        return json.loads((tmp_path / "fleet-health.json").read_text())["boxes"][0]

    box = report()
    screen = box["screen"]
    assert (screen["state"], screen["width"], screen["height"]) == ("live", 800, 600), screen  # size from the JPEG
    assert (screen["thumbnail_width"], screen["thumbnail_height"]) == (240, 180)
    page = (tmp_path / "fleet-health.html").read_text()
    tile = page[page.index('data-box="onekvm2-box" data-screen="live"'):]
    assert tile[:200].count('<img src="data:image/jpeg;base64,') == 1
    assert ("GET", "/api/snapshot") in one_kvm.requests and one_kvm.sessions == {}
    (one_kvm.data_dir_path / sim.FRAME_FILE).unlink()  # One-KVM has no frame: 503 No frame available
    box = report()
    assert box["screen"]["state"] == "stopped" and not [w for w in box["warnings"] if w.startswith("screen")]
