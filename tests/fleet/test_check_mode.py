# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""provision.yml --check --diff on reachable boxes: the live difference, and nothing on the box changes.

On the provisioned session fleet (the role runs in check mode: fast path off) and on a fresh
box that has none of the role's files yet. The boxes are systemd containers with the kvmd
stand-in, which records every start of kvmd in /run/kvmd/standin-starts.
"""

from __future__ import annotations

import re
import uuid

import pytest

from ansible_collections.onekvm.fleet.tests.fleet import containers
from ansible_collections.onekvm.fleet.tests.fleet.conftest import run
from ansible_collections.onekvm.fleet.tests.fleet.test_provision import recap

MANAGED = ["/etc/kvmd/override.d/gpio.yaml", "/etc/sudoers.d/onekvm", "/etc/udev/rules.d/90-onekvm.rules",
           "/usr/local/bin/onekvm", "/usr/local/sbin/onekvm-reset-hid", "/etc/onekvm/watchdog.json",
           "/etc/systemd/system/onekvm-watchdog.service"]


def snapshot(name) -> dict:
    """Checksums of the managed files (missing ones as None) and kvmd's start log."""
    sums = {}
    for path in MANAGED:
        done = containers.box_exec(name, "sha256sum", path)
        sums[path] = done.stdout.split()[0] if done.returncode == 0 else None
    sums["kvmd starts"] = containers.box_exec(name, "cat", "/run/kvmd/standin-starts").stdout
    return sums


def check_diff(inventory, env, *extra):
    return run(["ansible-playbook", "-i", inventory, "onekvm.fleet.provision", "--check", "--diff", *extra], env=env)


def test_check_mode_on_provisioned_boxes_reports_no_change(fleet):
    before = {name: snapshot(name) for name in fleet["names"]}
    done = check_diff(fleet["inventory"], fleet["env"], "-l", "!" + fleet["gone"], "-e", "fleet_fast_path=false")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    counts = recap(done.stdout)
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts
    assert all(c["ok"] > 30 for c in counts.values()), counts  # the role itself ran, in check mode
    assert {name: snapshot(name) for name in fleet["names"]} == before


def test_check_mode_shows_the_diff_of_a_changed_setting_and_changes_nothing(fleet):
    before = {name: snapshot(name) for name in fleet["names"]}
    done = check_diff(fleet["inventory"], fleet["env"], "-l", "!" + fleet["gone"], "-e", "onekvm_gpio_title=Racks")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    counts = recap(done.stdout)
    assert all(c["changed"] > 0 and c["failed"] == 0 for c in counts.values()), counts
    assert re.search(r"^-\s+title: Machines$", done.stdout, re.M) and re.search(r"^\+\s+title: Racks$", done.stdout, re.M), (
        done.stdout[-4000:])
    # nothing written, kvmd not restarted
    assert {name: snapshot(name) for name in fleet["names"]} == before


@pytest.fixture()
def fresh_box(coll_path, tmp_path):
    name = "fleet-%s-fresh" % uuid.uuid4().hex[:6]
    image = containers.build_image()
    containers.start_boxes([name], image)
    try:
        inventory = containers.write_inventory(str(tmp_path / "hosts.yml"), [name])
        yield name, inventory, containers.ansible_env(coll_path)
    finally:
        containers.remove_boxes([name])


def test_check_mode_on_a_fresh_box_lists_every_file_and_writes_none(fresh_box):
    name, inventory, env = fresh_box
    before = snapshot(name)
    assert all(before[path] is None for path in MANAGED), before
    done = check_diff(inventory, env)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    counts = recap(done.stdout)
    assert counts[name]["failed"] == 0 and counts[name]["changed"] >= len(MANAGED), counts
    for path in MANAGED:
        assert "+++ after: %s" % path in done.stdout or "after: %s" % path in done.stdout, path
    assert snapshot(name) == before
