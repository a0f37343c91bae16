# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role's One-KVM 0.2 step (tasks/onekvm2.yml) run by ansible-playbook against the One-KVM 0.2
simulator (tests/testbed/onekvm2_sim.py): the role variables become One-KVM's config sections, a
second run is changed=0, a refused value stops the run with One-KVM's rule."""

from __future__ import annotations

import re
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
