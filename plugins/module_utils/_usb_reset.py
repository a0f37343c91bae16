# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The four ways Linux can reset a USB device, the checks before and the wait until it is back.

PRIVATE to the onekvm.fleet collection. Box-side core: standard library only, no Ansible imports.
It serves the ``usb_reset`` module, ``onekvm usb-reset`` and the capture watchdog; the devices come
from ``_usb`` (discovery and selection).

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
import struct
import time

from ._errors import DeviceError, InvalidArgument, MissingDependency, OnekvmError, PermissionDenied, Timeout
from ._limits import check
from ._lock import hardware_lock
from ._usb import DEV_ROOT, ROOT_HINT, SYSFS_ROOT, UsbDevice, read_device, usb_devices_dir


METHODS = ("ioctl", "authorize", "rebind", "power_cycle")
DEFAULT_TIMEOUT = 30.0
DEFAULT_LOCK_TIMEOUT = 30.0
DEFAULT_POWER_OFF_TIME = 1.0
POLL_INTERVAL = 0.05
POWER_OFF_DISCONNECT_TIMEOUT = 10.0  # seconds for a device to leave once its port is off

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
# wHubCharacteristics bits 1:0 (USB 2.0 spec 11.23.2.1)
HUB_POWER_MODES = {0: "ganged", 1: "individual", 2: "none", 3: "none"}
HUB_POWER_MODE_TEXT = {
    "ganged": "ganged power switching (all ports at once)",
    "individual": "per-port power switching",
    "none": "no power switching",
}


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
    return os.path.join(usb_devices_dir(sysfs_root), "%s:1.0" % hub, "%s-port%s" % (hub, number), "disable")


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
    if not os.path.exists(os.path.join(usb_devices_dir(sysfs_root), device.port)):
        raise _vanished_before(device, None)
    facts = {}
    if method == "ioctl" and not os.path.exists(device.usbfs):
        _open_usbfs(device.usbfs, dev_root, device.describe())  # raises the precise error
    elif method == "authorize":
        path = os.path.join(usb_devices_dir(sysfs_root), device.port, "authorized")
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
    path = os.path.join(usb_devices_dir(sysfs_root), device.port, "authorized")
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
