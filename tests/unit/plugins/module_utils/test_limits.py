# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every number is finite and in its stated range, the same range everywhere it is given.

The one table is ``_limits.LIMITS``. This checks the table itself, that the core, the box
command, the watchdog config check and the role's argument spec all use it (and that the
spec states each range as the table has it).
"""

from __future__ import annotations

import math
import os

import pytest
import yaml

from ansible_collections.onekvm.fleet.plugins.module_utils import _ch9329, _lock, _relay, _usb_reset
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import InvalidArgument
from ansible_collections.onekvm.fleet.plugins.module_utils._limits import LIMITS, check, describe
from ansible_collections.onekvm.fleet.plugins.module_utils._watchdog_config import parse_config
from ansible_collections.onekvm.fleet.tests.support.boxpkg import run_cli

SPEC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "onekvm", "meta", "argument_specs.yml")
NOT_NUMBERS = [math.nan, math.inf, -math.inf, float("1e400"), True, "5", None, [1]]

# the role's variables that carry a limited quantity, and which one
ROLE_VARIABLES = {
    "onekvm_watchdog_interval": "interval", "onekvm_watchdog_grace": "grace", "onekvm_watchdog_waits": "waits",
    "onekvm_watchdog_ustreamer_timeout": "ustreamer_timeout", "onekvm_watchdog_ustreamer_min_fps": "min_fps",
    "onekvm_watchdog_max_actions_per_hour": "max_actions_per_hour", "onekvm_watchdog_backoff": "backoff",
    "onekvm_watchdog_backoff_max": "backoff_max", "onekvm_watchdog_lock_timeout": "lock_timeout",
    "onekvm_watchdog_systemd_watchdog_sec": "systemd_watchdog_sec",
    "onekvm_watchdog_hid_grace": "grace", "onekvm_watchdog_hid_waits": "waits",
    "onekvm_watchdog_hid_max_actions_per_hour": "max_actions_per_hour",
}
# the watchdog config's numeric keys, and which quantity
WATCHDOG_KEYS = {
    ("interval",): "interval", ("grace",): "grace", ("waits", "ioctl"): "waits", ("ustreamer", "timeout"): "ustreamer_timeout",
    ("ustreamer", "min_fps"): "min_fps", ("hid", "timeout"): "hid_timeout", ("max_actions_per_hour",): "max_actions_per_hour",
    ("backoff",): "backoff", ("backoff_max",): "backoff_max", ("lock_timeout",): "lock_timeout",
    ("systemd_watchdog_sec",): "systemd_watchdog_sec",
}


@pytest.mark.parametrize("quantity", sorted(LIMITS))
def test_each_range_is_finite_and_its_ends_are_in_it(quantity):
    limit = LIMITS[quantity]
    assert math.isfinite(limit.low) and math.isfinite(limit.high) and limit.low <= limit.high and limit.what
    assert check(quantity, limit.low) == limit.low and check(quantity, limit.high) == limit.high


@pytest.mark.parametrize("quantity", sorted(LIMITS))
@pytest.mark.parametrize("value", NOT_NUMBERS + ["below", "above"])
def test_not_a_finite_number_in_range_is_refused_by_name(quantity, value):
    limit = LIMITS[quantity]
    value = {"below": limit.low - 1, "above": limit.high + 1}.get(value, value) if isinstance(value, str) else value
    with pytest.raises(InvalidArgument, match=r"^my_option must be a (whole )?number from %s" % describe(quantity)):
        check(quantity, value, "my_option")


def test_a_fraction_is_refused_where_a_whole_number_is_needed():
    with pytest.raises(InvalidArgument, match="max_actions_per_hour must be a whole number"):
        check("max_actions_per_hour", 2.5)


@pytest.mark.parametrize("variable", sorted(ROLE_VARIABLES))
def test_role_argument_spec_states_the_range_of_the_table(variable):
    with open(SPEC, encoding="utf-8") as handle:
        options = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    description = options[variable]["description"]
    text = " ".join(description) if isinstance(description, list) else description
    assert describe(ROLE_VARIABLES[variable]) + "." in text, (variable, text)


@pytest.mark.parametrize("keys", sorted(WATCHDOG_KEYS))
@pytest.mark.parametrize("value", [math.nan, math.inf, float("1e400"), -1e9, 1e9])
def test_watchdog_config_check_uses_the_table(keys, value):
    raw = {"dongle": {"id": "534d:2109"}}
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    with pytest.raises(InvalidArgument, match=r"%s must be a (whole )?number" % ".".join(keys)):
        parse_config(raw)


@pytest.mark.parametrize("call", [
    lambda v: _usb_reset.wait_until_back(None, timeout=v),
    lambda v: _lock.hardware_lock(timeout=v, path="/nonexistent/lock").__enter__(),
    lambda v: _relay.validate("pulse", 1, duration=v),
    lambda v: _ch9329.LinkOptions(port="/dev/null", baudrate=9600, timeout=v),
    lambda v: _ch9329.LinkOptions(port="/dev/null", baudrate=9600, lock_timeout=v),
], ids=["usb-wait", "lock", "relay-duration", "ch9329-timeout", "ch9329-lock"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_core_refuses_before_waiting_or_touching_anything(call, value):
    with pytest.raises(InvalidArgument, match="must be a number from"):
        call(value)


@pytest.mark.parametrize("args", [
    ["usb-reset", "534d:2109", "--power-off-time", "-1"],
    ["usb-reset", "534d:2109", "--timeout", "nan"],
    ["usb-reset", "534d:2109", "--lock-timeout", "inf"],
    ["usb-reset", "534d:2109", "--timeout", "1e400"],
    ["relay", "pulse", "--duration", "nan"],
    ["relay", "pulse", "--lock-timeout", "1e9"],
    ["ch9329-reset", "--timeout", "nan"],
    ["ch9329-reset", "--ready-timeout", "inf"],
    ["ch9329-reset", "--retries", "11"],
    ["ch9329-info", "--lock-timeout", "1e400"],
])
def test_box_command_refuses_with_exit_2_naming_the_option(args):
    res = run_cli(*args)
    assert res.returncode == 2, (res.returncode, res.stderr)
    option = args[-2]
    assert "%s must be a" % option in res.stderr and "Traceback" not in res.stderr, res.stderr
