# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The box command ``onekvm usb-list`` / ``usb-reset`` run as a process, on a fake sysfs tree."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.onekvm.fleet.tests.support.boxpkg import run_cli
from ansible_collections.onekvm.fleet.tests.unit.plugins.module_utils.fake_sysfs import onekvm_box


@pytest.fixture
def box(tmp_path):
    return onekvm_box(tmp_path / "tree")


def cli(box, tmp_path, *args):
    roots = ["--sysfs-root", box.sysfs_root, "--dev-root", box.dev_root]
    return run_cli(*args, *roots, env={"ONEKVM_LOCK_PATH": str(tmp_path / "hardware.lock")}, as_root=True)


def test_usb_list_json(box, tmp_path):
    res = cli(box, tmp_path, "--json", "usb-list", "0403:6001")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["count"] == 2 and [d["port"] for d in data["devices"]] == ["1-1.1", "1-1.4"]


def test_usb_list_text_is_a_table(box, tmp_path):
    res = cli(box, tmp_path, "usb-list", "--port", "1-3")
    assert res.returncode == 0
    assert res.stdout.startswith("1-3        001/009 534d:2109 480")
    assert os.path.join(box.dev_root, "video0") in res.stdout


def test_usb_reset_authorize_text_and_json(box, tmp_path):
    res = cli(box, tmp_path, "usb-reset", "0403:6001", "--port", "1-1.1", "--method", "authorize")
    assert res.returncode == 0, res.stderr
    assert "1-1.1 0403:6001: reset with authorize, back in" in res.stdout
    res = cli(box, tmp_path, "--json", "usb-reset", "--port", "1-1.1", "--method", "rebind", "--no-wait")
    data = json.loads(res.stdout)
    assert data["changed"] and data["devices"][0]["after"] is None


def test_usb_reset_dry_run(box, tmp_path):
    res = cli(box, tmp_path, "--json", "usb-reset", "0627:0001", "--all", "--dry-run", "--method", "authorize")
    data = json.loads(res.stdout)
    assert res.returncode == 0 and data["changed"] is False and len(data["devices"]) == 3


@pytest.mark.parametrize("args, code, words", [
    (["usb-reset", "xyz"], 2, "id must be VENDOR:PRODUCT"),
    (["usb-reset"], 2, "say which device to reset"),
    (["usb-reset", "0627:0001"], 3, "3 USB devices match"),
    (["usb-reset", "dead:beef"], 3, "present:"),
    (["usb-reset", "534d:2109", "--method", "power_cycle"], 2, "root hub port"),
    (["usb-reset", "534d:2109"], 8, "not a usbfs device node"),
])
def test_usb_reset_errors_have_stable_exit_codes(box, tmp_path, args, code, words):
    res = cli(box, tmp_path, *args)
    assert res.returncode == code, (res.stdout, res.stderr)
    assert words in res.stderr and "Traceback" not in res.stderr


def test_usb_reset_error_as_json(box, tmp_path):
    res = cli(box, tmp_path, "--json", "usb-reset", "0627:0001")
    data = json.loads(res.stdout)
    assert res.returncode == 3 and data["failed"] and data["exit_code"] == 3 and len(data["matches"]) == 3


def test_unknown_method_is_a_usage_error(box, tmp_path):
    res = cli(box, tmp_path, "usb-reset", "534d:2109", "--method", "kick")
    assert res.returncode == 2 and "invalid choice" in res.stderr
