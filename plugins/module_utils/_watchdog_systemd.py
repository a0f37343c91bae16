# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Talking to systemd: sd_notify without python-systemd, and the watchdog keepalive.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.

systemd kills a ``WatchdogSec=`` service that sends no ``WATCHDOG=1`` for ``WATCHDOG_USEC``
(systemd.service(5); sd_watchdog_enabled(3) advises pinging at half that). The service
pings from its own loop between checks; ``Keepalive`` pings from a thread while a check or
a ladder step runs, but only until that operation's own time bound: a check stuck beyond
it stops the pings, and systemd restarts the service as it should.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time


def sd_notify(message: str, environ=None) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to $NOTIFY_SOCKET; False when not run by systemd."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError:
        return False
    return True


def watchdog_interval(environ=None) -> float | None:
    """Half of systemd's WatchdogSec (from $WATCHDOG_USEC) if it asked this process for pings."""
    env = environ if environ is not None else os.environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6


class Keepalive:
    """``WATCHDOG=1`` at least every ``period`` seconds (None: systemd asked for no pings)."""

    def __init__(self, period, notify, clock=time.monotonic) -> None:
        self.period = period
        self.notify = notify
        self.clock = clock
        self.last = float("-inf")
        self._until = float("-inf")
        self._wake = threading.Condition()
        self._thread = None

    def ping(self, status: str = "") -> None:
        self.last = self.clock()
        self.notify("WATCHDOG=1" + ("\nSTATUS=" + status if status else ""))

    def due(self) -> bool:
        """A ping is due (half the period gone, so one slow slice cannot miss it)."""
        return self.period is not None and self.clock() - self.last >= self.period / 2

    def sleep_slice(self) -> float:
        """How long the loop may sleep between looks at the clock."""
        return 1.0 if self.period is None else min(1.0, self.period / 4)

    @contextlib.contextmanager
    def cover(self, bound: float):
        """Ping from a thread while the block runs, for at most ``bound`` seconds."""
        if self.period is None:
            yield
            return
        with self._wake:
            self._until = self.clock() + bound
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog-keepalive", daemon=True)
                self._thread.start()
            self._wake.notify()
        try:
            yield
        finally:
            with self._wake:
                self._until = float("-inf")

    def _run(self) -> None:
        with self._wake:
            while True:
                if self.clock() < self._until:
                    self.ping()
                    self._wake.wait(self.period / 2)
                else:
                    self._wake.wait()
