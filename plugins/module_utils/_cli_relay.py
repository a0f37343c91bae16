# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``onekvm relay on|off|pulse``: a serial (LCUS) USB relay from the box command.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library (+ pyserial when
sending).

Made to be a kvmd ``cmd`` entry point: everything comes from argv (no shell, no
environment), the result is one line, the exit code says what happened (see --help).
A SIGTERM during a pulse still sends the off frame before the command exits (143).
"""

from __future__ import annotations

import signal

from . import _relay
from ._limits import argparse_type, describe


# where root writes the state record: only the default (or none) through sudo
REDIRECTS = ("state_file",)


def configure(command: str, parser) -> None:
    parser.add_argument("action", choices=_relay.STATES,
                        help="on = contacts closed, off = open, pulse = on, wait --duration, off (a button press)")
    parser.add_argument("--channel", type=int, default=1, help="relay channel, 1..--channels (default: %(default)s)")
    parser.add_argument("--channels", type=int, default=1, choices=_relay.CHANNEL_COUNTS,
                        help="how many relays the board has (default: %(default)s)")
    parser.add_argument("--duration", type=argparse_type("duration"), default=None,
                        help="pulse length in seconds, %g..%g (default: %g)"
                        % (_relay.MIN_DURATION, _relay.MAX_DURATION, _relay.DEFAULT_DURATION))
    parser.add_argument("--port", default=_relay.DEFAULT_PORT,
                        help="the relay's USB-serial adapter (default: %(default)s, the role's udev name)")
    parser.add_argument("--baudrate", type=int, default=_relay.DEFAULT_BAUDRATE, choices=_relay.BAUDRATES,
                        help="serial speed (default: %(default)s)")
    parser.add_argument("--state-file", default=_relay.DEFAULT_STATE_FILE,
                        help="where the last commanded state is recorded (default: %(default)s); "
                             "an empty value disables the record")
    parser.add_argument("--force", action="store_true",
                        help="send on/off even when the record says the channel is already there")
    parser.add_argument("--check", action="store_true",
                        help="check the arguments and the port, print what would be sent, send nothing")
    parser.add_argument("--lock-timeout", type=argparse_type("lock_timeout"), default=_relay.DEFAULT_LOCK_TIMEOUT,
                        help="seconds to wait for the box-wide hardware lock, %s (default: %%(default)s)" % describe("lock_timeout"))


def run(args) -> dict:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    result = _relay.run(port=args.port, channel=args.channel, state=args.action, channels=args.channels,
                        duration=args.duration, baudrate=args.baudrate, state_file=args.state_file or None,
                        force=args.force, check_mode=args.check, lock_timeout=args.lock_timeout)
    result["message"] = _summary(result)
    return result


def _exit_on_sigterm(signum, frame) -> None:
    # SystemExit unwinds through the pulse's finally (off frame) and the lock's release
    raise SystemExit(128 + signum)


def _summary(result: dict) -> str:
    what = "relay %s channel %d" % (result["port"], result["channel"])
    frames = ", ".join(result["frames"]) or "nothing"
    if result["check_mode"]:
        return "check: would send %s to %s" % (frames, what)
    if not result["changed"]:
        return "%s is already %s (recorded in %s): sent nothing" % (what, result["state"], result["state_file"])
    if result["state"] == "pulse":
        return "%s pulsed for %.3f s (sent %s)" % (what, result["pulse_width"], frames)
    return "%s switched %s (sent %s)" % (what, result["state"], frames)
