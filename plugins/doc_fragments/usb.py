# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # The USB selectors of usb_info and usb_reset (argument spec: _ansible.usb_selector_spec)
    DOCUMENTATION = r"""
options:
  id:
    description:
      - Vendor and product id as two 4-digit hex numbers, like C(lsusb) shows them, for example V(534d:2109).
        Case does not matter.
    type: str
  vendor:
    description:
      - Vendor id in hex (V(534d)), together with O(product). Alternative to O(id).
    type: str
  product:
    description:
      - Product id in hex (V(2109)), together with O(vendor).
    type: str
  serial:
    description:
      - Only devices with this serial number string.
    type: str
  port_path:
    description:
      - Only the device at this USB port path (the sysfs name, for example V(1-1.2)). Port paths stay the same
        across replugs, so they tell identical devices without serial numbers apart.
      - V(port) is an alias, this option's older name. The CH9329 and relay modules name their serial device node
        O(onekvm.fleet.ch9329_reset#module:serial_port) instead, so each name says which kind of port it is.
    type: str
    aliases: [port]
  bus:
    description:
      - Only the device on this bus number, together with O(address).
    type: int
  address:
    description:
      - Only the device with this device address (C(lsusb) "Device NNN"), together with O(bus).
    type: int
"""
