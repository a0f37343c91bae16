# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The account_name test: one rule for the kvmd user (sudoers) and the watchdog's group (unit)."""

from __future__ import annotations

import os

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.onekvm.fleet.plugins.filter.kvmd_gpio import kvmd_gpio_sudoers
from ansible_collections.onekvm.fleet.plugins.test import account_name as plugin

ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "onekvm")
ROOT_BUTTON = [{"name": "power", "cmd": ["/usr/local/bin/power", "on"], "sudo": True}]

GOOD = ["kvmd", "_kvmd", "kvmd-webterm", "www_data", "a", "u1", "g" * 31]
# systemd's strict rules end at 31 characters (https://systemd.io/USER_NAMES/; systemd-analyze 252
# warns about a 32-character SupplementaryGroups= name); the rest is what sudoers would read as
# more than one user (ALL, %group, +netgroup, #uid, lists, a second line)
BAD = ["g" * 32, "kvmd$", "ALL", "%kvmd", "+admins", "#0", "kvmd,root", "kvmd ALL", "kvmd\n", "kvmd\nroot ALL=(ALL) ALL",
       "", "1kvmd", "-kvmd", "Kvmd", "kvmd.service", "ké", None, 5, ["kvmd"], {"kvmd": 1}]


def sudoers_accepts(name) -> bool:
    try:
        kvmd_gpio_sudoers(ROOT_BUTTON, name)
    except AnsibleFilterError:
        return False
    return True


@pytest.mark.parametrize("name", GOOD + BAD)
def test_the_group_rule_is_the_sudoers_user_rule(name):
    assert plugin.account_name(name) == sudoers_accepts(name) == (name in GOOD)


def test_the_plugin_exposes_the_test():
    assert plugin.TestModule().tests() == {"account_name": plugin.account_name}


def test_the_role_has_no_second_copy_of_the_rule():
    with open(os.path.join(ROLE, "vars", "main.yml"), encoding="utf-8") as f:
        role_vars = yaml.safe_load(f)
    assert not [key for key in role_vars if "group" in key or "user" in key], role_vars
    with open(os.path.join(ROLE, "tasks", "render.yml"), encoding="utf-8") as f:
        assert "onekvm_watchdog_kvmd_group is onekvm.fleet.account_name" in f.read()
