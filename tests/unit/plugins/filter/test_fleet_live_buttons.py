# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The live GPIO check of the health gate: the role's buttons (rendered by the kvmd_gpio filter)
against the model the kvmd stand-in builds as kvmd's ugpio.py does (the model GET /api/gpio serves)."""

from __future__ import annotations

import copy

from ansible_collections.onekvm.fleet.plugins.filter.fleet_live_button_problems import (
    fleet_live_button_problems,
    kvmd_pulse_delay,
)
from ansible_collections.onekvm.fleet.plugins.filter.kvmd_gpio import kvmd_gpio
from ansible_collections.onekvm.fleet.tests.testbed import kvmd_standin

BUTTONS = [
    {"name": "toggle_switch", "label": "Switch KVM machine", "cmd": ["/usr/bin/true"], "pulse": {"delay": 0.5}},
    {"name": "power_long", "label": "Hold power", "cmd": ["/usr/bin/true"]},
    {"kind": "hidrelay", "name": "relay1", "label": "Relay", "device": "/dev/hidraw0", "pin": 0, "switch": True,
     "pulse": False},
    {"kind": "led", "name": "box_ok", "label": "Box", "cmd": ["/usr/bin/true"]},
]
CHANNELS = ["toggle_switch", "power_long", "relay1", "box_ok"]


def rendered():
    return kvmd_gpio(BUTTONS)


def test_the_role_output_running_in_kvmd_passes():
    gpio = rendered()
    live = kvmd_standin.gpio_model(copy.deepcopy(gpio))
    assert fleet_live_button_problems(CHANNELS, gpio, live) == []
    assert live["scheme"]["outputs"]["toggle_switch"]["pulse"]["delay"] == 0.5


def test_a_kvmd_still_running_another_pulse_is_caught():
    gpio = rendered()
    gpio["scheme"]["toggle_switch"]["pulse"] = {"delay": 5}  # what kvmd runs: kvmd -m prints 5, kvmd sends 0.1
    live = kvmd_standin.gpio_model(copy.deepcopy(gpio))
    expected = dict(gpio, scheme=dict(gpio["scheme"], toggle_switch=dict(gpio["scheme"]["toggle_switch"],
                                                                         pulse={"delay": 5, "max_delay": 5})))
    assert fleet_live_button_problems(["toggle_switch"], expected, live) == [
        "toggle_switch: the running kvmd pulses 0.1 s, the config gives 5.0 s"]


def test_a_kvmd_without_the_channels_or_the_view_is_caught():
    gpio = rendered()
    stale = copy.deepcopy(gpio)
    del stale["scheme"]["relay1"]
    stale["view"]["table"] = [["box_ok"]]  # an override.yaml replaced the table
    live = kvmd_standin.gpio_model(stale)
    problems = fleet_live_button_problems(CHANNELS, gpio, live)
    assert "relay1: the running kvmd has no such output channel" in problems
    assert "toggle_switch: the running kvmd shows no button for it (not in its view)" in problems
    assert not any(p.startswith("box_ok") for p in problems)
    assert fleet_live_button_problems(["toggle_switch"], gpio, None) == [
        "toggle_switch: the running kvmd has no such output channel"]


def test_pulse_delay_follows_ugpio():
    assert kvmd_pulse_delay(None) == 0.1 and kvmd_pulse_delay({"delay": 5}) == 0.1
    assert kvmd_pulse_delay({"delay": 5, "max_delay": 5}) == 5.0 and kvmd_pulse_delay(False) == 0.0
    assert kvmd_pulse_delay({"delay": 0.05, "min_delay": 0.2, "max_delay": 1}) == 0.2
    assert kvmd_pulse_delay({"delay": "x"}) is None
