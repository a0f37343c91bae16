# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role's USB selector tests use the box-side core's patterns and refuse what a udev rule must not get."""

from __future__ import annotations

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils import _usb
from ansible_collections.onekvm.fleet.plugins.test import usb as usb_tests
from ansible_collections.onekvm.fleet.plugins.test.usb import usb_id, usb_port


def test_both_tests_are_registered():
    assert set(usb_tests.TestModule().tests()) == {"usb_id", "usb_port"}


@pytest.mark.parametrize("value", ["534d:2109", "345F:2130", "1a86:7523"])
def test_ids_the_box_accepts(value):
    assert usb_id(value)
    assert _usb.parse_id(value)  # the box command takes the same value


@pytest.mark.parametrize("value", ["1-1", "1-1.2", "2-3.4.1", "10-1.2"])
def test_port_paths_the_box_accepts(value):
    assert usb_port(value)
    assert _usb.PORT_PATH_RE.match(value)


@pytest.mark.parametrize("value", ["534d2109", "534d:21090", "usb1", "", None, 5342109, ["534d:2109"],
                                   "534d:2109\n", "534d:2109\nRUN+=\"/bin/sh\"", " 534d:2109"])
def test_not_ids(value):
    assert not usb_id(value)


@pytest.mark.parametrize("value", ["usb1", "1", "1-", "1-1.", "1-1..2", "1-1.2\n", "1-1.2 ", "a-1", "", None, 1])
def test_not_port_paths(value):
    assert not usb_port(value)
