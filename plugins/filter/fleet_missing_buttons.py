# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The GPIO check of provision.yml's health gate: which buttons kvmd would not show."""

from __future__ import annotations

from ansible_collections.onekvm.fleet.plugins.plugin_utils._gpio_view import mapping, shown_channels

DOCUMENTATION = r"""
name: fleet_missing_buttons
short_description: The GPIO channels that kvmd would not show as buttons
version_added: 1.0.0
author: onekvm.fleet maintainers
description:
  - Takes channel names and a C(kvmd.gpio) section (from the rendered override file or from C(kvmd -m)) and returns
    the channels that are missing from C(scheme) or have no item in any row of C(view.table).
  - Used by the health gate of C(onekvm.fleet.provision) - a channel without a view item shows no button.
options:
  _input:
    description: The channel names that must be there.
    type: list
    elements: str
    required: true
  gpio:
    description: The C(kvmd.gpio) section, a dictionary with C(scheme) and C(view).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Every button of the inventory is in the rendered file
  ansible.builtin.assert:
    that: missing | length == 0
    fail_msg: "missing buttons: {{ missing | join(', ') }}"
  vars:
    gpio: "{{ (gpio_file.content | b64decode | from_yaml).kvmd.gpio }}"
    missing: "{{ onekvm_gpio_buttons | selectattr('name', 'defined') | map(attribute='name') | onekvm.fleet.fleet_missing_buttons(gpio) }}"
"""

RETURN = r"""
_value:
  description: The missing channels, in the order given.
  type: list
  elements: str
  sample: [toggle_switch]
"""


def fleet_missing_buttons(channels, gpio):
    """The channels that are not both in kvmd.gpio.scheme and in a row of kvmd.gpio.view.table."""
    scheme = mapping(gpio, "scheme")
    shown = shown_channels(mapping(gpio, "view"), _config_item_channel)
    return [c for c in channels or [] if c not in scheme or c not in shown]


def _config_item_channel(item):
    """A config view item is ``"channel"`` or ``"channel|label"``; ``"#..."`` is a label."""
    if isinstance(item, str) and item and not item.startswith("#"):
        return item.split("|", 1)[0]
    return None


class FilterModule:
    """The health gate's GPIO check."""

    def filters(self):
        return {"fleet_missing_buttons": fleet_missing_buttons}
