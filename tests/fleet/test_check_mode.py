# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""provision.yml --check --diff on reachable boxes: the live difference, and nothing on the box changes.

One check-mode run (the role itself runs: fast path off) over three boxes, each a case:
the session fleet's first box as provisioned, its second box with a changed setting in the
inventory, and a fresh box that has none of the role's files yet. The boxes are systemd
containers with the kvmd stand-in, which records every start of kvmd in /run/kvmd/standin-starts.
The run's results are read from the json callback (per host: counters, and the diff of each task).
"""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from ansible_collections.onekvm.fleet.tests.fleet import containers
from ansible_collections.onekvm.fleet.tests.fleet.conftest import run

# the files the role writes on these boxes (no capture dongle: the one root button is Reset HID)
MANAGED = ["/etc/kvmd/override.d/gpio.yaml", "/etc/sudoers.d/onekvm", "/etc/udev/rules.d/90-onekvm.rules",
           "/usr/local/bin/onekvm", "/usr/local/sbin/onekvm-reset-hid", "/usr/local/lib/onekvm/reset-hid-job",
           "/etc/systemd/system/onekvm-reset-hid.service", "/usr/local/lib/onekvm/buttons/onekvm_reset_hid",
           "/etc/onekvm/watchdog.json", "/etc/systemd/system/onekvm-watchdog.service"]


def snapshot(name) -> dict:
    """Checksums of the managed files (missing ones as None) and kvmd's start log."""
    sums = {}
    for path in MANAGED:
        done = containers.box_exec(name, "sha256sum", path)
        sums[path] = done.stdout.split()[0] if done.returncode == 0 else None
    sums["kvmd starts"] = containers.box_exec(name, "cat", "/run/kvmd/standin-starts").stdout
    return sums


def diffs(result):
    """The diffs of one task result (a loop's are in its items)."""
    for item in [result, *result.get("results", [])]:
        diff = item.get("diff") or []
        yield from (diff if isinstance(diff, list) else [diff])


@pytest.fixture(scope="module")
def checked(fleet, coll_path, tmp_path_factory):
    provisioned, changed = fleet["names"]
    fresh = "fleet-%s-fresh" % uuid.uuid4().hex[:6]
    containers.start_boxes([fresh], containers.build_image())
    try:
        with open(fleet["inventory"], encoding="utf-8") as f:
            inventory = yaml.safe_load(f)
        hosts = inventory["onekvm"]["hosts"]
        del hosts[fleet["gone"]]
        hosts[changed]["onekvm_gpio_title"] = "Racks"  # the fleet's boxes have "Machines"
        hosts[fresh] = {}
        path = tmp_path_factory.mktemp("check-mode") / "hosts.yml"
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        names = [provisioned, changed, fresh]
        before = {name: snapshot(name) for name in names}
        assert all(before[fresh][path] is None for path in MANAGED), before[fresh]
        # linear: the json callback files each result under the task that ran it
        env = dict(fleet["env"], ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_STRATEGY="linear")
        done = run(["ansible-playbook", "-i", str(path), "onekvm.fleet.provision", "--check", "--diff",
                    "-e", "fleet_fast_path=false"], env=env)
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        report = json.loads(done.stdout)
        per_host = {name: [] for name in names}
        for play in report["plays"]:
            for task in play["tasks"]:
                for host, result in task["hosts"].items():
                    if host in per_host and result.get("changed"):
                        per_host[host].extend(diffs(result))
        after = {name: snapshot(name) for name in names}
        roles = {"provisioned": provisioned, "changed": changed, "fresh": fresh}
        yield {"stats": report["stats"], "diffs": per_host, "before": before, "after": after, "names": roles}
    finally:
        containers.remove_boxes([fresh])


def test_check_mode_on_a_provisioned_box_reports_no_change(checked):
    name = checked["names"]["provisioned"]
    stats = checked["stats"][name]
    assert stats["changed"] == 0 and stats["failures"] == 0, stats
    assert stats["ok"] > 30, stats  # the role itself ran, in check mode
    assert checked["after"][name] == checked["before"][name]


def test_check_mode_shows_the_diff_of_a_changed_setting_and_changes_nothing(checked):
    name = checked["names"]["changed"]
    stats = checked["stats"][name]
    assert stats["changed"] > 0 and stats["failures"] == 0, stats
    gpio = [d for d in checked["diffs"][name] if d.get("after_header") == "/etc/kvmd/override.d/gpio.yaml"]
    assert gpio and "title: Machines" in gpio[0]["before"] and "title: Racks" in gpio[0]["after"], checked["diffs"][name]
    # nothing written, kvmd not restarted
    assert checked["after"][name] == checked["before"][name]


def test_check_mode_on_a_fresh_box_lists_every_file_and_writes_none(checked):
    name = checked["names"]["fresh"]
    stats = checked["stats"][name]
    assert stats["failures"] == 0 and stats["changed"] >= len(MANAGED), stats
    listed = {d.get("after_header") for d in checked["diffs"][name]}
    assert set(MANAGED) <= listed, sorted(set(MANAGED) - listed)
    assert checked["after"][name] == checked["before"][name]
