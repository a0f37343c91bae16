#!/usr/bin/python
# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: ch9329_reset
short_description: Reset the CH9329 keyboard/mouse chip and wait until it answers again
version_added: 1.0.0
description:
  - Sends the CH9329's RESET command (C(57 AB 00 0F 00 11) for address 0), checks the chip's reply and, with
    O(wait_ready=true), polls GET_INFO until the rebooted chip answers, reporting how long that took.
  - Use it after resetting the USB-serial adapter with M(onekvm.fleet.usb_reset), since the adapter's reset does not
    reset the chip behind it.
  - Holds the box-wide hardware lock and pauses kvmd only when one of its processes holds the port (see O(pause_kvmd));
    C(kvmd_paused) says which units were stopped and started again.
author:
  - onekvm.fleet maintainers (@onekvm)
extends_documentation_fragment:
  - onekvm.fleet.attributes
  - onekvm.fleet.ch9329
  - onekvm.fleet.ch9329.address
  - onekvm.fleet.ch9329.baudrate
options:
  retries:
    description:
      - Extra RESET attempts when the chip does not answer or answers wrongly (V(0) to V(10)).
    type: int
    default: 1
  wait_ready:
    description:
      - Poll the chip with GET_INFO after the reset until it answers, and fail if it does not within O(ready_timeout).
    type: bool
    default: true
  ready_timeout:
    description:
      - Seconds to wait for the chip to answer after RESET (it needs up to a few seconds to reboot).
    type: float
    default: 5.0
attributes:
  check_mode:
    support: full
    details: Never touches kvmd. When no kvmd process holds the port it opens the port and probes the chip with
      GET_INFO; while kvmd holds it the chip is not probed (C(probed=false), a warning says so). RESET is not sent.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: RESET is an action; every run outside check mode sends it and reports changed.
  platform:
    details: Linux only (termios serial ports, /proc, systemd).
"""

EXAMPLES = r"""
- name: Reset the CH9329 after resetting its USB-serial adapter (the seed note's order)
  onekvm.fleet.ch9329_reset:
  become: true

- name: Reset a chip whose baud rate is unknown, on an explicit port
  onekvm.fleet.ch9329_reset:
    serial_port: /dev/ttyUSB1
    baudrate: auto
  become: true
  register: hid_reset

- name: Show how long the chip needed to come back
  ansible.builtin.debug:
    msg: "CH9329 {{ hid_reset.info.version }} answered after {{ hid_reset.ready_after }} s"
"""

RETURN = r"""
port:
  description: The serial port used.
  returned: always
  type: str
  sample: /dev/kvmd-hid
baudrate:
  description: The baud rate the chip answered at (null in check mode when the chip was not probed with V(auto)).
  returned: always
  type: int
  sample: 9600
address:
  description: The address the chip answered at (null in check mode when not probed with O(address=auto)).
  returned: always
  type: int
  sample: 0
probed:
  description: Whether check mode probed the chip (V(false) while kvmd holds the port).
  returned: in check mode
  type: bool
kvmd_holding:
  description: kvmd units one of whose processes had the port open.
  returned: always
  type: list
  elements: str
reply:
  description: The chip's reply to RESET as hex bytes (null in check mode).
  returned: always
  type: str
  sample: 57 ab 00 8f 01 00 92
status:
  description: The decoded status of the reply (null in check mode).
  returned: always
  type: str
  sample: success
attempts:
  description: RESET commands sent (V(0) in check mode).
  returned: always
  type: int
  sample: 1
ready_after:
  description: Seconds from the RESET reply until the chip answered GET_INFO again (null without O(wait_ready)).
  returned: always
  type: float
  sample: 0.54
polls:
  description: GET_INFO polls sent while waiting for the chip.
  returned: success and not check mode
  type: int
  sample: 11
info:
  description:
    - The chip's GET_INFO answer after the reset (before it in check mode; null without O(wait_ready)), with the
      fields of RV(onekvm.fleet.ch9329_info#module:info) (version, version_byte, usb_enumerated, leds).
  returned: always
  type: dict
  sample: {"version": "V1.0", "version_byte": 48, "usb_enumerated": true,
           "leds": {"num_lock": true, "caps_lock": false, "scroll_lock": false}}
kvmd_paused:
  description: kvmd units stopped for the exchange and started again (never in check mode).
  returned: always
  type: list
  elements: str
  sample: [kvmd.service]
elapsed:
  description: Seconds the whole action took.
  returned: always
  type: float
  sample: 0.6
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.onekvm.fleet.plugins.module_utils._ansible import run_core
from ansible_collections.onekvm.fleet.plugins.module_utils._ch9329 import (
    DEFAULT_READY_TIMEOUT,
    link_argument_spec,
    link_options_from,
    reset,
)


def main():
    argument_spec = link_argument_spec()
    argument_spec.update(
        retries={"type": "int", "default": 1},
        wait_ready={"type": "bool", "default": True},
        ready_timeout={"type": "float", "default": DEFAULT_READY_TIMEOUT},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    result = run_core(module, lambda: reset(link_options_from(module.params), retries=module.params["retries"],
                                            wait_ready=module.params["wait_ready"],
                                            ready_timeout=module.params["ready_timeout"], check_mode=module.check_mode))
    module.exit_json(msg=result.pop("message"), **result)


if __name__ == "__main__":
    main()
