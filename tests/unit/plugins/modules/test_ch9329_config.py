# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ch9329_config against the simulated chip on a pseudo-terminal: idempotence, check and
diff mode, baud change, kvmd safety, invalid values, faults."""

from __future__ import annotations

import pytest

from ansible_collections.onekvm.fleet.plugins.modules import ch9329_config
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.ch9329_support import (  # noqa: F401  # pylint: disable=unused-import
    box_env, sim)
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.module_runner import run_module


def run(args, **kwargs):
    return run_module(ch9329_config.main, args, **kwargs)


def test_apply_then_idempotent(sim):
    args = {"port": sim.port, "vid": "0x1209", "pid": 0xC0DE, "packet_interval": 5,
            "usb_strings": {"manufacturer": "onekvm", "product": "fleet HID"}}
    first = run(args)
    assert not first.get("failed"), first
    assert first["changed"] and first["config"]["vid"] == "1209" and first["config"]["pid"] == "c0de"
    assert sim.chip.active[11:15] == bytes.fromhex("09 12 de c0")
    assert sim.chip.strings[0] == b"onekvm" and sim.chip.strings[1] == b"fleet HID"
    assert sim.chip.active[36] == 0x80 | 0x04 | 0x02
    second = run(args)
    assert not second.get("failed") and second["changed"] is False
    assert sim.counters["resets"] == 1


def test_check_and_diff_mode(sim):
    before = bytes(sim.chip.stored)
    result = run({"port": sim.port, "mode": "keyboard_mouse", "packet_interval": 7}, check_mode=True, diff=True)
    assert result["changed"] is True
    assert result["diff"]["before"]["packet_interval"] == 3 and result["diff"]["after"]["packet_interval"] == 7
    assert result["diff"]["before"]["mode"] == result["diff"]["after"]["mode"] == "keyboard_mouse"
    assert bytes(sim.chip.stored) == before and sim.counters["resets"] == 0


def test_no_diff_without_diff_mode(sim):
    assert "diff" not in run({"port": sim.port, "packet_interval": 3})


def test_baud_change_reconnects_and_warns(sim):
    result = run({"port": sim.port, "baudrate": 57600})
    assert not result.get("failed"), result
    assert result["changed"] and result["baudrate"] == 57600 and sim.chip.baudrate == 57600
    assert any("hid.speed must be 57600" in w for w in result["warnings"])
    again = run({"port": sim.port, "connect_baudrate": "auto", "baudrate": 57600})
    assert again["changed"] is False and again["baudrate"] == 57600


@pytest.mark.parametrize("args", [{"serial_mode": "ascii"}, {"mode": "keyboard"}, {"address": 3}])
def test_refuses_what_kvmd_cannot_drive_unless_forced(sim, args):
    result = run(dict(args, port=sim.port))
    assert result["failed"] and "would make kvmd lose control" in result["msg"] and "force: true" in result["msg"]
    assert sim.counters["frames"] == 0
    forced = run(dict(args, port=sim.port, force=True, connect_address=0))
    assert not forced.get("failed") and forced["changed"], forced


@pytest.mark.parametrize("args,words", [
    ({"baudrate": 4800}, "value of baudrate must be one of"),
    ({"vid": "0x12345"}, "VID 0x12345 is out of range"),
    ({"pid": "nope"}, "PID must be a 16-bit hex number"),
    ({"usb_strings": {"product": "p" * 30}}, "30 bytes; the CH9329 keeps at most 23"),
    ({"address": 255, "force": True}, "address must be 0-254"),
    ({"packet_interval": 70000}, "packet_interval must be 0-65535"),
])
def test_invalid_values_change_nothing(sim, args, words):
    result = run(dict(args, port=sim.port))
    assert result["failed"] and words in result["msg"], result
    assert sim.counters["frames"] == 0


@pytest.mark.parametrize("fault,words", [
    ({"error_status": 0xE5, "commands": [9]}, "refused SET_PARA_CFG: E5 bad parameter"),
    ({"never_ready": True}, "did not answer within 0.5 s after RESET"),
    ({"silent": True}, "no answer"),
])
def test_faults(sim, fault, words):
    sim.set_faults(**fault)
    result = run({"port": sim.port, "packet_interval": 9, "timeout": 0.3, "ready_timeout": 0.5})
    assert result["failed"] and words in result["msg"], result
