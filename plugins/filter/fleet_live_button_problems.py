# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The live GPIO check of provision.yml's health gate: what the running kvmd lacks of the rendered buttons."""

from __future__ import annotations

import math

from ansible_collections.onekvm.fleet.plugins.plugin_utils._gpio_view import mapping, shown_channels

DOCUMENTATION = r"""
name: fleet_live_button_problems
short_description: What the running kvmd lacks of the GPIO buttons its config defines
version_added: 1.0.0
author: onekvm.fleet maintainers
description:
  - Takes channel names, the C(kvmd.gpio) section the role rendered, and the GPIO model of the running kvmd
    (RV(onekvm.fleet.kvmd_gpio_info#module:model), C(GET /api/gpio)), and returns one sentence per problem - a
    channel the running kvmd does not have, one it shows no button for, a pulse it sends with another length than
    the config asks, or a switch that differs.
  - The expected pulse is what kvmd sends for the configured one, C(min(max(delay, min_delay), max_delay)) with
    kvmd's defaults of V(0.1) s (pikvm/kvmd C(kvmd/apps/kvmd/ugpio.py)); C(kvmd -m) prints only the configured delay.
  - Used by the health gate of C(onekvm.fleet.provision) when kvmd credentials are given.
options:
  _input:
    description: The channel names that must be there.
    type: list
    elements: str
    required: true
  gpio:
    description: The C(kvmd.gpio) section as rendered (a dictionary with C(scheme) and C(view)).
    type: dict
    required: true
  live:
    description: The running kvmd's GPIO model (C(scheme) with C(inputs) and C(outputs), C(view)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: The running kvmd carries the buttons as rendered
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "{{ problems | join('; ') }}"
  vars:
    problems: "{{ ['toggle_switch'] | onekvm.fleet.fleet_live_button_problems(rendered.kvmd.gpio, gpio_info.model) }}"
"""

RETURN = r"""
_value:
  description: The problems, one sentence each, in the order of the channels given.
  type: list
  elements: str
  sample: ["toggle_switch: the running kvmd pulses 0.1 s, the config gives 5.0 s"]
"""


KVMD_PULSE_DEFAULTS = {"delay": 0.1, "min_delay": 0.1, "max_delay": 0.1}  # pikvm/kvmd kvmd/apps/_scheme.py


def kvmd_pulse_delay(pulse):
    """The pulse kvmd sends for a channel's configured ``pulse``: ``min(max(delay, min_delay), max_delay)``
    (kvmd/apps/kvmd/ugpio.py), 0 for ``pulse: false`` or a zero delay; None for a pulse kvmd would reject."""
    if pulse is False:
        return 0.0
    pulse = pulse if isinstance(pulse, dict) else {}
    values = dict(KVMD_PULSE_DEFAULTS, **{k: v for k, v in pulse.items() if k in KVMD_PULSE_DEFAULTS})
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values.values()):
        return None
    if not values["delay"]:
        return 0.0
    return float(min(max(values["delay"], values["min_delay"]), values["max_delay"]))


def fleet_live_button_problems(channels, gpio, live):
    """What the running kvmd (``GET /api/gpio`` model) lacks of the channels the config ``gpio`` defines."""
    scheme = mapping(gpio, "scheme")
    shown = shown_channels(mapping(live, "view"), _live_item_channel)
    problems = []
    for channel in channels or []:
        opts = scheme.get(channel)
        if not isinstance(opts, dict):
            continue  # not in the config: fleet_missing_buttons says so
        kind = "inputs" if opts.get("mode") == "input" else "outputs"
        running = mapping(live, "scheme", kind).get(channel)
        if not isinstance(running, dict):
            problems.append("%s: the running kvmd has no such %s channel" % (channel, kind[:-1]))
            continue
        if channel not in shown:
            problems.append("%s: the running kvmd shows no button for it (not in its view)" % channel)
        if kind == "inputs":
            continue
        expected = kvmd_pulse_delay(opts.get("pulse"))
        actual = mapping(running, "pulse").get("delay")
        if expected is not None and (not isinstance(actual, (int, float)) or abs(actual - expected) > 1e-6):
            problems.append("%s: the running kvmd pulses %s s, the config gives %s s" % (channel, actual, expected))
        if bool(opts.get("switch", True)) != running.get("switch"):
            problems.append("%s: the running kvmd has switch %s, the config %s"
                            % (channel, running.get("switch"), bool(opts.get("switch", True))))
    return problems


def _live_item_channel(item):
    """An item of the running kvmd's view (GET /api/gpio) is a dict; inputs and outputs name their channel."""
    if isinstance(item, dict) and item.get("type") in ("input", "output"):
        return item.get("channel")
    return None


class FilterModule:
    """The health gate's live GPIO check."""

    def filters(self):
        return {"fleet_live_button_problems": fleet_live_button_problems}
