# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one box-wide lock that keeps hardware actions (resets, relay presses) apart.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.

The modules, the box CLI and the watchdog all take this lock before touching hardware,
so two resets never overlap. It is an advisory ``flock`` on a file under /run: the
kernel drops it when the holder dies, so a crash never leaves the box locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time

from ._errors import Busy
from ._files import open_own_file
from ._limits import check

DEFAULT_LOCK_PATH = "/run/onekvm/hardware.lock"
LOCK_PATH_ENV = "ONEKVM_LOCK_PATH"


def lock_path() -> str:
    return os.environ.get(LOCK_PATH_ENV) or DEFAULT_LOCK_PATH


@contextlib.contextmanager
def hardware_lock(timeout: float = 30.0, path: str | None = None, poll: float = 0.05):
    """Hold the box-wide hardware lock; raise ``Busy`` if not free within ``timeout``."""
    check("lock_timeout", timeout)
    path = path or lock_path()
    # a regular file of ours, opened without following links: a link planted at the lock's
    # place is refused instead of being truncated (PID written below) as root
    fd = open_own_file(path)
    try:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    raise Busy(
                        "another hardware action holds %s%s; retry later or raise lock_timeout"
                        % (path, " (pid %s)" % holder if holder else ""),
                        lock=path,
                        holder_pid=holder,
                    ) from None
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _read_holder(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
