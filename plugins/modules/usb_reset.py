#!/usr/bin/python
# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: usb_reset
short_description: Reset a USB device on a OneKVM / PiKVM box and wait until it is back
version_added: 1.0.0
description:
  - Resets one USB device (or every matching one with O(all=true)), typically a hung HDMI-USB capture dongle
    such as an MS2109 (V(534d:2109)) or MS2130 (V(345f:2130)), or the USB-serial adapter of a CH9329.
  - The device is chosen by one of O(id), O(vendor) + O(product), O(port_path) or O(bus) + O(address) (one is
    required), narrowed by the others and O(serial).
  - Four methods are offered, see O(method). After the reset the module waits until the device is back at the
    same USB port path with its interfaces bound to their drivers again, and reports the device before and after.
  - Resets hold the box-wide hardware lock shared with the C(onekvm) box command and the capture watchdog, so
    two resets never overlap.
  - Devices are found through sysfs (C(/sys/bus/usb/devices)). The V(ioctl) method issues the C(USBDEVFS_RESET)
    ioctl with the Python standard library, so neither pyusb nor libusb is needed.
author:
  - onekvm.fleet maintainers (@onekvm)
options:
  all:
    description:
      - When more than one device matches, reset each of them in turn instead of failing.
    type: bool
    default: false
  method:
    description:
      - V(ioctl) issues C(USBDEVFS_RESET) on the device's usbfs node, the same system call as pyusb's
        C(reset()) and usbutils' C(usbreset). It is a port reset that keeps the address, drivers without reset
        support are unbound and bound again.
      - V(authorize) writes V(0) then V(1) to the device's sysfs C(authorized) file, so the device is unconfigured
        and probed again. It recovers UVC capture devices stuck in protocol errors when V(ioctl) does not.
      - V(rebind) unbinds each bound interface from its driver and binds it again (driver state only, no bus
        traffic). Interfaces unbound are bound again even when a later step fails.
      - V(power_cycle) switches the port of the parent hub off and on through sysfs (what C(uhubctl) does); the
        device disconnects and enumerates again with a new address. It needs a hub reporting per-port power
        switching and Linux 6.0 or newer; otherwise the module fails naming the hub and its power switching
        mode, and nothing is done.
    type: str
    choices: [ioctl, authorize, rebind, power_cycle]
    default: ioctl
  wait:
    description:
      - Wait until the device is back at the same port path with the same vendor and product id, authorized,
        with the interfaces bound before bound again and as many device nodes as before.
    type: bool
    default: true
  timeout:
    description:
      - Seconds allowed for the whole reset of one device, including the wait for it to come back.
    type: float
    default: 30
  lock_timeout:
    description:
      - Seconds to wait for another hardware action (another reset, a relay press, the watchdog) to finish.
    type: float
    default: 30
  power_off_time:
    description:
      - With O(method=power_cycle), seconds the hub port stays without power.
    type: float
    default: 1
notes:
  - Needs root on the box (C(become=true)).
  - In check mode the devices are selected and the reset is checked (root, method, hub capability) but nothing
    is reset; the result reports C(changed=true).
requirements:
  - Linux with sysfs and usbfs (C(/dev/bus/usb)); Linux 6.0 or newer for O(method=power_cycle).
extends_documentation_fragment:
  - onekvm.fleet.usb
  - onekvm.fleet.attributes
attributes:
  check_mode:
    support: full
    details: Selection and checks only; nothing is reset, and the result says changed.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: A reset is an action; every run outside check mode resets and reports changed.
  platform:
    details: Linux only (sysfs, usbfs).
seealso:
  - module: onekvm.fleet.usb_info
"""

EXAMPLES = r"""
- name: Reset the HDMI capture dongle
  onekvm.fleet.usb_reset:
    id: "534d:2109"
  become: true

- name: Re-probe one of two identical dongles, told apart by port path
  onekvm.fleet.usb_reset:
    id: "534d:2109"
    port_path: "1-1.2"
    method: authorize
    timeout: 20
  become: true

