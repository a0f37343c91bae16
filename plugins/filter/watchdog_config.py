# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check a capture watchdog config on the controller, with the box command's own checks."""

from __future__ import annotations

DOCUMENTATION = r"""
name: watchdog_config
short_description: Validate a capture watchdog config before it reaches the box
version_added: 1.0.0
author: onekvm.fleet maintainers
description:
  - Runs the same checks as C(onekvm watchdog --check-config) on the box (every number finite and in the range of
    the collection's limits table, devices, ladder, paths) and returns the config unchanged.
  - The role uses it before it changes anything, so a bad O(_input) fails with a message naming the key and
    changes nothing.
options:
  _input:
    description: The watchdog config, as the role renders it into C(/etc/onekvm/watchdog.json).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Check the watchdog settings first
  ansible.builtin.set_fact:
    checked: "{{ {'interval': 5, 'dongle': {'id': '534d:2109'}} | onekvm.fleet.watchdog_config }}"
"""

RETURN = r"""
_value:
  description: The config as given (the checks only raise).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.onekvm.fleet.plugins.module_utils._errors import InvalidArgument
from ansible_collections.onekvm.fleet.plugins.module_utils._watchdog_config import parse_config


def watchdog_config(raw):
    """``raw`` if the box command would accept it; else an error naming the key."""
    try:
        parse_config(raw)
    except InvalidArgument as exc:
        raise AnsibleFilterError("watchdog config: %s (set the matching onekvm_watchdog_* variable)" % exc.msg) from None
    return raw


class FilterModule:
    """Watchdog config check."""

    def filters(self):
        return {"watchdog_config": watchdog_config}
