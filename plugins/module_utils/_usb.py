# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""USB discovery and device selection: the devices sysfs shows, their port paths, ids, drivers
and nodes, and the selectors (id, vendor/product, serial, port path, bus/address) that pick them.

PRIVATE to the onekvm.fleet collection: no compatibility promise.
This file is part of the box-side core: standard library only, no Ansible imports.
It serves the ``usb_reset`` / ``usb_info`` modules, the ``onekvm usb-*`` commands, the capture
watchdog and the role's ``usb_id`` / ``usb_port`` tests (the id and port-path patterns). The
resets are in ``_usb_reset``.

Discovery reads sysfs only (``/sys/bus/usb/devices``). Paths that tests redirect (``/sys``,
``/dev``) are parameters with the real path as default.
"""

from __future__ import annotations

import os
import re

from ._errors import Ambiguous, InvalidArgument, MissingDependency, NotFound, PermissionDenied


SYSFS_ROOT = "/sys"
DEV_ROOT = "/dev"

# sysfs names: "1-1.2" is a device (bus 1, hub port 1, then port 2); "1-1.2:1.0" one of its
# interfaces; "usb1" the root hub of bus 1.
PORT_PATH_RE = re.compile(r"^[0-9]+-[0-9]+(\.[0-9]+)*$")
ROOT_HUB_RE = re.compile(r"^usb[0-9]+$")
ID_RE = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$")
HEX16_RE = re.compile(r"^(0x)?([0-9a-fA-F]{1,4})$")

USB_CLASS_HUB = 9

ROOT_HINT = "run as root (Ansible: become: true; shell: sudo)"


class UsbInterface:
    """One interface of a USB device: ``1-1.2:1.0``, its class and the driver bound to it."""

    __slots__ = ("name", "interface_class", "driver")

    def __init__(self, name: str, interface_class: int | None, driver: str | None) -> None:
        self.name = name
        self.interface_class = interface_class
        self.driver = driver

    def as_dict(self) -> dict:
        return {"name": self.name, "class": self.interface_class, "driver": self.driver}


class UsbDevice:
    """What sysfs says about one USB device, at one moment."""

    def __init__(self, port: str, bus: int, address: int, vid: int, pid: int, serial: str | None = None,
                 manufacturer: str | None = None, product: str | None = None, speed: str | None = None,
                 parent: str | None = None, device_class: int | None = None, authorized: bool = True,
                 interfaces: list | None = None, nodes: list | None = None, usbfs: str | None = None,
                 sysfs_dir: str | None = None, dev_root: str = DEV_ROOT) -> None:
        self.port = port
        self.bus = bus
        self.address = address
        self.vid = vid
        self.pid = pid
        self.serial = serial
        self.manufacturer = manufacturer
        self.product = product
        self.speed = speed
        self.parent = parent
        self.device_class = device_class
        self.authorized = authorized
        self.usbfs = usbfs
        # interfaces and nodes are read from sysfs on first use: walking a device's sysfs
        # tree is the slow part of discovery, and selection does not need it
        self.sysfs_dir = sysfs_dir
        self.dev_root = dev_root
        self._interfaces = interfaces
        self._nodes = nodes

    def load(self) -> UsbDevice:
        """Read interfaces and device nodes now (a snapshot to compare with later)."""
        _dummy = (self.interfaces, self.nodes)
        return self

    @property
    def interfaces(self) -> list:
        if self._interfaces is None:
            try:
                self._interfaces = _interfaces(self.sysfs_dir, self.port, self.bus) if self.sysfs_dir else []
            except OSError:  # gone meanwhile
                self._interfaces = []
        return self._interfaces

    @property
    def nodes(self) -> list:
        if self._nodes is None:
            self._nodes = _device_nodes(self.sysfs_dir, self.dev_root) if self.sysfs_dir else []
        return self._nodes

    @property
    def id(self) -> str:
        return "%04x:%04x" % (self.vid, self.pid)

    @property
    def is_root_hub(self) -> bool:
        return bool(ROOT_HUB_RE.match(self.port))

    @property
    def is_hub(self) -> bool:
        return self.device_class == USB_CLASS_HUB

    @property
    def drivers(self) -> list:
        return sorted({i.driver for i in self.interfaces if i.driver})

    @property
    def bound_interfaces(self) -> dict:
        """interface name -> driver, for the interfaces that have a driver."""
        return {i.name: i.driver for i in self.interfaces if i.driver}

    def describe(self) -> str:
        """One line for humans: ``1-1.2 534d:2109 USB Video (serial X)``."""
        text = "%s %s" % (self.port, self.id)
        if self.product:
            text += " " + self.product
        if self.serial:
            text += " (serial %s)" % self.serial
        return text

    def as_dict(self) -> dict:
        return {
            "port": self.port,
            "bus": self.bus,
            "address": self.address,
            "id": self.id,
            "vid": "%04x" % self.vid,
            "pid": "%04x" % self.pid,
            "serial": self.serial,
            "manufacturer": self.manufacturer,
            "product": self.product,
            "speed": self.speed,
            "parent": self.parent,
            "authorized": self.authorized,
            "drivers": self.drivers,
            "interfaces": [i.as_dict() for i in self.interfaces],
            "nodes": list(self.nodes),
            "usbfs": self.usbfs,
        }


# ---------------------------------------------------------------- parsing and validation

def parse_id(text) -> tuple:
    """``"534d:2109"`` -> ``(0x534d, 0x2109)``; anything else raises InvalidArgument."""
    match = ID_RE.match(str(text).strip()) if text is not None else None
    if not match:
        raise InvalidArgument(
            "id must be VENDOR:PRODUCT as two 4-digit hex numbers like 534d:2109 (see lsusb), got %r" % (text,),
            id=text,
        )
    return int(match.group(1), 16), int(match.group(2), 16)


def parse_hex16(text, name: str) -> int:
    """A vendor or product id given alone: ``"534d"`` or ``"0x534d"`` (hex)."""
    match = HEX16_RE.match(str(text).strip()) if text is not None else None
    if not match:
        raise InvalidArgument("%s must be a hex number of at most 4 digits like 534d, got %r" % (name, text),
                              **{name: text})
    return int(match.group(2), 16)


def check_port_path(port) -> str:
    port = str(port).strip()
    if not PORT_PATH_RE.match(port):
        raise InvalidArgument(
            "port must be a USB port path like 1-1.2 (bus-port.port..., as in /sys/bus/usb/devices), got %r" % (port,),
            port=port,
        )
    return port


def _check_positive_int(value, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0 or str(value).strip() != str(number):
        raise InvalidArgument("%s must be a positive integer (see lsusb), got %r" % (name, value), **{name: value})
    return number


# ------------------------------------------------------------------------- discovery

def _read(path: str, default=None):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return default


def _read_int(path: str, base: int = 10, default=None):
    text = _read(path)
    try:
        return int(text, base) if text is not None else default
    except ValueError:
        return default


def usb_devices_dir(sysfs_root: str) -> str:
    return os.path.join(sysfs_root, "bus", "usb", "devices")


def _parent_of(port: str, bus: int) -> str | None:
    if ROOT_HUB_RE.match(port):
        return None
    if "." in port:
        return port.rsplit(".", 1)[0]
    return "usb%d" % bus


def _interfaces(dev_dir: str, port: str, bus: int) -> list:
    prefix = ("%d-0:" % bus) if ROOT_HUB_RE.match(port) else port + ":"  # a root hub's interface is 1-0:1.0
    interfaces = []
    for name in sorted(os.listdir(dev_dir)):
        if not name.startswith(prefix):
            continue
        path = os.path.join(dev_dir, name)
        driver_link = os.path.join(path, "driver")
        driver = os.path.basename(os.readlink(driver_link)) if os.path.islink(driver_link) else None
        interfaces.append(UsbInterface(name, _read_int(os.path.join(path, "bInterfaceClass"), 16), driver))
    return interfaces


def _device_nodes(dev_dir: str, dev_root: str) -> list:
    """Device nodes of the class devices (tty, video4linux, hidraw, input, ...) under this device.

    A class device's sysfs directory sits under the USB device that provides it; its
    ``uevent`` names the node (``DEVNAME=input/event3``). Child USB devices behind a hub
    are skipped: their nodes are theirs.
    """
    nodes = []
    for top, dirs, files in os.walk(dev_dir):
        dirs[:] = sorted(d for d in dirs if not PORT_PATH_RE.match(d))
        if top == dev_dir or "uevent" not in files:
            continue  # the device's own uevent names its usbfs node, reported apart
        uevent = _read(os.path.join(top, "uevent"), "")
        for line in uevent.splitlines():
            if line.startswith("DEVNAME="):
                nodes.append(os.path.join(dev_root, line[len("DEVNAME="):]))
    return sorted(nodes)


def read_device(port: str, sysfs_root: str = SYSFS_ROOT, dev_root: str = DEV_ROOT,
                lazy: bool = False) -> UsbDevice | None:
    """The device at sysfs name ``port`` (``1-1.2`` or ``usb1``), or None if there is none.

    The record is a snapshot (interfaces and nodes read now) unless ``lazy``, when they
    are read on first use.
    """
    link = os.path.join(usb_devices_dir(sysfs_root), port)
    dev_dir = os.path.realpath(link)
    vid = _read_int(os.path.join(dev_dir, "idVendor"), 16)
    pid = _read_int(os.path.join(dev_dir, "idProduct"), 16)
    bus = _read_int(os.path.join(dev_dir, "busnum"))
    address = _read_int(os.path.join(dev_dir, "devnum"))
    if None in (vid, pid, bus, address):
        return None  # absent, or disappearing while we read it
    device = UsbDevice(
        port=port, bus=bus, address=address, vid=vid, pid=pid,
        serial=_read(os.path.join(dev_dir, "serial")),
        manufacturer=_read(os.path.join(dev_dir, "manufacturer")),
        product=_read(os.path.join(dev_dir, "product")),
        speed=_read(os.path.join(dev_dir, "speed")),
        parent=_parent_of(port, bus),
        device_class=_read_int(os.path.join(dev_dir, "bDeviceClass"), 16),
        authorized=_read(os.path.join(dev_dir, "authorized"), "1") != "0",
        usbfs=os.path.join(dev_root, "bus", "usb", "%03d" % bus, "%03d" % address),
        sysfs_dir=dev_dir,
        dev_root=dev_root,
    )
    if not lazy:
        device.load()
    return device


def _sort_key(device: UsbDevice) -> tuple:
    if device.is_root_hub:
        return (device.bus, ())
    return (device.bus, tuple(int(p) for p in re.split(r"[-.]", device.port)))


def list_devices(sysfs_root: str = SYSFS_ROOT, dev_root: str = DEV_ROOT) -> list:
    """Every USB device sysfs knows, root hubs included, ordered by bus and port path.

    Interfaces and device nodes of each record are read when first used.
    """
    devices_dir = usb_devices_dir(sysfs_root)
    try:
        names = os.listdir(devices_dir)
    except (FileNotFoundError, NotADirectoryError):
        raise MissingDependency("%s does not exist (or is not a directory): this system has no USB support in sysfs"
                                % devices_dir, path=devices_dir) from None
    except PermissionError:
        raise PermissionDenied("cannot read %s: %s" % (devices_dir, ROOT_HINT), path=devices_dir) from None
    devices = []
    for name in names:
        if PORT_PATH_RE.match(name) or ROOT_HUB_RE.match(name):
            device = read_device(name, sysfs_root, dev_root, lazy=True)  # selection needs no sysfs walk
            if device is not None:
                devices.append(device)
    return sorted(devices, key=_sort_key)


# ------------------------------------------------------------------------- selection

def normalize_selectors(id=None, vendor=None, product=None, serial=None, port=None, bus=None,
                        address=None) -> dict:  # pylint: disable=redefined-builtin
    """Check selector values and return them parsed (only the given ones); raise InvalidArgument."""
    if id is not None and (vendor is not None or product is not None):
        raise InvalidArgument("give either id (like 534d:2109) or vendor + product, not both", id=id)
    if (vendor is None) != (product is None):
        raise InvalidArgument("vendor and product go together (or give id like 534d:2109)",
                              vendor=vendor, product=product)
    if (bus is None) != (address is None):
        raise InvalidArgument("bus and address go together (lsusb shows them as 'Bus 001 Device 005')",
                              bus=bus, address=address)
    parsed = {}
    if id is not None:
        parsed["vid"], parsed["pid"] = parse_id(id)
    if vendor is not None:
        parsed["vid"] = parse_hex16(vendor, "vendor")
        parsed["pid"] = parse_hex16(product, "product")
    if serial is not None:
        parsed["serial"] = str(serial)
    if port is not None:
        parsed["port"] = check_port_path(port)
    if bus is not None:
        parsed["bus"] = _check_positive_int(bus, "bus")
        parsed["address"] = _check_positive_int(address, "address")
    return parsed


def describe_selectors(parsed: dict) -> str:
    parts = []
    if "vid" in parsed:
        parts.append("id=%04x:%04x" % (parsed["vid"], parsed["pid"]))
    for key in ("serial", "port", "bus", "address"):
        if key in parsed:
            parts.append("%s=%s" % (key, parsed[key]))
    return " ".join(parts) or "(no selector)"


def _matches(device: UsbDevice, parsed: dict) -> bool:
    return all(getattr(device, key) == value for key, value in parsed.items())


def select_devices(devices, *, id=None, vendor=None, product=None, serial=None, port=None,  # pylint: disable=redefined-builtin
                   bus=None, address=None, allow_many: bool = False, allow_none: bool = False) -> list:
    """The devices matching every given selector.

    No match raises NotFound listing what is present (unless ``allow_none``); more than one
    raises Ambiguous listing the matches (unless ``allow_many``). No selector matches all.
    """
    parsed = normalize_selectors(id=id, vendor=vendor, product=product, serial=serial, port=port,
                                 bus=bus, address=address)
    matches = [d for d in devices if _matches(d, parsed)]
    wanted = describe_selectors(parsed)
    if not matches and not allow_none:
        present = [d.describe() for d in devices if not d.is_root_hub]
        raise NotFound(
            "no USB device matches %s; present: %s" % (wanted, "; ".join(present) or "none"),
            selector=wanted, present=present,
        )
    if len(matches) > 1 and not allow_many:
        listed = [d.describe() for d in matches]
        raise Ambiguous(
            "%d USB devices match %s: %s; narrow the choice with port (or serial, or bus + address), "
            "or set all (--all) to act on every one" % (len(matches), wanted, "; ".join(listed)),
            selector=wanted, matches=listed,
        )
    return matches


def find_devices(sysfs_root: str = SYSFS_ROOT, dev_root: str = DEV_ROOT, **selection) -> list:
    """``select_devices(list_devices(...), **selection)``, quicker when a port path is given.

    A port path names at most one device, so only that one is read; the whole bus is
    listed only to build the NotFound message.
    """
    port = selection.get("port")
    if port is not None:
        normalize_selectors(**{k: v for k, v in selection.items() if k not in ("allow_many", "allow_none")})
        device = read_device(port.strip(), sysfs_root, dev_root, lazy=True)
        if device is not None:
            return select_devices([device], **selection)
    return select_devices(list_devices(sysfs_root, dev_root), **selection)
