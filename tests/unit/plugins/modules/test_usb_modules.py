# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The usb_reset and usb_info modules end to end (in-process) on a fake sysfs tree.

The modules read the real /sys and /dev; here their two core entry points are pointed at
the fake tree with functools.partial, nothing else is replaced.
"""

from __future__ import annotations

import functools
import os

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils import _usb
from ansible_collections.onekvm.fleet.plugins.module_utils import _usb_reset
from ansible_collections.onekvm.fleet.plugins.modules import usb_info, usb_reset
from ansible_collections.onekvm.fleet.tests.unit.plugins.module_utils.fake_sysfs import onekvm_box
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.module_runner import run_module


@pytest.fixture
def box(tmp_path, monkeypatch):
    fake = onekvm_box(tmp_path / "tree")
    monkeypatch.setenv("ONEKVM_LOCK_PATH", str(tmp_path / "hardware.lock"))
    monkeypatch.setattr(_usb.os, "geteuid", lambda: 0)  # the unit tests may run unprivileged
    roots = dict(sysfs_root=fake.sysfs_root, dev_root=fake.dev_root)
    for module in (usb_reset, usb_info):
        monkeypatch.setattr(module, "find_devices", functools.partial(_usb.find_devices, **roots))
    monkeypatch.setattr(usb_reset, "reset_devices", functools.partial(_usb_reset.reset_devices, **roots))
    return fake


def test_authorize_one_twin_by_port(box):
    result = run_module(usb_reset.main, {"id": "0627:0001", "port": "1-1.3", "method": "authorize", "timeout": 5})
    assert result["changed"] is True and not result.get("failed")
    assert result["method"] == "authorize" and result["elapsed"] >= 0
    [dev] = result["devices"]
    assert dev["port"] == "1-1.3" and dev["waited"] is True
    assert dev["before"]["nodes"] == dev["after"]["nodes"] == [
        os.path.join(box.dev_root, n) for n in ("hidraw1", "input/event3", "input/mouse1")]
    assert dev["after"]["drivers"] == ["usbhid"]


def test_all_resets_every_twin(box):
    result = run_module(usb_reset.main, {"id": "0627:0001", "serial": "TWIN", "all": True, "method": "rebind"})
    assert [d["port"] for d in result["devices"]] == ["1-1.2", "1-1.3"]


def test_no_wait_reports_no_after(box):
    result = run_module(usb_reset.main, {"port": "1-1.4", "method": "authorize", "wait": False})
    assert result["devices"][0]["after"] is None and result["devices"][0]["waited"] is False


def test_check_mode_changes_nothing_but_says_changed(box):
    before = box.read("bus/usb/devices/1-1.2/authorized")
    result = run_module(usb_reset.main, {"id": "0627:0001", "port": "1-1.2", "method": "authorize"}, check_mode=True)
    assert result["changed"] is True and result["devices"][0]["after"] is None
    assert box.read("bus/usb/devices/1-1.2/authorized") == before
    assert not os.path.exists(os.environ["ONEKVM_LOCK_PATH"])


def test_check_mode_still_fails_where_the_real_run_would(box):
    result = run_module(usb_reset.main, {"id": "534d:2109", "method": "power_cycle"}, check_mode=True)
    assert result["failed"] and "root hub port" in result["msg"]


@pytest.mark.parametrize("args, error, words", [
    ({"id": "xyz"}, "InvalidArgument", "id must be VENDOR:PRODUCT"),
    ({"id": "1234"}, "InvalidArgument", "got '1234'"),
    ({"id": "12345:1"}, "InvalidArgument", "534d:2109"),
    ({"id": "dead:beef"}, "NotFound", "present: 1-1 0409:55aa"),
    ({"id": "0627:0001"}, "Ambiguous", "3 USB devices match"),
    ({"id": "0627:0001", "port": "1-1.2", "method": "rebind", "timeout": -1}, "InvalidArgument", "timeout must be a number from 0 to 600"),
    ({"port": "usb1"}, "InvalidArgument", "port must be a USB port path"),
])
def test_bad_input_is_a_clear_failure(box, args, error, words):
    result = run_module(usb_reset.main, args)
    assert result["failed"] and words in result["msg"]
    assert result.get("error") == error
    assert "Traceback" not in result["msg"]


def test_ansible_level_validation(box):
    assert "one of the following is required" in run_module(usb_reset.main, {"method": "ioctl"})["msg"]
    assert "mutually exclusive" in run_module(usb_reset.main, {"id": "534d:2109", "vendor": "534d",
                                                               "product": "2109"})["msg"]
    assert "value of method must be one of" in run_module(usb_reset.main, {"id": "534d:2109", "method": "x"})["msg"]


def test_not_root_fails_with_become_hint(box, monkeypatch):
    monkeypatch.setattr(_usb.os, "geteuid", lambda: 1000)
    result = run_module(usb_reset.main, {"id": "534d:2109"})
    assert result["failed"] and result["error"] == "PermissionDenied" and "become" in result["msg"]


def test_timeout_failure_names_what_is_missing(box, monkeypatch):
    # the kernel would bind the driver again; this fake does not, so the wait times out
    real = _usb_reset._write_sysfs

    def unbind_for_good(path, value):
        real(path, value)
        if path.endswith("authorized") and value == "1":
            box.unbind("1-1.4:1.0")
    monkeypatch.setattr(_usb_reset, "_write_sysfs", unbind_for_good)
    result = run_module(usb_reset.main, {"port": "1-1.4", "method": "authorize", "timeout": 0.2})
    assert result["failed"] and result["error"] == "Timeout"
    assert result["missing"] == ["interface 1-1.4:1.0 not bound to ftdi_sio"]


def test_ioctl_reaches_the_usbfs_node(box):
    result = run_module(usb_reset.main, {"id": "534d:2109"})
    # the fake node is a plain file, so the kernel's answer is ENOTTY: proof the ioctl was issued there
    assert result["failed"] and "bus/usb/001/009 is not a usbfs device node" in result["msg"]


# ---------------------------------------------------------------- usb_info

def test_info_lists_everything_by_default(box):
    result = run_module(usb_info.main, {})
    assert result["changed"] is False
    assert len(result["devices"]) == 9


def test_info_selects_and_hides_hubs(box):
    assert [d["port"] for d in run_module(usb_info.main, {"id": "0627:0001"})["devices"]] == ["1-1.2", "1-1.3", "1-2.1"]
    ports = [d["port"] for d in run_module(usb_info.main, {"include_hubs": False})["devices"]]
    assert ports == ["1-1.1", "1-1.2", "1-1.3", "1-1.4", "1-2.1", "1-3"]


def test_info_nothing_matching_is_an_empty_list(box):
    assert run_module(usb_info.main, {"id": "dead:beef"})["devices"] == []


def test_info_bad_id_fails_clearly(box):
    result = run_module(usb_info.main, {"id": "12345:1"})
    assert result["failed"] and result["error"] == "InvalidArgument"


def test_the_usb_port_path_is_named_so_and_port_stays_its_alias(box):
    """usb_* take a USB topology path: option port_path, the older name port as its alias."""
    by_name = run_module(usb_info.main, {"port_path": "1-1.3"})
    by_alias = run_module(usb_info.main, {"port": "1-1.3"})
    assert [d["port"] for d in by_name["devices"]] == ["1-1.3"] == [d["port"] for d in by_alias["devices"]]
    reset = run_module(usb_reset.main, {"port_path": "1-1.4", "method": "authorize", "wait": False})
    assert not reset.get("failed"), reset
    assert [d["port"] for d in reset["devices"]] == ["1-1.4"]
    assert run_module(usb_reset.main, {"method": "authorize"})["failed"]  # still one selector required
