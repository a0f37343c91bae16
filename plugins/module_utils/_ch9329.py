# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The WCH CH9329 serial-to-USB-HID chip: the operations the modules (ch9329_reset, ch9329_info,
ch9329_config), the box command (``onekvm ch9329-reset`` / ``ch9329-info``) and the capture
watchdog run - how to reach the chip (lock, kvmd pause, port, baud rate, address), reset with a
ready check, info, apply a config.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library + pyserial.

The protocol is in ``_ch9329_protocol``, the 50-byte config in ``_ch9329_config``, the
exchanges with one open chip in ``_ch9329_chip``.
"""

from __future__ import annotations

import contextlib
import os
import time

from . import _kvmd
from ._ch9329_chip import Chip
from ._ch9329_config import (
    ChipConfig,
    STRING_TYPES,
    desired_config,
    kvmd_safety_problems,
    validate_address,
    validate_baudrate,
    validate_changes,
)
from ._ch9329_protocol import (
    BAUD_RATES,
    DEFAULT_BAUDRATE,
    DEFAULT_TIMEOUT,
    MAX_ADDRESS,
    PROBE_ORDER,
    STATUS_OK,
    STATUS_WORDS,
    hex_bytes,
)
from ._errors import DeviceError, InvalidArgument, Timeout
from ._limits import check
from ._lock import hardware_lock
from ._serialport import check_tty, open_port


KVMD_DEFAULT_DEVICE = "/dev/kvmd-hid"  # kvmd's ch9329 plugin default for hid.device
DEFAULT_READY_TIMEOUT = 5.0


# -- opening: lock, kvmd pause, port, baud rate --------------------------------------------
def default_port(dev: str = "/dev", kvmd_root: str | None = None) -> str:
    """kvmd's configured CH9329 device, else /dev/kvmd-hid if present, else /dev/ttyUSB0."""
    hid = _kvmd.hid_settings(kvmd_root)
    if hid["type"] == "ch9329" and hid["device"]:
        return hid["device"]
    udev_name = os.path.join(dev, "kvmd-hid")
    return udev_name if os.path.exists(udev_name) else os.path.join(dev, "ttyUSB0")


def default_baudrate(port: str, kvmd_root: str | None = None) -> int:
    """kvmd's ``hid.speed`` when kvmd drives a CH9329 on this port, else the factory 9600."""
    hid = _kvmd.hid_settings(kvmd_root)
    kvmd_device = hid["device"] or KVMD_DEFAULT_DEVICE
    if hid["type"] == "ch9329" and hid["speed"] in BAUD_RATES and _same_file(kvmd_device, port):
        return hid["speed"]
    return DEFAULT_BAUDRATE


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a == b


class LinkOptions:
    """How to reach the chip; validated on construction (nothing touched before)."""

    def __init__(self, port: str | None = None, baudrate=None, address: int = 0, timeout: float = DEFAULT_TIMEOUT,
                 pause_kvmd: bool = True, lock_timeout: float = 30.0, kvmd_root: str | None = None,
                 systemctl: str | None = None) -> None:
        self.kvmd_root = kvmd_root
        self.port = port or default_port(kvmd_root=kvmd_root)
        self.baudrate = validate_baudrate(baudrate) if baudrate not in (None, "") else \
            default_baudrate(self.port, kvmd_root)
        self.address = validate_address(address)
        self.timeout = float(check("ch9329_timeout", timeout, "timeout"))
        self.pause_kvmd = bool(pause_kvmd)
        self.lock_timeout = check("lock_timeout", lock_timeout)
        self.systemctl = systemctl


