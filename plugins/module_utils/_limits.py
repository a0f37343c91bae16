# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The range of every number a caller can give: one table for modules, box command, watchdog and role.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.

Each quantity's range is written here once. The modules and the box command check their
options with ``check``, the watchdog's config check uses the same entries, and the role's
argument spec states the same ranges (a test compares them). NaN and infinities are never
in range, so a wait always ends and a loop never spins.
"""

from __future__ import annotations

import collections
import math

from ._errors import InvalidArgument

Limit = collections.namedtuple("Limit", "low high integer what")

HOUR = 3600.0
DAY = 24 * HOUR

LIMITS = {
    # USB resets (usb_reset module, onekvm usb-reset, the watchdog's USB steps)
    "timeout": Limit(0.0, 600.0, False, "seconds to wait for a reset device to come back"),
    "lock_timeout": Limit(0.0, HOUR, False, "seconds to wait for the box-wide hardware lock"),
    "power_off_time": Limit(0.0, 60.0, False, "seconds a hub port stays powered off"),
    # CH9329 (ch9329_* modules, onekvm ch9329-*)
    "ch9329_timeout": Limit(0.05, 60.0, False, "seconds to wait for the chip's reply"),
    "ready_timeout": Limit(0.1, 120.0, False, "seconds to wait for the chip to answer after a reset"),
    "retries": Limit(0, 10, True, "extra RESET attempts"),
    # serial relay (usb_relay module, onekvm relay, relay buttons)
    "duration": Limit(0.05, 10.0, False, "seconds a relay stays closed in a pulse"),
    # kvmd's API (kvmd_gpio_channel / kvmd_gpio_info modules)
    "kvmd_timeout": Limit(0.1, 120.0, False, "seconds to wait for kvmd's answer"),
    "gpio_delay": Limit(0.0, HOUR, False, "seconds of a GPIO pulse asked for (0: the channel's own; kvmd clamps it)"),
    # ustreamer's /snapshot (ustreamer_snapshot module)
    "snapshot_timeout": Limit(0.1, 60.0, False, "seconds to wait for ustreamer's snapshot"),
    "snapshot_bytes": Limit(1024, 32 * 1024 * 1024, True, "bytes of a snapshot at most"),
    # the capture watchdog's config (the role's onekvm_watchdog_* variables)
    "interval": Limit(0.5, HOUR, False, "seconds between health checks"),
    "grace": Limit(0.0, DAY, False, "seconds a failure must last before the first action"),
    "waits": Limit(0.0, HOUR, False, "seconds a step may take to heal"),
    "backoff": Limit(0.0, 7 * DAY, False, "seconds before the ladder is tried again (0: never)"),
    "backoff_max": Limit(0.0, 7 * DAY, False, "upper bound of the doubling backoff, in seconds"),
    "ustreamer_timeout": Limit(0.1, 60.0, False, "seconds to wait for ustreamer's answer"),
    "min_fps": Limit(0.0, 1000.0, False, "frames per second below which an online source counts as failed"),
    "hid_timeout": Limit(0.1, 60.0, False, "seconds to wait for the CH9329's answer"),
    "max_actions_per_hour": Limit(1, 3600, True, "recovery actions in any hour"),
    "systemd_watchdog_sec": Limit(0.0, DAY, False, "the unit's WatchdogSec (0: none)"),
}


def _text(number) -> str:
    return ("%g" % number) if isinstance(number, float) else str(number)


def describe(quantity: str) -> str:
    """The range in words, as the docs state it: ``0 to 600``."""
    limit = LIMITS[quantity]
    return "%s to %s" % (_text(limit.low), _text(limit.high))


def check(quantity: str, value, name: str | None = None):
    """``value`` if it is a finite number in ``quantity``'s range; else ``InvalidArgument`` naming ``name``."""
    limit = LIMITS[quantity]
    name = name or quantity
    number_types = (int,) if limit.integer else (int, float)
    ok = (not isinstance(value, bool) and isinstance(value, number_types) and math.isfinite(value)
          and limit.low <= value <= limit.high)
    if not ok:
        raise InvalidArgument("%s must be %s from %s (%s), got %r; give a value in that range"
                              % (name, "a whole number" if limit.integer else "a number", describe(quantity),
                                 limit.what, value), **{quantity: repr(value)})
    return value


def argparse_type(quantity: str, option: str | None = None):
    """A ``type=`` for argparse: parse the text, then check it (argparse reports the message, exit 2)."""
    import argparse  # only the box command needs it

    limit = LIMITS[quantity]

    def parse(text: str):
        try:
            value = int(text) if limit.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a %s" % (text, "whole number" if limit.integer else "number")) from None
        try:
            return check(quantity, value, option or "--" + quantity.replace("_", "-"))
        except InvalidArgument as exc:
            raise argparse.ArgumentTypeError(exc.msg) from None

    parse.__name__ = quantity  # argparse names the type in its messages
    return parse
