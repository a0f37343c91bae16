# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""USB discovery, device selection and the four ways Linux can reset a USB device.

PRIVATE to the onekvm.fleet collection: no compatibility promise.
This file is part of the box-side core: standard library only, no Ansible imports.
It serves the ``usb_reset`` / ``usb_info`` modules, the ``onekvm usb-*`` commands and
the capture watchdog.

Discovery reads sysfs only (``/sys/bus/usb/devices``). Resets:

- ``ioctl``: ``USBDEVFS_RESET`` on the usbfs node ``/dev/bus/usb/BBB/DDD`` (the syscall
  that pyusb's ``Device.reset()`` and usbutils' ``usbreset`` make), done with ``fcntl``:
  pyusb and libusb are not needed.
- ``authorize``: write 0 then 1 to the device's sysfs ``authorized`` (unconfigure, re-probe).
- ``rebind``: unbind then bind each bound interface from its driver (no bus traffic).
- ``power_cycle``: switch the parent hub's port off and on through the port's sysfs
  ``disable`` file (Linux >= 6.0); only on hubs that report per-port power switching.

Paths that tests redirect (``/sys``, ``/dev``) are parameters with the real path as default.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
import time

from ._errors import (
    Ambiguous,
    DeviceError,
    InvalidArgument,
    MissingDependency,
    NotFound,
    OnekvmError,
    PermissionDenied,
    Timeout,
)
from ._limits import check
from ._lock import hardware_lock

SYSFS_ROOT = "/sys"
DEV_ROOT = "/dev"
METHODS = ("ioctl", "authorize", "rebind", "power_cycle")
DEFAULT_TIMEOUT = 30.0
DEFAULT_LOCK_TIMEOUT = 30.0
DEFAULT_POWER_OFF_TIME = 1.0
POLL_INTERVAL = 0.05
POWER_OFF_DISCONNECT_TIMEOUT = 10.0  # seconds for a device to leave once its port is off

# sysfs names: "1-1.2" is a device (bus 1, hub port 1, then port 2); "1-1.2:1.0" one of its
# interfaces; "usb1" the root hub of bus 1.
PORT_PATH_RE = re.compile(r"^[0-9]+-[0-9]+(\.[0-9]+)*$")
ROOT_HUB_RE = re.compile(r"^usb[0-9]+$")
ID_RE = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$")
HEX16_RE = re.compile(r"^(0x)?([0-9a-fA-F]{1,4})$")

# Linux ioctl numbers (asm-generic layout, used by x86 and ARM): _IO('U', 20) and
# _IOWR('U', 0, struct usbdevfs_ctrltransfer).
USBDEVFS_RESET = (ord("U") << 8) | 20
# struct usbdevfs_ctrltransfer: bRequestType, bRequest, wValue, wIndex, wLength, timeout (ms), void *data
CTRL_TRANSFER_FORMAT = "BBHHHIP"
USBDEVFS_CONTROL = (3 << 30) | (struct.calcsize(CTRL_TRANSFER_FORMAT) << 16) | (ord("U") << 8) | 0

USB_REQ_GET_DESCRIPTOR = 0x06
USB_DIR_IN_CLASS_DEVICE = 0xA0
USB_DT_HUB = 0x29
USB_DT_SS_HUB = 0x2A
USB_CLASS_HUB = 9
# wHubCharacteristics bits 1:0 (USB 2.0 spec 11.23.2.1)
HUB_POWER_MODES = {0: "ganged", 1: "individual", 2: "none", 3: "none"}
HUB_POWER_MODE_TEXT = {
    "ganged": "ganged power switching (all ports at once)",
    "individual": "per-port power switching",
    "none": "no power switching",
}

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


def _devices_dir(sysfs_root: str) -> str:
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
    link = os.path.join(_devices_dir(sysfs_root), port)
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
    devices_dir = _devices_dir(sysfs_root)
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


# -------------------------------------------------------------------------- low level

def _require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionDenied("resetting USB devices needs root: " + ROOT_HINT)


