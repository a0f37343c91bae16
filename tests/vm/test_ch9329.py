# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CH9329 on the simulated box: the chip simulator sits behind the emulated FTDI
adapter at USB port 1-1.1 (QEMU chardev ``box.ch9329_socket``); the modules and the box
command reach it through the guest's real ftdi_sio / xHCI stack."""

from __future__ import annotations

import pytest

from ansible_collections.onekvm.fleet.tests.testbed.ch9329_sim import Chip, Simulator
from ansible_collections.onekvm.fleet.tests.testbed.vm import wait_for

CH9329_PORT_PATH = "1-1.1"
RESET_FRAME = "57 ab 00 0f 00 11"


@pytest.fixture(scope="module")
def chip_sim(box):
    with Simulator.on_socket(box.ch9329_socket, chip=Chip(reset_time=0.5)) as simulator:
        yield simulator


@pytest.fixture
def sim(chip_sim):
    chip_sim.clear_faults()
    return chip_sim


def resets_seen(sim) -> int:
    return sum(1 for entry in sim.log if entry[1] == RESET_FRAME)


def kvmd_run(box) -> str:
    """kvmd.service's state and the id of its current run (a new one on every start)."""
    return box.run("systemctl show --property=ActiveState --property=InvocationID kvmd.service").stdout.strip()


def kvmd_holds(box, port: str) -> bool:
    """Whether a process in kvmd.service's cgroup has ``port`` open (read with systemd and /proc)."""
    out = box.run("cg=$(systemctl show --property=ControlGroup --value kvmd.service); dev=$(readlink -f %s); "
                  "for p in $(cat /sys/fs/cgroup$cg/cgroup.procs 2>/dev/null); do ls -l /proc/$p/fd 2>/dev/null; done "
                  "| grep -c -- \"-> $dev\\$\" || true" % port).stdout.strip()
    return out not in ("", "0")


def test_info_through_the_module(box, sim):
    result = box.ansible("onekvm.fleet.ch9329_info", {"port": box.serial_by_path(CH9329_PORT_PATH), "pause_kvmd": True})
    assert not result.get("failed"), result
    assert result["read"] and result["info"]["version"] == "V1.0" and result["config"]["vid"] == "1a86"
    assert result["config"]["baudrate"] == 9600 and "ansible_facts" not in result
    assert result["kvmd_paused"] == result["kvmd_holding"]  # paused only if a kvmd process holds the port
    assert "ActiveState=active" in kvmd_run(box)


def test_reads_and_checks_never_stop_kvmd(box, sim):
    """ch9329_info (default), check mode of ch9329_reset / ch9329_config, ch9329-reset --check
    and a port that is no serial tty leave kvmd's run alone (real systemd on the box)."""
    port = box.serial_by_path(CH9329_PORT_PATH)
    before = kvmd_run(box)
    assert "ActiveState=active" in before
    holds = kvmd_holds(box, port)
    info = box.ansible("onekvm.fleet.ch9329_info", {"port": port})
    assert not info.get("failed") and info["read"] is (not holds), info
    assert info["kvmd_paused"] == []
    reset = box.ansible("onekvm.fleet.ch9329_reset", {"port": port}, check_mode=True)
    assert not reset.get("failed") and reset["attempts"] == 0 and reset["probed"] is (not holds), reset
    config = box.ansible("onekvm.fleet.ch9329_config", {"port": port, "packet_interval": 9}, check_mode=True)
    assert not config.get("failed") and config["compared"] is (not holds), config
    assert box.cli("ch9329-reset", "--port", port, "--check")["kvmd_paused"] == []
    null = box.ansible("onekvm.fleet.ch9329_info", {"port": "/dev/null", "pause_kvmd": True})
    assert null["failed"] and "not a tty" in null["msg"], null
    assert kvmd_run(box) == before


def test_config_change_on_a_chip_that_follows_the_document(box, sim):
    """The simulator refuses the pin-set 80 80 in SET_PARA_CFG, as WCH documents: the module
    writes the modes without bit 7, reads the change back and is idempotent."""
    port = box.serial_by_path(CH9329_PORT_PATH)
    first = box.ansible("onekvm.fleet.ch9329_config", {"port": port, "packet_interval": 5})
    assert not first.get("failed") and first["changed"], first
    assert sim.chip.active[9:11] == b"\x00\x05" and sim.chip.active[:2] == b"\x00\x00"
    again = box.ansible("onekvm.fleet.ch9329_config", {"port": port, "packet_interval": 5})
    assert not again.get("failed") and again["changed"] is False, again
    back = box.ansible("onekvm.fleet.ch9329_config", {"port": port, "packet_interval": 3})
    assert not back.get("failed") and back["changed"], back


