# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ch9329_info against the simulated chip on a pseudo-terminal."""

from __future__ import annotations

import pytest

from ansible_collections.onekvm.fleet.plugins.modules import ch9329_info
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.ch9329_support import (  # noqa: F401  # pylint: disable=unused-import
    box_env, set_chip_baudrate, sim, write_kvmd_config)
from ansible_collections.onekvm.fleet.tests.unit.plugins.modules.module_runner import run_module


def run(args, **kwargs):
    return run_module(ch9329_info.main, args, **kwargs)


def test_info_as_plain_output(sim):
    sim.chip.leds = 0b011
    result = run({"port": sim.port})
    assert not result.get("failed"), result
    assert result["changed"] is False and result["read"] is True and result["address"] == 0
    assert "ansible_facts" not in result  # modules that set facts are named *_facts
    assert result["info"] == {"version": "V1.0", "version_byte": 0x30, "usb_enumerated": True,
                              "leds": {"num_lock": True, "caps_lock": True, "scroll_lock": False}}
    config = result["config"]
    assert (config["mode"], config["serial_mode"], config["address"], config["baudrate"]) == \
        ("keyboard_mouse", "protocol", 0, 9600)
    assert (config["vid"], config["pid"], config["vid_raw"]) == ("1a86", "e129", "86 1a")
    assert config["raw"] == bytes(sim.chip.stored).hex(" ")
    assert result["usb_strings"] == {"manufacturer": "WCH", "product": "CH9329", "serial": ""}
    assert (config["reply_size"], config["raw_extra"]) == (50, "")


def test_same_in_check_mode_and_without_strings(sim):
    result = run({"port": sim.port, "strings": False}, check_mode=True)
    assert not result.get("failed") and "usb_strings" not in result
    assert sim.log[-1][1].startswith("57 ab 00 08")


def test_default_port_and_speed_from_kvmd(sim, box_env):
    set_chip_baudrate(sim, 115200)
    write_kvmd_config(box_env["kvmd_root"], "kvmd:\n    hid:\n        type: ch9329\n        device: %s\n"
                      "        speed: 115200\n" % sim.port, name="override.d/0100-hid.yaml")
    result = run({})
    assert not result.get("failed"), result
    assert result["port"] == sim.port and result["baudrate"] == 115200


def test_kvmd_holding_the_port_is_never_stopped_for_a_read(sim, box_env):
    systemd = box_env["systemd"]
    systemd.add_unit_holding("kvmd.service", sim.port)
    for check_mode in (False, True):
        result = run({"port": sim.port}, check_mode=check_mode)
        assert not result.get("failed") and result["read"] is False, result
        assert result["kvmd_holding"] == ["kvmd.service"] and result["kvmd_paused"] == []
        assert "info" not in result and "config" not in result
        warning = result["warnings"][0]
        assert "kvmd.service holds %s" % sim.port in warning and "version, USB state, LEDs, config" in warning
        assert "pause_kvmd: true" in warning
    assert systemd.calls == [] and sim.counters["frames"] == 0


def test_kvmd_paused_when_asked_and_restored(sim, box_env):
    systemd = box_env["systemd"]
    systemd.add_unit_holding("kvmd.service", sim.port)
    result = run({"port": sim.port, "pause_kvmd": True})
    assert result["read"] is True and result["kvmd_paused"] == ["kvmd.service"], result
    assert "kvmd.service paused for it and started again" in result["msg"]
    assert systemd.calls == [("stop", "kvmd.service"), ("start", "kvmd.service")]
    assert systemd.is_active("kvmd.service")


def test_check_mode_never_pauses_kvmd_even_when_asked(sim, box_env):
    systemd = box_env["systemd"]
    systemd.add_unit_holding("kvmd.service", sim.port)
    result = run({"port": sim.port, "pause_kvmd": True}, check_mode=True)
    assert result["read"] is False and systemd.calls == []


def test_not_a_serial_port_is_refused_before_kvmd_is_touched(box_env):
    systemd = box_env["systemd"]
    systemd.add_unit_holding("kvmd.service", "/dev/null")  # like any daemon, kvmd has /dev/null open
    result = run({"port": "/dev/null", "pause_kvmd": True})
    assert result["failed"] and "not a tty" in result["msg"], result
    assert systemd.calls == []


@pytest.mark.parametrize("args,words", [
    ({"address": 255}, "broadcast address"),
    ({"address": "x"}, "address must be 0-254 or auto"),
    ({"timeout": 0}, "timeout must be a number from 0.05 to 60"),
    ({"lock_timeout": -1}, "lock_timeout must be a number from 0 to 3600"),
])
def test_bad_input_is_refused_before_kvmd_is_touched(sim, box_env, args, words):
    systemd = box_env["systemd"]
    systemd.add_unit_holding("kvmd.service", sim.port)
    result = run(dict(args, port=sim.port, pause_kvmd=True))
    assert result["failed"] and words in result["msg"], result
    assert systemd.calls == [] and sim.counters["frames"] == 0


def test_longer_config_reply_of_the_ch9329f(sim):
    sim.chip.config_reply_size = 88
    result = run({"port": sim.port, "strings": False})
    assert not result.get("failed"), result
    config = result["config"]
    assert (config["reply_size"], config["baudrate"], config["vid"], config["pid"]) == (88, 9600, "1a86", "e129")
    assert config["raw"] == bytes(sim.chip.stored).hex(" ") and len(bytes.fromhex(config["raw_extra"])) == 38


def test_address_auto_finds_the_chip(sim):
    sim.chip.stored[2] = 0x2A
    sim.chip.active = bytes(sim.chip.stored)
    assert run({"port": sim.port, "timeout": 0.2})["failed"]  # not at 0
    result = run({"port": sim.port, "address": "auto", "strings": False})
    assert not result.get("failed"), result
    assert result["address"] == 0x2A and result["config"]["address"] == 0x2A


@pytest.mark.parametrize("fault,words", [
    ({"silent": True}, "no answer"),
    ({"garbage": True}, "not a frame"),
    ({"truncate": True, "commands": [8]}, "truncated reply"),
    ({"bad_checksum": True}, "corrupt reply"),
    ({"error_status": 0xE3, "commands": [10]}, "refused GET_USB_STRING: E3 unknown command"),
])
def test_faults(sim, fault, words):
    sim.set_faults(**fault)
    result = run({"port": sim.port, "timeout": 0.3})
    assert result["failed"] and words in result["msg"], result


def test_stop_failure_is_clear_and_restarts(sim, box_env):
    systemd = box_env["systemd"]
    systemd.add_unit_holding("kvmd.service", sim.port)
    systemd.set(fail_stop=True)
    result = run({"port": sim.port, "pause_kvmd": True})
    assert result["failed"] and "systemctl stop kvmd.service failed" in result["msg"]
    assert sim.counters["frames"] == 0


def test_the_serial_port_is_named_so_and_port_stays_its_alias(sim):
    """ch9329_* take a device node: option serial_port, the older name port as its alias."""
    by_name = run({"serial_port": sim.port, "strings": False})
    by_alias = run({"port": sim.port, "strings": False})
    assert not by_name.get("failed") and not by_alias.get("failed"), (by_name, by_alias)
    assert by_name["port"] == by_alias["port"] == sim.port and by_name["info"] == by_alias["info"]
