#!/usr/bin/python
# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: ch9329_info
short_description: Read the CH9329 keyboard/mouse chip's version, USB state, LEDs and config
version_added: 1.0.0
description:
  - Asks the CH9329 for GET_INFO (firmware version, whether the target enumerated its USB device, lock LEDs),
    GET_PARA_CFG (the 50-byte configuration, decoded into named fields) and the three USB string descriptors.
  - Returns them as module output and as the fact C(onekvm_ch9329).
  - Holds the box-wide hardware lock and pauses kvmd when it holds the port (see O(pause_kvmd)).
author:
  - onekvm.fleet maintainers (@onekvm)
extends_documentation_fragment:
  - onekvm.fleet.ch9329
options:
  baudrate:
    description:
      - Baud rate of the chip's serial link.
      - V(auto) probes 9600, 115200, 57600, 38400 and 19200 with GET_INFO and uses the first that answers.
      - Default is kvmd's C(kvmd.hid.speed) when kvmd drives a CH9329 on O(port), else the factory V(9600).
    type: str
    choices: ['auto', '9600', '19200', '38400', '57600', '115200']
  address:
    description:
      - Address of the chip (V(0) from the factory); V(255) reaches a chip at any address.
    type: int
    default: 0
  strings:
    description:
      - Also read the manufacturer, product and serial string descriptors.
    type: bool
    default: true
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Only reads; runs the same in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
    details: Linux only (termios serial ports, /proc, systemd).
"""

EXAMPLES = r"""
- name: Read the CH9329
  onekvm.fleet.ch9329_info:
  become: true
  register: hid

- name: Fail when the target machine does not see the keyboard
  ansible.builtin.assert:
    that: onekvm_ch9329.info.usb_enumerated
    fail_msg: "The target has not enumerated the CH9329 (USB ID {{ onekvm_ch9329.config.vid }}:{{ onekvm_ch9329.config.pid }})"
"""

RETURN = r"""
port:
  description: The serial port used.
  returned: always
  type: str
  sample: /dev/kvmd-hid
baudrate:
  description: The baud rate the chip answered at.
  returned: always
  type: int
  sample: 9600
info:
  description: The chip's GET_INFO answer.
  returned: always
  type: dict
  contains:
    version:
      description: Chip firmware version (C(0x30) is V1.0).
      type: str
      sample: V1.0
    version_byte:
      description: The raw version byte.
      type: int
      sample: 48
    usb_enumerated:
      description: Whether the target machine has enumerated the chip's USB HID device.
      type: bool
    leds:
      description: The target's keyboard lock LEDs.
      type: dict
      sample: {num_lock: true, caps_lock: false, scroll_lock: false}
config:
  description: The 50-byte configuration, decoded.
  returned: always
  type: dict
  contains:
    mode:
      description: Working mode (V(keyboard_mouse), V(keyboard), V(mouse), V(custom_hid)).
      type: str
    mode_set_by_pins:
      description: Whether the mode comes from the chip's mode pins rather than software.
      type: bool
    serial_mode:
      description: Serial mode (V(protocol), V(ascii), V(transparent)); kvmd needs V(protocol).
      type: str
    serial_mode_set_by_pins:
      description: Whether the serial mode comes from the chip's pins.
      type: bool
    address:
      description: Chip address.
      type: int
    baudrate:
      description: Configured baud rate.
      type: int
    packet_interval:
      description: Serial packet interval in milliseconds.
      type: int
    vid:
      description: USB vendor ID presented to the target (hex, stored little-endian in the config).
      type: str
      sample: 1a86
    pid:
      description: USB product ID presented to the target (hex).
      type: str
      sample: e129
    vid_raw:
      description: The two config bytes of the VID as stored.
      type: str
      sample: 86 1a
    pid_raw:
      description: The two config bytes of the PID as stored.
      type: str
      sample: 29 e1
    custom_strings:
      description: Whether custom USB string descriptors are enabled.
      type: bool
    string_flags:
      description: Which custom strings are enabled (C(manufacturer), C(product), C(serial)).
      type: dict
    ascii_upload_interval:
      description: ASCII mode upload interval.
      type: int
    ascii_release_delay:
      description: ASCII mode key release delay.
      type: int
    ascii_auto_enter:
      description: ASCII mode auto-enter flag.
      type: int
    ascii_enter_chars:
      description: ASCII mode enter characters (hex bytes).
      type: str
    ascii_filter_strings:
      description: ASCII mode filter start/end strings (hex bytes).
      type: str
    ascii_fast_upload:
      description: ASCII mode fast upload flag.
      type: int
    raw:
      description: All 50 config bytes as hex.
      type: str
usb_strings:
  description: The string descriptors (C(manufacturer), C(product), C(serial)).
  returned: when O(strings=true)
  type: dict
  sample: {manufacturer: WCH, product: CH9329, serial: ""}
kvmd_paused:
  description: kvmd units stopped for the exchange and started again.
  returned: always
  type: list
  elements: str
elapsed:
  description: Seconds the reading took.
  returned: always
  type: float
ansible_facts:
  description: Facts set by the module.
  returned: always
  type: dict
  contains:
    onekvm_ch9329:
      description: The same O(port), C(baudrate), C(info), C(config) and C(usb_strings) as above.
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.onekvm.fleet.plugins.module_utils._ansible import fail_from
from ansible_collections.onekvm.fleet.plugins.module_utils._ch9329 import info, link_argument_spec, link_options_from
from ansible_collections.onekvm.fleet.plugins.module_utils._errors import OnekvmError

FACT_KEYS = ("port", "baudrate", "info", "config", "usb_strings")


def main():
    argument_spec = link_argument_spec()
    argument_spec.update(strings={"type": "bool", "default": True})
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        result = info(link_options_from(module.params), strings=module.params["strings"])
    except OnekvmError as exc:
        fail_from(module, exc)
    facts = {key: result[key] for key in FACT_KEYS if key in result}
    module.exit_json(msg=result.pop("message"), ansible_facts={"onekvm_ch9329": facts}, **result)


if __name__ == "__main__":
    main()
