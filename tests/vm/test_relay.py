# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The relay on the simulated box: the board simulator sits behind the emulated FTDI
adapter at USB port 1-1.4 (QEMU chardev ``box.relay_socket``); the box command and the
module drive it through the guest's real ftdi_sio / xHCI stack."""

from __future__ import annotations

import time

import pytest

from ansible_collections.onekvm.fleet.tests.testbed.relay_sim import RelayBoard, SocketRelay
from ansible_collections.onekvm.fleet.tests.testbed.vm import wait_for

RELAY_PORT_PATH = "1-1.4"  # the relay's adapter; the CH9329's twin adapter sits at 1-1.1
ON_1, OFF_1 = bytes.fromhex("a00101a2"), bytes.fromhex("a00100a1")
# the emulated path (guest driver -> xHCI -> QEMU -> socket) under TCG adds jitter to each frame
WIDTH_TOLERANCE = 0.25


@pytest.fixture(scope="module")
def sim(box):
    with SocketRelay(box.relay_socket, RelayBoard(channels=8)) as relay:
        yield relay


@pytest.fixture
def board(sim):
    sim.board.clear()
    return sim.board


def quiet_bytes(board, wait: float = 1.5) -> bytes:
    time.sleep(wait)
    return board.raw_bytes()


def test_relay_tty_is_the_adapter_at_its_port_path(box):
    port = box.serial_by_path(RELAY_PORT_PATH)
    tty = box.run("basename $(readlink -f %s)" % port).stdout.strip()
    assert "/%s:1.0/" % RELAY_PORT_PATH in box.run("readlink -f /sys/class/tty/%s/device" % tty).stdout


def test_cli_pulse_reaches_the_board_with_the_right_width(box, board):
    port = box.serial_by_path(RELAY_PORT_PATH)
    out = box.cli("relay", "pulse", "--channel", "1", "--duration", "0.5", "--port", port,
                  "--state-file", "/run/onekvm/vm-test-cli.json")
    assert out["rc"] == 0 and out["frames"] == ["a0 01 01 a2", "a0 01 00 a1"]
    frames = board.wait_for_frames(2, timeout=30)
    assert [f.raw for f in frames] == [ON_1, OFF_1]
    width = board.pulses(1)[0][2]
    assert 0.5 - 0.05 <= width <= 0.5 + WIDTH_TOLERANCE, width
    assert abs(width - out["pulse_width"]) < WIDTH_TOLERANCE, (width, out["pulse_width"])
    assert board.rejected == []


def test_module_pulse_on_channel_two(box, board):
    port = box.serial_by_path(RELAY_PORT_PATH)
    args = {"port": port, "channels": 2, "channel": 2, "state": "pulse", "duration": 0.3,
            "state_file": "/run/onekvm/vm-test-mod.json"}
    result = box.ansible("onekvm.fleet.usb_relay", args)
    assert result.get("changed") is True and not result.get("failed"), result
    assert result["frames"] == ["a0 02 01 a3", "a0 02 00 a2"] and result["bytes_sent"] == 8
    frames = board.wait_for_frames(2, timeout=30)
    assert b"".join(f.raw for f in frames) == bytes.fromhex("a00201a3a00200a2")
    width = board.pulses(2)[0][2]
    assert 0.3 - 0.05 <= width <= 0.3 + WIDTH_TOLERANCE, width


def test_check_mode_and_bad_input_send_nothing(box, board):
    port = box.serial_by_path(RELAY_PORT_PATH)
    checked = box.ansible("onekvm.fleet.usb_relay", {"port": port, "state": "pulse"}, check_mode=True)
    assert checked["changed"] is True and checked["bytes_sent"] == 0, checked
    bad = box.ansible("onekvm.fleet.usb_relay", {"port": port, "state": "pulse", "duration": 0})
    assert bad.get("failed") and "duration must be a number from 0.05 to 10" in bad["msg"], bad  # _limits.LIMITS
    res = box.cli("relay", "pulse", "--channel", "0", "--port", port, check=False)
    assert res["rc"] == 2 and "channel must be between" in res["msg"]
    res = box.cli("relay", "pulse", "--port", "/dev/onekvm-nope", check=False)
    assert res["rc"] == 3
    assert quiet_bytes(board) == b""


def test_on_off_record_and_a_port_power_cycle_voids_it(box, board):
    port = box.serial_by_path(RELAY_PORT_PATH)
    box.run("rm -f /run/onekvm/relay-state.json")  # the default record
    args = {"port": port, "state": "on"}
    assert box.ansible("onekvm.fleet.usb_relay", args)["changed"] is True
    again = box.ansible("onekvm.fleet.usb_relay", args)
    assert again["changed"] is False and again["previous_state"] == "on", again
    assert quiet_bytes(board) == ON_1

    # a power cycle of the adapter's hub port re-enumerates it with a new device number:
    # the board (USB-powered) would have lost its state, so the record must not count
    before = box.run("cat /sys/bus/usb/devices/%s/devnum" % RELAY_PORT_PATH).stdout.strip()
    assert before
    box.run("echo 1 > /sys/bus/usb/devices/1-1:1.0/1-1-port4/disable && sleep 1 && "
            "echo 0 > /sys/bus/usb/devices/1-1:1.0/1-1-port4/disable")

    def devnum():
        return box.run("cat /sys/bus/usb/devices/%s/devnum" % RELAY_PORT_PATH, check=False).stdout.strip()
    after = wait_for(devnum, 60)
    assert after and after != before
    port = box.serial_by_path(RELAY_PORT_PATH)
    replugged = box.ansible("onekvm.fleet.usb_relay", {"port": port, "state": "on"})
    assert replugged["changed"] is True and replugged["previous_state"] == "unknown", replugged
    off = box.ansible("onekvm.fleet.usb_relay", {"port": port, "state": "off"})
    assert off["changed"] is True and off["previous_state"] == "on"
    assert quiet_bytes(board) == ON_1 + ON_1 + OFF_1
    assert board.states[1] is False
