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
    # a factory chip reads 80 80 (modes set by pins); the simulator refuses them in SET_PARA_CFG as
    # WCH's document does, so this passes only if the module writes 00 00
    args = {"port": sim.port, "vid": "0x1209", "pid": 0xC0DE, "packet_interval": 5,
            "usb_strings": {"manufacturer": "onekvm", "product": "fleet HID"}}
    first = run(args)
    assert not first.get("failed"), first
    assert first["changed"] and first["config"]["vid"] == "1209" and first["config"]["pid"] == "c0de"
    assert sim.chip.active[11:15] == bytes.fromhex("09 12 de c0")
    assert sim.chip.strings[0] == b"onekvm" and sim.chip.strings[1] == b"fleet HID"
    assert sim.chip.active[36] == 0x80 | 0x04 | 0x02
    assert sim.chip.active[:2] == b"\x00\x00"  # the same modes, as set by software
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
    ({"address": 255, "force": True}, "broadcast address"),
    ({"connect_address": 255}, "broadcast address"),
    ({"ready_timeout": 0}, "ready_timeout must be a number from 0.1 to 120"),
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


def test_chip_whose_pins_set_the_modes(sim):
    """GET_PARA_CFG keeps reporting bit 7 (pins) whatever is written: the read-back and the
    comparison ignore it, so the change is verified and a second run changes nothing."""
    sim.chip.mode_pins = True
    first = run({"port": sim.port, "packet_interval": 6})
    assert not first.get("failed") and first["changed"], first
    assert first["config"]["packet_interval"] == 6 and sim.chip.stored[:2] == b"\x00\x00"
    again = run({"port": sim.port, "packet_interval": 6, "mode": "keyboard_mouse", "serial_mode": "protocol"})
    assert not again.get("failed") and again["changed"] is False, again
    assert sim.counters["resets"] == 1


def test_chip_that_applies_settings_only_at_power_on_is_reported(sim):
    """WCH: settings are "enabled at the next power-on"; a chip that loses them at RESET
    fails the read-back instead of being reported as configured."""
    sim.chip.volatile_settings = True
    result = run({"port": sim.port, "packet_interval": 8})
    assert result["failed"] and "did not keep the new config after RESET" in result["msg"], result
    assert "power-cycle the chip" in result["msg"] and result["written"] != result["read"]


def test_longer_config_reply_is_applied_with_50_bytes(sim):
    sim.chip.config_reply_size = 72
    result = run({"port": sim.port, "packet_interval": 4})
    assert not result.get("failed") and result["changed"], result
    assert sim.chip.active[9:11] == b"\x00\x04" and len(sim.chip.stored) == 50
    assert run({"port": sim.port, "packet_interval": 4})["changed"] is False


def test_check_mode_never_touches_kvmd(sim, box_env):
    systemd = box_env["systemd"]
    systemd.add_unit_holding("kvmd.service", sim.port)
    result = run({"port": sim.port, "packet_interval": 7}, check_mode=True, diff=True)
    assert not result.get("failed") and result["changed"] is True and result["compared"] is False, result
    assert "was not read nor compared" in result["warnings"][0] and result["kvmd_holding"] == ["kvmd.service"]
    assert systemd.calls == [] and sim.counters["frames"] == 0


def test_change_pauses_kvmd_only_while_it_holds_the_port(sim, box_env):
    systemd = box_env["systemd"]
    systemd.set_unit("kvmd.service", active=True, pid=1)  # active, but none of its processes holds the port
    assert run({"port": sim.port, "packet_interval": 5})["kvmd_paused"] == []
    assert systemd.calls == []
    systemd.add_unit_holding("kvmd.service", sim.port)
    result = run({"port": sim.port, "packet_interval": 6})
    assert result["changed"] and result["kvmd_paused"] == ["kvmd.service"], result
    assert "kvmd.service paused for it and started again" in result["msg"]
    assert systemd.calls == [("stop", "kvmd.service"), ("start", "kvmd.service")]
    assert systemd.is_active("kvmd.service")


def test_connect_address_auto(sim):
    result = run({"port": sim.port, "address": 9, "force": True})
    assert result["changed"] and sim.chip.address == 9, result
    back = run({"port": sim.port, "connect_address": "auto", "address": 0})
    assert not back.get("failed") and back["changed"] and back["address"] == 0, back
    assert sim.chip.address == 0
