# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``onekvm`` box command: argparse -> the core functions -> text or JSON.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.

The role installs this package on the box together with a tiny ``onekvm`` entry script.
Each command lives in a ``_cli_<area>.py`` file that is imported only when that command
runs, so a button press from kvmd's ``cmd`` driver pays for no more imports than it uses.
For the same reason a command line that names its command builds the parser of that
command alone; the full parser with every command exists only for ``onekvm --help``.

A command file provides ``configure(command, parser)`` to add its options and
``run(args) -> dict`` that returns a JSON-able result (``message`` is printed first in
text mode) or raises ``OnekvmError``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ._errors import InvalidArgument, OnekvmError

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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's raw formatter, sized by ``os.get_terminal_size``.

    argparse asks ``shutil`` for the width, and importing ``shutil`` (zlib, bz2, lzma)
    costs more than a whole USB reset's Python overhead on a slow box.
    """

    def __init__(self, prog, **kwargs):
        if kwargs.get("width") is None:
            try:
                columns = int(os.environ.get("COLUMNS") or os.get_terminal_size().columns)
            except (OSError, ValueError):
                columns = 80
            kwargs["width"] = max(columns, 40) - 2
        super().__init__(prog, **kwargs)


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--debug", action="store_true", help="print a traceback on internal errors")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``command`` alone (``onekvm COMMAND ...``), or of the whole CLI."""
    if command is not None:
        summary = COMMANDS[command][1]
        parser = argparse.ArgumentParser(prog="onekvm " + command, description=summary, epilog=EXIT_CODES,
                                         formatter_class=_HelpFormatter)
        _global_options(parser)
        _command_module(command).configure(command, parser)
        parser.set_defaults(command=command)
        return parser
    parser = argparse.ArgumentParser(
        prog="onekvm",
        description="Hardware helpers for OneKVM / PiKVM boxes (part of the onekvm.fleet collection).",
        epilog=EXIT_CODES,
        formatter_class=_HelpFormatter,
    )
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (_module_name, summary) in COMMANDS.items():
        sub.add_parser(name, help=summary, description=summary, epilog=EXIT_CODES, formatter_class=_HelpFormatter)
    return parser


def _refuse_redirects_through_sudo(parser: argparse.ArgumentParser, args, redirects: tuple) -> None:
    """Through sudo (kvmd's buttons, an admin's sudo) root acts only on the real paths.

    The options and environment variables that point the command at other sysfs, /dev,
    lock, state or kvmd trees exist for tests. sudo sets SUDO_UID (and resets the rest of
    the environment); then the variables are dropped and the options refused.
    """
    if "SUDO_UID" not in os.environ:
        return
    from ._kvmd import KVMD_ROOT_ENV, SYSTEMCTL_ENV
    from ._lock import LOCK_PATH_ENV

    for name in (LOCK_PATH_ENV, KVMD_ROOT_ENV, SYSTEMCTL_ENV):
        os.environ.pop(name, None)
    for dest in redirects:
        value = getattr(args, dest, None)
        if value not in (parser.get_default(dest), ""):
            raise InvalidArgument("--%s is not honoured through sudo (it points root at other files); run the "
                                  "command as root without sudo, or leave the option out" % dest.replace("_", "-"))


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
            value = _json(value)
        lines.append("%s: %s" % (key, value))
    return "\n".join(lines)


def _json(data) -> str:
    import json  # pylint: disable=import-outside-toplevel  # imported on use: it costs a slow box ~30 ms

    return json.dumps(data, sort_keys=True, default=str)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # the first word that names a command picks the parser; global options may come before it
    command = next((a for a in argv if a in COMMANDS), None)
    if command is not None:
        argv.remove(command)
    parser = build_parser(command)
    args = parser.parse_args(argv)  # exits 2 with a usage message on bad arguments
    try:
        module = _command_module(args.command)
        _refuse_redirects_through_sudo(parser, args, getattr(module, "REDIRECTS", ()))
        result = module.run(args)
    except OnekvmError as exc:
        if args.json:
            _out(_json(dict(failed=True, msg=exc.msg, exit_code=exc.exit_code, **exc.details)))
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
        _out(_json(result))
    else:
        _out(_format_text(result))
    return 0 if not result.get("failed") else 1
