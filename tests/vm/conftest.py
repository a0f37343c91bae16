# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The simulated box for the VM suite: booted once per pytest run, stopped at the end.

Set ONEKVM_KEEP_BOX=1 to reuse a box already started with ``make vm-start`` and leave it
running afterwards (inner loop while writing VM tests).
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.onekvm.fleet.tests.testbed.vm import Box


@pytest.fixture(scope="session")
def box():
    keep = os.environ.get("ONEKVM_KEEP_BOX") == "1"
    vm = (Box.load() if keep else None) or Box().start(owner=os.getpid())
    try:
        vm.install_cli()
        yield vm
    finally:
        if not keep:
            vm.stop()
