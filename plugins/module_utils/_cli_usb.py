# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``onekvm usb-list`` and ``onekvm usb-reset``: the box command's face of ``_usb`` and ``_usb_reset``.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only.

    onekvm usb-list [--json] [ID] [--port 1-1.2] ...
    onekvm usb-reset 534d:2109 [--method authorize] [--port 1-1.2] [--all] [--no-wait] [--timeout S]
"""

from __future__ import annotations

import argparse

from ._errors import InvalidArgument
from ._limits import argparse_type, describe
from ._usb import DEV_ROOT, SYSFS_ROOT, find_devices
from ._usb_reset import DEFAULT_LOCK_TIMEOUT, DEFAULT_POWER_OFF_TIME, DEFAULT_TIMEOUT, METHODS, reset_devices


# options that point root at another sysfs / /dev tree (tests): refused through sudo
REDIRECTS = ("sysfs_root", "dev_root")


def configure(command: str, parser) -> None:
    parser.add_argument("id", nargs="?", help="VENDOR:PRODUCT in hex, like 534d:2109 (as lsusb shows it)")
    parser.add_argument("--vendor", help="vendor id in hex (with --product, instead of ID)")
    parser.add_argument("--product", help="product id in hex (with --vendor)")
    parser.add_argument("--serial", help="only the device with this serial number")
    parser.add_argument("--port", help="only the device at this USB port path, like 1-1.2 (stable across replug)")
    parser.add_argument("--bus", type=int, help="only the device on this bus (with --address)")
    parser.add_argument("--address", type=int, help="only the device with this address (lsusb 'Device NNN')")
    parser.add_argument("--sysfs-root", default=SYSFS_ROOT, help=argparse.SUPPRESS)  # for tests
    parser.add_argument("--dev-root", default=DEV_ROOT, help=argparse.SUPPRESS)  # for tests
    if command == "usb-reset":
        parser.add_argument("--method", choices=METHODS, default="ioctl",
                            help="ioctl: USBDEVFS_RESET (default); authorize: sysfs authorized 0 then 1; "
                                 "rebind: unbind/bind the interface drivers; power_cycle: hub port power off/on")
        parser.add_argument("--all", action="store_true", help="reset every matching device instead of refusing")
        parser.add_argument("--no-wait", dest="wait", action="store_false",
                            help="do not wait for the device to come back")
        parser.add_argument("--timeout", type=argparse_type("timeout"), default=DEFAULT_TIMEOUT,
                            help="seconds to wait for the device to come back, %s (default %%(default)s)" % describe("timeout"))
        parser.add_argument("--lock-timeout", type=argparse_type("lock_timeout"), default=DEFAULT_LOCK_TIMEOUT,
                            help="seconds to wait for another hardware action to finish, %s (default %%(default)s)"
                                 % describe("lock_timeout"))
        parser.add_argument("--power-off-time", type=argparse_type("power_off_time"), default=DEFAULT_POWER_OFF_TIME,
                            help="power_cycle: seconds the port stays off, %s (default %%(default)s)" % describe("power_off_time"))
        parser.add_argument("--dry-run", action="store_true",
                            help="select and check the devices, reset nothing")


def _selectors(args) -> dict:
    return {"id": args.id, "vendor": args.vendor, "product": args.product, "serial": args.serial,
            "port": args.port, "bus": args.bus, "address": args.address}


def run(args) -> dict:
    if args.command == "usb-list":
        return _run_list(args)
    return _run_reset(args)


def _run_list(args) -> dict:
    devices = find_devices(args.sysfs_root, args.dev_root, allow_many=True, allow_none=True, **_selectors(args))
    if args.json:
        return {"devices": [d.as_dict() for d in devices], "count": len(devices)}
    return {"message": "\n".join(_list_line(d) for d in devices) or "no matching USB device"}


def _list_line(device) -> str:
    drivers = ",".join(device.drivers) or "-"
    nodes = " ".join(device.nodes)
    return "%-10s %03d/%03d %s %-8s %-28s %s" % (device.port, device.bus, device.address, device.id, device.speed or "?",
                                                 (device.product or "")[:28] + " [" + drivers + "]", nodes)


def _run_reset(args) -> dict:
    if not any(v is not None for v in (args.id, args.vendor, args.port, args.bus)):
        raise InvalidArgument("say which device to reset: an id like 534d:2109, --vendor/--product, --port or "
                              "--bus/--address (onekvm usb-list shows them)")
    devices = find_devices(args.sysfs_root, args.dev_root, allow_many=args.all, **_selectors(args))
    reports = reset_devices(devices, method=args.method, wait=args.wait, timeout=args.timeout,
                            lock_timeout=args.lock_timeout, power_off_time=args.power_off_time,
                            check_mode=args.dry_run, sysfs_root=args.sysfs_root, dev_root=args.dev_root)
    result = {"changed": not args.dry_run, "method": args.method, "devices": reports,
              "elapsed": round(sum(r["elapsed"] for r in reports), 3)}
    if args.json:
        return result
    lines = [_reset_line(r, args.dry_run) for r in reports]
    return {"message": "\n".join(lines), "elapsed": result["elapsed"]}


def _reset_line(report: dict, dry_run: bool) -> str:
    before = report["before"]
    if dry_run:
        return "%s %s: would reset with %s" % (report["port"], report["id"], report["method"])
    text = "%s %s: reset with %s" % (report["port"], report["id"], report["method"])
    after = report.get("after")
    if after:
        drivers = ",".join(after["drivers"]) or "-"
        nodes = " ".join(after["nodes"])
        text += ", back in %.2f s as %03d/%03d [%s] %s" % (report["elapsed"], after["bus"], after["address"], drivers, nodes)
    else:
        text += " (not waited for; was %03d/%03d)" % (before["bus"], before["address"])
    return text
