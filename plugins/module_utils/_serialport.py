# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Opening serial ports with clear errors (CH9329 adapter, LCUS relays).

PRIVATE to the onekvm.fleet collection. Box-side core: standard library + pyserial.

pyserial is imported lazily so that the modules' and the CLI's argument checks and
``--help`` work without it; ``open_port`` raises ``MissingDependency`` when it is absent.
"""

from __future__ import annotations

import errno
import os
import stat
import sys

from ._errors import Busy, InvalidArgument, MissingDependency, NotFound, PermissionDenied

PYSERIAL_HINT = "install pyserial (Debian/Armbian: apt install python3-serial; Arch/PiKVM: pacman -S python-pyserial)"


def check_port_path(port: str) -> str:
    """Return the resolved character device behind ``port`` or raise a clear error."""
    if not port or not os.path.isabs(port):
        raise InvalidArgument("port must be an absolute device path, got %r" % (port,), port=port)
    try:
        st = os.stat(port)
    except FileNotFoundError:
        raise NotFound("serial port %s does not exist; check the cable or the udev name (ls -l /dev/serial/by-path)"
                       % port, port=port) from None
    except PermissionError:
        raise PermissionDenied("cannot access %s: permission denied; run as root (become: true)" % port,
                               port=port) from None
    if not stat.S_ISCHR(st.st_mode):
        raise InvalidArgument("%s is not a character device (not a serial port)" % port, port=port)
    return os.path.realpath(port)


TTY_DRIVERS = "/proc/tty/drivers"  # name, node, major, minor range, type of every tty driver
TTY_TYPES = ("serial", "pty:slave")  # a UART/USB-serial adapter, or a pty standing in for one


def check_tty(port: str, drivers: str = TTY_DRIVERS) -> str:
    """``check_port_path`` plus: the device belongs to a serial tty driver (read from
    /proc/tty/drivers, nothing is opened), so that /dev/null or a disk is refused before
    anything (kvmd included) is touched. Without that file the check is left to the open."""
    device = check_port_path(port)
    rdev = os.stat(port).st_rdev
    try:
        with open(drivers, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return device
    for line in lines:
        fields = line.split()
        if len(fields) < 5 or not fields[2].isdigit():
            continue
        low, dummy, high = fields[3].partition("-")
        if not low.isdigit() or not (high or low).isdigit():
            continue
        if os.major(rdev) == int(fields[2]) and int(low) <= os.minor(rdev) <= int(high or low):
            if fields[4].startswith(TTY_TYPES):
                return device
            break
    raise InvalidArgument("%s is not a tty (not a serial port): device %d:%d is no serial tty in %s; give the "
                          "USB-serial adapter's node (ls -l /dev/serial/by-path)"
                          % (port, os.major(rdev), os.minor(rdev), drivers), port=port)


def _import_pyserial(port: str):
    """pyserial, imported on first use so --help and validation work without it.

    The box command starts Python without ``site`` (``-S``) to start fast; pyserial sits in
    the distribution's site-packages, so add those paths now.
    """
    if sys.flags.no_site:
        import site  # pylint: disable=import-outside-toplevel

        site.main()
    try:
        import serial  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise MissingDependency("pyserial is missing: " + PYSERIAL_HINT, port=port) from None
    return serial


def open_port(port: str, baudrate: int, timeout: float, exclusive: bool = True):
    """Open ``port`` 8N1 at ``baudrate`` with pyserial; every failure is an OnekvmError."""
    check_port_path(port)
    serial = _import_pyserial(port)
    try:
        return serial.Serial(port, baudrate=baudrate, timeout=timeout, write_timeout=max(timeout, 1.0),
                             exclusive=exclusive)
    except serial.SerialException as exc:
        err = getattr(exc, "errno", None)
        text = str(exc)
        if err in (errno.EACCES, errno.EPERM):
            raise PermissionDenied("cannot open %s: permission denied; run as root (become: true)" % port,
                                   port=port) from None
        if err in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "exclusively lock" in text:
            raise port_busy(port) from None
        if err == errno.ENOENT:
            raise NotFound("serial port %s vanished while opening it" % port, port=port) from None
        if err == errno.ENOTTY or "Inappropriate ioctl" in text or "termios" in text.lower():
            raise InvalidArgument("%s is not a tty (not a serial port): %s" % (port, text), port=port) from None
        raise InvalidArgument("cannot open %s: %s" % (port, text), port=port) from None


def port_busy(port: str) -> Busy:
    """The error for a port another program holds exclusively, naming who holds it."""
    return Busy("%s is in exclusive use by another program (%s)" % (port, port_users_text(port)), port=port)


def port_users(port: str) -> list[dict]:
    """Processes that have ``port`` open (pid and command name), read from /proc."""
    try:
        target = os.stat(port)
    except OSError:
        return []
    users = []
    for pid in filter(str.isdigit, _listdir("/proc")):
        fd_dir = "/proc/%s/fd" % pid
        for fd in _listdir(fd_dir):
            try:
                st = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if st.st_rdev == target.st_rdev and stat.S_ISCHR(st.st_mode):
                users.append({"pid": int(pid), "comm": _comm(pid)})
                break
    return users


def port_users_text(port: str) -> str:
    users = port_users(port)
    if not users:
        return "no process found holding it"
    return ", ".join("%s pid %d" % (u["comm"], u["pid"]) for u in users)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _comm(pid: str) -> str:
    try:
        with open("/proc/%s/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return "?"
