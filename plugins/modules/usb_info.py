#!/usr/bin/python
# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: usb_info
short_description: List the USB devices of a OneKVM / PiKVM box with port paths, drivers and device nodes
version_added: 1.0.0
description:
  - Lists the USB devices sysfs knows (C(/sys/bus/usb/devices)), optionally narrowed by the same selectors as
    M(onekvm.fleet.usb_reset), and returns for each its port path, bus and address, ids, strings, bound drivers
    and the device nodes behind it (C(/dev/video*), C(/dev/ttyUSB*), C(/dev/hidraw*), ...).
  - Read-only; works without root. Nothing matching is not an error; the list is then empty.
author:
  - onekvm.fleet maintainers (@onekvm)
options:
  id:
    description:
      - Vendor and product id as two 4-digit hex numbers, for example V(534d:2109).
    type: str
  vendor:
    description:
      - Vendor id in hex, together with O(product). Alternative to O(id).
    type: str
  product:
    description:
      - Product id in hex, together with O(vendor).
    type: str
  serial:
    description:
      - Only devices with this serial number string.
    type: str
  port:
    description:
      - Only the device at this USB port path, for example V(1-1.2).
    type: str
  bus:
    description:
      - Only the device on this bus number, together with O(address).
    type: int
  address:
    description:
      - Only the device with this device address, together with O(bus).
    type: int
  include_hubs:
    description:
      - Also list hubs, root hubs included.
    type: bool
    default: true
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The module only reads.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
    details: Linux only (sysfs).
seealso:
  - module: onekvm.fleet.usb_reset
"""

EXAMPLES = r"""
- name: Find the capture dongles
  onekvm.fleet.usb_info:
    id: "534d:2109"
  register: dongles

- name: Fail when a box carries no dongle
  ansible.builtin.assert:
    that: dongles.devices | length > 0
    fail_msg: "no MS2109 capture dongle on {{ inventory_hostname }}"

- name: Everything but hubs
  onekvm.fleet.usb_info:
    include_hubs: false
"""

RETURN = r"""
devices:
  description: The matching devices, ordered by bus and port path.
  returned: always
  type: list
  elements: dict
  contains:
    port:
      description: USB port path (sysfs name); V(usb1) style for a root hub.
      type: str
      sample: 1-1.2
    bus:
      description: Bus number.
      type: int
      sample: 1
    address:
      description: Device address on the bus.
      type: int
      sample: 4
    id:
      description: Vendor and product id.
      type: str
      sample: 534d:2109
    vid:
      description: Vendor id in hex.
      type: str
      sample: 534d
    pid:
      description: Product id in hex.
      type: str
      sample: "2109"
    serial:
      description: Serial number string, null when the device has none.
      type: str
      sample: "20210621"
    manufacturer:
      description: Manufacturer string.
      type: str
      sample: MACROSILICON
    product:
      description: Product string.
      type: str
      sample: USB Video
    speed:
      description: Speed in Mbit/s as the kernel reports it.
      type: str
      sample: "480"
    parent:
      description: Port path of the parent hub, null for a root hub.
      type: str
      sample: 1-1
    authorized:
      description: Whether the device is authorized.
      type: bool
      sample: true
    drivers:
      description: Drivers bound to the device's interfaces.
      type: list
      elements: str
      sample: [snd-usb-audio, uvcvideo]
    interfaces:
      description: Interfaces with their class and bound driver (null when none).
      type: list
      elements: dict
      sample: [{"name": "1-1.2:1.0", "class": 14, "driver": uvcvideo}]
    nodes:
      description: Device nodes provided by the device.
      type: list
      elements: str
      sample: [/dev/video0, /dev/video1]
    usbfs:
      description: The device's usbfs node.
      type: str
      sample: /dev/bus/usb/001/004
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.onekvm.fleet.plugins.module_utils._ansible import fail_from
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import OnekvmError
from ansible_collections.onekvm.fleet.plugins.module_utils._usb import find_devices

SELECTORS = ("id", "vendor", "product", "serial", "port", "bus", "address")


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            id=dict(type="str"),
            vendor=dict(type="str"),
            product=dict(type="str"),
            serial=dict(type="str"),
            port=dict(type="str"),
            bus=dict(type="int"),
            address=dict(type="int"),
            include_hubs=dict(type="bool", default=True),
        ),
        required_together=[("vendor", "product"), ("bus", "address")],
        mutually_exclusive=[("id", "vendor"), ("id", "product")],
        supports_check_mode=True,
    )
    try:
        devices = find_devices(allow_many=True, allow_none=True, **{key: module.params[key] for key in SELECTORS})
    except OnekvmError as exc:
        fail_from(module, exc)
    if not module.params["include_hubs"]:
        devices = [d for d in devices if not d.is_hub and not d.is_root_hub]
    module.exit_json(changed=False, devices=[d.as_dict() for d in devices])


if __name__ == "__main__":
    main()
