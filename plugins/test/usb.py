# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Jinja tests for USB selectors, with the box-side core's own patterns (one home: _usb.py)."""

from __future__ import annotations

from ansible_collections.onekvm.fleet.plugins.module_utils._usb import ID_RE, PORT_PATH_RE


def usb_id(value) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None  # no trailing line break either


def usb_port(value) -> bool:
    return isinstance(value, str) and PORT_PATH_RE.fullmatch(value) is not None


class TestModule:
    """USB selector tests."""

    def tests(self):
        return {"usb_id": usb_id, "usb_port": usb_port}