def _write_sysfs(path: str, value: str) -> None:
    """Write one value to a sysfs attribute; OSErrors are translated by the callers."""
    with open(path, "w") as f:
        f.write(value)


def _open_usbfs(node: str, dev_root: str, what: str) -> int:
    try:
        return os.open(node, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        usbfs_dir = os.path.join(dev_root, "bus", "usb")
        if not os.path.isdir(usbfs_dir):
            raise MissingDependency(
                "%s does not exist: the usbfs device nodes are not available (in a container, pass %s "
                "through)" % (usbfs_dir, usbfs_dir), node=node) from None
        raise DeviceError("%s vanished: its usbfs node %s is gone (unplugged or re-enumerated); list the devices "
                          "again and retry" % (what, node), node=node) from None
    except PermissionError:
        raise PermissionDenied("cannot open %s: %s" % (node, ROOT_HINT), node=node) from None


def decode_hub_power_mode(descriptor: bytes) -> str:
    """``individual`` / ``ganged`` / ``none`` from a hub class descriptor (wHubCharacteristics bits 1:0)."""
    if len(descriptor) < 5 or descriptor[1] not in (USB_DT_HUB, USB_DT_SS_HUB):
        raise DeviceError("the hub returned no valid hub descriptor (%s)" % bytes(descriptor).hex(),
                          descriptor=bytes(descriptor).hex())
    characteristics = descriptor[3] | (descriptor[4] << 8)
    return HUB_POWER_MODES[characteristics & 0x3]


def read_hub_descriptor(hub: UsbDevice, dev_root: str = DEV_ROOT) -> bytes:
    """GET_DESCRIPTOR(hub) over a USBDEVFS_CONTROL ioctl on the hub's usbfs node."""
    import ctypes  # only this function needs it: keep the CLI's start-up small

    superspeed = hub.speed is not None and hub.speed not in ("1.5", "12", "480")
    desc_type, length = (USB_DT_SS_HUB, 12) if superspeed else (USB_DT_HUB, 7)
    buf = ctypes.create_string_buffer(length)
    request = struct.pack(CTRL_TRANSFER_FORMAT, USB_DIR_IN_CLASS_DEVICE, USB_REQ_GET_DESCRIPTOR,
                          desc_type << 8, 0, length, 1000, ctypes.addressof(buf))
    fd = _open_usbfs(hub.usbfs, dev_root, "hub %s" % hub.port)
    try:
        received = fcntl.ioctl(fd, USBDEVFS_CONTROL, bytearray(request))
    except OSError as exc:
        raise DeviceError("reading the hub descriptor of %s failed: %s" % (hub.describe(), exc.strerror),
                          hub=hub.port, errno=exc.errno) from None
    finally:
        os.close(fd)
    return buf.raw[:received]


def hub_power_mode(hub: UsbDevice, dev_root: str = DEV_ROOT) -> str:
    return decode_hub_power_mode(read_hub_descriptor(hub, dev_root))


def port_disable_file(device: UsbDevice, sysfs_root: str = SYSFS_ROOT) -> str:
    """``/sys/bus/usb/devices/1-1:1.0/1-1-port2/disable`` for the device at ``1-1.2``."""
    hub, number = device.port.rsplit(".", 1)
    return os.path.join(_devices_dir(sysfs_root), "%s:1.0" % hub, "%s-port%s" % (hub, number), "disable")


# ----------------------------------------------------------------- checks before acting

def check_reset_possible(device: UsbDevice, method: str, sysfs_root: str = SYSFS_ROOT,
                         dev_root: str = DEV_ROOT) -> dict:
    """Everything that can be known without resetting: root, method, device, hub.

    Returns facts worth reporting (for power_cycle: the hub and its power mode). Check
    mode runs this too, so a dry run fails where the real run would.
    """
    if method not in METHODS:
        raise InvalidArgument("method must be one of %s, got %r" % (", ".join(METHODS), method), method=method)
    if device.is_root_hub:
        raise InvalidArgument("%s is a root hub (the host controller); reset the device behind it instead"
                              % device.describe(), port=device.port)
    _require_root()
    if not os.path.exists(os.path.join(_devices_dir(sysfs_root), device.port)):
        raise _vanished_before(device, None)
    facts = {}
    if method == "ioctl" and not os.path.exists(device.usbfs):
        _open_usbfs(device.usbfs, dev_root, device.describe())  # raises the precise error
    elif method == "authorize":
        path = os.path.join(_devices_dir(sysfs_root), device.port, "authorized")
        if not os.path.exists(path):
            raise MissingDependency("%s is missing: the kernel offers no authorize control for %s"
                                    % (path, device.port), path=path)
    elif method == "rebind" and not device.bound_interfaces:
        raise InvalidArgument("no interface of %s is bound to a driver, so there is nothing to rebind; "
                              "use method ioctl or authorize" % device.describe(), port=device.port)
    elif method == "power_cycle":
        facts = _check_power_cycle(device, sysfs_root, dev_root)
    return facts


def _check_power_cycle(device: UsbDevice, sysfs_root: str, dev_root: str) -> dict:
    if "." not in device.port:
        raise InvalidArgument(
            "method power_cycle cannot switch %s: it sits on a root hub port (%s), whose power the host "
            "controller does not switch per port; plug it into a hub with per-port power switching or use "
            "method ioctl or authorize" % (device.describe(), device.parent), port=device.port)
    hub = read_device(device.parent, sysfs_root, dev_root, lazy=True)
    if hub is None:
        raise DeviceError("the parent hub %s of %s vanished" % (device.parent, device.port), hub=device.parent)
    mode = hub_power_mode(hub, dev_root)
    if mode != "individual":
        raise InvalidArgument(
            "method power_cycle refused for %s: its hub %s reports %s, so switching one port is not possible; "
            "use method ioctl or authorize, or a hub with per-port power switching"
            % (device.describe(), hub.describe(), HUB_POWER_MODE_TEXT[mode]),
            port=device.port, hub=hub.port, hub_power_mode=mode)
    disable = port_disable_file(device, sysfs_root)
    if not os.path.exists(disable):
        raise MissingDependency(
            "%s is missing: switching hub port power through sysfs needs Linux 6.0 or newer (this kernel: %s)"
            % (disable, os.uname().release), path=disable)
    return {"hub": hub.port, "hub_power_mode": mode}


# --------------------------------------------------------------------------- resets

def _reset_ioctl(device: UsbDevice, sysfs_root: str, dev_root: str) -> None:
    fd = _open_usbfs(device.usbfs, dev_root, device.describe())
    try:
        fcntl.ioctl(fd, USBDEVFS_RESET, 0)
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            raise DeviceError("%s vanished during the reset (unplugged, or it re-enumerated with other "
                              "descriptors); list the devices again" % device.describe(),
                              port=device.port, errno=exc.errno) from None
        if exc.errno == errno.ENOTTY:
            raise DeviceError("%s is not a usbfs device node (the reset ioctl does not apply)" % device.usbfs,
                              node=device.usbfs) from None
        raise DeviceError("USBDEVFS_RESET on %s failed: %s" % (device.usbfs, exc.strerror),
                          port=device.port, errno=exc.errno) from None
    finally:
        os.close(fd)


def _reset_authorize(device: UsbDevice, sysfs_root: str, dev_root: str) -> None:
    path = os.path.join(_devices_dir(sysfs_root), device.port, "authorized")
    try:
        _write_sysfs(path, "0")
    except OSError as exc:
        raise _sysfs_error(device, path, exc) from None
    try:
        _write_sysfs(path, "1")
    except OSError as exc:
        raise _sysfs_error(device, path, exc, "the device is now DEAUTHORIZED: write 1 to %s" % path) from None


def _reset_rebind(device: UsbDevice, sysfs_root: str, dev_root: str) -> None:
    drivers_dir = os.path.join(sysfs_root, "bus", "usb", "drivers")
    unbound = []
    failure = None
    for name, driver in sorted(device.bound_interfaces.items()):
        path = os.path.join(drivers_dir, driver, "unbind")
        try:
            _write_sysfs(path, name)
        except OSError as exc:
            failure = _sysfs_error(device, path, exc)
            break
        unbound.append((name, driver))
    # bind back whatever was unbound, even after a failure
    lost = []
    for name, driver in unbound:
        path = os.path.join(drivers_dir, driver, "bind")
        try:
            _write_sysfs(path, name)
        except OSError as exc:
            lost.append("%s (%s: %s)" % (name, driver, exc.strerror))
            failure = failure or _sysfs_error(device, path, exc)
    if failure is not None:
        if lost:
            failure.msg += "; interfaces left without driver: %s" % ", ".join(lost)
            failure.details["unbound"] = lost
        raise failure


def _reset_power_cycle(device: UsbDevice, sysfs_root: str, dev_root: str, power_off_time: float) -> None:
    disable = port_disable_file(device, sysfs_root)
    try:
        _write_sysfs(disable, "1")
    except OSError as exc:
        raise _sysfs_error(device, disable, exc) from None
    try:
        _wait_gone(device, sysfs_root, dev_root, timeout=POWER_OFF_DISCONNECT_TIMEOUT)
        time.sleep(max(power_off_time, 0.0))
    finally:
        try:
            _write_sysfs(disable, "0")
        except OSError as exc:
            raise _sysfs_error(device, disable, exc, "the port is still OFF: write 0 to %s" % disable) from None


def _wait_gone(device: UsbDevice, sysfs_root: str, dev_root: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _same_device_present(device, sysfs_root, dev_root):
        if time.monotonic() >= deadline:
            raise DeviceError("%s did not disconnect when its hub port was switched off; the hub may only "
                              "pretend to switch power" % device.describe(), port=device.port)
        time.sleep(POLL_INTERVAL)


def _same_device_present(device: UsbDevice, sysfs_root: str, dev_root: str) -> bool:
    now = read_device(device.port, sysfs_root, dev_root, lazy=True)
    return now is not None and now.address == device.address


def _sysfs_error(device: UsbDevice, path: str, exc: OSError, extra: str = ""):
    if isinstance(exc, PermissionError):
        error = PermissionDenied("cannot write %s: %s" % (path, ROOT_HINT), path=path)
    elif exc.errno == errno.ENOENT:
        error = DeviceError("%s vanished during the reset (%s is gone); list the devices again"
                            % (device.describe(), path), path=path, port=device.port)
    else:
        error = DeviceError("writing %s for %s failed: %s" % (path, device.describe(), exc.strerror),
                            path=path, port=device.port, errno=exc.errno)
    if extra:
        error.msg += "; " + extra
    return error


# ------------------------------------------------------------------------ coming back

def missing_after_reset(before: UsbDevice, now: UsbDevice | None) -> list:
    """What still differs from a healthy return of ``before``; empty when it is back."""
    if now is None:
        return ["no device at port %s" % before.port]
    if (now.vid, now.pid) != (before.vid, before.pid):
        return ["port %s now holds %s instead of %s" % (before.port, now.id, before.id)]
    missing = []
    if not now.authorized:
        missing.append("%s is not authorized" % before.port)
    bound_now = now.bound_interfaces
    for name, driver in sorted(before.bound_interfaces.items()):
        if bound_now.get(name) != driver:
            missing.append("interface %s not bound to %s" % (name, driver))
    if len(now.nodes) < len(before.nodes):
        missing.append("device nodes: %d of %d back (%s)" % (len(now.nodes), len(before.nodes),
                                                             ", ".join(now.nodes) or "none"))
    return missing


def wait_until_back(before: UsbDevice, timeout: float = DEFAULT_TIMEOUT, sysfs_root: str = SYSFS_ROOT,
                    dev_root: str = DEV_ROOT) -> UsbDevice:
    """Poll sysfs until the device is back at its port path, bound as before; raise Timeout."""
    deadline = time.monotonic() + check("timeout", timeout)
    while True:
        now = read_device(before.port, sysfs_root, dev_root)
        missing = missing_after_reset(before, now)
        if not missing:
            return now
        if time.monotonic() >= deadline:
            raise Timeout("%s did not come back within %s s: %s; raise timeout, or check the kernel log (dmesg)"
                          % (before.describe(), timeout, "; ".join(missing)), port=before.port, missing=missing)
        time.sleep(POLL_INTERVAL)


# ---------------------------------------------------------------------- the entry point

def reset_device(device: UsbDevice, method: str = "ioctl", wait: bool = True, timeout: float = DEFAULT_TIMEOUT,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT, sysfs_root: str = SYSFS_ROOT, dev_root: str = DEV_ROOT,
                 power_off_time: float = DEFAULT_POWER_OFF_TIME, check_mode: bool = False,
                 lock_path: str | None = None) -> dict:
    """Reset one device with ``method``, optionally wait until it is back; return a report.

    The report holds ``port``, ``id``, ``method``, ``before`` and ``after`` (device
    records; ``after`` is None without wait or in check mode), ``elapsed`` (s) and for
    power_cycle the hub facts. Every failure is an OnekvmError; check mode validates and
    discovers but does not reset.
    """
    check("timeout", timeout)
    check("lock_timeout", lock_timeout)
    check("power_off_time", power_off_time)
    started = time.monotonic()
    facts = check_reset_possible(device, method, sysfs_root, dev_root)
    report = {"port": device.port, "id": device.id, "method": method, "before": None, "after": None, "waited": False}
    report.update(facts)
    if check_mode:
        report["before"] = device.as_dict()
        report["elapsed"] = round(time.monotonic() - started, 3)
        return report
    with hardware_lock(timeout=lock_timeout, path=lock_path):
        # the device may have changed while we waited for the lock: act on what is there now
        current = read_device(device.port, sysfs_root, dev_root)
        if current is None or current.id != device.id:
            raise _vanished_before(device, current)
        report["before"] = current.as_dict()  # also the reference the wait compares with
        locked = time.monotonic()  # the timeout counts from here: waiting for the lock has its own
        _run_method(current, method, sysfs_root, dev_root, power_off_time)
        report["reset_seconds"] = round(time.monotonic() - locked, 3)
        if wait:
            after = wait_until_back(current, max(timeout - (time.monotonic() - locked), 0.0), sysfs_root, dev_root)
            report["after"] = after.as_dict()
            report["waited"] = True
    report["elapsed"] = round(time.monotonic() - started, 3)
    return report


def _vanished_before(device: UsbDevice, current: UsbDevice | None) -> DeviceError:
    return DeviceError("%s vanished before the reset (port %s now: %s); list the devices again"
                       % (device.describe(), device.port, current.describe() if current else "empty"),
                       port=device.port)


def _run_method(device: UsbDevice, method: str, sysfs_root: str, dev_root: str, power_off_time: float) -> None:
    if method == "ioctl":
        _reset_ioctl(device, sysfs_root, dev_root)
    elif method == "authorize":
        _reset_authorize(device, sysfs_root, dev_root)
    elif method == "rebind":
        _reset_rebind(device, sysfs_root, dev_root)
    else:
        _reset_power_cycle(device, sysfs_root, dev_root, power_off_time)


def reset_devices(devices: list, **options) -> list:
    """``reset_device`` on each device in turn; a failure names the devices already reset."""
    reports = []
    for device in devices:
        try:
            reports.append(reset_device(device, **options))
        except OnekvmError as exc:
            if reports:
                done = [r["port"] for r in reports]
                exc.details["reset_done"] = done
                exc.msg += " (already reset: %s)" % ", ".join(done)
                exc.args = (exc.msg,)
            raise
    return reports