- name: Power-cycle the dongle's hub port (hub with per-port power switching only)
  onekvm.fleet.usb_reset:
    vendor: "345f"
    product: "2130"
    method: power_cycle
  become: true
  register: dongle

- name: Show which video node came back
  ansible.builtin.debug:
    msg: "{{ dongle.devices[0].after.nodes }}"
"""

RETURN = r"""
method:
  description: The reset method used.
  returned: always
  type: str
  sample: ioctl
elapsed:
  description: Seconds spent, from selection to the devices being back.
  returned: always
  type: float
  sample: 0.412
devices:
  description: One entry per device reset (or, in check mode, that would be reset).
  returned: always
  type: list
  elements: dict
  contains:
    port:
      description: USB port path of the device (sysfs name).
      type: str
      sample: 1-1.2
    id:
      description: Vendor and product id.
      type: str
      sample: 534d:2109
    method:
      description: The reset method used.
      type: str
      sample: ioctl
    before:
      description:
        - The device as found before the reset, with the fields of an entry of
          RV(onekvm.fleet.usb_info#module:devices) (port, bus, address, id, strings, drivers, interfaces, nodes,
          usbfs, ...).
      type: dict
      sample: {"port": "1-1.2", "bus": 1, "address": 4, "id": "534d:2109", "usbfs": "/dev/bus/usb/001/004"}
    after:
      description:
        - The device as it came back, same fields as RV(devices[].before).
        - Null when O(wait=false) or in check mode.
      type: dict
    waited:
      description: Whether the module waited for the device to come back.
      type: bool
      sample: true
    reset_seconds:
      description: Seconds the reset itself took once the lock was held (before waiting). Not in check mode.
      type: float
      sample: 0.21
    elapsed:
      description: Seconds spent on this device.
      type: float
      sample: 0.25
    hub:
      description: With O(method=power_cycle), the port path of the hub whose port was switched.
      type: str
      sample: 1-1
    hub_power_mode:
      description: With O(method=power_cycle), the hub's power switching mode.
      type: str
      sample: individual
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.onekvm.fleet.plugins.module_utils._ansible import run_core, usb_selection, usb_selector_spec
from ansible_collections.onekvm.fleet.plugins.module_utils._limits import check
from ansible_collections.onekvm.fleet.plugins.module_utils._usb import find_devices
from ansible_collections.onekvm.fleet.plugins.module_utils._usb_reset import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_POWER_OFF_TIME,
    DEFAULT_TIMEOUT,
    METHODS,
    reset_devices,
)


def module_kwargs() -> dict:
    return usb_selector_spec(
        all=dict(type="bool", default=False),
        method=dict(type="str", choices=list(METHODS), default="ioctl"),
        wait=dict(type="bool", default=True),
        timeout=dict(type="float", default=DEFAULT_TIMEOUT),
        lock_timeout=dict(type="float", default=DEFAULT_LOCK_TIMEOUT),
        power_off_time=dict(type="float", default=DEFAULT_POWER_OFF_TIME),
    )


def main() -> None:
    module = AnsibleModule(required_one_of=[("id", "vendor", "port_path", "bus")], supports_check_mode=True,
                           **module_kwargs())
    params = module.params
    started = time.monotonic()

    def select_and_reset():
        for name in ("timeout", "lock_timeout", "power_off_time"):
            check(name, params[name])  # before any device is looked at
        devices = find_devices(allow_many=params["all"], **usb_selection(params))
        return reset_devices(devices, method=params["method"], wait=params["wait"], timeout=params["timeout"],
                             lock_timeout=params["lock_timeout"], power_off_time=params["power_off_time"],
                             check_mode=module.check_mode)

    reports = run_core(module, select_and_reset,
                       fail_extra=lambda: dict(method=params["method"], elapsed=round(time.monotonic() - started, 3)))
    module.exit_json(changed=True, method=params["method"], devices=reports,
                     elapsed=round(time.monotonic() - started, 3))


if __name__ == "__main__":
    main()