@contextlib.contextmanager
def open_chip(options: LinkOptions, read_only: bool = False, pause: bool | None = None):
    """Yield ``(chip, report)`` with the hardware lock held, kvmd paused if it holds the
    port (and ``options.pause_kvmd``), the port open, the baud rate and address resolved.
    ``report`` collects what happened.

    The port is checked (a serial tty) before anything else. ``pause`` (default
    ``options.pause_kvmd``) says whether kvmd may be stopped; a ``read_only`` caller that
    may not gets ``_kvmd.KvmdHoldsPort`` when kvmd holds the port: kvmd is untouched.
    """
    check_tty(options.port)
    pause = options.pause_kvmd if pause is None else pause
    report = {"port": options.port, "kvmd_holding": [], "kvmd_paused": [], "warnings": []}
    with hardware_lock(timeout=options.lock_timeout):
        with _kvmd.paused_for_port(options.port, pause, options.systemctl, read_only=read_only) as kvmd:
            report["kvmd_holding"] = kvmd["holding"]
            report["kvmd_paused"] = kvmd["paused"]
            report["warnings"].extend(kvmd["warnings"])
            start_rate = DEFAULT_BAUDRATE if options.baudrate == "auto" else options.baudrate
            ser = open_port(options.port, start_rate, options.timeout)
            try:
                chip = Chip(ser, options.port, 0 if options.address == "auto" else options.address, options.timeout)
                _resolve_link(chip, options)
                report["baudrate"] = chip.baudrate
                report["address"] = chip.address
                yield chip, report
            finally:
                ser.close()


def _resolve_link(chip: Chip, options: LinkOptions) -> None:
    """Find the baud rate and/or the address when they are ``auto``."""
    if options.address != "auto":
        if options.baudrate == "auto":
            chip.probe_baudrate()
        return
    rates = PROBE_ORDER if options.baudrate == "auto" else (chip.baudrate,)
    start = time.monotonic()
    for rate in rates:
        chip.set_baudrate(rate)
        found = chip.find_address()
        if found is not None:
            chip.address = found
            return
    raise Timeout("no CH9329 answered on %s at any address 0-%d at %s baud (%.1f s); check the baud rate (try "
                  "baudrate auto), the cable and the chip's power" % (
                      options.port, MAX_ADDRESS, ", ".join(map(str, rates)), time.monotonic() - start),
                  port=options.port)


def link_argument_spec(baudrate_name: str = "baudrate", address_name: str = "address",
                       pause_kvmd: bool = True) -> dict:
    """The modules' options for reaching the chip (a plain dict: no Ansible import here).
    ``address`` is raw: a number 0-254 or ``auto`` (checked by ``validate_address``)."""
    return {
        "serial_port": {"type": "path", "aliases": ["port"]},
        baudrate_name: {"type": "str", "choices": ["auto"] + [str(b) for b in BAUD_RATES]},
        address_name: {"type": "raw", "default": 0},
        "timeout": {"type": "float", "default": DEFAULT_TIMEOUT},
        "pause_kvmd": {"type": "bool", "default": pause_kvmd},
        "lock_timeout": {"type": "float", "default": 30.0},
    }


def link_options_from(params: dict, baudrate_name: str = "baudrate", address_name: str = "address") -> LinkOptions:
    return LinkOptions(port=params["serial_port"], baudrate=params[baudrate_name], address=params[address_name],
                       timeout=params["timeout"], pause_kvmd=params["pause_kvmd"], lock_timeout=params["lock_timeout"])


# -- operations (modules, box command, watchdog) -----------------------------------------------
NOT_READ_HINT = ("reading and checking never stop kvmd (stopping it drops every web session); kvmd's web UI shows "
                 "whether its HID is online and the lock LEDs. To read the chip itself, run again with pause_kvmd: "
                 "true (box command: --pause-kvmd), which stops kvmd for about a second and starts it again, or while "
                 "kvmd is stopped")


def _not_reached(options: LinkOptions, exc: _kvmd.KvmdHoldsPort, warning: str) -> dict:
    """The report of a call that left the chip alone because kvmd holds its port."""
    return {"port": options.port, "baudrate": None if options.baudrate == "auto" else options.baudrate,
            "address": None if options.address == "auto" else options.address,
            "kvmd_holding": list(exc.details.get("units", [])), "kvmd_paused": [],
            "warnings": ["%s: %s" % (exc.msg, warning)]}


def _kvmd_note(report: dict) -> str:
    if report.get("kvmd_paused"):
        return "; %s paused for it and started again" % " and ".join(report["kvmd_paused"])
    return ""


