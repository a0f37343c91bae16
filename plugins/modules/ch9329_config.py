#!/usr/bin/python
# Copyright (c) onekvm.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: ch9329_config
short_description: Apply settings to the CH9329 keyboard/mouse chip idempotently
version_added: 1.0.0
description:
  - Reads the chip's 50-byte configuration (and the USB strings asked for), compares it with the desired settings,
    writes only the difference, resets the chip so the settings take effect, reconnects at the new baud rate and
    address, and reads everything back to verify it.
  - Options left unset are left as they are; bytes the module does not model are kept as read.
  - Refuses settings that would make kvmd lose control of the chip (O(serial_mode) other than V(protocol), O(mode)
    other than V(keyboard_mouse), O(address) other than V(0)) unless O(force=true).
  - After a baud rate change it warns that kvmd's C(hid.speed) must match.
  - Holds the box-wide hardware lock and pauses kvmd only when one of its processes holds the port (see O(pause_kvmd));
    C(kvmd_paused) says which units were stopped and started again.
  - Bit 7 of the working mode and serial mode bytes (V(0x80)-V(0x83) / V(0x80)-V(0x82), set by the mode pins) is
    never written back, as WCH's protocol document allows only V(0x00)-V(0x03) / V(0x00)-V(0x02) in SET_PARA_CFG, so the
    module writes the same mode as set by software, and ignores that bit when comparing and reading back.
  - A GET_PARA_CFG reply longer than 50 bytes (the CH9329F's 72 or 88) is read for its first 50 bytes; only 50 are
    written.
author:
  - onekvm.fleet maintainers (@onekvm)
extends_documentation_fragment:
  - onekvm.fleet.attributes
  - onekvm.fleet.ch9329
options:
  connect_baudrate:
    description:
      - Baud rate the chip runs at now.
      - V(auto) probes 9600, 115200, 57600, 38400 and 19200 with GET_INFO and uses the first that answers.
      - Default is kvmd's C(kvmd.hid.speed) when kvmd drives a CH9329 on O(serial_port), else the factory V(9600).
    type: str
    choices: ['auto', '9600', '19200', '38400', '57600', '115200']
  connect_address:
    description:
      - Address the chip answers at now (V(0) from the factory), V(0) to V(254).
      - V(auto) finds the chip by asking each address in turn with GET_INFO, address V(0) first (a chip at address
        0 answers any address code); the scan is bounded, 255 x (20 bytes' wire time + 25 ms), about 12 s at 9600
        baud and 7.4 s at 115200 (with O(connect_baudrate=auto) at each rate in turn, about 45 s).
      - V(255) is refused, being the broadcast address, which a chip acts on but never answers.
    type: raw
    default: 0
  baudrate:
    description:
      - Desired baud rate. kvmd's C(hid.speed) must be changed to match.
    type: int
    choices: [9600, 19200, 38400, 57600, 115200]
  mode:
    description:
      - Desired working mode (which USB HID devices the chip presents to the target).
    type: str
    choices: [keyboard_mouse, keyboard, mouse, custom_hid]
  serial_mode:
    description:
      - Desired serial mode. Only V(protocol) can be driven by kvmd.
    type: str
    choices: [protocol, ascii, transparent]
  address:
    description:
      - Desired chip address (V(0) to V(254)). kvmd always uses V(0).
      - V(255) is refused, as a chip set to the broadcast address would act on broadcasts but never answer again.
    type: int
  vid:
    description:
      - Desired USB vendor ID the target sees, as a number or a hex string (V(1a86), V(0x1A86)).
    type: raw
  pid:
    description:
      - Desired USB product ID the target sees, as a number or a hex string (V(e129), V(0xE129)).
    type: raw
  packet_interval:
    description:
      - Desired serial packet interval in milliseconds (V(0) to V(65535)).
    type: int
  usb_strings:
    description:
      - Desired USB string descriptors (ASCII, at most 23 bytes each). Setting one enables custom strings and that
        string's flag.
    type: dict
    suboptions:
      manufacturer:
        description: Manufacturer string.
        type: str
      product:
        description: Product string.
        type: str
      serial:
        description: Serial number string.
        type: str
  custom_strings:
    description:
      - V(false) turns custom string descriptors off (the chip's built-in strings are used); V(true) turns them on.
    type: bool
  force:
    description:
      - Apply settings that would make kvmd lose control of the chip.
    type: bool
    default: false
  ready_timeout:
    description:
      - Seconds to wait for the chip to answer after the RESET that applies the settings.
    type: float
    default: 5.0
attributes:
  check_mode:
    support: full
    details: Reads the chip and reports what would change; nothing is written and kvmd is never touched. While kvmd
      holds the port nothing is compared (C(compared=false), reported as changed, with a warning).
  diff_mode:
    support: full
  idempotent:
    support: full
  platform:
    details: Linux only (termios serial ports, /proc, systemd).
"""

EXAMPLES = r"""
- name: Run the chip at 115200 baud with a product name of our own
  onekvm.fleet.ch9329_config:
    baudrate: 115200
    usb_strings:
      product: OneKVM keyboard
  become: true
  register: hid_config

- name: Present a different USB ID to the target
  onekvm.fleet.ch9329_config:
    vid: "0x1a86"
    pid: "0xe12a"
  become: true
"""

RETURN = r"""
port:
  description: The serial port used.
  returned: always
  type: str
  sample: /dev/kvmd-hid
baudrate:
  description: The baud rate the chip answers at when the module ends.
  returned: always
  type: int
  sample: 115200
config:
  description: The chip's config after the run (or what it would be in check mode), decoded like M(onekvm.fleet.ch9329_info)'s,
    plus C(usb_strings) for the strings asked for; null when not compared.
  returned: always
  type: dict
address:
  description: The address the chip answers at when the module ends.
  returned: always
  type: int
  sample: 0
compared:
  description: Whether the chip's config was read and compared (V(false) in check mode while kvmd holds the port).
  returned: always
  type: bool
kvmd_holding:
  description: kvmd units one of whose processes had the port open.
  returned: always
  type: list
  elements: str
ready_after:
  description: Seconds from the applying RESET until the chip answered again.
  returned: when changed and not check mode
  type: float
  sample: 0.55
kvmd_paused:
  description: kvmd units stopped for the exchange and started again (never in check mode).
  returned: always
  type: list
  elements: str
elapsed:
  description: Seconds the whole action took.
  returned: always
  type: float
diff:
  description: The config before and after (named fields and the USB strings asked for).
  returned: when diff mode is on
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.onekvm.fleet.plugins.module_utils._ansible import run_core
from ansible_collections.onekvm.fleet.plugins.module_utils._ch9329 import (
    DEFAULT_READY_TIMEOUT,
    configure,
    link_argument_spec,
    link_options_from,
)
from ansible_collections.onekvm.fleet.plugins.module_utils._ch9329_config import MODES, SERIAL_MODES
from ansible_collections.onekvm.fleet.plugins.module_utils._ch9329_protocol import BAUD_RATES

SETTINGS = ("baudrate", "mode", "serial_mode", "address", "vid", "pid", "packet_interval", "usb_strings",
            "custom_strings")


def main():
    argument_spec = link_argument_spec(baudrate_name="connect_baudrate", address_name="connect_address")
    argument_spec.update(
        baudrate={"type": "int", "choices": list(BAUD_RATES)},
        mode={"type": "str", "choices": list(MODES)},
        serial_mode={"type": "str", "choices": list(SERIAL_MODES)},
        address={"type": "int"},
        vid={"type": "raw"},
        pid={"type": "raw"},
        packet_interval={"type": "int"},
        usb_strings={"type": "dict", "options": {
            "manufacturer": {"type": "str"}, "product": {"type": "str"}, "serial": {"type": "str"}}},
        custom_strings={"type": "bool"},
        force={"type": "bool", "default": False},
        ready_timeout={"type": "float", "default": DEFAULT_READY_TIMEOUT},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    changes = {name: module.params[name] for name in SETTINGS}
    if changes["usb_strings"] is not None:
        changes["usb_strings"] = {k: v for k, v in changes["usb_strings"].items() if v is not None}
    result = run_core(module, lambda: configure(
        link_options_from(module.params, "connect_baudrate", "connect_address"), changes,
        force=module.params["force"], check_mode=module.check_mode, ready_timeout=module.params["ready_timeout"]))
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(msg=result.pop("message"), **result)


if __name__ == "__main__":
    main()
