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
  - Returns them as plain module output (register the result); it sets no facts, as modules that set facts are named
    C(*_facts) by convention.
  - A read never stops kvmd by default. While kvmd holds the port (it polls the chip about every 0.1 s) the chip is
    not asked; the result has C(read=false), names the kvmd units in C(kvmd_holding) and says in a warning what was
    not read (version, USB state, LEDs, config, strings) and how to read it (O(pause_kvmd=true), or with kvmd
    stopped). kvmd's own web UI shows whether its HID is online and the lock LEDs.
  - Holds the box-wide hardware lock.
author:
  - onekvm.fleet maintainers (@onekvm)
extends_documentation_fragment:
  - onekvm.fleet.attributes
  - onekvm.fleet.attributes.info_module
  - onekvm.fleet.ch9329
  - onekvm.fleet.ch9329.address
  - onekvm.fleet.ch9329.baudrate
options:
  strings:
    description:
      - Also read the manufacturer, product and serial string descriptors.
    type: bool
    default: true
  pause_kvmd:
    description:
      - Stop kvmd for the reading when one of its processes holds O(serial_port), and start it again afterwards. Stopping kvmd
        drops every web session for about a second, so it is off by default.
      - Never in check mode.
    type: bool
    default: false
attributes:
  check_mode:
    details: Only reads; runs the same in check mode, except that it never stops kvmd there.
  platform:
    details: Linux only (termios serial ports, /proc, systemd).
"""

EXAMPLES = r"""
- name: Read the CH9329 (kvmd stopped for a second if it holds the port)
  onekvm.fleet.ch9329_info:
    pause_kvmd: true
  become: true
  register: hid

- name: Fail when the target machine does not see the keyboard
  ansible.builtin.assert:
    that: hid.info.usb_enumerated
    fail_msg: "The target has not enumerated the CH9329 (USB ID {{ hid.config.vid }}:{{ hid.config.pid }})"

- name: Read the chip at whatever address and speed it was set to
  onekvm.fleet.ch9329_info:
    serial_port: /dev/ttyUSB1
    address: auto
    baudrate: auto
  become: true
"""

RETURN = r"""
port:
  description: The serial port used.
  returned: always
  type: str
  sample: /dev/kvmd-hid
baudrate:
  description: The baud rate the chip answered at (the one that would be used, or null for V(auto), when not read).
  returned: always
  type: int
  sample: 9600
address:
  description: The address the chip answered at (found by the scan with O(address=auto); null when not read so).
  returned: always
  type: int
  sample: 0
read:
  description: Whether the chip was read (V(false) while kvmd holds the port and may not be stopped).
  returned: always
  type: bool
kvmd_holding:
  description: kvmd units one of whose processes had O(serial_port) open.
  returned: always
  type: list
  elements: str
  sample: [kvmd.service]
info:
  description: The chip's GET_INFO answer.
  returned: when read
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
  returned: when read
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
    reply_size:
      description: Data bytes of the GET_PARA_CFG reply (50 in WCH's document; 72 or 88 have been seen from the CH9329F).
      type: int
      sample: 50
    raw_extra:
      description: The reply's bytes after the first 50, as hex (empty for a 50-byte reply); shown, never interpreted.
      type: str
      sample: ""
usb_strings:
  description: The string descriptors (C(manufacturer), C(product), C(serial)).
  returned: when read and O(strings=true)
  type: dict
  sample: {manufacturer: WCH, product: CH9329, serial: ""}
kvmd_paused:
  description: kvmd units stopped for the exchange and started again (only with O(pause_kvmd=true)).
  returned: always
  type: list
  elements: str
elapsed:
  description: Seconds the reading took.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.onekvm.fleet.plugins.module_utils._ansible import run_core
from ansible_collections.onekvm.fleet.plugins.module_utils._ch9329 import info, link_argument_spec, link_options_from


def main():
    argument_spec = link_argument_spec(pause_kvmd=False)
    argument_spec.update(strings={"type": "bool", "default": True})
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    # kvmd holding the port is no failure (it drives the chip, as it should): the result
    # says what was not read and how to read it
    result = run_core(module, lambda: info(link_options_from(module.params), strings=module.params["strings"],
                                           pause=module.params["pause_kvmd"] and not module.check_mode,
                                           report_not_read=True))
    module.exit_json(msg=result.pop("message"), **result)


if __name__ == "__main__":
    main()
