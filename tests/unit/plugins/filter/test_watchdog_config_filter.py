# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role's preflight check of the watchdog settings: the box command's own checks, on the controller."""

from __future__ import annotations

import math

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.onekvm.fleet.plugins.filter.watchdog_config import FilterModule, watchdog_config


@pytest.mark.parametrize("key, value", [
    ("interval", math.nan), ("grace", math.inf), ("max_actions_per_hour", float("1e400")), ("backoff", -1),
    ("lock_timeout", 1e9), ("waits", {"ioctl": math.nan}), ("ustreamer", {"timeout": 0}),
])
def test_bad_numbers_fail_before_the_role_changes_anything(key, value):
    with pytest.raises(AnsibleFilterError, match=r"watchdog config: %s.* must be .*onekvm_watchdog_" % key):
        watchdog_config({"dongle": {"id": "534d:2109"}, key: value})


def test_a_good_config_comes_back_unchanged():
    raw = {"dongle": {"id": "534d:2109"}, "interval": 5}
    assert watchdog_config(raw) is raw
    assert FilterModule().filters() == {"watchdog_config": watchdog_config}
