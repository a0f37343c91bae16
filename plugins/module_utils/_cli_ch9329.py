# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``onekvm ch9329-reset`` and ``onekvm ch9329-info``: the box command's CH9329 part.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library (+ pyserial at run).
Same code as the modules: everything happens in ``_ch9329``.
"""

from __future__ import annotations

from . import _ch9329
from ._ch9329_protocol import DEFAULT_TIMEOUT, scan_seconds
from ._limits import argparse_type, describe


def configure(command: str, parser) -> None:
    parser.add_argument("--port", help="serial port of the chip (default: kvmd's hid.device, else /dev/kvmd-hid, "
                                       "else /dev/ttyUSB0)")
    parser.add_argument("--baudrate", help="9600, 19200, 38400, 57600, 115200 or auto (default: kvmd's hid.speed "
                                           "for this port, else 9600)")
    parser.add_argument("--address", default="0",
                        help="chip address 0-254 (default 0), or auto: ask each address in turn (planned %.1f s at 9600 "
                             "baud, %.1f s at 115200)" % (scan_seconds(9600), scan_seconds(115200)))
    parser.add_argument("--timeout", type=argparse_type("ch9329_timeout", "--timeout"), default=DEFAULT_TIMEOUT,
                        help="seconds to wait for a reply, %s" % describe("ch9329_timeout"))
    if command == "ch9329-reset":
        parser.add_argument("--no-pause-kvmd", action="store_true",
                            help="do not stop kvmd while talking to the chip even if it holds the port")
    else:
        parser.add_argument("--pause-kvmd", action="store_true",
                            help="stop kvmd for the reading if it holds the port (drops its web sessions); without "
                                 "it nothing is read while kvmd holds the port (exit code 4)")
    parser.add_argument("--lock-timeout", type=argparse_type("lock_timeout"), default=30.0,
                        help="seconds to wait for the hardware lock, %s" % describe("lock_timeout"))
    if command == "ch9329-reset":
        parser.add_argument("--retries", type=argparse_type("retries"), default=1,
                            help="extra RESET attempts when the reply is bad, %s" % describe("retries"))
        parser.add_argument("--no-wait", action="store_true", help="do not wait for the chip to answer again")
        parser.add_argument("--ready-timeout", type=argparse_type("ready_timeout"), default=_ch9329.DEFAULT_READY_TIMEOUT,
                            help="seconds to wait for the chip after RESET")
        parser.add_argument("--check", action="store_true",
                            help="only probe the chip with GET_INFO; never stops kvmd (no probe while it holds the port)")
    else:
        parser.add_argument("--no-strings", action="store_true", help="skip reading the USB string descriptors")


def run(args) -> dict:
    pause = not args.no_pause_kvmd if args.command == "ch9329-reset" else args.pause_kvmd
    options = _ch9329.LinkOptions(port=args.port, baudrate=args.baudrate, address=args.address, timeout=args.timeout,
                                  pause_kvmd=pause, lock_timeout=args.lock_timeout)
    if args.command == "ch9329-reset":
        return _ch9329.reset(options, retries=args.retries, wait_ready=not args.no_wait,
                             ready_timeout=args.ready_timeout, check_mode=args.check)
    return _ch9329.info(options, strings=not args.no_strings)
