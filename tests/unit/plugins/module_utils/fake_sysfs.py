# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build fake sysfs + /dev trees shaped like the kernel's, for USB discovery tests.

The layout copies what Linux 6.1 shows: real directories under
``sys/devices/pci0000:00/0000:00:04.0/usbB/...`` nested by port path, symlinks to them in
``sys/bus/usb/devices``, interface directories with a ``driver`` symlink into
``sys/bus/usb/drivers/<name>`` (which holds ``bind``/``unbind`` files), class devices with
a ``uevent`` naming their node, hub ports with a ``disable`` file, and usbfs nodes as
plain files in ``dev/bus/usb/BBB/DDD``.
"""

from __future__ import annotations

import os

CONTROLLER = os.path.join("devices", "pci0000:00", "0000:00:04.0")


class FakeSysfs:
    def __init__(self, root) -> None:
        self.root = str(root)
        self.sysfs_root = os.path.join(self.root, "sys")
        self.dev_root = os.path.join(self.root, "dev")
        self._next_devnum = {}
        os.makedirs(os.path.join(self.sysfs_root, "bus", "usb", "devices"), exist_ok=True)
        os.makedirs(os.path.join(self.sysfs_root, "bus", "usb", "drivers"), exist_ok=True)

    # -- paths
    def device_dir(self, port: str) -> str:
        return os.path.realpath(os.path.join(self.sysfs_root, "bus", "usb", "devices", port))

    def _new_device_dir(self, port: str) -> str:
        bus = port[3:] if port.startswith("usb") else port.split("-", 1)[0]
        parts = [CONTROLLER, "usb" + bus]
        if not port.startswith("usb"):
            head, _dummy, rest = port.partition("-")
            numbers = rest.split(".")
            for i in range(1, len(numbers) + 1):
                parts.append("%s-%s" % (head, ".".join(numbers[:i])))
        return os.path.join(self.sysfs_root, *parts)

    # -- builders
    def _write(self, path: str, text: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text + "\n")

    def add_root_hub(self, bus: int, speed: str = "480") -> str:
        port = "usb%d" % bus
        self.add_device(port, 0x1D6B, 0x0002, product="xHCI Host Controller", speed=speed, device_class=9,
                        devnum=1, interfaces=[("hub", 9, [])], hub_ports=4)
        return port

    def add_device(self, port: str, vid: int, pid: int, serial: str | None = None, product: str | None = None,
                   manufacturer: str | None = None, speed: str = "12", devnum: int | None = None,
                   device_class: int = 0, interfaces=(), hub_ports: int = 0, port_disable: bool = True) -> str:
        """interfaces: (driver or None, class, [DEVNAME, ...]) per interface, numbered from 0."""
        bus = int(port[3:] if port.startswith("usb") else port.split("-", 1)[0])
        if devnum is None:
            devnum = self._next_devnum.get(bus, 2)
        self._next_devnum[bus] = max(self._next_devnum.get(bus, 2), devnum + 1)
        path = self._new_device_dir(port)
        os.makedirs(path, exist_ok=True)
        attrs = {"idVendor": "%04x" % vid, "idProduct": "%04x" % pid, "busnum": str(bus), "devnum": str(devnum),
                 "speed": speed, "bDeviceClass": "%02x" % device_class, "authorized": "1"}
        for name, value in (("serial", serial), ("product", product), ("manufacturer", manufacturer)):
            if value is not None:
                attrs[name] = value
        for name, value in attrs.items():
            self._write(os.path.join(path, name), value)
        self._write(os.path.join(path, "uevent"), "DEVNAME=bus/usb/%03d/%03d" % (bus, devnum))
        self._write(os.path.join(self.dev_root, "bus", "usb", "%03d" % bus, "%03d" % devnum), "")
        self._link(port, path)
        iface_base = "1-0" if port.startswith("usb") else port
        if port.startswith("usb"):
            iface_base = "%d-0" % bus
        for number, (driver, iface_class, nodes) in enumerate(interfaces):
            self._add_interface(path, "%s:1.%d" % (iface_base, number), driver, iface_class, nodes)
        if hub_ports:
            hub_name = port
            iface = os.path.join(path, "%s:1.0" % iface_base)
            for n in range(1, hub_ports + 1):
                port_dir = os.path.join(iface, "%s-port%d" % (hub_name, n))
                os.makedirs(port_dir, exist_ok=True)
                if port_disable:
                    self._write(os.path.join(port_dir, "disable"), "0")
            self._link("%s:1.0" % iface_base, iface)
        return path

    def add_hub(self, port: str, ports: int = 4, port_disable: bool = True, **kwargs) -> str:
        kwargs.setdefault("product", "USB Hub")
        return self.add_device(port, 0x0409, 0x55AA, device_class=9, interfaces=[("hub", 9, [])],
                               hub_ports=ports, port_disable=port_disable, **kwargs)

    def _add_interface(self, dev_path: str, name: str, driver, iface_class: int, nodes) -> None:
        path = os.path.join(dev_path, name)
        os.makedirs(path, exist_ok=True)
        self._write(os.path.join(path, "bInterfaceClass"), "%02x" % iface_class)
        if driver:
            self.bind(name, driver, path)
        for i, devname in enumerate(nodes):
            kind = devname.split("/")[-1].rstrip("0123456789")
            class_dir = os.path.join(path, "class%d" % i, kind, os.path.basename(devname))
            self._write(os.path.join(class_dir, "uevent"), "MAJOR=1\nMINOR=%d\nDEVNAME=%s" % (i, devname))
            self._write(os.path.join(self.dev_root, devname), "")
        self._link(name, path)

    def _link(self, name: str, target: str) -> None:
        link = os.path.join(self.sysfs_root, "bus", "usb", "devices", name)
        if not os.path.islink(link):
            os.symlink(os.path.relpath(target, os.path.dirname(link)), link)

    def driver_dir(self, driver: str) -> str:
        path = os.path.join(self.sysfs_root, "bus", "usb", "drivers", driver)
        if not os.path.isdir(path):
            os.makedirs(path)
            for name in ("bind", "unbind"):
                self._write(os.path.join(path, name), "")
        return path

    # -- state changes a test may simulate
    def bind(self, interface: str, driver: str, path: str | None = None) -> None:
        path = path or self.device_dir(interface)
        link = os.path.join(path, "driver")
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(os.path.relpath(self.driver_dir(driver), path), link)

    def unbind(self, interface: str) -> None:
        os.unlink(os.path.join(self.device_dir(interface), "driver"))

    def set_attr(self, port: str, name: str, value: str) -> None:
        self._write(os.path.join(self.device_dir(port), name), value)

    def remove(self, port: str) -> None:
        """Unplug: the device's directory and its bus/usb/devices links disappear."""
        import shutil

        path = self.device_dir(port)
        links_dir = os.path.join(self.sysfs_root, "bus", "usb", "devices")
        for name in os.listdir(links_dir):
            if name == port or name.startswith(port + ":") or name.startswith(port + "."):
                os.unlink(os.path.join(links_dir, name))
        shutil.rmtree(path)

    def read(self, path_in_sysfs: str) -> str:
        with open(os.path.join(self.sysfs_root, path_in_sysfs)) as f:
            return f.read()