def reset(options: LinkOptions, retries: int = 1, wait_ready: bool = True,
          ready_timeout: float = DEFAULT_READY_TIMEOUT, check_mode: bool = False) -> dict:
    """Reset the chip (RESET with a checked reply) and wait until it answers again.

    kvmd is paused only when it holds the port (and ``options.pause_kvmd``). In check mode
    kvmd is never touched: the chip is probed with GET_INFO when the port is free, and no
    RESET is sent.
    """
    check("retries", retries)
    check("ready_timeout", ready_timeout)
    start = time.monotonic()
    if check_mode:
        try:
            with open_chip(options, read_only=True, pause=False) as (chip, report):
                report.update(info=chip.get_info(), probed=True, attempts=0, reply=None, status=None, ready_after=None)
                return _finish(report, start, changed=True, message="the CH9329 answers; RESET not sent (check mode)")
        except _kvmd.KvmdHoldsPort as exc:
            report = _not_reached(options, exc, "the chip was not probed (check mode never stops kvmd; a real run "
                                                "pauses it for the reset)")
            report.update(info=None, probed=False, attempts=0, reply=None, status=None, ready_after=None)
            return _finish(report, start, changed=True,
                           message="RESET not sent (check mode); the chip was not probed: kvmd holds the port")
    with open_chip(options) as (chip, report):
        reply, attempts = _send_reset(chip, retries, ready_timeout)
        report.update(reply=hex_bytes(reply.raw), status=STATUS_WORDS[STATUS_OK], attempts=attempts,
                      info=None, ready_after=None, polls=0)
        if wait_ready:
            # the reply left the chip just before it rebooted; timing starts at the reply
            info, waited, polls = chip.wait_ready(ready_timeout)
            report.update(info=info, ready_after=round(waited, 3), polls=polls)
    message = "CH9329 reset" + (" and answering again after %.2f s" % report["ready_after"] if wait_ready else "")
    return _finish(report, start, changed=True, message=message + _kvmd_note(report))


def _send_reset(chip: Chip, retries: int, ready_timeout: float) -> tuple:
    attempt = 1
    while True:
        try:
            return chip.send_reset(), attempt
        except (Timeout, DeviceError) as exc:
            if attempt > retries:
                if retries:
                    raise type(exc)("%s (after %d attempts)" % (exc.msg, attempt), **dict(exc.details, attempts=attempt)) from None
                raise
            if not isinstance(exc, Timeout):
                # the chip answered (badly): it may have got the RESET and be rebooting, deaf
                # to a new one; let it come back first
                with contextlib.suppress(Timeout):
                    chip.wait_ready(ready_timeout)
        attempt += 1


def info(options: LinkOptions, strings: bool = True, pause: bool | None = None, report_not_read: bool = False) -> dict:
    """Version, USB state, LEDs, the whole config and (optionally) the USB strings.

    A read: kvmd is stopped only when ``pause`` (default ``options.pause_kvmd``) allows it
    and it holds the port; otherwise kvmd is untouched and ``_kvmd.KvmdHoldsPort`` says what
    was not read and how to read it (with ``report_not_read`` a report with ``read: false``
    and that warning is returned instead).
    """
    start = time.monotonic()
    try:
        with open_chip(options, read_only=True, pause=pause) as (chip, report):
            report["info"] = chip.get_info()
            config = chip.read_config()
            report["config"] = config.as_dict()
            if strings:
                report["usb_strings"] = {name: chip.get_string(name) for name in STRING_TYPES}
    except _kvmd.KvmdHoldsPort as exc:
        what = "the CH9329's version, USB state, LEDs, config and USB strings were not read; " + NOT_READ_HINT
        if not report_not_read:
            raise _kvmd.KvmdHoldsPort("%s: %s" % (exc.msg, what), **exc.details) from None
        return _finish(dict(_not_reached(options, exc, what), read=False), start, changed=False,
                       message="CH9329 not read: kvmd holds the port")
    report["read"] = True
    return _finish(report, start, changed=False, message="CH9329 %s, USB %s%s" % (
        report["info"]["version"], "enumerated" if report["info"]["usb_enumerated"] else "not enumerated",
        _kvmd_note(report)))