def test_chip_at_another_address_found_by_the_box_command(box, sim):
    port = box.serial_by_path(CH9329_PORT_PATH)
    sim.chip.stored[2] = 0x05
    sim.chip.active = bytes(sim.chip.stored)
    try:
        out = box.cli("ch9329-info", "--port", port, "--address", "auto", "--no-strings", "--pause-kvmd")
        assert out["address"] == 5 and out["config"]["address"] == 5, out
        refused = box.cli("ch9329-reset", "--port", port, "--address", "255", check=False)
        assert refused["rc"] == 2 and "broadcast address" in refused["msg"], refused
    finally:
        sim.chip.stored[2] = 0x00
        sim.chip.active = bytes(sim.chip.stored)


def test_reset_through_the_module_and_the_box_command(box, sim):
    port = box.serial_by_path(CH9329_PORT_PATH)
    before = resets_seen(sim)
    result = box.ansible("onekvm.fleet.ch9329_reset", {"port": port})
    assert not result.get("failed"), result
    assert result["changed"] and result["reply"] == "57 ab 00 8f 01 00 92"
    assert result["ready_after"] >= 0.5 and result["info"]["usb_enumerated"]
    assert result["kvmd_paused"] == result["kvmd_holding"] and "ActiveState=active" in kvmd_run(box)
    out = box.cli("ch9329-reset", "--port", port)
    assert out["status"] == "success" and out["ready_after"] >= 0.5
    assert resets_seen(sim) == before + 2


def test_check_mode_sends_no_reset(box, sim):
    before = resets_seen(sim)
    result = box.ansible("onekvm.fleet.ch9329_reset", {"port": box.serial_by_path(CH9329_PORT_PATH)}, check_mode=True)
    assert not result.get("failed") and result["changed"] and result["attempts"] == 0, result
    assert resets_seen(sim) == before


def test_silent_chip_is_a_clear_error_on_the_box(box, sim):
    sim.set_faults(silent=True)
    out = box.cli("ch9329-reset", "--port", box.serial_by_path(CH9329_PORT_PATH), "--timeout", "0.5", "--retries", "0",
                  check=False)
    assert out["rc"] == 5 and "no answer from the CH9329" in out["msg"]


def test_usb_reset_of_the_adapter_then_chip_reset(box, sim):
    """The seed note's order: reset the USB-serial adapter, then the chip behind it."""
    mark = box.log_mark()
    usb = box.cli("usb-reset", "0403:6001", "--port", CH9329_PORT_PATH, check=False)
    assert usb["rc"] == 0, usb
    assert "reset full-speed USB device" in box.kernel_log_since(mark)
    port = box.serial_by_path(CH9329_PORT_PATH)  # ftdi_sio detached and re-attached the tty
    before = resets_seen(sim)
    result = wait_for(lambda: _reset_ok(box, port), 30, interval=1)
    assert result and result["reply"] == "57 ab 00 8f 01 00 92", result
    assert resets_seen(sim) >= before + 1


def _reset_ok(box, port):
    result = box.ansible("onekvm.fleet.ch9329_reset", {"port": port})
    return result if not result.get("failed") else None


@pytest.fixture
def kvmd_on_the_chip(box):
    """kvmd's HID device (/dev/kvmd-hid, kvmd's ch9329 default) pointed at the chip's adapter,
    so that the box's kvmd holds the port and polls it, as on a real box."""
    port = box.serial_by_path(CH9329_PORT_PATH)
    existed = box.run("test -e /dev/kvmd-hid", check=False).returncode == 0
    if not existed:
        box.run("ln -s $(readlink -f %s) /dev/kvmd-hid" % port)
    try:
        if not wait_for(lambda: kvmd_holds(box, port), 30, interval=1):
            pytest.skip("this box's kvmd stand-in does not open kvmd.hid.device")
        yield port
    finally:
        if not existed:
            box.run("rm -f /dev/kvmd-hid && systemctl restart kvmd.service", check=False)


def test_kvmd_holding_the_port_is_paused_only_for_actions(box, sim, kvmd_on_the_chip):
    port = kvmd_on_the_chip
    before = kvmd_run(box)
    info = box.ansible("onekvm.fleet.ch9329_info", {"port": port})
    assert not info.get("failed") and info["read"] is False and info["kvmd_holding"] == ["kvmd.service"], info
    assert "pause_kvmd: true" in info["warnings"][0]
    check = box.ansible("onekvm.fleet.ch9329_reset", {"port": port}, check_mode=True)
    assert check["probed"] is False and check["kvmd_paused"] == [], check
    busy = box.cli("ch9329-info", "--port", port, check=False)
    assert busy["rc"] == 4 and "--pause-kvmd" in busy["msg"], busy
    assert kvmd_run(box) == before  # the same run of kvmd: nothing stopped it
    resets = resets_seen(sim)
    reset = box.ansible("onekvm.fleet.ch9329_reset", {"port": port})
    assert not reset.get("failed") and reset["kvmd_paused"] == ["kvmd.service"], reset
    assert "kvmd.service paused for it and started again" in reset["msg"]
    assert resets_seen(sim) == resets + 1
    after = kvmd_run(box)
    assert "ActiveState=active" in after and after != before  # stopped for the reset, started again
    assert wait_for(lambda: kvmd_holds(box, port), 30, interval=1)  # and polling the chip again
