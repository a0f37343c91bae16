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


def test_info_as_output_and_facts(sim):
    sim.chip.leds = 0b011
    result = run({"port": sim.port})
    assert not result.get("failed"), result
    assert result["changed"] is False
    assert result["info"] == {"version": "V1.0", "version_byte": 0x30, "usb_enumerated": True,
                              "leds": {"num_lock": True, "caps_lock": True, "scroll_lock": False}}
    config = result["config"]
    assert (config["mode"], config["serial_mode"], config["address"], config["baudrate"]) == \
        ("keyboard_mouse", "protocol", 0, 9600)
    assert (config["vid"], config["pid"], config["vid_raw"]) == ("1a86", "e129", "86 1a")
    assert config["raw"] == bytes(sim.chip.stored).hex(" ")
    assert result["usb_strings"] == {"manufacturer": "WCH", "product": "CH9329", "serial": ""}
    facts = result["ansible_facts"]["onekvm_ch9329"]
    assert facts["config"] == config and facts["info"] == result["info"] and facts["port"] == sim.port


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


def test_kvmd_paused_and_restored(sim, box_env):
    systemd = box_env["systemd"]
    systemd.add_unit_holding("kvmd.service", sim.port)
    result = run({"port": sim.port})
    assert result["kvmd_paused"] == ["kvmd.service"]
    assert systemd.calls == [("stop", "kvmd.service"), ("start", "kvmd.service")]


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
    result = run({"port": sim.port})
    assert result["failed"] and "systemctl stop kvmd.service failed" in result["msg"]
    assert sim.counters["frames"] == 0