def configure(options: LinkOptions, changes: dict, force: bool = False, check_mode: bool = False,
              ready_timeout: float = DEFAULT_READY_TIMEOUT) -> dict:
    """Apply the desired settings idempotently: read, compare, write only the difference,
    RESET to apply, reconnect at the new baud rate / address and verify.

    kvmd is paused only when it holds the port (and ``options.pause_kvmd``); check mode never
    touches kvmd: when kvmd holds the port nothing is compared and the result says so.
    """
    changes = validate_changes(changes)
    check("ready_timeout", ready_timeout)
    problems = kvmd_safety_problems(changes)
    if problems and not force:
        raise InvalidArgument("refusing settings that would make kvmd lose control of the chip: %s; set force: true "
                              "if kvmd does not drive this chip" % "; ".join(problems), problems=problems)
    start = time.monotonic()
    try:
        with open_chip(options, read_only=check_mode, pause=False if check_mode else None) as (chip, report):
            return _configure(chip, report, changes, check_mode, ready_timeout, start)
    except _kvmd.KvmdHoldsPort as exc:
        report = _not_reached(options, exc, "the config was not read nor compared (check mode never stops kvmd); a "
                                            "real run pauses kvmd, compares and applies only what differs")
        report.update(compared=False, config=None, diff={"before": {}, "after": {}})
        return _finish(report, start, changed=True, message="CH9329 config not compared: kvmd holds the port")


def _configure(chip: Chip, report: dict, changes: dict, check_mode: bool, ready_timeout: float, start: float) -> dict:
    current = chip.read_config()
    wanted_strings = changes.get("usb_strings", {})
    current_strings = {name: chip.get_string(name) for name in wanted_strings}
    target = desired_config(current, changes)
    string_updates = {n: t for n, t in wanted_strings.items() if current_strings[n] != t}
    report["diff"] = {
        "before": dict(current.as_dict(), usb_strings=current_strings),
        "after": dict(target.as_dict(), usb_strings=dict(current_strings, **string_updates)),
    }
    # bit 7 of the modes is the pins' (PIN_SET_OFFSETS): not a difference software can make
    changed = target.raw != current.writable().raw or bool(string_updates)
    report["compared"] = True
    report["config"] = report["diff"]["after" if changed else "before"]
    if target.get("baudrate") != current.get("baudrate"):
        report["warnings"].append("the CH9329 now runs at %d baud: kvmd's hid.speed must be %d too (the onekvm "
                                  "role manages it)" % (target.get("baudrate"), target.get("baudrate")))
    if not changed or check_mode:
        return _finish(report, start, changed=changed, message="CH9329 config %s" % (
            "would change" if changed else "already as desired"))
    _apply(chip, current, target, string_updates, ready_timeout, report)
    return _finish(report, start, changed=True, message="CH9329 config applied" + _kvmd_note(report))


def _apply(chip: Chip, current: ChipConfig, target: ChipConfig, string_updates: dict, ready_timeout: float,
           report: dict) -> None:
    if target.raw != current.writable().raw:
        chip.write_config(target)
    for name, text in string_updates.items():
        chip.set_string(name, text)
    chip.send_reset()
    # the new settings are live after RESET: follow the chip to its new baud rate and address
    chip.set_baudrate(target.get("baudrate"))
    chip.address = target.get("address")
    report["baudrate"] = chip.baudrate
    report["address"] = chip.address
    waited = chip.wait_ready(ready_timeout)[1]
    report["ready_after"] = round(waited, 3)
    # a change is done when the chip reports it; the pins' bit 7 is not ours to compare
    readback = chip.read_config()
    if readback.writable().raw != target.raw:
        raise DeviceError("the CH9329 did not keep the new config after RESET: wrote %s, read back %s; WCH documents "
                          "that settings are enabled at the next power-on: power-cycle the chip (unplug it from the "
                          "target) and check with ch9329_info" % (hex_bytes(target.raw), hex_bytes(readback.raw)),
                          written=hex_bytes(target.raw), read=hex_bytes(readback.raw))
    for name, text in string_updates.items():
        if chip.get_string(name) != text:
            raise DeviceError("the CH9329 did not keep the %s string %r after RESET; power-cycle the chip and check "
                              "with ch9329_info" % (name, text))


def _finish(report: dict, start: float, changed: bool, message: str) -> dict:
    report["changed"] = changed
    report["elapsed"] = round(time.monotonic() - start, 3)
    report["message"] = message
    return report
