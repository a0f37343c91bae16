# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Files the box command writes or reads as root: only where they are ours, never unbounded.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.

What runs as root must not be turned against other files: a symbolic or hard link planted
where our lock or state file goes, a FIFO or /dev/zero given as a file to read, a directory
someone else controls. So a file we write is created new in a directory that is ours (or is
a regular file of ours already) and is replaced atomically; a file we open is opened with
O_NOFOLLOW and checked to be a regular file of ours; a read stops at a stated size.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile

from ._errors import InvalidArgument, PermissionDenied

_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY
READ_FIX = "give the path of a regular file"


def _refuse(path: str, what: str, fix: str = "remove it", cls=InvalidArgument):
    """A path of the wrong kind is InvalidArgument (exit 2), one of someone else PermissionDenied."""
    return cls("refusing to use %s: %s; %s" % (path, what, fix), path=path)


def _check_ours(path: str, st: os.stat_result, kind: str) -> None:
    euid = os.geteuid()
    if st.st_uid not in (euid, 0):
        raise _refuse(path, "it belongs to uid %d, not to us" % st.st_uid, cls=PermissionDenied)
    if kind == "directory" and euid == 0 and st.st_mode & 0o022:
        raise _refuse(path, "others may write in this directory (mode %o)" % stat.S_IMODE(st.st_mode),
                      "make it root-owned with mode 0755", cls=PermissionDenied)
    if kind == "file" and st.st_nlink > 1:
        raise _refuse(path, "it has %d hard links (one may point at a file of someone else)" % st.st_nlink,
                      cls=PermissionDenied)


def own_directory(path: str, mode: int = 0o755) -> str:
    """Create ``path`` (and its parents) if missing; it must be a real directory of ours."""
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
        st = os.lstat(path)
    except FileExistsError:
        raise _refuse(path, "it exists and is not a directory") from None
    except NotADirectoryError:
        raise _refuse(path, "a part of this path is a file, not a directory") from None
    except PermissionError as exc:
        raise PermissionDenied("cannot create %s: %s; run as root (become: true)" % (path, exc.strerror), path=path) from None
    except OSError as exc:
        raise _refuse(path, exc.strerror or str(exc)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "it is a %s, not a directory" % ("symbolic link" if stat.S_ISLNK(st.st_mode) else "file"))
    _check_ours(path, st, "directory")
    return path


def open_own_file(path: str, flags: int = os.O_RDWR | os.O_CREAT, mode: int = 0o644) -> int:
    """A descriptor of the regular file ``path`` of ours (created if missing), links refused."""
    own_directory(os.path.dirname(path) or ".")
    try:
        fd = os.open(path, flags | _OPEN_FLAGS | os.O_NONBLOCK, mode)
    except PermissionError as exc:
        raise PermissionDenied("cannot open %s: %s; run as root (become: true)" % (path, exc.strerror), path=path) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, "it is a symbolic link") from None
        raise _refuse(path, exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "it is not a regular file")
        _check_ours(path, st, "file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bounded(path: str, limit: int) -> bytes | None:
    """The content of the regular file ``path`` (None if it does not exist), at most ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise PermissionDenied("cannot read %s: %s; run as root (become: true)" % (path, exc.strerror), path=path) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, "it is a symbolic link", READ_FIX) from None
        raise _refuse(path, exc.strerror or str(exc), READ_FIX) from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise _refuse(path, "it is not a regular file", READ_FIX)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise InvalidArgument("%s is larger than %d bytes; it is not one of ours: remove it" % (path, limit), path=path)
    return data


def replace_own_file(path: str, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` atomically: a new file in a directory of ours, renamed over ours."""
    directory = own_directory(os.path.dirname(path) or ".")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "it is not a regular file")
        _check_ours(path, st, "file")
    write_new_then_rename(directory, path, text, mode)


def write_new_then_rename(directory: str, path: str, text: str, mode: int) -> None:
    """Write ``text`` into a new file in ``directory`` and rename it over ``path``: readers see old or new, never half."""
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)  # O_EXCL: created new
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
