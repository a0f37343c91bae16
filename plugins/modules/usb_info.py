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
  include_hubs:
    description:
      - Also list hubs, root hubs included.
    type: bool
    default: true
extends_documentation_fragment:
  - onekvm.fleet.usb
  - onekvm.fleet.attributes
  - onekvm.fleet.attributes.info_module
attributes:
  platform:
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

from ansible_collections.onekvm.fleet.plugins.module_utils._ansible import run_core, usb_selection, usb_selector_spec
from ansible_collections.onekvm.fleet.plugins.module_utils._usb import find_devices


def main() -> None:
    module = AnsibleModule(supports_check_mode=True, **usb_selector_spec(include_hubs=dict(type="bool", default=True)))
    devices = run_core(module, find_devices, allow_many=True, allow_none=True, **usb_selection(module.params))
    if not module.params["include_hubs"]:
        devices = [d for d in devices if not d.is_hub and not d.is_root_hub]
    module.exit_json(changed=False, devices=[d.as_dict() for d in devices])


if __name__ == "__main__":
    main()
