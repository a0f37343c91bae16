# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""usb_relay against the simulated LCUS board on a pseudo-terminal (no mocks)."""

from __future__ import annotations

import os
import time

import pytest
from ansible.module_utils.common.warnings import get_warning_messages

from ansible_collections.onekvm.fleet.plugins.modules import usb_relay
from ansible_collections.onekvm.fleet.tests.testbed.relay_sim import PtyRelay, RelayBoard
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.module_runner import run_module


@pytest.fixture
def relay(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEKVM_LOCK_PATH", str(tmp_path / "hardware.lock"))
    with PtyRelay(RelayBoard(channels=4)) as sim:
        yield sim


@pytest.fixture
def state_file(tmp_path):
    return str(tmp_path / "relay-state.json")


def quiet_bytes(sim, wait: float = 0.3) -> bytes:
    time.sleep(wait)
    return sim.board.raw_bytes()


def test_pulse_sends_exact_frames_with_the_right_width(relay, state_file):
    result = run_module(usb_relay.main, dict(port=relay.port, state="pulse", duration=0.25, state_file=state_file))
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert result["frames"] == ["a0 01 01 a2", "a0 01 00 a1"] and result["bytes_sent"] == 8
    assert result["duration"] == 0.25 and result["elapsed"] >= 0.25
    frames = relay.board.wait_for_frames(2)
    assert b"".join(f.raw for f in frames) == bytes.fromhex("a00101a2a00100a1")
    # the module waits at least the duration between its two writes (its own clock); the board
    # sees the two frames as its reader thread gets them, which a loaded host may delay by tens of
    # milliseconds: its width is bounded loosely (a missing wait or a wrong unit is far outside)
    assert result["pulse_width"] >= 0.25, result
    width = relay.board.pulses(1)[0][2]
    assert 0.2 <= width <= result["pulse_width"] + 0.5, (width, result["pulse_width"])
    assert relay.board.rejected == []


def test_default_pulse_is_half_a_second(relay, state_file):
    result = run_module(usb_relay.main, dict(port=relay.port, state="pulse", state_file=state_file))
    assert result["duration"] == 0.5 and result["pulse_width"] >= 0.5, result
    relay.board.wait_for_frames(2)
    width = relay.board.pulses(1)[0][2]
    assert 0.45 <= width <= result["pulse_width"] + 0.5, (width, result["pulse_width"])


def test_on_off_report_changed_from_the_record(relay, state_file):
    args = dict(port=relay.port, channels=4, channel=3, state_file=state_file)
    first = run_module(usb_relay.main, dict(args, state="on"))
    assert first["changed"] and first["previous_state"] == "unknown"
    second = run_module(usb_relay.main, dict(args, state="on"))
    assert second["changed"] is False and second["bytes_sent"] == 0 and second["previous_state"] == "on"
    check_off = run_module(usb_relay.main, dict(args, state="off"), check_mode=True)
    assert check_off["changed"] and check_off["frames"] == ["a0 03 00 a3"] and check_off["bytes_sent"] == 0
    off = run_module(usb_relay.main, dict(args, state="off"))
    assert off["changed"] and off["previous_state"] == "on"
    assert quiet_bytes(relay) == bytes.fromhex("a00301a4a00300a3")
    assert relay.board.snapshot()["states"]["3"] == "off"


def test_check_mode_sends_no_bytes(relay, state_file):
    for state in ("on", "off", "pulse"):
        result = run_module(usb_relay.main, dict(port=relay.port, state=state, state_file=state_file), check_mode=True)
        assert result["changed"] is True and result["bytes_sent"] == 0 and "pulse_width" not in result
    assert quiet_bytes(relay) == b""
    assert not os.path.exists(state_file)


@pytest.mark.parametrize("args, words", [
    (dict(channel=0), "channel must be between 1 and 1"),
    (dict(channel=5, channels=4), "channel must be between 1 and 4"),
    (dict(channel=2), "set channels"),
    (dict(duration=0), "duration must be a number from 0.05 to 10"),
    (dict(duration=-0.5), "duration must be a number from"),
    (dict(duration=10.5), "duration must be a number from"),
    (dict(state="on", duration=1), "pulse only"),
    (dict(state="toggle"), "value of state must be one of"),
    (dict(channels=3), "value of channels must be one of"),
    (dict(channel="one"), "channel"),
    (dict(port="/nonexistent/ttyUSB7"), "does not exist"),
    (dict(port="/dev/null"), "not a tty"),
])
def test_bad_input_fails_clearly_and_sends_nothing(relay, state_file, args, words):
    full = dict(port=relay.port, state="pulse", state_file=state_file)
    full.update(args)
    result = run_module(usb_relay.main, full)
    assert result.get("failed") is True, result
    assert words in result["msg"]
    assert "Traceback" not in result["msg"]
    assert quiet_bytes(relay, 0.1) == b""
    assert not os.path.exists(state_file)


def test_busy_port_fails_and_sends_nothing(relay, state_file):
    import serial  # pyserial holds the port exclusively, as another tool would

    holder = serial.Serial(relay.port, 9600, exclusive=True)
    try:
        result = run_module(usb_relay.main, dict(port=relay.port, state="pulse", state_file=state_file))
    finally:
        holder.close()
    assert result["failed"] and result["error"] == "Busy" and "exclusive use" in result["msg"]
    assert quiet_bytes(relay, 0.1) == b""


def test_corrupt_record_warns_and_sends(relay, state_file):
    with open(state_file, "w") as f:
        f.write("garbage")
    result = run_module(usb_relay.main, dict(port=relay.port, state="off", state_file=state_file))
    assert result["changed"] and result["previous_state"] == "unknown"
    # module.warn() keeps warnings in ansible's process-wide list (returned by the real exit_json)
    assert any("unreadable" in str(w) and state_file in str(w) for w in get_warning_messages())
    assert quiet_bytes(relay) == bytes.fromhex("a00100a1")


def test_empty_state_file_disables_the_record(relay):
    for dummy in range(2):
        result = run_module(usb_relay.main, dict(port=relay.port, state="on", state_file=""))
        assert result["changed"] and result["state_file"] is None
    assert quiet_bytes(relay) == bytes.fromhex("a00101a2") * 2


def test_the_serial_port_is_named_so_and_port_stays_its_alias(relay, state_file):
    """usb_relay takes a device node: option serial_port, the older name port as its alias."""
    by_name = run_module(usb_relay.main, dict(serial_port=relay.port, state="on", state_file=state_file))
    by_alias = run_module(usb_relay.main, dict(port=relay.port, state="on", state_file=state_file))
    assert by_name["changed"] and not by_alias["changed"], (by_name, by_alias)  # the same relay, the same record
    assert by_name["port"] == by_alias["port"] == relay.port
