# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rule for user and group names the role writes into sudoers and systemd units, as a Jinja test."""

from __future__ import annotations

DOCUMENTATION = r"""
name: account_name
short_description: Whether a value is a plain user or group name
version_added: 1.0.0
author: onekvm.fleet maintainers
description:
  - True for a plain login or group name as Debian's C(adduser) accepts it (its C(NAME_REGEX) without the Samba
    machine-account C($)) and systemd's strict rules allow (at most 31 characters, see U(https://systemd.io/USER_NAMES/))
    - lower-case letters, digits, C(_) and C(-), not starting with a digit or C(-).
  - Never true for C(ALL), a C(%group), C(+netgroup) or C(#uid) as sudoers reads them, a list, or anything with a
    space or line break, so a name written into a sudoers rule or a unit's C(SupplementaryGroups=) names one account.
  - The same rule as the kvmd user check of P(onekvm.fleet.kvmd_gpio_sudoers#filter) (one definition serves both).
options:
  _input:
    description: The value to test.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Refuse a group name that is not one plain name
  ansible.builtin.assert:
    that: onekvm_watchdog_kvmd_group is onekvm.fleet.account_name
"""

RETURN = r"""
_value:
  description: Whether the value is a plain user or group name.
  type: bool
"""

from ansible_collections.onekvm.fleet.plugins.filter.kvmd_gpio import USER_RE


def account_name(value) -> bool:
    return isinstance(value, str) and USER_RE.match(value) is not None


class TestModule:
    """User and group names."""

    def tests(self):
        return {"account_name": account_name}
