# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reset methods, checks before acting and waiting for the device, on fake sysfs trees.

A fake tree cannot react like the kernel. Where a test needs that reaction (a device
leaving when its port is switched off, coming back when switched on) a small kernel
stand-in wraps ``_write_sysfs`` and still performs the real write; the hub descriptor,
which only a real hub answers over usbfs, is replaced where noted. The simulated box
(tests/vm/test_usb_reset.py) exercises the same paths against a real kernel.
"""

from __future__ import annotations

import os
import threading

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils import _usb
from ansible_collections.onekvm.fleet.plugins.module_utils import _usb_reset
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import (
    Busy,
    DeviceError,
    InvalidArgument,
    MissingDependency,
    PermissionDenied,
    Timeout,
)
from ansible_collections.onekvm.fleet.plugins.module_utils._lock import hardware_lock
from ansible_collections.onekvm.fleet.tests.unit.plugins.module_utils.fake_sysfs import onekvm_box


@pytest.fixture
def box(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEKVM_LOCK_PATH", str(tmp_path / "run" / "hardware.lock"))
    return onekvm_box(tmp_path / "tree")


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(_usb.os, "geteuid", lambda: 0)  # the unit tests may run unprivileged


@pytest.fixture
def writes(monkeypatch):
    """Record every sysfs write (and still perform it)."""
    log = []
    real = _usb_reset._write_sysfs

    def spy(path, value):
        log.append((path, value))
        real(path, value)
    monkeypatch.setattr(_usb_reset, "_write_sysfs", spy)
    return log


def device(fake, port):
    return _usb.read_device(port, fake.sysfs_root, fake.dev_root)


def reset(fake, port, method, **kwargs):
    kwargs.setdefault("timeout", 2)
    return _usb_reset.reset_device(device(fake, port), method=method, sysfs_root=fake.sysfs_root,
                                   dev_root=fake.dev_root, **kwargs)


def rel(fake, path):
    return os.path.relpath(path, fake.sysfs_root)


# ---------------------------------------------------------------- hub descriptors

def hub_descriptor(characteristics: int, desc_type: int = 0x29) -> bytes:
    return bytes([9, desc_type, 4, characteristics & 0xFF, characteristics >> 8, 50, 100, 0, 0xFF])


@pytest.mark.parametrize("characteristics, mode", [
    (0x0009, "individual"), (0x00A9, "individual"), (0x0000, "ganged"), (0x0008, "ganged"),
    (0x000A, "none"), (0x0003, "none")])
def test_hub_power_mode_from_w_hub_characteristics(characteristics, mode):
    assert _usb_reset.decode_hub_power_mode(hub_descriptor(characteristics)) == mode
    assert _usb_reset.decode_hub_power_mode(hub_descriptor(characteristics, 0x2A)) == mode


@pytest.mark.parametrize("raw", [b"", b"\x09\x29\x04", hub_descriptor(1, desc_type=0x01)])
def test_a_broken_hub_descriptor_is_a_device_error(raw):
    with pytest.raises(DeviceError):
        _usb_reset.decode_hub_power_mode(raw)


def test_ioctl_numbers_match_linux():
    assert _usb_reset.USBDEVFS_RESET == 0x5514
    if _usb_reset.struct.calcsize("P") == 8:
        assert _usb_reset.USBDEVFS_CONTROL == 0xC0185500
    else:
        assert _usb_reset.USBDEVFS_CONTROL == 0xC0105500


# ---------------------------------------------------------------- checks before acting

def test_not_root_is_refused_before_anything(box, monkeypatch, writes):
    monkeypatch.setattr(_usb.os, "geteuid", lambda: 1000)
    with pytest.raises(PermissionDenied) as info:
        reset(box, "1-1.2", "authorize")
    assert "root" in info.value.msg and "become" in info.value.msg
    assert writes == []


def test_root_hub_is_refused(box, as_root):
    with pytest.raises(InvalidArgument) as info:
        reset(box, "usb1", "ioctl")
    assert "root hub" in info.value.msg


def test_unknown_method_is_refused(box, as_root):
    with pytest.raises(InvalidArgument) as info:
        reset(box, "1-1.2", "kick")
    assert "ioctl, authorize, rebind, power_cycle" in info.value.msg


def test_negative_timeout_is_refused(box, as_root):
    with pytest.raises(InvalidArgument):
        reset(box, "1-1.2", "ioctl", timeout=-1)


def test_power_cycle_on_a_root_hub_port_is_refused(box, as_root):
    with pytest.raises(InvalidArgument) as info:
        reset(box, "1-3", "power_cycle")
    assert "root hub port (usb1)" in info.value.msg


def test_power_cycle_refused_behind_a_hub_without_power_switching(box, as_root, monkeypatch, writes):
    # edge: the hub class descriptor comes from a real hub over usbfs
    monkeypatch.setattr(_usb_reset, "read_hub_descriptor", lambda hub, dev_root: hub_descriptor(0x000A))
    with pytest.raises(InvalidArgument) as info:
        reset(box, "1-2.1", "power_cycle")
    msg = info.value.msg
    assert "hub 1-2 0409:55aa USB Hub reports no power switching" in msg
    assert info.value.details["hub_power_mode"] == "none"
    assert writes == []


def test_power_cycle_refused_on_ganged_hub(box, as_root, monkeypatch):
    monkeypatch.setattr(_usb_reset, "read_hub_descriptor", lambda hub, dev_root: hub_descriptor(0x0000))  # edge, see above
    with pytest.raises(InvalidArgument) as info:
        reset(box, "1-2.1", "power_cycle")
    assert "ganged power switching (all ports at once)" in info.value.msg


def test_power_cycle_needs_the_disable_file_of_linux_6(tmp_path, monkeypatch, as_root):
    monkeypatch.setenv("ONEKVM_LOCK_PATH", str(tmp_path / "hw.lock"))
    monkeypatch.setattr(_usb_reset, "read_hub_descriptor", lambda hub, dev_root: hub_descriptor(0x0009))  # edge
    fake = onekvm_box(tmp_path / "tree")
    os.unlink(os.path.join(fake.device_dir("1-1:1.0"), "1-1-port2", "disable"))
    with pytest.raises(MissingDependency) as info:
        reset(fake, "1-1.2", "power_cycle")
    assert "Linux 6.0 or newer" in info.value.msg and "1-1-port2/disable" in info.value.msg


def test_hub_descriptor_read_on_a_non_usbfs_file_is_a_device_error(box, as_root):
    with pytest.raises(DeviceError) as info:
        _usb_reset.hub_power_mode(device(box, "1-1"), box.dev_root)
    assert "hub descriptor of 1-1" in info.value.msg


def test_rebind_with_nothing_bound_is_refused(box, as_root):
    box.unbind("1-1.2:1.0")
    with pytest.raises(InvalidArgument) as info:
        reset(box, "1-1.2", "rebind")
    assert "nothing to rebind" in info.value.msg


def test_check_mode_discovers_but_does_not_touch(box, as_root, writes):
    report = reset(box, "1-1.2", "authorize", check_mode=True)
    assert report["before"]["port"] == "1-1.2" and report["after"] is None and not report["waited"]
    assert writes == []
    assert not os.path.exists(os.environ["ONEKVM_LOCK_PATH"])  # not even the lock was taken


# ---------------------------------------------------------------- ioctl

def test_ioctl_on_something_that_is_not_usbfs_is_a_device_error(box, as_root):
    with pytest.raises(DeviceError) as info:
        reset(box, "1-1.2", "ioctl")  # the fake usbfs node is a plain file: ENOTTY
    assert "not a usbfs device node" in info.value.msg


def test_ioctl_with_usbfs_node_gone_says_vanished(box, as_root):
    target = device(box, "1-1.2")
    os.unlink(target.usbfs)
    with pytest.raises(DeviceError) as info:
        _usb_reset.reset_device(target, sysfs_root=box.sysfs_root, dev_root=box.dev_root)
    assert "vanished" in info.value.msg


def test_ioctl_without_usbfs_at_all_names_it(box, as_root):
    import shutil

    shutil.rmtree(os.path.join(box.dev_root, "bus"))
    with pytest.raises(MissingDependency) as info:
        reset(box, "1-1.2", "ioctl")
    assert "usbfs" in info.value.msg


# ---------------------------------------------------------------- authorize and rebind

def test_authorize_writes_0_then_1_and_waits(box, as_root, writes):
    report = reset(box, "1-1.2", "authorize")
    assert [(rel(box, p), v) for p, v in writes] == [("bus/usb/devices/1-1.2/authorized", "0"),
                                                     ("bus/usb/devices/1-1.2/authorized", "1")]
    assert report["waited"] and report["after"]["authorized"] is True
    assert report["after"]["nodes"] == report["before"]["nodes"]
    assert report["elapsed"] >= report["reset_seconds"] >= 0


def test_rebind_unbinds_all_then_binds_all(box, as_root, writes):
    report = reset(box, "1-3", "rebind")
    assert [(rel(box, p), v) for p, v in writes] == [
        ("bus/usb/drivers/uvcvideo/unbind", "1-3:1.0"), ("bus/usb/drivers/uvcvideo/unbind", "1-3:1.1"),
        ("bus/usb/drivers/snd-usb-audio/unbind", "1-3:1.2"),
        ("bus/usb/drivers/uvcvideo/bind", "1-3:1.0"), ("bus/usb/drivers/uvcvideo/bind", "1-3:1.1"),
        ("bus/usb/drivers/snd-usb-audio/bind", "1-3:1.2")]
    assert report["after"]["drivers"] == ["snd-usb-audio", "uvcvideo"]


def test_rebind_failure_still_binds_back_what_was_unbound(box, as_root, writes):
    unbind = os.path.join(box.driver_dir("snd-usb-audio"), "unbind")
    os.unlink(unbind)
    os.mkdir(unbind)  # writing to it now fails like a refusing driver
    with pytest.raises(DeviceError) as info:
        reset(box, "1-3", "rebind")
    assert "snd-usb-audio/unbind" in info.value.msg
    binds = [v for p, v in writes if p.endswith("/bind")]
    assert binds == ["1-3:1.0", "1-3:1.1"]


def test_rebind_reports_interfaces_left_without_driver(box, as_root):
    bind = os.path.join(box.driver_dir("snd-usb-audio"), "bind")
    os.unlink(bind)
    os.mkdir(bind)
    with pytest.raises(DeviceError) as info:
        reset(box, "1-3", "rebind")
    assert "left without driver: 1-3:1.2 (snd-usb-audio" in info.value.msg


def test_sysfs_permission_denied_says_become(box, as_root, monkeypatch):
    def refuse(path, value):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(_usb_reset, "_write_sysfs", refuse)  # edge: the fake tree is writable by the test user
    with pytest.raises(PermissionDenied) as info:
        reset(box, "1-1.2", "authorize")
    assert "become" in info.value.msg


# ---------------------------------------------------------------- waiting

def test_timeout_names_what_is_missing(box, as_root, monkeypatch):
    before = device(box, "1-1.2")
    box.unbind("1-1.2:1.0")
    with pytest.raises(Timeout) as info:
        _usb_reset.wait_until_back(before, timeout=0.2, sysfs_root=box.sysfs_root, dev_root=box.dev_root)
    assert "interface 1-1.2:1.0 not bound to usbhid" in info.value.msg
    assert "within 0.2 s" in info.value.msg


def test_missing_after_reset_cases(box):
    before = device(box, "1-3")
    assert _usb_reset.missing_after_reset(before, None) == ["no device at port 1-3"]
    assert "instead of 534d:2109" in _usb_reset.missing_after_reset(before, device(box, "1-1.2"))[0]
    os.unlink(os.path.join(box.device_dir("1-3:1.0"), "class0", "video", "video0", "uevent"))
    assert _usb_reset.missing_after_reset(before, device(box, "1-3")) == [
        "device nodes: 3 of 4 back (%s)" % ", ".join(device(box, "1-3").nodes)]


def test_wait_polls_until_the_driver_is_back(box):
    before = device(box, "1-1.4")
    box.unbind("1-1.4:1.0")
    timer = threading.Timer(0.3, box.bind, args=("1-1.4:1.0", "ftdi_sio"))
    timer.start()
    try:
        after = _usb_reset.wait_until_back(before, timeout=5, sysfs_root=box.sysfs_root, dev_root=box.dev_root)
    finally:
        timer.join()
    assert after.drivers == ["ftdi_sio"]


# ---------------------------------------------------------------- power_cycle

class PortPowerKernel:
    """Kernel stand-in: switching a hub port off unplugs the device, on plugs it in again."""

    def __init__(self, fake, monkeypatch, comes_back=True, leaves=True):
        self.fake = fake
        self.comes_back = comes_back
        self.leaves = leaves
        self.writes = []
        self.real = _usb_reset._write_sysfs
        monkeypatch.setattr(_usb_reset, "_write_sysfs", self.write)
        monkeypatch.setattr(_usb_reset, "read_hub_descriptor", lambda hub, dev_root: hub_descriptor(0x0009))

    def write(self, path, value):
        self.writes.append((rel(self.fake, path), value))
        self.real(path, value)
        if path.endswith("1-1-port2/disable"):
            if value == "1" and self.leaves:
                self.fake.remove("1-1.2")
            elif value == "0" and self.comes_back:
                self.fake.add_device("1-1.2", 0x0627, 0x0001, serial="TWIN", product="QEMU USB Tablet", devnum=10,
                                     interfaces=[("usbhid", 3, ["hidraw0", "input/event5", "input/mouse0"])])


def test_power_cycle_switches_the_port_off_and_on_and_sees_a_new_address(box, as_root, monkeypatch):
    kernel = PortPowerKernel(box, monkeypatch)
    report = reset(box, "1-1.2", "power_cycle", power_off_time=0)
    assert kernel.writes == [("bus/usb/devices/1-1:1.0/1-1-port2/disable", "1"),
                             ("bus/usb/devices/1-1:1.0/1-1-port2/disable", "0")]
    assert (report["hub"], report["hub_power_mode"]) == ("1-1", "individual")
    assert (report["before"]["address"], report["after"]["address"]) == (4, 10)
    assert os.path.join(box.dev_root, "input/event5") in report["after"]["nodes"]


def test_power_cycle_device_not_back_is_a_timeout_and_the_port_is_on_again(box, as_root, monkeypatch):
    kernel = PortPowerKernel(box, monkeypatch, comes_back=False)
    with pytest.raises(Timeout) as info:
        reset(box, "1-1.2", "power_cycle", power_off_time=0, timeout=0.3)
    assert "no device at port 1-1.2" in info.value.msg
    assert kernel.writes[-1][1] == "0"


def test_power_cycle_on_a_hub_that_only_pretends(box, as_root, monkeypatch):
    monkeypatch.setattr(_usb_reset, "POWER_OFF_DISCONNECT_TIMEOUT", 0.2)
    kernel = PortPowerKernel(box, monkeypatch, leaves=False)
    with pytest.raises(DeviceError) as info:
        reset(box, "1-1.2", "power_cycle", power_off_time=0)
    assert "did not disconnect" in info.value.msg
    assert kernel.writes[-1] == ("bus/usb/devices/1-1:1.0/1-1-port2/disable", "0")  # never left off


# ---------------------------------------------------------------- lock and races

def test_a_held_lock_makes_the_reset_busy_and_touches_nothing(box, as_root, writes):
    with hardware_lock(timeout=1):
        with pytest.raises(Busy):
            reset(box, "1-1.2", "authorize", lock_timeout=0.1)
    assert writes == []


def test_device_gone_before_the_reset(box, as_root, writes):
    target = device(box, "1-1.2")
    box.remove("1-1.2")
    with pytest.raises(DeviceError) as info:
        _usb_reset.reset_device(target, method="authorize", sysfs_root=box.sysfs_root, dev_root=box.dev_root)
    assert "vanished before the reset" in info.value.msg and "now: empty" in info.value.msg
    assert writes == []


def test_reset_devices_names_the_ones_already_done(box, as_root):
    twins = [device(box, "1-1.2"), device(box, "1-1.3")]
    bad = os.path.join(box.device_dir("1-1.3"), "authorized")
    os.unlink(bad)
    os.mkdir(bad)
    with pytest.raises(DeviceError) as info:
        _usb_reset.reset_devices(twins, method="authorize", timeout=1, sysfs_root=box.sysfs_root, dev_root=box.dev_root)
    assert info.value.details["reset_done"] == ["1-1.2"]
    assert "(already reset: 1-1.2)" in info.value.msg
