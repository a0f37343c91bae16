# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ladder's steps on real hardware: streamer restart, USB resets, CH9329 reset.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only (pyusb and
pyserial are reached through ``_usb`` / ``_ch9329``, imported when first needed).
"""

from __future__ import annotations

import os
import signal
import time

from ._errors import InvalidArgument, NotFound, PermissionDenied
from ._watchdog_config import RESET_TIMEOUT, USB_STEPS, Config


class Actions:
    """Runs a ladder step; returns details or raises OnekvmError (NotFound = nothing to act on)."""

    def __init__(self, config: Config, proc_root: str = "/proc", kill=os.kill, sleep=time.sleep) -> None:
        self.config = config
        self.proc_root = proc_root
        self.kill = kill
        self.sleep = sleep

    def run(self, step: str) -> dict:
        if step == "restart_streamer":
            return self.restart_streamer()
        if step in USB_STEPS:
            return usb_reset(self.config.dongle["id"], self.config.dongle["port"], step, self.config.lock_timeout)
        if step == "ch9329":
            return self.reset_chip()
        if step == "hid_adapter":
            return self.reset_hid_adapter()
        raise InvalidArgument("unknown ladder step %r" % step)

    def restart_streamer(self, wait: float = 3.0) -> dict:
        """Stop the streamer process; kvmd starts a fresh one about a second later."""
        pids = find_processes(self.config.streamer_patterns, self.proc_root)
        if not pids:
            raise NotFound("no streamer process (cmdline starting with %s) to restart"
                           % " or ".join(repr(p) for p in self.config.streamer_patterns))
        for pid in pids:
            self._signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(process_alive(pid, self.proc_root) for pid in pids):
            self.sleep(0.1)
        killed = [pid for pid in pids if process_alive(pid, self.proc_root)]
        for pid in killed:  # a streamer stuck on a dead device may ignore SIGTERM
            self._signal(pid, signal.SIGKILL)
        return {"pids": pids, "sigkill": killed}

    def reset_chip(self) -> dict:
        """The CH9329's RESET (kvmd, holding the port, is paused around it)."""
        if not self.config.hid["enabled"]:
            raise NotFound("the HID domain is not watched: the ch9329 step does not apply")
        return {"chip": _ch9329_reset(self.config.hid["device"], self.config.lock_timeout)}

    def reset_hid_adapter(self) -> dict:
        """The adapter's USB reset, then the chip's once the adapter is back (the field note's
        "reset the CH9329 after remounting USB")."""
        hid = self.config.hid
        if not hid["enabled"]:
            raise NotFound("the HID domain is not watched: the hid_adapter step does not apply")
        adapter = usb_reset(hid["adapter_id"], hid["adapter_port"], "ioctl", self.config.lock_timeout)
        chip = _ch9329_reset(hid["device"], self.config.lock_timeout)
        return {"port": adapter.get("port"), "adapter": adapter, "chip": chip}

    def _signal(self, pid: int, sig: int) -> None:
        try:
            self.kill(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise PermissionDenied("not allowed to signal streamer pid %d; the watchdog needs CAP_KILL" % pid,
                                   pid=pid) from None


def process_alive(pid, proc_root: str = "/proc") -> bool:
    """Still running: a positive int present in /proc and not a zombie waiting for its parent."""
    fields = _stat_fields(pid, proc_root)
    return fields is not None and fields[0] not in ("Z", "X")


def process_start(pid, proc_root: str = "/proc"):
    """The process's start time (clock ticks after boot, /proc/PID/stat field 22), or None.

    With the pid it names one process for the life of the boot: a pid reused by another
    process has another start time.
    """
    fields = _stat_fields(pid, proc_root)
    return int(fields[19]) if fields is not None and len(fields) > 19 and fields[19].isdigit() else None


def is_watchdog_process(pid, start, proc_root: str = "/proc") -> bool:
    """``pid`` is the live watchdog service that started at ``start`` (as its state file says)."""
    if not process_alive(pid, proc_root) or start is None or process_start(pid, proc_root) != start:
        return False
    try:
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as f:
            argv = f.read(4096).decode("utf-8", "replace").split("\0")
    except OSError:
        return False
    return "watchdog" in argv


def _stat_fields(pid, proc_root: str):
    """The fields of /proc/PID/stat after the command name (field 3 on), or None."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), encoding="utf-8", errors="replace") as f:
            fields = f.read(4096).rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields or None


def find_processes(patterns: list, proc_root: str = "/proc") -> list:
    """PIDs whose command line starts with one of ``patterns`` (or whose program is named so)."""
    found = []
    for entry in os.listdir(proc_root):
        if not entry.isdigit() or int(entry) in (1, os.getpid(), os.getppid()):  # never init, us or our parent
            continue
        try:
            with open(os.path.join(proc_root, entry, "cmdline"), "rb") as f:
                argv = f.read().decode("utf-8", "replace").rstrip("\0").split("\0")
        except OSError:
            continue
        cmdline = " ".join(argv)
        if any(cmdline.startswith(p) or os.path.basename(argv[0]) == p for p in patterns):
            found.append(int(entry))
    return sorted(found)


def usb_reset(usb_id: str, port: str, method: str, lock_timeout: float) -> dict:
    """Reset the one device selected by id and/or port with ``method`` (holds the box lock)."""
    from . import _usb, _usb_reset
    device = _usb.select_devices(_usb.list_devices(), id=usb_id or None, port=port or None)[0]
    report = _usb_reset.reset_device(device, method=method, timeout=RESET_TIMEOUT, lock_timeout=lock_timeout)
    return {key: report.get(key) for key in ("port", "id", "method", "reset_seconds", "elapsed", "hub", "hub_power_mode")}


def _ch9329_reset(device: str, lock_timeout: float):
    """RESET and wait until the chip answers; kvmd is paused around it if it holds the port."""
    from . import _ch9329
    report = _ch9329.reset(_ch9329.LinkOptions(port=device, lock_timeout=lock_timeout))
    return {key: report.get(key) for key in ("port", "ready_after", "kvmd_paused", "elapsed")}
