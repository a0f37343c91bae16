# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import multiprocessing
import time

import pytest

from ansible_collections.onekvm.fleet.plugins.module_utils._errors import Busy
from ansible_collections.onekvm.fleet.plugins.module_utils._lock import hardware_lock


def _hold(path, ready, release):
    with hardware_lock(path=path, timeout=1):
        ready.set()
        release.wait(10)


def test_second_holder_gets_busy_with_holder_pid(tmp_path):
    path = str(tmp_path / "run" / "hw.lock")
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(path, ready, release))
    proc.start()
    try:
        assert ready.wait(10)
        start = time.monotonic()
        with pytest.raises(Busy) as info:
            with hardware_lock(path=path, timeout=0.3):
                pass
        assert time.monotonic() - start >= 0.3
        assert info.value.details["holder_pid"] == proc.pid
        assert "pid %d" % proc.pid in info.value.msg
    finally:
        release.set()
        proc.join(10)
    with hardware_lock(path=path, timeout=1):  # released when the holder exits
        pass


def test_lock_is_reentrant_after_release(tmp_path):
    path = str(tmp_path / "hw.lock")
    for dummy in range(3):
        with hardware_lock(path=path, timeout=0):
            pass
