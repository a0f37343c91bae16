# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import multiprocessing
import os
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


def _try_once(path, queue):
    try:
        with hardware_lock(path=path, timeout=0):
            queue.put("took it")
    except Busy as exc:
        queue.put(exc.msg)


def test_lock_is_not_reentrant(tmp_path):
    """A second take inside the first, even in the same process, waits and gets Busy naming us."""
    path = str(tmp_path / "hw.lock")
    with hardware_lock(path=path, timeout=0):
        with open(path, encoding="ascii") as f:
            assert f.read() == str(os.getpid())  # the holder is named in the file
        with pytest.raises(Busy) as info:
            with hardware_lock(path=path, timeout=0):
                pass
        assert info.value.details["holder_pid"] == os.getpid()


def test_lock_is_free_again_after_release(tmp_path):
    """Released on leaving the block (also by an exception): another process takes it at once."""
    path = str(tmp_path / "hw.lock")
    ctx = multiprocessing.get_context("fork")
    for dummy in range(2):
        with pytest.raises(RuntimeError):
            with hardware_lock(path=path, timeout=0):
                raise RuntimeError("the action failed")
        queue = ctx.Queue()
        proc = ctx.Process(target=_try_once, args=(path, queue))
        proc.start()
        assert queue.get(timeout=10) == "took it"
        proc.join(10)
