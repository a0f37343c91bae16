# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet playbooks parse against the example inventory and pass ansible-lint (production)."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.onekvm.fleet.tests.fleet.conftest import ROOT, run

PLAYBOOKS = ["provision.yml", "reset_capture.yml", "reset_hid.yml", "health.yml", "validate.yml"]
EXAMPLE_INVENTORY = os.path.join(ROOT, "examples", "inventory")


def ansible_env(coll_path):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=coll_path, ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_CONFIG", None)
    return env


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax_check_with_the_example_inventory(playbook, coll_path):
    done = run(["ansible-playbook", "--syntax-check", "-i", EXAMPLE_INVENTORY, "onekvm.fleet." + playbook[:-4]],
               env=ansible_env(coll_path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_example_inventory_has_the_seed_button_and_a_capture_dongle(coll_path):
    done = run(["ansible-inventory", "-i", EXAMPLE_INVENTORY, "--host", "kvm-a01"], env=ansible_env(coll_path))
    assert done.returncode == 0, done.stderr
    host = json.loads(done.stdout)
    assert host["onekvm_capture_usb_id"] == "534d:2109" and host["onekvm_capture_usb_port"] == "1-1.2"
    seed = [b for b in host["onekvm_gpio_buttons"] if b.get("name") == "toggle_switch"]
    assert seed == [{"name": "toggle_switch", "cmd": ["/usr/local/bin/kvm-switch", "next"], "label": "Switch KVM machine",
                     "confirm": True}]


def test_the_example_buttons_render_to_the_seed_note_config(coll_path):
    """The example inventory's buttons through the role's own filter give the seed note's gpio.yaml."""
    done = run(["ansible", "-i", EXAMPLE_INVENTORY, "kvm-a01", "-c", "local", "-m", "ansible.builtin.debug",
                "-a", "msg={{ onekvm_gpio_buttons | onekvm.fleet.kvmd_gpio }}", "-e", "ansible_python_interpreter=auto_silent"],
               env=ansible_env(coll_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "'toggle_switch|confirm|Switch KVM machine'" in done.stdout or '"toggle_switch|confirm|Switch KVM machine"' in done.stdout


def test_ansible_lint_production_profile(coll_path):
    """Only findings in the fleet files count here; the role has its own lint stage (make lint)."""
    mine = ("playbooks/", "examples/")
    done = run(["ansible-lint", "--offline", "--profile", "production", "--nocolor", "-f", "codeclimate", *mine],
               env=ansible_env(coll_path))
    findings = json.loads(done.stdout or "[]")
    ours = ["%s:%s %s: %s" % (f["location"]["path"], f["location"].get("lines", {}).get("begin"), f["check_name"], f["description"])
            for f in findings if f["location"]["path"].startswith(mine)]
    assert ours == [], "\n".join(ours)
    assert done.returncode == 0 or findings, done.stderr[-3000:]  # a crash is not a pass