def onekvm_box(root) -> FakeSysfs:
    """The simulated box's topology (tests/testbed): hub with per-port power at 1-1, twins, relay."""
    fake = FakeSysfs(root)
    fake.add_root_hub(1)
    fake.add_hub("1-1", devnum=2, speed="12")
    fake.add_device("1-1.1", 0x0403, 0x6001, serial="1", product="FT232 Serial (UART) IC", manufacturer="FTDI",
                    devnum=3, interfaces=[("ftdi_sio", 0xFF, ["ttyUSB0"])])
    fake.add_device("1-1.2", 0x0627, 0x0001, serial="TWIN", product="QEMU USB Tablet", manufacturer="QEMU",
                    devnum=4, interfaces=[("usbhid", 3, ["hidraw0", "input/event2", "input/mouse0"])])
    fake.add_device("1-1.3", 0x0627, 0x0001, serial="TWIN", product="QEMU USB Tablet", manufacturer="QEMU",
                    devnum=5, interfaces=[("usbhid", 3, ["hidraw1", "input/event3", "input/mouse1"])])
    fake.add_device("1-1.4", 0x0403, 0x6001, serial="1", product="FT232 Serial (UART) IC", manufacturer="FTDI",
                    devnum=6, interfaces=[("ftdi_sio", 0xFF, ["ttyUSB1"])])
    fake.add_hub("1-2", devnum=7, speed="12")
    fake.add_device("1-2.1", 0x0627, 0x0001, product="QEMU USB Keyboard", manufacturer="QEMU", devnum=8,
                    interfaces=[("usbhid", 3, ["hidraw2", "input/event4"])])
    fake.add_device("1-3", 0x534D, 0x2109, product="USB Video", manufacturer="MACROSILICON", devnum=9, speed="480",
                    interfaces=[("uvcvideo", 0x0E, ["video0", "video1"]), ("uvcvideo", 0x0E, []),
                                ("snd-usb-audio", 0x01, ["snd/pcmC1D0c", "snd/controlC1"]), (None, 0x01, [])])
    return fake
