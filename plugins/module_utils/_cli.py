# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``onekvm`` box command: argparse -> the core functions -> text or JSON.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.

The role installs this package on the box together with a tiny ``onekvm`` entry script.
Each command lives in a ``_cli_<area>.py`` file that is imported only when that command
runs, so a button press from kvmd's ``cmd`` driver pays for no more imports than it uses.

A command file provides ``configure(command, parser)`` to add its options and
``run(args) -> dict`` that returns a JSON-able result (``message`` is printed first in
text mode) or raises ``OnekvmError``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from ._errors import OnekvmError

# command -> (file providing it, one-line summary). Keep sorted by area.
COMMANDS = {
    "usb-list": ("_cli_usb", "list USB devices with port paths, drivers and device nodes"),
    "usb-reset": ("_cli_usb", "reset a USB device (ioctl, authorize, rebind or power_cycle)"),
    "ch9329-reset": ("_cli_ch9329", "reset the CH9329 HID chip and wait until it answers"),
    "ch9329-info": ("_cli_ch9329", "read the CH9329's version, USB state, LEDs and config"),
    "relay": ("_cli_relay", "switch or pulse a channel of a serial (LCUS) USB relay"),
    "status": ("_cli_watchdog", "print the capture watchdog's state"),
    "watchdog": ("_cli_watchdog", "run the capture watchdog service loop (onekvm-watchdog.service)"),
}

EXIT_CODES = """exit codes:
  0  success
  1  failure
  2  invalid arguments (nothing was touched)
  3  device not found, or the selector matched several devices
  4  busy: another hardware action holds the box-wide lock, or the port is in use
  5  timeout: the hardware did not answer or come back in time
  6  permission denied: run as root
  7  a needed library or kernel facility is missing
  8  the device answered wrongly (bad reply, error status, I/O error)
 70  internal error (a bug: please report it with --debug output)"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onekvm",
        description="Hardware helpers for OneKVM / PiKVM boxes (part of the onekvm.fleet collection).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--debug", action="store_true", help="print a traceback on internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, summary) in COMMANDS.items():
        sp = sub.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == command:  # only the chosen command's file is imported
            _command_module(name).configure(name, sp)
    return parser


def _command_module(name: str):
    return importlib.import_module("." + COMMANDS[name][0], __package__)


def _format_text(result: dict) -> str:
    lines = []
    if result.get("message"):
        lines.append(str(result["message"]))
    for key, value in result.items():
        if key == "message":
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        lines.append("%s: %s" % (key, value))
    return "\n".join(lines)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)  # exits 2 with a usage message on bad arguments
    try:
        result = _command_module(args.command).run(args)
    except OnekvmError as exc:
        if args.json:
            _out(json.dumps(dict(failed=True, msg=exc.msg, exit_code=exc.exit_code, **exc.details), default=str))
        else:
            _err("onekvm %s: error: %s" % (args.command, exc.msg))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: keep kvmd's log readable, show the traceback on request
        if args.debug:
            raise
        _err("onekvm %s: internal error: %s: %s (rerun with --debug)" % (args.command, type(exc).__name__, exc))
        return 70
    if args.json:
        _out(json.dumps(result, sort_keys=True, default=str))
    else:
        _out(_format_text(result))
    return 0 if not result.get("failed") else 1
